//! Webhook events already processed (deduplication by event id).

use async_trait::async_trait;

use super::{StoreError, UnixTime};

/// Webhook events: recorded once.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Marks a webhook event processed; `false` if it had been already.
    async fn record_event(&self, id: &str, kind: &str, now: UnixTime) -> Result<bool, StoreError>;

    async fn event_seen(&self, id: &str) -> Result<bool, StoreError>;
}
