//! One bridged call, from Twilio's `start` to the last frame: the hot path.
//!
//! Everything a call owns (both sockets, the metering persister, the transcript buffer)
//! lives in this function's frame or in a task joined before it returns, so nothing outlives
//! the call. Frames are forwarded as they arrive; database writes happen off the loop.

use std::time::Instant;

use axum::extract::ws::{Message as TwMessage, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as AgMessage;
use tracing::Instrument;

use super::allowance::{Allowance, Limits, Tick};
use super::announce;
use super::ending;
use super::handshake;
use super::keys::{KeyAction, Keys};
use super::purchase;
use crate::domain::call::{stream_refusal, waived_after_agent_failure, StreamRefusal};
use crate::domain::money::Seconds;
use crate::domain::prompt::Prompt;
use crate::metrics::{ACTIVE_CALLS, FRAMES, FRAME_LATENCY};
use crate::orders::top_up::{self, InCall};
use crate::store::{Call, EndReason, Order, Speaker, StreamOpening, StreamToken, TranscriptLine};
use crate::telemetry::call_span;
use crate::telephony::audio::{self, AgentFormat, Base64Audio};
use crate::telephony::elevenlabs::{self, AgentEvent};
use crate::telephony::twilio::stream::{self as tw, StreamEvent};
use crate::write_behind::metering::LiveCall;
use crate::App;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::task::JoinHandle;
/// Malformed Twilio frames tolerated before the stream is dropped.
const MAX_BAD_FRAMES: u32 = 50;
/// Longest media payload taken from Twilio, in base64 characters (1 KiB of audio; a 20 ms
/// frame is 216).
const MAX_TWILIO_PAYLOAD: usize = 1364;
/// Transcript lines kept per call; a runaway agent cannot grow memory without bound.
const MAX_TRANSCRIPT_LINES: i64 = 2000;
/// How long a call's end waits for the outcome of a top-up the caller confirmed.
const TOP_UP_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Entry point from the WebSocket upgrade. Each socket stays whole (not split into halves
/// behind a lock): the one loop below reads and writes both.
pub async fn run(app: Arc<App>, mut twilio: WebSocket) {
    let started = tokio::time::timeout(app.bridge.setup_timeout, wait_for_start(&mut twilio)).await;
    let Ok(Some((stream_sid, call_sid, params))) = started else {
        tracing::warn!("media stream closed: no valid start event");
        let _ = twilio.send(TwMessage::Close(None)).await;
        return;
    };
    let span = call_span(&call_sid);
    async move {
        // The token must be the one issued to this very call, unused and fresh.
        let token = params.get("token").map(String::as_str).unwrap_or_default();
        let bound = params.get("call_sid").map(String::as_str) == Some(call_sid.as_str());
        let opening = if bound && !token.is_empty() {
            app.store
                .consume_stream_token(&StreamToken::hash_of(token), &call_sid, app.clock.now())
                .await
                .unwrap_or_else(|e| {
                    tracing::error!(error = %e, "cannot check the stream token");
                    None
                })
        } else {
            None
        };
        let Some(StreamOpening { grant, call, order }) = opening else {
            tracing::warn!("media stream refused: bad, reused or expired token");
            let _ = twilio.send(TwMessage::Close(None)).await;
            return;
        };
        tracing::Span::current().record("order_id", grant.order_id.as_str());
        // Decided before the agent is opened: an ended call, or a code no longer usable, never
        // reaches ElevenLabs (a paid conversation, the caller's number sent).
        match (stream_refusal(call.as_ref(), order.as_ref()), call, order) {
            (None, Some(call), Some(order)) => {
                let _live = app.lifecycle.enter_call();
                ACTIVE_CALLS.fetch_add(1, Ordering::Relaxed);
                bridge(&app, call, order, stream_sid, twilio).await;
                ACTIVE_CALLS.fetch_sub(1, Ordering::Relaxed);
            }
            (Some(StreamRefusal::CodeUnusable(reason)), _, _) => {
                tracing::warn!(%reason, "media stream refused: the code is no longer usable");
                finish(&app, &call_sid, Seconds(0), reason).await;
                close_twilio(&mut twilio).await;
            }
            _ => {
                tracing::warn!("media stream refused: the call is over");
                close_twilio(&mut twilio).await;
            }
        }
    }
    .instrument(span)
    .await
}

type Start = (String, String, std::collections::HashMap<String, String>);

async fn wait_for_start(rx: &mut WebSocket) -> Option<Start> {
    while let Some(Ok(msg)) = rx.next().await {
        match msg {
            TwMessage::Text(text) => match tw::parse(&text) {
                Ok(StreamEvent::Connected) => continue,
                Ok(StreamEvent::Start {
                    stream_sid,
                    call_sid,
                    parameters,
                }) => return Some((stream_sid, call_sid, parameters)),
                _ => return None,
            },
            TwMessage::Close(_) => return None,
            _ => return None,
        }
    }
    None
}

/// Stores transcript lines off the hot loop; returns when the channel closes.
async fn transcript_writer(
    app: Arc<App>,
    call_sid: String,
    mut lines: mpsc::Receiver<TranscriptLine>,
) {
    while let Some(line) = lines.recv().await {
        if let Err(e) = app.store.append_transcript(&call_sid, &[line]).await {
            tracing::warn!(error = %e, "transcript line not stored");
        }
    }
}

/// How long a call ended by a lost store waits for each of its last records.
const CUT_OFF_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

async fn close_twilio(tw_tx: &mut WebSocket) {
    let _ = tw_tx.send(TwMessage::Close(None)).await;
}

/// The agent could not be used: record why (the closing TwiML apologises), settle the call
/// (nothing metered; the code is free again) and release Twilio.
async fn agent_failed(app: &App, call_sid: &str, tw_tx: &mut WebSocket, kind: Option<&str>) {
    if let Some(kind) = kind {
        crate::metrics::AGENT_ERRORS.add(kind);
    }
    finish(app, call_sid, Seconds(0), EndReason::AgentFailed).await;
    close_twilio(tw_tx).await;
}

/// Records the bridge's end and settles the call at once: its metered seconds are debited in
/// the same step that frees the code, so a redial sees what this call used. Should either
/// write fail, the hold lapses with the heartbeat and the billing pass settles what was
/// metered.
async fn finish(app: &App, call_sid: &str, seconds: Seconds, reason: EndReason) {
    if let Err(e) = app
        .store
        .bridge_finished(call_sid, seconds, reason, app.clock.now())
        .await
    {
        tracing::error!(error = %e, "final metering not stored; the last persisted figure stands");
        return;
    }
    if let Err(e) = crate::settlement::settle(app, call_sid).await {
        tracing::warn!(error = %e, "settlement deferred to the billing worker");
    }
}

async fn bridge(
    app: &Arc<App>,
    call: Call,
    order: Order,
    stream_sid: String,
    mut twilio: WebSocket,
) {
    let limits = Limits::for_order(&order, app.config.voice.max_call_minutes);
    // What the agent knows of the caller as it opens: time left, an earlier call, its summary.
    let vars = crate::memory::opening_variables(app, &call, &order, limits.overage).await;
    let Call { call_sid, .. } = call;

    // Open the agent and agree on formats; any failure ends the call with an apology.
    // Boxed: the handshake's state (TLS, the upgrade, the signed URL) is the largest of any
    // step; inline, every live call's task would keep its room (about 11 KiB) for the
    // whole call. Boxed, it is allocated for the handshake and freed after.
    let conversation = match Box::pin(handshake::open(app, &vars)).await {
        Ok(c) => c,
        Err(failed) => return agent_failed(app, &call_sid, &mut twilio, failed.kind).await,
    };
    let passthrough = conversation.passthrough();
    let (agent_out, agent_in) = (conversation.output, conversation.input);
    let conversation_id = conversation.conversation_id;
    let mut agent = conversation.socket;
    let now = app.clock.now();
    let hold_until = now + crate::domain::ledger::HOLD_LEASE_SECS;
    match app
        .store
        .bridge_started(
            &call_sid,
            conversation_id.as_deref(),
            hold_until,
            now,
            &app.instance_id,
        )
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(
                "call ended, settled or lost its code before the bridge came up: not bridged"
            );
            let _ = agent.send(AgMessage::Close(None)).await;
            return agent_failed(app, &call_sid, &mut twilio, None).await;
        }
        Err(e) => {
            tracing::error!(error = %e, "bridge start not recorded: not bridged");
            let _ = agent.send(AgMessage::Close(None)).await;
            return agent_failed(app, &call_sid, &mut twilio, None).await;
        }
    }
    let live = app.metering.watch(&call_sid, &order.id);
    // The order's included time, read again when this instance changes it and every
    // `balance_recheck` (a change made on another instance).
    let (included_tx, included) = tokio::sync::watch::channel(limits.included);
    let watcher = tokio::spawn(purchase::watch_balance(
        app.clone(),
        order.id.clone(),
        order.seconds_used,
        live.clone(),
        included_tx,
    ));
    tracing::info!(
        included = limits.included,
        overage = limits.overage,
        max = limits.max,
        "call bridged to the agent"
    );

    let (lines_tx, lines_rx) = mpsc::channel::<TranscriptLine>(64);
    let transcript = tokio::spawn(transcript_writer(app.clone(), call_sid.clone(), lines_rx));

    let can_top_up = top_up::in_call_possible(app, &order);
    let Pumped {
        reason,
        agent_closed,
        elapsed,
        heard_at,
        buying,
    } = pump(Pump {
        app,
        twilio: &mut twilio,
        agent: &mut agent,
        stream_sid: &stream_sid,
        order: &order,
        can_top_up,
        passthrough,
        agent_in,
        agent_out,
        limits,
        live: &live,
        included,
        call_sid: &call_sid,
        lines: &lines_tx,
    })
    .await;

    // Close the agent first (it must not keep talking), record, then release Twilio so its
    // next TwiML (the closing words) can read why the call ended. Cut off from the store,
    // Twilio is released at once (its next request goes to an instance that can answer) and
    // the records are tried within a bound.
    let cut_off = live.is_cut_off();
    if cut_off {
        close_twilio(&mut twilio).await;
    }
    if !agent_closed {
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            agent.send(AgMessage::Close(None)),
        )
        .await;
    }
    drop(agent);
    drop(lines_tx);
    if cut_off {
        let _ = tokio::time::timeout(CUT_OFF_WAIT, transcript).await;
    } else {
        let _ = transcript.await;
    }
    watcher.abort();
    // A top-up confirmed with the keys belongs to this call: its outcome is awaited (bounded)
    // so the call is settled on the minutes it bought. Past the bound it goes on by itself,
    // and its webhook credits it.
    if let Some(buying) = buying {
        if tokio::time::timeout(TOP_UP_WAIT, buying).await.is_err() {
            tracing::warn!(
                "in-call top-up still running at the call's end; its webhook credits it"
            );
        }
    }
    app.metering.forget(&call_sid);
    if reason == EndReason::AgentFailed {
        // Fair billing of a broken call: given back before it is settled.
        let free = app.config.voice.free_failure_secs;
        let waived = waived_after_agent_failure(elapsed, heard_at, free);
        tracing::info!(
            elapsed,
            heard_at,
            waived,
            "the agent failed: seconds waived"
        );
        if let Err(e) = crate::orders::ledger::waive(app, &order, &call_sid, Seconds(waived)).await
        {
            tracing::error!(error = %e, "waiver not recorded");
        }
    }
    let seconds = Seconds(elapsed);
    if cut_off {
        if tokio::time::timeout(CUT_OFF_WAIT, finish(app, &call_sid, seconds, reason))
            .await
            .is_err()
        {
            tracing::warn!("final metering not stored: the store is out of reach");
        }
        return;
    }
    finish(app, &call_sid, seconds, reason).await;
    tracing::info!(
        seconds = seconds.0,
        reason = reason.as_str(),
        "bridge ended"
    );
    if reason != EndReason::CallerHungUp {
        close_twilio(&mut twilio).await;
    }
}

/// What the socket loop works with: both sockets, the call's facts, and where metering and
/// transcript lines go.
struct Pump<'a> {
    app: &'a Arc<App>,
    twilio: &'a mut WebSocket,
    agent: &'a mut handshake::AgentSocket,
    stream_sid: &'a str,
    order: &'a Order,
    /// Whether `#` buys a top-up on the saved card.
    can_top_up: bool,
    passthrough: bool,
    agent_in: AgentFormat,
    agent_out: AgentFormat,
    limits: Limits,
    live: &'a LiveCall,
    /// The order's included seconds for this call, as they now stand.
    included: tokio::sync::watch::Receiver<i64>,
    call_sid: &'a str,
    lines: &'a mpsc::Sender<TranscriptLine>,
}

/// How the socket loop ended.
struct Pumped {
    reason: EndReason,
    /// Whether the agent's socket is already gone.
    agent_closed: bool,
    /// Seconds metered.
    elapsed: i64,
    /// Metered seconds when the agent was last heard.
    heard_at: i64,
    /// A top-up the caller confirmed whose outcome had not come yet.
    buying: Option<JoinHandle<InCall>>,
}

/// The socket loop: frames both ways as they arrive, the allowance ticked each second, keys
/// read, until a reason to end.
async fn pump(p: Pump<'_>) -> Pumped {
    let mut stop = p.app.lifecycle.stop_signal();
    // A call bridged after the stop was given ends at once.
    stop.mark_changed();
    // The two reasons to stop from outside, each one future for the whole call (made anew
    // on every frame they would register and unregister a waiter each time).
    let shutdown = async move {
        while stop.changed().await.is_ok() {
            if *stop.borrow() {
                return;
            }
        }
    };
    tokio::pin!(shutdown);
    let halted = p.live.stop.notified();
    let mut included = p.included;
    tokio::pin!(halted);
    // The frames of this call, written and checked in place.
    let writer = tw::MediaWriter::new(p.stream_sid);
    let mut scratch = Vec::new();
    let mut ticker = tokio::time::interval(p.app.bridge.tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut metering = false;
    let mut allowance = Allowance::new(p.limits, p.app.bridge.warn_before_secs);
    let mut last_interruption: i64 = -1;
    let mut bad_frames = 0u32;
    let mut seq: i64 = 0;
    let mut agent_closed = false;
    let silence = p.app.bridge.agent_silence;
    let mut last_heard = Instant::now();
    let mut liveness = tokio::time::interval(silence / 4);
    liveness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    liveness.tick().await;
    let mut last_check = Instant::now();
    let began = Instant::now();
    let mut keys = Keys::new(p.can_top_up, p.app.config.voice.operator_number.is_some());
    let mut buying: Option<JoinHandle<InCall>> = None;
    let mut heard_at: i64 = 0;
    let pack = top_up::in_call_pack(p.app);

    let reason = loop {
        tokio::select! {
            msg = p.twilio.next() => {
                let text = match msg {
                    Some(Ok(TwMessage::Text(t))) => t,
                    Some(Ok(TwMessage::Binary(_))) => {
                        bad_frames += 1;
                        tracing::warn!("binary frame from Twilio ignored");
                        if bad_frames > MAX_BAD_FRAMES { break EndReason::CallerHungUp; }
                        continue;
                    }
                    Some(Ok(TwMessage::Ping(_) | TwMessage::Pong(_))) => continue,
                    Some(Ok(TwMessage::Close(_))) | None | Some(Err(_)) => break EndReason::CallerHungUp,
                };
                let received = Instant::now();
                match tw::parse(&text) {
                    Ok(StreamEvent::Media { track, payload }) if track.starts_with("inbound") => {
                        metering = true;
                        // Even passed through, a payload must be base64 of a sane size.
                        let decoded = (payload.len() <= MAX_TWILIO_PAYLOAD)
                            .then(|| Base64Audio::decode(&payload, &mut scratch))
                            .flatten();
                        let Some((checked, ulaw)) = decoded else {
                            bad_frames += 1;
                            tracing::warn!("media frame with bad base64 dropped");
                            if bad_frames > MAX_BAD_FRAMES { break EndReason::CallerHungUp; }
                            continue;
                        };
                        let chunk = if p.passthrough {
                            elevenlabs::user_audio(checked)
                        } else {
                            let mut encoded = String::new();
                            elevenlabs::user_audio(Base64Audio::encode(&audio::from_phone(ulaw, p.agent_in), &mut encoded))
                        };
                        // A hung agent that stops reading must not stall the call.
                        match tokio::time::timeout(silence, p.agent.send(AgMessage::text(chunk))).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => {
                                crate::metrics::AGENT_ERRORS.add("dropped");
                                agent_closed = true;
                                break EndReason::AgentFailed;
                            }
                            Err(_) => {
                                tracing::warn!("the agent stopped taking audio");
                                crate::metrics::AGENT_ERRORS.add("stalled");
                                agent_closed = true;
                                break EndReason::AgentFailed;
                            }
                        }
                        FRAME_LATENCY.record(received.elapsed());
                        FRAMES.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(StreamEvent::Stop) => break EndReason::CallerHungUp,
                    Ok(StreamEvent::Media { .. } | StreamEvent::Mark { .. } | StreamEvent::Connected) => {}
                    Ok(StreamEvent::Dtmf { digit }) => {
                        let key = digit.chars().next().filter(|_| digit.chars().count() == 1);
                        match key.map(|k| keys.press(k, began.elapsed().as_secs())) {
                            Some(KeyAction::AskToConfirm) => {
                                if announce::play(p.app, p.twilio, p.stream_sid, &[Prompt::TopUpConfirm]).await.is_err() {
                                    break EndReason::CallerHungUp;
                                }
                            }
                            Some(KeyAction::Buy { nth }) => {
                                tracing::info!(nth, "the caller confirmed a top-up");
                                buying = Some(purchase::start(p.app, &p.order.id, p.call_sid, nth));
                            }
                            Some(KeyAction::Transfer) => {
                                tracing::info!("the caller asked for a person: the conversation ends");
                                break EndReason::Transferred;
                            }
                            Some(KeyAction::TellTime) => {
                                let (parts, mark, words) = announce::time_left(p.app, p.order, allowance.included_left(), allowance.in_paid_time());
                                let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
                                if announce::play_audio(p.twilio, p.stream_sid, &parts, mark).await.is_err() {
                                    break EndReason::CallerHungUp;
                                }
                                let _ = p.agent.send(AgMessage::text(elevenlabs::time_update(&words))).await;
                            }
                            Some(KeyAction::Ignore) | None => tracing::debug!("key not used during the call"),
                        }
                    }
                    Ok(StreamEvent::Start { .. }) => tracing::warn!("second start event ignored"),
                    Ok(StreamEvent::Other(kind)) => tracing::debug!(%kind, "unknown Twilio event ignored"),
                    Err(e) => {
                        bad_frames += 1;
                        tracing::warn!(error = %e, "malformed Twilio frame ignored");
                        if bad_frames > MAX_BAD_FRAMES { break EndReason::CallerHungUp; }
                    }
                }
            }
            msg = p.agent.next() => {
                let received = Instant::now();
                last_heard = received;
                heard_at = allowance.elapsed();
                let text = match msg {
                    Some(Ok(AgMessage::Text(t))) => t,
                    // A normal close is how ElevenLabs ends a conversation its agent ended.
                    Some(Ok(AgMessage::Close(Some(frame)))) if frame.code == CloseCode::Normal => {
                        tracing::info!("the agent closed the conversation");
                        agent_closed = true;
                        break EndReason::AgentEnded;
                    }
                    Some(Ok(AgMessage::Close(_))) | None | Some(Err(_)) => {
                        tracing::warn!("agent socket closed mid-call");
                        crate::metrics::AGENT_ERRORS.add("dropped");
                        agent_closed = true;
                        break EndReason::AgentFailed;
                    }
                    Some(Ok(_)) => continue,
                };
                match elevenlabs::parse(&text) {
                    Ok(AgentEvent::Audio { event_id, audio }) => {
                        // Audio older than the last interruption was cut off by the caller.
                        if event_id <= last_interruption { continue; }
                        metering = true;
                        let Some(frame) = ending::phone_frame(&writer, p.passthrough, p.agent_out, &audio, &mut scratch) else {
                            tracing::warn!("agent audio that is not base64 dropped");
                            continue;
                        };
                        if p.twilio.send(TwMessage::text(frame)).await.is_err() {
                            break EndReason::CallerHungUp;
                        }
                        FRAME_LATENCY.record(received.elapsed());
                        FRAMES.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(AgentEvent::Interruption { event_id }) => {
                        last_interruption = last_interruption.max(event_id);
                        if p.twilio.send(TwMessage::text(tw::clear(p.stream_sid))).await.is_err() {
                            break EndReason::CallerHungUp;
                        }
                    }
                    Ok(AgentEvent::Ping { event_id, .. }) => {
                        if p.agent.send(AgMessage::text(elevenlabs::pong(event_id))).await.is_err() {
                            agent_closed = true;
                            break EndReason::AgentFailed;
                        }
                    }
                    Ok(AgentEvent::AgentResponse(text)) | Ok(AgentEvent::UserTranscript(text)) if seq >= MAX_TRANSCRIPT_LINES => {
                        let _ = text;
                    }
                    Ok(AgentEvent::AgentResponse(text)) => {
                        seq += 1;
                        let _ = p.lines.try_send(TranscriptLine { seq, speaker: Speaker::Agent, text, at: p.app.clock.now() });
                    }
                    Ok(AgentEvent::UserTranscript(text)) => {
                        seq += 1;
                        let _ = p.lines.try_send(TranscriptLine { seq, speaker: Speaker::Caller, text, at: p.app.clock.now() });
                    }
                    Ok(AgentEvent::ToolResponse { tool_name }) if tool_name == elevenlabs::END_CALL_TOOL => {
                        tracing::info!("the agent ended the conversation");
                        break EndReason::AgentEnded;
                    }
                    Ok(AgentEvent::ToolResponse { tool_name }) => tracing::debug!(%tool_name, "agent tool ran"),
                    Ok(AgentEvent::Error(e)) => tracing::warn!(error = %e, "agent reported an error"),
                    Ok(AgentEvent::Metadata { .. } | AgentEvent::Other(_)) => {}
                    Err(e) => tracing::warn!(error = %e, "malformed agent message ignored"),
                }
            }
            _ = liveness.tick() => {
                // A loop held up elsewhere (Twilio reading slowly) could not hear the agent:
                // its silence counts only from now.
                if last_check.elapsed() > silence / 2 {
                    last_heard = Instant::now();
                }
                last_check = Instant::now();
                if last_heard.elapsed() >= silence {
                    tracing::warn!(silent_ms = last_heard.elapsed().as_millis() as u64, "the agent stopped answering");
                    crate::metrics::AGENT_ERRORS.add("stalled");
                    agent_closed = true;
                    break EndReason::AgentFailed;
                }
                // Any WebSocket peer answers a ping with a pong, even a quiet agent.
                if !matches!(tokio::time::timeout(silence / 4, p.agent.send(AgMessage::Ping(Default::default()))).await, Ok(Ok(()))) {
                    crate::metrics::AGENT_ERRORS.add("stalled");
                    agent_closed = true;
                    break EndReason::AgentFailed;
                }
            }
            () = &mut shutdown => break EndReason::Shutdown,
            outcome = async { buying.as_mut().expect("guarded by the branch condition").await }, if buying.is_some() => {
                buying = None;
                let outcome = outcome.unwrap_or(InCall::Unavailable);
                let told = purchase::outcome(outcome, &mut allowance, &mut keys, p.order, pack);
                if allowance.is_over() {
                    tracing::info!("the card failed after the included time: the call ends");
                    break EndReason::TimeUp;
                }
                if let Some(prompt) = told.prompt {
                    if announce::play(p.app, p.twilio, p.stream_sid, &[prompt]).await.is_err() {
                        break EndReason::CallerHungUp;
                    }
                }
                if let Some(context) = told.context {
                    let _ = p.agent.send(AgMessage::text(elevenlabs::time_update(&context))).await;
                }
            }
            Ok(()) = included.changed() => {
                let now = *included.borrow_and_update();
                allowance.set_included(now);
                tracing::info!(included = now, "the call's balance changed");
                if allowance.is_over() {
                    tracing::info!("its balance no longer carries the call: it ends");
                    break EndReason::TimeUp;
                }
            }
            () = &mut halted => {
                if p.live.is_cut_off() {
                    // The store is out of reach: nothing to read, and another instance
                    // settles this call on what was flushed.
                    break EndReason::HoldLost;
                }
                let revoked = !matches!(p.app.store.order(&p.order.id).await, Ok(Some(o)) if o.status == crate::store::OrderStatus::Paid);
                tracing::warn!(revoked, "the call must stop: its order was revoked or its hold is gone");
                break if revoked { EndReason::Revoked } else { EndReason::HoldLost };
            }
            _ = ticker.tick() => {
                // The instance's flush writes this figure with every live call's, each
                // interval, metering or not: the write renews the hold.
                p.live.meter(allowance.elapsed());
                if !metering { continue; }
                match allowance.tick() {
                    Tick::Continue => {}
                    Tick::TimeUp => break EndReason::TimeUp,
                    Tick::Warn { left, then_paid } => {
                        tracing::info!(left, then_paid, "warning the caller: included time nearly used");
                        let offer = keys.can_top_up().then_some(pack);
                        let prompts: &[Prompt] = if offer.is_some() {
                            &[Prompt::OneMinuteLeft, Prompt::TopUpOffer]
                        } else {
                            &[Prompt::OneMinuteLeft]
                        };
                        if announce::play(p.app, p.twilio, p.stream_sid, prompts).await.is_err() {
                            break EndReason::CallerHungUp;
                        }
                        let context = announce::warning(p.order, left, then_paid, offer);
                        let _ = p.agent.send(AgMessage::text(elevenlabs::time_update(&context))).await;
                    }
                    Tick::PaidTime => {
                        tracing::info!("paid time starts");
                        if announce::play(p.app, p.twilio, p.stream_sid, &[Prompt::PaidTime]).await.is_err() {
                            break EndReason::CallerHungUp;
                        }
                        let context = announce::paid_time(p.order);
                        let _ = p.agent.send(AgMessage::text(elevenlabs::time_update(&context))).await;
                    }
                }
            }
        }
    };
    // The call's length is fixed here; what follows lets the agent finish, unmetered.
    let elapsed = allowance.elapsed();
    if reason.lets_agent_finish() {
        let finished = ending::let_agent_finish(ending::Finish {
            twilio: p.twilio,
            agent: (!agent_closed).then_some(p.agent),
            stream_sid: p.stream_sid,
            writer: &writer,
            passthrough: p.passthrough,
            agent_out: p.agent_out,
            last_interruption,
            limit: p.app.bridge.finish_limit,
            quiet: p.app.bridge.finish_quiet,
        })
        .await;
        tracing::info!(?finished, "the agent's last words were let through");
    }
    Pumped {
        reason,
        agent_closed,
        elapsed,
        heard_at,
        buying,
    }
}
