//! Code attempts in MongoDB.

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};

use super::*;

#[async_trait]
impl AttemptStore for MongoStore {
    async fn record_group(
        &self,
        attempts: &[CodeAttempt],
        group: Option<AttemptGroup>,
    ) -> Result<(), StoreError> {
        if attempts.is_empty() {
            return Ok(());
        }
        let docs = attempts.iter().map(|a| {
            let mut d =
                doc! { "caller": &a.caller, "code_hash": &a.code_hash, "ok": a.ok, "at": a.at };
            if let Some(g) = group {
                d.insert("writer", g.writer);
                d.insert("batch", g.number);
            }
            d
        });
        self.raw("code_attempts")
            .insert_many(docs)
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn count_failures_written(
        &self,
        scope: AttemptScope<'_>,
        since: UnixTime,
        up_to: i64,
        written_up_to: Option<AttemptGroup>,
    ) -> Result<i64, StoreError> {
        if up_to <= 0 {
            return Ok(0);
        }
        let mut filter = doc! { "ok": false, "at": { "$gte": since } };
        if let Some(g) = written_up_to {
            // Not one of that writer's later groups (an attempt without a writer never is).
            filter.insert(
                "$or",
                vec![
                    doc! { "writer": { "$ne": g.writer } },
                    doc! { "batch": { "$lte": g.number } },
                ],
            );
        }
        match scope {
            AttemptScope::Caller(c) => {
                filter.insert("caller", c);
            }
            AttemptScope::Code(h) => {
                filter.insert("code_hash", h);
            }
            AttemptScope::Global => {}
        }
        // `$limit` as a 32-bit integer, as everywhere here; a bound past that is a whole count.
        let mut pipeline = vec![doc! { "$match": filter }];
        if let Ok(up_to) = i32::try_from(up_to) {
            pipeline.push(doc! { "$limit": up_to });
        }
        pipeline.push(doc! { "$count": "n" });
        let counted: Vec<Document> = self
            .raw("code_attempts")
            .aggregate(pipeline)
            .await
            .map_err(err)?
            .try_collect()
            .await
            .map_err(err)?;
        Ok(counted
            .first()
            .and_then(|d| match d.get("n") {
                Some(mongodb::bson::Bson::Int32(n)) => Some(i64::from(*n)),
                Some(mongodb::bson::Bson::Int64(n)) => Some(*n),
                _ => None,
            })
            .unwrap_or(0))
    }

    async fn prune_attempts(&self, before: UnixTime) -> Result<u64, StoreError> {
        let pruned = self
            .raw("code_attempts")
            .delete_many(doc! { "at": { "$lt": before } })
            .await
            .map(|r| r.deleted_count)
            .map_err(err)?;
        // A key's slots go together, once all are old: numbers stay without gaps.
        let live: Vec<Document> = self
            .raw("attempt_slots")
            .find(doc! { "at": { "$gte": before } })
            .projection(doc! { "key": 1 })
            .await
            .map_err(err)?
            .try_collect()
            .await
            .map_err(err)?;
        let live: Vec<&str> = live.iter().filter_map(|d| d.get_str("key").ok()).collect();
        self.raw("attempt_slots")
            .delete_many(doc! { "key": { "$nin": live } })
            .await
            .map_err(err)?;
        Ok(pruned)
    }

    async fn take_slots(
        &self,
        wants: &[SlotWant<'_>],
        since: UnixTime,
        now: UnixTime,
    ) -> Result<Vec<Option<i64>>, StoreError> {
        let mut taken = Vec::with_capacity(wants.len());
        for want in wants {
            taken.push(self.take_slot(want.key, want.limit, since, now).await?);
        }
        Ok(taken)
    }

    async fn free_slots(&self, slots: &[(String, i64)]) -> Result<(), StoreError> {
        if slots.is_empty() {
            return Ok(());
        }
        let each: Vec<Document> = slots
            .iter()
            .map(|(key, slot)| doc! { "key": key, "slot": slot })
            .collect();
        self.raw("attempt_slots")
            .update_many(doc! { "$or": each }, doc! { "$set": { "at": 0_i64 } })
            .await
            .map(|_| ())
            .map_err(err)
    }
}

impl MongoStore {
    /// Slots are documents `key#slot`: an expired one is taken by one atomic
    /// find-and-update; a new one by an insert whose `_id` two takers cannot share.
    async fn take_slot(
        &self,
        key: &str,
        limit: i64,
        since: UnixTime,
        now: UnixTime,
    ) -> Result<Option<i64>, StoreError> {
        let slots = self.raw("attempt_slots");
        for _ in 0..crate::store::attempts::SLOT_TRIES {
            let reused = slots
                .find_one_and_update(
                    doc! { "key": key, "at": { "$lt": since } },
                    doc! { "$set": { "at": now } },
                )
                .sort(doc! { "slot": 1 })
                .await
                .map_err(err)?;
            if let Some(d) = reused {
                return Ok(Some(whole(&d, "slot")?));
            }
            let n = slots
                .count_documents(doc! { "key": key })
                .await
                .map_err(err)? as i64;
            if n >= limit {
                let taken = slots
                    .count_documents(doc! { "key": key, "at": { "$gte": since } })
                    .await
                    .map_err(err)? as i64;
                if taken >= limit {
                    return Ok(None);
                }
                continue;
            }
            let added = slots
                .insert_one(doc! { "_id": format!("{key}#{n}"), "key": key, "slot": n, "at": now })
                .await
                .map_err(err);
            match added {
                Ok(_) => return Ok(Some(n)),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Unavailable(
            "attempt slots: too much contention".into(),
        ))
    }
}
