//! Code attempts in MongoDB.

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};

use super::*;

#[async_trait]
impl AttemptStore for MongoStore {
    async fn record_attempts(&self, attempts: &[CodeAttempt]) -> Result<(), StoreError> {
        if attempts.is_empty() {
            return Ok(());
        }
        let docs = attempts.iter().map(
            |a| doc! { "caller": &a.caller, "code_hash": &a.code_hash, "ok": a.ok, "at": a.at },
        );
        self.raw("code_attempts")
            .insert_many(docs)
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn count_failures(
        &self,
        scope: AttemptScope<'_>,
        since: UnixTime,
        up_to: i64,
    ) -> Result<i64, StoreError> {
        if up_to <= 0 {
            return Ok(0);
        }
        let mut filter = doc! { "ok": false, "at": { "$gte": since } };
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
        self.raw("code_attempts")
            .delete_many(doc! { "at": { "$lt": before } })
            .await
            .map(|r| r.deleted_count)
            .map_err(err)
    }
}
