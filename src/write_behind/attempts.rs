//! Code attempts, written behind the answer in groups.
//!
//! Under a guessing attack there are thousands of wrong codes a second. Written one by one,
//! each is a transaction of its own, and each inserts into two indexes at random places (the
//! caller's number, the code's hash): on SQLite that is a WAL commit of a few whole pages per
//! attempt, tens of megabytes a second, and the writer stalls whenever the kernel throttles the
//! writes. Here the code check answers at once and one task writes what has queued every
//! [`ATTEMPTS_WINDOW`], in one transaction, so a page touched by many attempts is written once.
//!
//! The throttles stay exact without a lock between the readers and the writer: until an
//! attempt is written, this instance counts it itself (`Pending`), and each group is written
//! marked with this process's writer id and the group's number. A reader takes this instance's
//! pending counts and the number of the last group taken off them first, then asks the store
//! to count without this writer's later groups: a group taken off the pending counts was
//! committed before it was taken off, so the store counts it; a later one is counted from
//! memory whether or not its commit is visible yet. An attempt is always in exactly one of the
//! two. A crash loses at most one window of attempts (throttling data, never money); a
//! graceful shutdown writes them ([`AttemptLog::flush`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::group::{GroupQueue, TRIES};

use crate::store::{
    AttemptGroup, AttemptScope, CodeAttempt, CodeCheckFacts, CodeCheckQuery, DynStore, SlotWant,
    StoreError, UnixTime,
};

/// How long attempts are kept (the throttles look back one hour).
const KEEP_SECS: i64 = 24 * 3600;
/// How often old attempts are pruned, at most.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Wrong attempts queued or being written, counted as the store would count them.
#[derive(Default)]
struct Pending {
    callers: HashMap<String, i64>,
    codes: HashMap<String, i64>,
    total: i64,
    /// Wrong attempts this instance has written, ever (lets a cached store count move on).
    written: i64,
    /// The number of the last group taken off these counts (written, or given up on).
    written_group: i64,
}

impl Pending {
    /// Wrong attempts in `scope` not written yet.
    fn count(&self, scope: AttemptScope<'_>) -> i64 {
        match scope {
            AttemptScope::Caller(c) => self.callers.get(c).copied().unwrap_or(0),
            AttemptScope::Code(h) => self.codes.get(h).copied().unwrap_or(0),
            AttemptScope::Global => self.total,
        }
    }

    fn change(&mut self, a: &CodeAttempt, by: i64) {
        fn bump(map: &mut HashMap<String, i64>, key: &str, by: i64) {
            let n = map.entry(key.to_string()).or_insert(0);
            *n += by;
            if *n <= 0 {
                map.remove(key);
            }
        }
        if a.ok {
            return;
        }
        bump(&mut self.callers, &a.caller, by);
        bump(&mut self.codes, &a.code_hash, by);
        self.total += by;
    }
}

/// How long the attempts' groups gather. Longer than the calls' [`super::group::WINDOW`]: under
/// a guessing attack a group is then one large INSERT four times a second, which PostgreSQL
/// takes in far less time than fifty small ones (`docs/performance.md`). A crash forgets at
/// most this much of the attempts: throttling data, never money.
pub const ATTEMPTS_WINDOW: Duration = Duration::from_millis(250);

/// The menu's memory of codes typed: every count the throttles read comes from here.
pub struct AttemptLog {
    /// Everyone's failures, cached.
    gauge: FailureGauge,
    queue: GroupQueue<CodeAttempt>,
    pending: Arc<Mutex<Pending>>,
    /// This process's writer id, marked on every group it writes.
    writer: i64,
}

impl Default for AttemptLog {
    fn default() -> Self {
        AttemptLog {
            gauge: FailureGauge::default(),
            queue: GroupQueue::with_window(ATTEMPTS_WINDOW),
            pending: Arc::default(),
            writer: rand::random::<i64>(),
        }
    }
}

/// This instance's side of a count, read before the store's: wrong attempts it has not
/// written yet in up to two scopes, and where the store's count must stop.
struct Unwritten {
    counts: [i64; 2],
    written_up_to: AttemptGroup,
    /// Wrong attempts this instance had written by then.
    written: i64,
}

/// The code check's facts with this instance's unwritten failures of its caller and its code
/// added (as [`AttemptLog::code_check_query`] read them).
fn with_unwritten(mut facts: CodeCheckFacts, [caller, code]: [i64; 2]) -> CodeCheckFacts {
    facts.caller_failures += caller;
    facts.code_failures += code;
    facts
}

fn lock(pending: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    pending.lock().unwrap_or_else(|p| p.into_inner())
}

impl AttemptLog {
    /// Counts `attempt` at once and queues it for the store. Waits only when the writer is
    /// far behind (the database is down or far slower than the callers).
    pub async fn record(&self, store: &DynStore, attempt: CodeAttempt) -> Result<(), StoreError> {
        lock(&self.pending).change(&attempt, 1);
        let writer = || {
            let (store, pending, writer) = (store.clone(), self.pending.clone(), self.writer);
            let mut pruned_at: Option<tokio::time::Instant> = None;
            let mut number = 0;
            move |attempts: Vec<CodeAttempt>| {
                number += 1;
                let group = AttemptGroup { writer, number };
                // Old attempts go, at most every PRUNE_EVERY, measured by the attempts' clock.
                let prune = pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY);
                if prune {
                    pruned_at = Some(tokio::time::Instant::now());
                }
                let (store, pending) = (store.clone(), pending.clone());
                async move {
                    write(&store, &attempts, &pending, group).await;
                    if prune {
                        let newest = attempts.iter().map(|a| a.at).max().unwrap_or_default();
                        match store.prune_attempts(newest - KEEP_SECS).await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(attempts = n, "old code attempts pruned"),
                            Err(e) => tracing::warn!(error = %e, "old code attempts not pruned"),
                        }
                    }
                }
            }
        };
        self.queue.send(attempt, writer).await.map_err(|a| {
            lock(&self.pending).change(&a, -1);
            StoreError::Unavailable("the attempt writer has stopped".into())
        })
    }

    /// This instance's unwritten wrong attempts in `scopes`, with the last group taken off
    /// them, read together. Read it before the store's count it goes with.
    fn unwritten(&self, scopes: [Option<AttemptScope<'_>>; 2]) -> Unwritten {
        let pending = lock(&self.pending);
        Unwritten {
            counts: scopes.map(|scope| scope.map_or(0, |scope| pending.count(scope))),
            written_up_to: AttemptGroup {
                writer: self.writer,
                number: pending.written_group,
            },
            written: pending.written,
        }
    }

    /// The code check's query as the store must answer it, and this instance's unwritten
    /// failures of its caller and its code.
    fn code_check_query<'a>(&self, query: &CodeCheckQuery<'a>) -> (CodeCheckQuery<'a>, [i64; 2]) {
        let unwritten = self.unwritten([
            Some(AttemptScope::Caller(query.caller)),
            query.code_hash.map(AttemptScope::Code),
        ]);
        let query = CodeCheckQuery {
            written_up_to: Some(unwritten.written_up_to),
            ..*query
        };
        (query, unwritten.counts)
    }

    /// Wrong codes in `scope` since `since`: the store's count (up to `up_to`, the limit the
    /// answer is compared with) and this instance's unwritten ones, read together.
    pub async fn failures(
        &self,
        store: &DynStore,
        scope: AttemptScope<'_>,
        since: UnixTime,
        up_to: i64,
    ) -> Result<i64, StoreError> {
        let (stored, unwritten) = self.counted(store, scope, since, up_to).await?;
        Ok(stored + unwritten.counts[0])
    }

    /// The store's count of wrong codes in `scope` (up to `up_to`), leaving out what this
    /// instance still counts from memory, and this instance's side, read before it.
    async fn counted(
        &self,
        store: &DynStore,
        scope: AttemptScope<'_>,
        since: UnixTime,
        up_to: i64,
    ) -> Result<(i64, Unwritten), StoreError> {
        let unwritten = self.unwritten([Some(scope), None]);
        let stored = store
            .count_failures_written(scope, since, up_to, Some(unwritten.written_up_to))
            .await?;
        Ok((stored, unwritten))
    }

    /// Everyone's wrong codes since `since`, the store's count (up to `up_to`) read at most
    /// once a second.
    pub async fn global_failures(
        &self,
        store: &DynStore,
        since: UnixTime,
        up_to: i64,
    ) -> Result<i64, StoreError> {
        self.gauge.count(self, store, since, up_to).await
    }

    /// What the code check needs, read in one round trip, its failure counts with this
    /// instance's unwritten attempts added (none missed or counted twice: see the module).
    pub async fn code_check(
        &self,
        store: &DynStore,
        query: &CodeCheckQuery<'_>,
    ) -> Result<CodeCheckFacts, StoreError> {
        let (query, unwritten) = self.code_check_query(query);
        let facts = store.code_check(&query).await?;
        Ok(with_unwritten(facts, unwritten))
    }

    /// [`AttemptLog::code_check`] with the wrong-code gate's slots taken in the same round
    /// trip (see `Store::check_and_take`).
    pub async fn check_and_take(
        &self,
        store: &DynStore,
        query: &CodeCheckQuery<'_>,
        wants: &[SlotWant<'_>],
        now: UnixTime,
    ) -> Result<(CodeCheckFacts, Vec<Option<i64>>), StoreError> {
        let (query, unwritten) = self.code_check_query(query);
        let (facts, taken) = store.check_and_take(&query, wants, now).await?;
        Ok((with_unwritten(facts, unwritten), taken))
    }

    /// Wrong attempts in `scope` that the store does not have yet, read alone (a test's view;
    /// the throttles read it with the store's count, see [`AttemptLog::failures`]).
    pub fn pending(&self, scope: AttemptScope<'_>) -> i64 {
        lock(&self.pending).count(scope)
    }

    /// Returns once every attempt recorded before the call has been written.
    pub async fn flush(&self) {
        self.queue.flush().await
    }
}

/// Everyone's wrong codes in the last hour, as this instance sees them: the store's count is
/// read at most once a second (it walks an hour of attempts), and between reads this
/// instance's own failures are added as they happen (written since, plus not yet written), so
/// the figure is exact for one instance; other instances' failures show within a second. When
/// the figure is due, one check reads the new one while the others go on with the last (under
/// a guessing attack, thousands of checks would otherwise each start the same long count at
/// once, every second).
#[derive(Default)]
struct FailureGauge {
    /// When the store was counted, what it counted, and how many failures this instance had
    /// written by then.
    last: std::sync::Mutex<Option<(std::time::Instant, i64, i64)>>,
    refreshing: std::sync::atomic::AtomicBool,
}

/// Clears the refreshing flag however the read ends (answered, failed or cancelled).
struct Refreshing<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for Refreshing<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

impl FailureGauge {
    const FRESH: std::time::Duration = std::time::Duration::from_secs(1);

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(std::time::Instant, i64, i64)>> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn count(
        &self,
        log: &AttemptLog,
        store: &DynStore,
        since: i64,
        up_to: i64,
    ) -> Result<i64, StoreError> {
        let last = *self.lock();
        if let Some((at, stored, written_then)) = last {
            let busy = || {
                self.refreshing
                    .swap(true, std::sync::atomic::Ordering::AcqRel)
            };
            if at.elapsed() < Self::FRESH || busy() {
                let unwritten = log.unwritten([Some(AttemptScope::Global), None]);
                return Ok(stored + (unwritten.written - written_then) + unwritten.counts[0]);
            }
        }
        let _refreshing = Refreshing(&self.refreshing);
        let (stored, unwritten) = log
            .counted(store, AttemptScope::Global, since, up_to)
            .await?;
        *self.lock() = Some((std::time::Instant::now(), stored, unwritten.written));
        Ok(stored + unwritten.counts[0])
    }
}

/// Writes one group, retrying while the database is unavailable; after [`TRIES`] the group is
/// dropped with an error in the log (the throttles then forget it, as after a crash). Once
/// written, it is taken off `pending` and becomes the last group readers leave to the store.
async fn write(
    store: &DynStore,
    attempts: &[CodeAttempt],
    pending: &Mutex<Pending>,
    group: AttemptGroup,
) {
    let settle = |written: bool| {
        let mut pending = lock(pending);
        for a in attempts {
            pending.change(a, -1);
        }
        if written {
            pending.written += attempts.iter().filter(|a| !a.ok).count() as i64;
        }
        pending.written_group = group.number;
    };
    for tried in 1..=TRIES {
        let outcome = store.record_group(attempts, Some(group)).await;
        if outcome.is_ok() || tried == TRIES {
            settle(outcome.is_ok());
        }
        match outcome {
            Ok(()) => return,
            Err(e) if tried < TRIES => {
                tracing::warn!(error = %e, attempts = attempts.len(), "code attempts not written yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, attempts = attempts.len(), "code attempts dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    #[tokio::test]
    async fn attempts_count_at_once_and_are_written_by_flush() {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = Arc::new(SqliteStore::open(&dir.path().join("t.db")).await.unwrap());
        store.migrate().await.unwrap();
        let log = AttemptLog::default();
        assert_eq!(log.pending(AttemptScope::Global), 0);
        log.flush().await; // nothing queued yet: returns at once
        let wrong = CodeAttempt {
            caller: "+1".into(),
            code_hash: "h".into(),
            ok: false,
            at: 100,
        };
        for _ in 0..3 {
            log.record(&store, wrong.clone()).await.unwrap();
        }
        let right = CodeAttempt {
            ok: true,
            ..wrong.clone()
        };
        log.record(&store, right).await.unwrap();
        // On this one-thread runtime the writer has not run yet: only the pending count knows.
        assert_eq!(log.pending(AttemptScope::Caller("+1")), 3);
        assert_eq!(log.pending(AttemptScope::Code("h")), 3);
        assert_eq!(log.pending(AttemptScope::Caller("+2")), 0);
        assert_eq!(log.pending(AttemptScope::Global), 3);
        log.flush().await;
        assert_eq!(log.pending(AttemptScope::Global), 0);
        assert_eq!(log.pending(AttemptScope::Caller("+1")), 0);
        let stored = |scope| {
            let store = store.clone();
            async move { store.count_failures(scope, 0, i64::MAX).await.unwrap() }
        };
        assert_eq!(stored(AttemptScope::Caller("+1")).await, 3);
        assert_eq!(stored(AttemptScope::Global).await, 3);
    }

    #[tokio::test]
    async fn attempts_older_than_a_day_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = Arc::new(SqliteStore::open(&dir.path().join("t.db")).await.unwrap());
        store.migrate().await.unwrap();
        let old = |caller: &str, at| CodeAttempt {
            caller: caller.into(),
            code_hash: "h".into(),
            ok: false,
            at,
        };
        let now = 10 * KEEP_SECS;
        let stale: Vec<CodeAttempt> = (0..12_000)
            .map(|i| old("+old", now - KEEP_SECS - 1 - i))
            .collect();
        store.record_attempts(&stale).await.unwrap();
        store
            .record_attempt(&old("+recent", now - KEEP_SECS + 5))
            .await
            .unwrap();
        let log = AttemptLog::default();
        log.record(&store, old("+new", now)).await.unwrap();
        log.flush().await;
        let count = |caller: &'static str| {
            let store = store.clone();
            async move {
                store
                    .count_failures(AttemptScope::Caller(caller), 0, i64::MAX)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(
            count("+old").await,
            0,
            "more than a day old: pruned, across chunks"
        );
        assert_eq!(count("+recent").await, 1);
        assert_eq!(count("+new").await, 1);
    }
}
