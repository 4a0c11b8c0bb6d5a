//! Running instances of callgate: each one's heartbeat, and which calls each carries (the
//! instance that runs a call's bridge). When one falls silent, or restarts under the same
//! name, another settles what it carried; when to judge an instance gone is decided above
//! the store ([`crate::liveness`]).

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{StoreError, UnixTime};

/// One running callgate process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// This run's own id, random at start-up: the calls it bridges carry it.
    pub id: String,
    /// Where it runs (`INSTANCE_NAME`, else host and port): the same for its next run.
    pub name: String,
}

#[async_trait]
pub trait InstanceStore: Send + Sync {
    /// Records that `instance` is alive at `now` (its first beat records when it started).
    async fn beat(&self, instance: &Instance, now: UnixTime) -> Result<(), StoreError>;

    /// Forgets instance `id`: it stopped. A call still carried by it counts as orphaned.
    async fn instance_stopped(&self, id: &str) -> Result<(), StoreError>;

    /// Calls whose bridge is live on record (bridged, its end not recorded, not settled)
    /// carried by an instance other than `me` that is gone: one named as `me` is (an earlier
    /// run of it), one silent since before `silent_before`, or one no longer recorded.
    async fn orphaned_calls(
        &self,
        me: &Instance,
        silent_before: UnixTime,
    ) -> Result<Vec<String>, StoreError>;

    /// The hold `call_sid` has on its order lasts until `until` at most; `true` if shortened.
    async fn cap_hold(&self, call_sid: &str, until: UnixTime) -> Result<bool, StoreError>;
}

/// Word between instances that an order changed (its balance, its status), so the one
/// carrying its live call reads it again at once. Where an engine has no such word, nothing is
/// sent and nothing arrives: its instances read a live call's order again every
/// `balance_recheck` instead (SQLite is one instance, told in process).
#[async_trait]
pub trait Signals: Send + Sync {
    /// Tells every instance listening that `order_id` changed.
    async fn publish_order_changed(&self, _order_id: &str) -> Result<(), StoreError> {
        Ok(())
    }

    /// The orders other instances (and this one) say changed, as they are told; `None` where
    /// the engine carries no such word.
    async fn order_changes(&self) -> Result<Option<mpsc::Receiver<String>>, StoreError> {
        Ok(None)
    }
}
