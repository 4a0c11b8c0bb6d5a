//! Calls as they arrive, written behind the greeting in groups.
//!
//! The greeting webhook answers every call, and the only write it made was the call's first
//! row. That row holds no money: the code check writes it itself when it is not there yet
//! (Twilio retried a lost greeting, or this group has not been committed), and every later
//! step (the hold, the bridge, the end, the settlement) writes through the code check's or the
//! status callback's own synchronous writes. So the greeting answers at once, and one task
//! inserts what has queued every `group::WINDOW`, in one transaction, each row only if the call is
//! not stored yet. A crash loses at most one window of first rows, which the calls' next
//! webhooks write again; a graceful shutdown writes them ([`ArrivalLog::flush`]).

use std::time::Duration;

use super::group::{GroupQueue, TRIES};
use crate::store::{DynStore, NewCall, StoreError};

/// The greeting's record of calls, written by group commit.
#[derive(Default)]
pub struct ArrivalLog {
    queue: GroupQueue<NewCall>,
}

impl ArrivalLog {
    /// Queues the call's first row. Waits only when the writer is far behind.
    pub async fn record(&self, store: &DynStore, call: NewCall) -> Result<(), StoreError> {
        let writer = || {
            let store = store.clone();
            move |calls: Vec<NewCall>| {
                let store = store.clone();
                async move { write(&store, &calls).await }
            }
        };
        self.queue
            .send(call, writer)
            .await
            .map_err(|_| StoreError::Unavailable("the call writer has stopped".into()))
    }

    /// Returns once every call recorded before this was written.
    pub async fn flush(&self) {
        self.queue.flush().await
    }
}

/// Writes one group, retrying while the database is unavailable; after [`TRIES`] the group is
/// dropped with an error in the log (those calls' code checks write their rows).
async fn write(store: &DynStore, calls: &[NewCall]) {
    for tried in 1..=TRIES {
        match store.record_calls(calls).await {
            Ok(()) => return,
            Err(e) if tried < TRIES => {
                tracing::warn!(error = %e, calls = calls.len(), "arriving calls not written yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, calls = calls.len(), "arriving calls not written")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;
    use std::sync::Arc;

    #[tokio::test]
    async fn arrivals_are_written_by_flush_and_never_overwrite_a_call() {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = Arc::new(SqliteStore::open(&dir.path().join("t.db")).await.unwrap());
        store.migrate().await.unwrap();
        let call = |sid: &str, now| NewCall {
            call_sid: sid.into(),
            from_number: "+15550001111".into(),
            to_number: "+15550002222".into(),
            now,
        };
        // The code check wrote this one first (the greeting's group was not committed yet).
        store.upsert_call(&call("CA2", 50)).await.unwrap();
        let log = ArrivalLog::default();
        log.flush().await; // nothing queued yet: returns at once
        log.record(&store, call("CA1", 100)).await.unwrap();
        log.record(&store, call("CA2", 100)).await.unwrap();
        log.flush().await;
        assert_eq!(store.call("CA1").await.unwrap().unwrap().started_at, 100);
        assert_eq!(
            store.call("CA2").await.unwrap().unwrap().started_at,
            50,
            "a late arrival does not overwrite the stored call"
        );
    }
}
