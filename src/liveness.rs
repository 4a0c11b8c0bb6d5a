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

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use tracing::Instrument;

use crate::store::{Call, Instance, StoreError, UnixTime};

/// How often an instance beats and sweeps.
pub const BEAT: Duration = Duration::from_secs(1);
/// An instance silent this long is gone: its calls are settled by another.
pub const SILENT_AFTER_SECS: i64 = 4;
/// Once Twilio reports a call over, its bridge has this long to record its end.
pub const BRIDGE_GRACE_SECS: i64 = 2;

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
/// the same every [`BEAT`] in the background, until the task is aborted.
pub async fn start(app: &Arc<App>, me: Instance) -> tokio::task::JoinHandle<()> {
    if let Err(e) = beat_and_sweep(app, &me).await {
        tracing::warn!(error = %e, "first heartbeat not recorded; retrying in the background");
    }
    let app = app.clone();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(BEAT);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            if let Err(e) = beat_and_sweep(&app, &me).await {
                tracing::warn!(error = %e, "heartbeat not recorded");
            }
        }
    })
}

/// Relays what other instances say changed to this instance's live calls, where the store
/// carries such word (PostgreSQL); `None` where it does not.
pub async fn relay_signals(app: &Arc<App>) -> Option<tokio::task::JoinHandle<()>> {
    let mut changes = match app.store.order_changes().await {
        Ok(Some(changes)) => changes,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(error = %e, "no signals from other instances: live calls re-check");
            return None;
        }
    };
    let app = app.clone();
    Some(tokio::spawn(async move {
        while let Some(order_id) = changes.recv().await {
            app.metering.order_changed(&order_id);
        }
    }))
}

/// One beat, then the calls of gone instances settled; how many were.
pub async fn beat_and_sweep(app: &App, me: &Instance) -> Result<usize, StoreError> {
    let now = app.clock.now();
    app.store.beat(me, now).await?;
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
    crate::metrics::ORPHANED_CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
