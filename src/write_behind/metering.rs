//! Metering persistence for every live call at once: each bridge keeps its running figure in
//! its [`LiveCall`] (an atomic, set every metered second), and one task per instance writes
//! every live call's figure as it stands, in a single transaction per interval. A thousand
//! calls cost one database write an interval instead of a thousand competing ones (SQLite has
//! one writer at a time), and a crash loses at most the seconds since the last write began:
//! one interval, whatever the phase of the call's own clock. The final figure of a call is
//! written by its bridge directly.
//!
//! The write is also each call's heartbeat: it renews the call's hold on its order, and the
//! store answers which calls must stop (order revoked, hold gone). Their bridges are told
//! through [`MeteringBook::watch`], on whichever instance runs them. A change to a live call's
//! order (a top-up credited or reversed, a grant, a revocation) is told to its bridge
//! ([`MeteringBook::order_changed`]): at once when it was made on this instance, and through
//! the store's signals when it was made on another.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use crate::domain::clock::Clock;
use crate::domain::money::Seconds;
use crate::store::DynStore;

#[derive(Default)]
pub struct MeteringBook {
    book: Arc<Book>,
    flusher: std::sync::OnceLock<()>,
}

#[derive(Default)]
struct Book {
    /// Live calls on this instance: their figures, and how they are told to stop or look again.
    live: Mutex<HashMap<String, Arc<LiveCall>>>,
}

/// A live call as its bridge and the rest of the instance share it.
#[derive(Debug, Default)]
pub struct LiveCall {
    order_id: String,
    /// Seconds metered so far; the next flush writes what it holds then.
    elapsed: AtomicI64,
    /// The store says the call must stop (order revoked, hold gone), or the instance is cut
    /// off from the store ([`LiveCall::is_cut_off`]).
    pub stop: Notify,
    /// The instance lost the store long enough for others to take it for dead.
    cut_off: std::sync::atomic::AtomicBool,
    /// The order changed (its balance, its status): read it again.
    pub changed: Notify,
}

impl LiveCall {
    /// The call's metering so far (never lowered).
    pub fn meter(&self, seconds: i64) {
        self.elapsed.fetch_max(seconds, Ordering::Relaxed);
    }

    /// What the next flush would write.
    pub fn metered(&self) -> i64 {
        self.elapsed.load(Ordering::Relaxed)
    }

    /// Whether the call was stopped because its instance lost the store (see
    /// [`MeteringBook::cut_off_all`]): nothing about it can be read or written now.
    pub fn is_cut_off(&self) -> bool {
        self.cut_off.load(Ordering::Acquire)
    }
}

/// Where the flush writes, and how often.
pub struct Flush {
    pub store: DynStore,
    pub clock: Arc<dyn Clock>,
    pub every: Duration,
}

impl MeteringBook {
    /// Starts the instance's one flush (once; later calls do nothing). It writes every live
    /// call's figure every `flush.every`, for as long as the book lives.
    pub fn start(&self, flush: Flush) {
        self.flusher.get_or_init(|| {
            let every = flush.every.max(Duration::from_millis(10));
            let book = Arc::downgrade(&self.book);
            tokio::spawn(flush_loop(book, flush.store, flush.clock, every));
        });
    }

    /// Signals and the running figure for the live call `call_sid` on `order_id`, written by
    /// each flush until [`MeteringBook::forget`].
    pub fn watch(&self, call_sid: &str, order_id: &str) -> Arc<LiveCall> {
        let live = Arc::new(LiveCall {
            order_id: order_id.to_string(),
            ..LiveCall::default()
        });
        self.book
            .live_calls()
            .insert(call_sid.to_string(), live.clone());
        live
    }

    /// What the next flush would write for `call_sid`, if it is live here.
    pub fn metered(&self, call_sid: &str) -> Option<i64> {
        self.book.live_calls().get(call_sid).map(|l| l.metered())
    }

    /// `order_id` changed: its live call on this instance, if any, reads it again.
    pub fn order_changed(&self, order_id: &str) {
        for live in self.book.live_calls().values() {
            if live.order_id == order_id {
                live.changed.notify_one();
            }
        }
    }

    /// The instance has lost the store for so long that another will settle its calls: every
    /// live call stops now, before it would go on unmetered beside its settlement.
    pub fn cut_off_all(&self) -> usize {
        let live = self.book.live_calls();
        for call in live.values() {
            call.cut_off.store(true, Ordering::Release);
            call.stop.notify_one();
        }
        live.len()
    }

    /// The call's final figure is written elsewhere: no flush writes it again.
    pub fn forget(&self, call_sid: &str) {
        self.book.live_calls().remove(call_sid);
    }
}

impl Book {
    fn live_calls(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<LiveCall>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stop(&self, call_sids: &[String]) {
        let live = self.live_calls();
        for sid in call_sids {
            if let Some(n) = live.get(sid) {
                n.stop.notify_one();
            }
        }
    }

    /// Every live call's figure as it stands now.
    fn figures(&self) -> Vec<(String, Seconds)> {
        self.live_calls()
            .iter()
            .map(|(sid, live)| (sid.clone(), Seconds(live.metered())))
            .collect()
    }
}

/// Writes the live calls' figures every interval, for as long as the book lives. A failed
/// write is not queued: the next one writes the newer figures.
async fn flush_loop(book: Weak<Book>, store: DynStore, clock: Arc<dyn Clock>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(book) = book.upgrade() else { return };
        let figures = book.figures();
        if figures.is_empty() {
            continue;
        }
        let now = clock.now();
        match store
            .record_metering_many(&figures, now + crate::domain::ledger::HOLD_LEASE_SECS, now)
            .await
        {
            Ok(stop) => book.stop(&stop),
            Err(e) => {
                tracing::warn!(error = %e, calls = figures.len(), "metering not persisted; the next interval writes it");
            }
        }
    }
}
