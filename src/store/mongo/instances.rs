//! Instances in MongoDB: one document per running instance (`_id` its id); a call carries its
//! instance in `instance_id`.

use async_trait::async_trait;
use mongodb::bson::{doc, Bson, Document};

use super::*;

#[async_trait]
impl InstanceStore for MongoStore {
    async fn beat(&self, instance: &Instance, now: UnixTime) -> Result<(), StoreError> {
        self.raw("instances")
            .update_one(
                doc! { "_id": &instance.id },
                doc! {
                    "$set": { "name": &instance.name, "beat_at": now },
                    "$setOnInsert": { "started_at": now },
                },
            )
            .upsert(true)
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn instance_stopped(&self, id: &str) -> Result<(), StoreError> {
        self.raw("instances")
            .delete_one(doc! { "_id": id })
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn orphaned_calls(
        &self,
        me: &Instance,
        silent_before: UnixTime,
    ) -> Result<Vec<String>, StoreError> {
        // The carried calls, then the instances that are still there and alive: a join in
        // two reads (few instances, and only live calls).
        let carried: Vec<Document> = self
            .raw("calls")
            .find(doc! {
                "bridged_at": { "$ne": Bson::Null },
                "bridge_ended_at": Bson::Null,
                "settled_at": Bson::Null,
                "instance_id": { "$nin": [Bson::Null, &me.id] },
            })
            .projection(doc! { "_id": 1, "instance_id": 1 })
            .await
            .map_err(err)?
            .try_collect()
            .await
            .map_err(err)?;
        if carried.is_empty() {
            return Ok(Vec::new());
        }
        let alive: Vec<Document> = self
            .raw("instances")
            .find(doc! { "name": { "$ne": &me.name }, "beat_at": { "$gte": silent_before } })
            .projection(doc! { "_id": 1 })
            .await
            .map_err(err)?
            .try_collect()
            .await
            .map_err(err)?;
        let alive: std::collections::HashSet<&str> =
            alive.iter().filter_map(|d| d.get_str("_id").ok()).collect();
        Ok(carried
            .iter()
            .filter(|c| {
                c.get_str("instance_id")
                    .is_ok_and(|carrier| !alive.contains(carrier))
            })
            .filter_map(|c| c.get_str("_id").ok().map(String::from))
            .collect())
    }

    async fn cap_hold(&self, call_sid: &str, until: UnixTime) -> Result<bool, StoreError> {
        self.orders()
            .update_one(
                doc! { "active_call_sid": call_sid, "active_call_until": { "$gt": until } },
                doc! { "$set": { "active_call_until": until } },
            )
            .await
            .map(|r| r.modified_count == 1)
            .map_err(err)
    }
}

/// Instances on MongoDB read a live call's order again every `balance_recheck`.
impl Signals for MongoStore {}
