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

/// Instances on MongoDB tell each other through a change stream on `order_signals` (each
/// changed order one inserted document), where the server has change streams (a replica set
/// or a sharded cluster); elsewhere, as on a standalone server, each live call reads its order
/// again every `balance_recheck`, and its hold renewal refuses a revoked order at the next
/// metering flush.
#[async_trait]
impl Signals for MongoStore {
    async fn publish_order_changed(&self, order_id: &str) -> Result<(), StoreError> {
        self.raw(SIGNALS)
            .insert_one(doc! { "order_id": order_id, "at": mongodb::bson::DateTime::now() })
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn order_changes(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<String>>, StoreError> {
        let signals = self.raw(SIGNALS);
        let inserts = vec![doc! { "$match": { "operationType": "insert" } }];
        let stream = match signals.watch().pipeline(inserts.clone()).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::info!(error = %e, "no change streams on this MongoDB: live calls re-check");
                return Ok(None);
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            use futures_util::StreamExt;
            let mut stream = stream;
            loop {
                while let Some(event) = stream.next().await {
                    let Ok(event) = event else { break };
                    let order_id = event
                        .full_document
                        .as_ref()
                        .and_then(|d| d.get_str("order_id").ok())
                        .map(str::to_string);
                    if let Some(order_id) = order_id {
                        if tx.send(order_id).await.is_err() {
                            return;
                        }
                    }
                }
                // Interrupted: open it again (what was said meanwhile is covered by the
                // re-check).
                tracing::warn!("order signals interrupted; reopening the change stream");
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    if tx.is_closed() {
                        return;
                    }
                    if let Ok(reopened) = signals.watch().pipeline(inserts.clone()).await {
                        stream = reopened;
                        break;
                    }
                }
            }
        });
        Ok(Some(rx))
    }
}

/// The collection of changed orders' signals; each expires after an hour.
pub(super) const SIGNALS: &str = "order_signals";
