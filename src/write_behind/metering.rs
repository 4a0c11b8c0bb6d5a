//! Metering persistence for every live call at once: each bridge reports its running figure
//! here, and one task writes all of them in a single transaction per interval. A thousand calls
//! cost one database write an interval instead of a thousand competing ones (SQLite has one
//! writer at a time). The final figure of a call is written by its bridge directly.
//!
//! The write is also each call's heartbeat: it renews the call's hold on its order, and the
//! store answers which calls must stop (order revoked, hold gone). Their bridges are told
//! through [`MeteringBook::watch`], on whichever instance runs them. A change to a live call's
//! balance made on this instance (a top-up credited or reversed, a grant) is told to its bridge
//! at once ([`MeteringBook::order_changed`]).

use std::collections::HashMap;
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
    pending: Mutex<HashMap<String, i64>>,
    /// Live calls on this instance, told when they must stop or their order changed.
    live: Mutex<HashMap<String, Arc<LiveCall>>>,
}

/// What a live call's bridge is told from outside its loop.
#[derive(Debug, Default)]
pub struct LiveCall {
    order_id: String,
    /// The store says the call must stop (order revoked, hold gone).
    pub stop: Notify,
    /// The order's balance changed: read it again.
    pub changed: Notify,
}

impl MeteringBook {
    /// Notes a call's metering so far; written with the next batch, every `every`.
    pub fn report(
        &self,
        store: &DynStore,
        clock: &Arc<dyn Clock>,
        every: Duration,
        call_sid: &str,
        seconds: i64,
    ) {
        {
            let mut pending = self.book.lock();
            let slot = pending.entry(call_sid.to_string()).or_insert(0);
            *slot = (*slot).max(seconds);
        }
        self.flusher.get_or_init(|| {
            let every = every.max(Duration::from_millis(10));
            let book = Arc::downgrade(&self.book);
            tokio::spawn(flush_loop(book, store.clone(), clock.clone(), every));
        });
    }

    /// Signals for the live call `call_sid` on `order_id` (until [`MeteringBook::forget`]).
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

    /// The balance of `order_id` changed: its live call on this instance, if any, reads it
    /// again.
    pub fn order_changed(&self, order_id: &str) {
        for live in self.book.live_calls().values() {
            if live.order_id == order_id {
                live.changed.notify_one();
            }
        }
    }

    /// The call's final figure is written elsewhere: drop any queued one.
    pub fn forget(&self, call_sid: &str) {
        self.book.lock().remove(call_sid);
        self.book.live_calls().remove(call_sid);
    }
}

impl Book {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

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

    fn take(&self) -> Vec<(String, Seconds)> {
        self.lock()
            .drain()
            .map(|(sid, s)| (sid, Seconds(s)))
            .collect()
    }

    /// Puts figures back after a failed write, unless newer ones arrived meanwhile.
    fn restore(&self, figures: Vec<(String, Seconds)>) {
        let mut pending = self.lock();
        for (sid, s) in figures {
            let slot = pending.entry(sid).or_insert(0);
            *slot = (*slot).max(s.0);
        }
    }
}

/// Writes the queued figures every interval, for as long as the book lives.
async fn flush_loop(book: Weak<Book>, store: DynStore, clock: Arc<dyn Clock>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(book) = book.upgrade() else { return };
        let figures = book.take();
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
                tracing::warn!(error = %e, calls = figures.len(), "metering not persisted; will retry");
                book.restore(figures);
            }
        }
    }
}
