//! Instances among several: the word they pass one another (an order changed: its live call,
//! wherever it runs, reads it again), and those that die, with the calls they carried.
//!
//! Every instance beats in the store each [`BEAT`] and sweeps: a call carried by an instance
//! that has been silent for [`SILENT_AFTER_SECS`], or by an earlier run of this one (the same
//! `INSTANCE_NAME`, restarted after a crash), is settled on what was flushed of it, which
//! frees its code at once. The first beat and sweep happen before the instance serves, so a
//! restarted single instance (SQLite) never answers "in use" for a call no process carries.
//!
//! Twilio tells a live instance first: when it reports a call's stream or the call itself
//! over while its bridge has not recorded an end ([`twilio_moved_on`]), the hold is cut to
//! [`BRIDGE_GRACE_SECS`]. A bridge that is alive records its end well within that (its socket
//! closed with the call); the hold of one that died lapses, and the caller's next call
//! settles it and goes through.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::App;
use tracing::Instrument;

use crate::store::{Call, Instance, StoreError, UnixTime};

/// How often an instance beats and sweeps.
pub const BEAT: Duration = Duration::from_secs(1);
/// An instance silent this long is gone: its calls are settled by another.
pub const SILENT_AFTER_SECS: i64 = 4;
/// Once Twilio reports a call over, its bridge has this long to record its end.
pub const BRIDGE_GRACE_SECS: i64 = 2;
/// An instance whose beats have not reached the store for this long stops its own live calls
/// (it fences itself): a second before the others may take it for dead and settle them.
/// The others judge by the store's wall-clock beat times, at whole seconds: silent for more
/// than [`SILENT_AFTER_SECS`] there is at least 4 s here, against at most 3.25 s for this.
pub const CUT_OFF_AFTER: Duration = Duration::from_secs(SILENT_AFTER_SECS as u64 - 1);
/// How often an instance asks itself whether it is cut off.
const FENCE_CHECK: Duration = Duration::from_millis(250);

/// This instance as the store knows it: the app's run id, and `name`.
pub fn instance(app: &App, name: String) -> Instance {
    Instance {
        id: app.instance_id.clone(),
        name,
    }
}

/// The name of an instance listening on `port`: `INSTANCE_NAME`, else this host and the port.
pub fn name(app: &App, port: u16) -> String {
    if let Some(name) = &app.config.instance_name {
        return name.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{port}")
}

/// The first beat and sweep (what an earlier run of this instance carried is settled), then
/// the same every [`BEAT`] in the background, until the task is aborted. Where other
/// instances may share the store, a watch beside the beats fences this one off when they stop
/// landing (see [`CUT_OFF_AFTER`]).
pub async fn start(app: &Arc<App>, me: Instance) -> Background {
    let landed = Arc::new(Landed::new());
    if let Err(e) = beat_and_sweep(app, &me, &landed).await {
        tracing::warn!(error = %e, "first heartbeat not recorded; retrying in the background");
    }
    let app = app.clone();
    Background(Some(tokio::spawn(async move {
        let mut beats = AbortOnDrop(tokio::spawn(beat_loop(app.clone(), me, landed.clone())));
        if app.store.backend() == "sqlite" {
            // One instance: nobody else would settle its calls.
            let _ = (&mut beats.0).await;
        } else {
            fence(&app, &landed).await;
        }
    })))
}

/// When the last beat that the store took was sent, on this machine's monotonic clock (a step
/// of the wall clock must not fence an instance off).
struct Landed {
    base: Instant,
    /// Milliseconds from `base` to the sending of the last beat that landed.
    at_ms: AtomicU64,
}

impl Landed {
    fn new() -> Landed {
        Landed {
            base: Instant::now(),
            at_ms: AtomicU64::new(0),
        }
    }

    fn land(&self, sent: Instant) {
        let ms = sent.saturating_duration_since(self.base).as_millis() as u64;
        self.at_ms.fetch_max(ms, Ordering::AcqRel);
    }

    fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.at_ms.load(Ordering::Acquire));
        self.base.elapsed().saturating_sub(last)
    }
}

/// Aborts the task when dropped (the beats stop with the task that watches them).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A task that writes to the store in the background (the beats, the signals' relay): it
/// stops when dropped, so a server whose future is dropped leaves nothing writing behind it;
/// [`Background::stop`] also waits until it has.
pub struct Background(Option<tokio::task::JoinHandle<()>>);

impl Background {
    /// Stops the task and waits until it is gone: no write of it lands after this.
    pub async fn stop(mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

/// Beats every [`BEAT`]; `landed` is the time of the last beat the store took. A beat that
/// does not land within a beat is given up (a store that hangs must not stop the clock), and
/// so is a sweep that takes longer than an instance may stay silent.
async fn beat_loop(app: Arc<App>, me: Instance, landed: Arc<Landed>) {
    let mut ticker = tokio::time::interval(BEAT);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let limit = BEAT * SILENT_AFTER_SECS as u32;
        match tokio::time::timeout(limit, beat_and_sweep(&app, &me, &landed)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "heartbeat not recorded"),
            Err(_) => tracing::warn!("heartbeat or sweep timed out"),
        }
    }
}

/// Stops every live call on this instance once its beats have not landed for
/// [`CUT_OFF_AFTER`]: the others take it for dead a second later and settle its calls on
/// what was flushed, so a call that went on here would be talked for free, its code free for
/// a second call. Ends only with its task.
async fn fence(app: &App, landed: &Landed) {
    let mut ticker = tokio::time::interval(FENCE_CHECK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut fenced = false;
    loop {
        ticker.tick().await;
        let silent = landed.silent_for();
        if silent < CUT_OFF_AFTER {
            fenced = false;
            continue;
        }
        // Every check while silent: calls bridged meanwhile stop too (none should: a bridge
        // writes before it starts). Counted and told once per silence.
        let calls = app.metering.cut_off_all();
        if !fenced {
            fenced = true;
            crate::metrics::CUT_OFF.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                calls,
                silent_ms = silent.as_millis() as u64,
                "cut off from the database: live calls ended before another instance settles them"
            );
        }
    }
}

/// Relays what other instances say changed to this instance's live calls, where the store
/// carries such word (PostgreSQL); `None` where it does not.
pub async fn relay_signals(app: &Arc<App>) -> Option<Background> {
    let mut changes = match app.store.order_changes().await {
        Ok(Some(changes)) => changes,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(error = %e, "no signals from other instances: live calls re-check");
            return None;
        }
    };
    let app = app.clone();
    Some(Background(Some(tokio::spawn(async move {
        while let Some(order_id) = changes.recv().await {
            app.metering.order_changed(&order_id);
        }
    }))))
}

/// One beat (`landed` moves to its time once the store has it), then the calls of gone
/// instances settled; how many were.
async fn beat_and_sweep(app: &App, me: &Instance, landed: &Landed) -> Result<usize, StoreError> {
    let now = app.clock.now();
    let sent = Instant::now();
    tokio::time::timeout(BEAT, app.store.beat(me, now))
        .await
        .map_err(|_| StoreError::Unavailable("heartbeat: the store did not answer".into()))??;
    landed.land(sent);
    let orphaned = app
        .store
        .orphaned_calls(me, now - SILENT_AFTER_SECS)
        .await?;
    for call_sid in &orphaned {
        settle_orphan(app, call_sid, now)
            .instrument(tracing::info_span!("call", call_sid = %call_sid))
            .await?;
    }
    Ok(orphaned.len())
}

async fn settle_orphan(app: &App, call_sid: &str, now: UnixTime) -> Result<(), StoreError> {
    tracing::warn!("its instance is gone: settling the call on what was flushed");
    app.store.cap_hold(call_sid, now - 1).await?;
    crate::metrics::ORPHANED_CALLS.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = crate::settlement::settle(app, call_sid).await {
        tracing::warn!(error = %e, "settlement deferred to the billing worker");
    }
    Ok(())
}

/// The instance stops, its calls drained: it is forgotten, and anything it still carried is
/// settled by the next sweep of another instance (or of its own next run).
pub async fn stopped(app: &App) {
    if let Err(e) = app.store.instance_stopped(&app.instance_id).await {
        tracing::warn!(error = %e, "the instance's record not removed; it lapses");
    }
}

/// Twilio reports `call`'s stream or the call itself over: a bridge that has not recorded
/// its end has [`BRIDGE_GRACE_SECS`] to do so before its hold lapses.
pub async fn twilio_moved_on(app: &App, call: &Call) -> Result<(), StoreError> {
    if call.bridged_at.is_none() || call.bridge_ended_at.is_some() || call.settled_at.is_some() {
        return Ok(());
    }
    let until = app.clock.now() + BRIDGE_GRACE_SECS;
    if app.store.cap_hold(&call.call_sid, until).await? {
        tracing::info!(
            grace = BRIDGE_GRACE_SECS,
            "Twilio moved on while the bridge has not ended: its hold is cut short"
        );
    }
    Ok(())
}
