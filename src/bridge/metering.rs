//! Metering persistence for every live call at once: each bridge reports its running figure
//! here, and one task writes all of them in a single transaction per interval. A thousand calls
//! cost one database write an interval instead of a thousand competing ones (SQLite has one
//! writer at a time). The final figure of a call is written by its bridge directly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::money::Seconds;
use crate::App;

#[derive(Default)]
pub struct MeteringBook {
    pending: Mutex<HashMap<String, i64>>,
    flusher: std::sync::OnceLock<()>,
}

impl MeteringBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes a call's metering so far; written with the next batch.
    pub fn report(&self, app: &Arc<App>, call_sid: &str, seconds: i64) {
        {
            let mut pending = self.lock();
            let slot = pending.entry(call_sid.to_string()).or_insert(0);
            *slot = (*slot).max(seconds);
        }
        self.flusher.get_or_init(|| {
            let every = (app.bridge.tick * app.bridge.persist_every_secs.max(1) as u32)
                .max(Duration::from_millis(10));
            tokio::spawn(flush_loop(Arc::downgrade(app), every));
        });
    }

    /// The call's final figure is written elsewhere: drop any queued one.
    pub fn forget(&self, call_sid: &str) {
        self.lock().remove(call_sid);
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

/// Writes the queued figures every interval, for as long as the app lives.
async fn flush_loop(app: Weak<App>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(app) = app.upgrade() else { return };
        let figures = app.metering.take();
        if figures.is_empty() {
            continue;
        }
        if let Err(e) = app
            .store
            .record_metering_many(&figures, app.clock.now())
            .await
        {
            tracing::warn!(error = %e, calls = figures.len(), "metering not persisted; will retry");
            app.metering.restore(figures);
        }
    }
}
