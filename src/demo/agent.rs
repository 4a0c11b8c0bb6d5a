//! The demo's voice agent: speaks the ElevenLabs agent WebSocket protocol, but has no AI.
//! It greets the caller, plays back what the caller said once they pause (so the whole audio
//! path is heard end to end), answers typed messages from the browser phone, and interrupts
//! itself when the caller talks over it (so callgate's barge-in `clear` is exercised).
//!
//! What it says is also published on the [`Hub`], keyed by the caller's number, so the browser
//! phone can show the conversation as text.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use callgate_peers::agent::{Conversation, CONVERSATION_PATH, ULAW_8000};
use tokio::sync::{broadcast, mpsc};

use crate::telephony::audio;

/// One line of the conversation, for the browser phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub caller: String,
    /// "agent" or "caller".
    pub speaker: &'static str,
    pub text: String,
}

/// Connects the browser phone (typed text in, conversation out) to the demo agent's calls.
pub struct Hub {
    typed: Mutex<HashMap<String, mpsc::Sender<String>>>,
    lines: broadcast::Sender<Line>,
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub {
            typed: Mutex::new(HashMap::new()),
            lines: broadcast::channel(256).0,
        })
    }

    /// Sends typed text to the agent talking with `caller`; false if there is none.
    pub fn type_text(&self, caller: &str, text: &str) -> bool {
        let tx = self
            .typed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(caller)
            .cloned();
        tx.is_some_and(|tx| tx.try_send(text.chars().take(500).collect()).is_ok())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Line> {
        self.lines.subscribe()
    }

    fn publish(&self, caller: &str, speaker: &'static str, text: &str) {
        let _ = self.lines.send(Line {
            caller: caller.to_string(),
            speaker,
            text: text.to_string(),
        });
    }
}

/// Serves the agent's WebSocket (`/v1/convai/conversation`) on `listener`.
pub async fn serve(listener: tokio::net::TcpListener, hub: Arc<Hub>) -> std::io::Result<()> {
    let app = Router::new()
        .route(CONVERSATION_PATH, get(upgrade))
        .with_state(hub);
    axum::serve(listener, app).await
}

async fn upgrade(State(hub): State<Arc<Hub>>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| converse(socket, hub))
}

/// μ-law silence and speech: the RMS of 16-bit samples above which a frame counts as speech.
const SPEECH_RMS: f64 = 900.0;
/// Silence after speech that ends the caller's turn.
const TURN_GAP: Duration = Duration::from_millis(700);
/// Longest stretch of the caller's speech kept to play back (20 s of μ-law).
const MAX_TURN_BYTES: usize = 8000 * 20;

fn rms(ulaw: &[u8]) -> f64 {
    if ulaw.is_empty() {
        return 0.0;
    }
    let sum: f64 = ulaw
        .iter()
        .map(|b| {
            let s = audio::ulaw_decode(*b) as f64;
            s * s
        })
        .sum();
    (sum / ulaw.len() as f64).sqrt()
}

/// The demo agent's side of one conversation: the peers' agent protocol, plus the hub.
struct Talk {
    c: Conversation,
    hub: Arc<Hub>,
    caller: String,
    /// When the audio sent so far will have finished playing at the caller's end.
    speaking_until: Instant,
}

impl Talk {
    /// Says `text` (as an `agent_response`) with `sound` as its audio.
    async fn say(&mut self, text: &str, sound: &[u8]) -> bool {
        self.hub.publish(&self.caller, "agent", text);
        if !self.c.agent_response(text).await {
            return false;
        }
        // Audio in chunks of 0.25 s, faster than real time, as the real agent streams it.
        for chunk in sound.chunks(2000) {
            if !self.c.audio_bytes(chunk).await {
                return false;
            }
        }
        let length = Duration::from_millis(sound.len() as u64 / 8);
        self.speaking_until = self.speaking_until.max(Instant::now()) + length;
        true
    }

    async fn heard(&mut self, text: &str) -> bool {
        self.hub.publish(&self.caller, "caller", text);
        self.c.user_transcript(text).await
    }
}

/// A short two-note chime, μ-law: the demo agent's "voice" for text replies.
fn chime() -> Vec<u8> {
    let mut out = Vec::with_capacity(4000);
    for (freq, ms) in [(660.0, 180), (880.0, 220)] {
        let n = 8 * ms;
        for i in 0..n {
            let t = i as f64 / 8000.0;
            let fade = ((n - i) as f64 / n as f64).min(1.0);
            let s = (2.0 * std::f64::consts::PI * freq * t).sin() * 6000.0 * fade;
            out.push(audio::ulaw_encode(s as i16));
        }
    }
    out
}

async fn converse(socket: WebSocket, hub: Arc<Hub>) {
    // The client's initiation data comes first.
    let Some(c) = Conversation::accept(socket).await else {
        return;
    };
    let caller = c
        .variable("caller_number")
        .as_str()
        .unwrap_or("")
        .to_string();
    let minutes = c.variable("minutes_remaining").as_i64().unwrap_or(0);
    let overage = c.variable("overage_enabled").as_bool().unwrap_or(false);
    let (typed_tx, mut typed_rx) = mpsc::channel::<String>(16);
    hub.typed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(caller.clone(), typed_tx);
    let mut c = Talk {
        c,
        hub: hub.clone(),
        caller: caller.clone(),
        speaking_until: Instant::now(),
    };
    let id = format!("conv_demo_{}", crate::crypto::random_hex(8));
    let extra = if overage {
        "You agreed to overage, so the call may run past your allowance."
    } else {
        "The call ends when your allowance does."
    };
    let unit = if minutes == 1 { "minute" } else { "minutes" };
    let greeting = format!(
        "Hello, I am the callgate demo agent. I have no AI: talk and I play you back when you \
         pause, or type and I answer. You have {minutes} {unit} left. {extra}"
    );
    if !c.c.metadata(&id, ULAW_8000).await || !c.say(&greeting, &chime()).await {
        return;
    }
    let mut turn: Vec<u8> = Vec::new();
    let mut last_speech: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            incoming = c.c.recv() => {
                let Some(incoming) = incoming else { break };
                let Some(bytes) = incoming.audio_bytes() else { continue };
                let speaking = rms(&bytes) > SPEECH_RMS;
                if speaking {
                    if turn.is_empty() && Instant::now() < c.speaking_until {
                        // The caller talks over the agent: stop it, as the real agent does.
                        c.speaking_until = Instant::now();
                        if !c.c.interrupt().await {
                            break;
                        }
                    }
                    last_speech = Some(Instant::now());
                }
                if last_speech.is_some() && turn.len() + bytes.len() <= MAX_TURN_BYTES {
                    turn.extend_from_slice(&bytes);
                }
            }
            typed = typed_rx.recv() => {
                let Some(typed) = typed else { continue };
                let reply = format!("You said: \u{201c}{typed}\u{201d}. A real deployment answers with your ElevenLabs agent.");
                if !c.heard(&typed).await || !c.say(&reply, &chime()).await {
                    break;
                }
            }
            _ = tick.tick() => {
                let Some(at) = last_speech else { continue };
                if at.elapsed() < TURN_GAP {
                    continue;
                }
                let secs = turn.len() as f64 / 8000.0;
                let played = std::mem::take(&mut turn);
                last_speech = None;
                if secs < 0.3 {
                    continue;
                }
                let ok = c.heard(&format!("({secs:.1} s of speech)")).await
                    && c.say(&format!("I heard {secs:.1} seconds. Here it is back."), &played).await;
                if !ok {
                    break;
                }
            }
        }
    }
    hub.typed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&caller);
}
