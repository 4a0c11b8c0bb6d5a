//! Webhook events in MongoDB.

use async_trait::async_trait;
use mongodb::bson::doc;

use super::*;

#[async_trait]
impl EventStore for MongoStore {
    async fn record_event(&self, id: &str, kind: &str, now: UnixTime) -> Result<bool, StoreError> {
        match self
            .raw("webhook_events")
            .insert_one(doc! { "_id": id, "kind": kind, "received_at": now })
            .await
            .map_err(err)
        {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn event_seen(&self, id: &str) -> Result<bool, StoreError> {
        Ok(first(&self.raw("webhook_events"), doc! { "_id": id })
            .await?
            .is_some())
    }
}
