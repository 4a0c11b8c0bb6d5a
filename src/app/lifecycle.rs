//! Shutting down without cutting callers off: stop taking calls, let live ones finish up to
//! a deadline, then end the rest politely with their minutes metered.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// How long HTTP keeps serving after ending calls, for Twilio's closing-TwiML requests.
const CLOSING_WORDS: Duration = Duration::from_secs(3);

#[derive(Debug)]
pub struct Lifecycle {
    /// Readiness fails: the shutdown began.
    leaving: AtomicBool,
    draining: AtomicBool,
    live: AtomicI64,
    stop_calls: watch::Sender<bool>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            leaving: AtomicBool::new(false),
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
    /// Readiness fails, so a load balancer moves traffic away: the shutdown has begun.
    pub fn leaving(&self) -> bool {
        self.leaving.load(Ordering::SeqCst)
    }

    /// New calls are refused (after the hand-over that lets the balancer move them).
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

    /// Drains: readiness fails at once; for `handover` new calls are still taken (a load
    /// balancer has not yet seen the failed check, and refusing them would refuse calls
    /// another instance would take); then new calls are refused, live calls have up to
    /// `grace` to end, and the rest are ended and wait (briefly) to record their metering.
    pub async fn drain(&self, handover: Duration, grace: Duration) {
        self.leaving.store(true, Ordering::SeqCst);
        if !handover.is_zero() {
            tracing::info!(
                ?handover,
                "leaving: readiness fails; new calls still taken meanwhile"
            );
            tokio::time::sleep(handover).await;
        }
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
