//! Shutting down without cutting callers off: stop taking calls, let live ones finish up to
//! a deadline, then end the rest politely with their minutes metered.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// How long HTTP keeps serving after ending calls, for Twilio's closing-TwiML requests.
const CLOSING_WORDS: Duration = Duration::from_secs(3);

#[derive(Debug)]
pub struct Lifecycle {
    draining: AtomicBool,
    live: AtomicI64,
    stop_calls: watch::Sender<bool>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            draining: AtomicBool::new(false),
            live: AtomicI64::new(0),
            stop_calls: watch::channel(false).0,
        }
    }
}

/// Counts a bridged call while it lives.
pub struct LiveCall<'a>(&'a Lifecycle);

impl Drop for LiveCall<'_> {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Lifecycle {
    /// New calls are refused and readiness fails, so a load balancer moves traffic away.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn live_calls(&self) -> i64 {
        self.live.load(Ordering::SeqCst)
    }

    pub fn enter_call(&self) -> LiveCall<'_> {
        self.live.fetch_add(1, Ordering::SeqCst);
        LiveCall(self)
    }

    /// Resolves when live calls must end now.
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop_calls.subscribe()
    }

    /// Drains: refuses new calls, waits up to `grace` for live calls to end, then ends the
    /// rest and waits (briefly) for them to record their metering.
    pub async fn drain(&self, grace: Duration) {
        self.draining.store(true, Ordering::SeqCst);
        tracing::info!(live = self.live_calls(), ?grace, "draining: no new calls");
        let step = Duration::from_millis(100);
        let mut waited = Duration::ZERO;
        while self.live_calls() > 0 && waited < grace {
            tokio::time::sleep(step).await;
            waited += step;
        }
        if self.live_calls() > 0 {
            tracing::warn!(
                live = self.live_calls(),
                "grace period over: ending live calls"
            );
            let _ = self.stop_calls.send(true);
            let mut waited = Duration::ZERO;
            while self.live_calls() > 0 && waited < Duration::from_secs(5) {
                tokio::time::sleep(step).await;
                waited += step;
            }
            // Twilio now fetches the closing words (the TwiML after <Connect>): serve them.
            tokio::time::sleep(CLOSING_WORDS).await;
        }
    }
}
