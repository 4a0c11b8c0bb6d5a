//! Calls as they arrive, written behind the greeting in groups.
//!
//! The greeting webhook answers every call, and the only write it made was the call's first
//! row. That row holds no money: the code check writes it itself when it is not there yet
//! (Twilio retried a lost greeting, or this group has not been committed), and every later
//! step (the hold, the bridge, the end, the settlement) writes through the code check's or the
//! status callback's own synchronous writes. So the greeting answers at once, and one task
//! inserts what has queued every [`WINDOW`], in one transaction, each row only if the call is
//! not stored yet. A crash loses at most one window of first rows, which the calls' next
//! webhooks write again; a graceful shutdown writes them ([`ArrivalLog::flush`]).

use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::store::{DynStore, NewCall, StoreError};

/// Arrivals waiting for the writer before new greetings wait for room.
const QUEUE: usize = 8192;
/// How often the writer commits while calls keep arriving.
const WINDOW: Duration = Duration::from_millis(20);
/// Tries at writing one group while the database is unavailable, a second apart.
const TRIES: u32 = 30;

enum Entry {
    Call(NewCall),
    /// Answered once every call queued before it is written (or given up on).
    Flush(oneshot::Sender<()>),
}

/// The greeting's record of calls, written by group commit.
#[derive(Default)]
pub struct ArrivalLog {
    queue: OnceLock<mpsc::Sender<Entry>>,
}

impl ArrivalLog {
    fn queue(&self, store: &DynStore) -> &mpsc::Sender<Entry> {
        self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(write_loop(store.clone(), rx));
            tx
        })
    }

    /// Queues the call's first row. Waits only when the writer is [`QUEUE`] calls behind.
    pub async fn record(&self, store: &DynStore, call: NewCall) -> Result<(), StoreError> {
        self.queue(store)
            .send(Entry::Call(call))
            .await
            .map_err(|_| StoreError::Unavailable("the call writer has stopped".into()))
    }

    /// Returns once every call recorded before this was written.
    pub async fn flush(&self) {
        let Some(queue) = self.queue.get() else {
            return;
        };
        let (done, written) = oneshot::channel();
        if queue.send(Entry::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

/// Runs until the app (which holds the sender) is dropped.
async fn write_loop(store: DynStore, mut queue: mpsc::Receiver<Entry>) {
    let mut entries = Vec::new();
    while queue.recv_many(&mut entries, QUEUE).await > 0 {
        let mut calls = Vec::with_capacity(entries.len());
        let mut flushes = Vec::new();
        for entry in entries.drain(..) {
            match entry {
                Entry::Call(c) => calls.push(c),
                Entry::Flush(done) => flushes.push(done),
            }
        }
        if !calls.is_empty() {
            write(&store, &calls).await;
        }
        for done in flushes {
            let _ = done.send(());
        }
        if !calls.is_empty() {
            // Let the next group gather (this bounds the commits to 1/WINDOW a second).
            tokio::time::sleep(WINDOW).await;
        }
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
