//! How a conversation ends without cutting anyone off: once callgate has decided the call
//! ends (time up, shutdown, revocation, an operator's stop, the agent's own `end_call`), the
//! caller stops being heard by the agent, the agent's audio still on its way is passed on,
//! and the stream ends once Twilio says all of it has been played (its `mark` echo), bounded
//! by [`BridgeSettings::finish_limit`](crate::config::BridgeSettings). The closing words
//! then follow in the TwiML after the stream.
//!
//! These seconds are not metered: the call's length was fixed when the end was decided.

use std::time::Duration;

use axum::extract::ws::{Message as TwMessage, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as AgMessage;

use super::handshake::AgentSocket;
use crate::telephony::audio::{self, AgentFormat, Base64Audio};
use crate::telephony::elevenlabs::{self, AgentEvent};
use crate::telephony::twilio::stream::{self as tw, MediaWriter, StreamEvent};

/// The prefix of the marks sent while the agent finishes: `speech:<n>`, counting up.
const MARK_PREFIX: &str = "speech:";

/// The agent audio of one `audio` event as a Twilio media frame: passed through when the
/// agent speaks μ-law 8 kHz, else converted; `None` when it is not base64 (the caller's line
/// gets nothing else).
pub(super) fn phone_frame(
    writer: &MediaWriter,
    passthrough: bool,
    agent_out: AgentFormat,
    audio: &str,
    scratch: &mut Vec<u8>,
) -> Option<String> {
    let (checked, bytes) = Base64Audio::decode(audio, scratch)?;
    Some(if passthrough {
        writer.media(checked)
    } else {
        let mut encoded = String::new();
        writer.media(Base64Audio::encode(
            &audio::to_phone(bytes, agent_out),
            &mut encoded,
        ))
    })
}

/// What the finish has to work with: both sockets, as the socket loop left them.
pub(super) struct Finish<'a> {
    pub twilio: &'a mut WebSocket,
    /// `None` when the agent's socket is already gone (its audio sent so far still plays).
    pub agent: Option<&'a mut AgentSocket>,
    pub stream_sid: &'a str,
    pub writer: &'a MediaWriter,
    pub passthrough: bool,
    pub agent_out: AgentFormat,
    /// Audio of events up to this one was cut off by the caller: never played.
    pub last_interruption: i64,
    /// The longest the finish may take.
    pub limit: Duration,
    /// How long the agent must stay quiet, once all it said was played, to be done.
    pub quiet: Duration,
}

/// How the finish ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Finished {
    /// Everything the agent said was played, and it said nothing more.
    Played,
    /// The bound ran out first.
    TimedOut,
    /// The caller hung up meanwhile: nothing more is sent to Twilio.
    CallerHungUp,
}

/// Lets the agent finish what it is saying, then returns (see the module's comment).
pub(super) async fn let_agent_finish(f: Finish<'_>) -> Finished {
    let Finish {
        twilio,
        mut agent,
        stream_sid,
        writer,
        passthrough,
        agent_out,
        mut last_interruption,
        limit,
        quiet,
    } = f;
    let deadline = Instant::now() + limit;
    let mut scratch = Vec::new();
    let mut sent: u64 = 1;
    let mut played: u64 = 0;
    let mut played_at = Instant::now();
    if send_mark(twilio, stream_sid, sent).await.is_err() {
        return Finished::CallerHungUp;
    }
    loop {
        let wake = if played == sent {
            (played_at + quiet).min(deadline)
        } else {
            deadline
        };
        let agent_next = async {
            match agent.as_mut() {
                Some(a) => a.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {
                return if played == sent { Finished::Played } else { Finished::TimedOut };
            }
            msg = twilio.next() => match msg {
                Some(Ok(TwMessage::Text(text))) => match tw::parse(&text) {
                    Ok(StreamEvent::Mark { name }) => {
                        if let Some(n) = name.strip_prefix(MARK_PREFIX).and_then(|n| n.parse::<u64>().ok()) {
                            if n > played {
                                played = n.min(sent);
                                played_at = Instant::now();
                            }
                        }
                    }
                    Ok(StreamEvent::Stop) => return Finished::CallerHungUp,
                    // The caller is no longer heard: their audio and keys are dropped.
                    _ => {}
                },
                Some(Ok(TwMessage::Close(_))) | None | Some(Err(_)) => return Finished::CallerHungUp,
                Some(Ok(_)) => {}
            },
            msg = agent_next => {
                let text = match msg {
                    Some(Ok(AgMessage::Text(t))) => t,
                    Some(Ok(AgMessage::Close(_))) | None | Some(Err(_)) => {
                        // Gone: what it sent still plays, and is waited for.
                        agent = None;
                        continue;
                    }
                    Some(Ok(_)) => continue,
                };
                match elevenlabs::parse(&text) {
                    Ok(AgentEvent::Audio { event_id, audio }) if event_id > last_interruption => {
                        let Some(frame) = phone_frame(writer, passthrough, agent_out, &audio, &mut scratch) else {
                            continue;
                        };
                        sent += 1;
                        if twilio.send(TwMessage::text(frame)).await.is_err()
                            || send_mark(twilio, stream_sid, sent).await.is_err()
                        {
                            return Finished::CallerHungUp;
                        }
                    }
                    Ok(AgentEvent::Interruption { event_id }) => {
                        last_interruption = last_interruption.max(event_id);
                        if twilio.send(TwMessage::text(tw::clear(stream_sid))).await.is_err() {
                            return Finished::CallerHungUp;
                        }
                    }
                    Ok(AgentEvent::Ping { event_id, .. }) => {
                        if let Some(a) = agent.as_mut() {
                            let _ = a.send(AgMessage::text(elevenlabs::pong(event_id))).await;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

async fn send_mark(twilio: &mut WebSocket, stream_sid: &str, n: u64) -> Result<(), axum::Error> {
    let name = format!("{MARK_PREFIX}{n}");
    twilio
        .send(TwMessage::text(tw::mark(stream_sid, &name)))
        .await
}
