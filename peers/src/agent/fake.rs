//! The tests' agent: it answers the initiation with its metadata and a `ping`, echoes each
//! `user_audio_chunk` back as `audio`, sends transcript events, and on request interrupts,
//! drops, stalls or floods. It also serves the signed-URL endpoint of a private agent, and
//! records everything it saw.

use std::sync::{Arc, Mutex};

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{Conversation, Incoming, CONVERSATION_PATH, SIGNED_URL_PATH, ULAW_8000};

/// The `xi-api-key` the signed-URL endpoint accepts.
pub const API_KEY: &str = "xi-test-key";
/// The `conversation_signature` of the signed URLs it hands out.
const SIGNATURE: &str = "sig123";

/// How the agent behaves.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// `agent_output_audio_format` and `user_input_audio_format`.
    pub format: String,
    /// After this many audio chunks: an interruption, one stale audio event, one fresh one.
    pub interrupt_after: Option<usize>,
    /// After this many audio chunks: close the socket (a dropped agent).
    pub drop_after: Option<usize>,
    /// After this many audio chunks: close with code 1011 (an internal error on its side).
    pub error_after: Option<usize>,
    /// Refuse the WebSocket upgrade (an agent that is down).
    pub refuse: bool,
    /// Require the signed URL's token (a private agent).
    pub private: bool,
    /// After this many audio chunks: neither read nor write again, keeping the socket open.
    pub stall_after: Option<usize>,
    /// On the first audio chunk: send this many 1-second audio events as fast as possible.
    pub flood: Option<usize>,
    /// After this many audio chunks: say a sentence of this many 20 ms frames of
    /// [`SENTENCE`] audio at once, as a real agent's speech arrives faster than it plays.
    pub speak_after: Option<(usize, usize)>,
    /// After this many audio chunks: say goodbye ([`GOODBYE`] audio, 50 frames: one second),
    /// run the `end_call` tool, and close the conversation normally soon after.
    pub end_call_after: Option<usize>,
}

/// The byte of the fake agent's sentence audio ([`Behaviour::speak_after`]).
pub const SENTENCE: u8 = 0x44;
/// The byte of the fake agent's goodbye audio ([`Behaviour::end_call_after`]).
pub const GOODBYE: u8 = 0x47;

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            format: ULAW_8000.into(),
            interrupt_after: None,
            drop_after: None,
            error_after: None,
            refuse: false,
            private: false,
            stall_after: None,
            flood: None,
            speak_after: None,
            end_call_after: None,
        }
    }
}

/// What the agent saw.
#[derive(Debug, Default, Clone)]
pub struct Log {
    /// The latest conversation's initiation.
    pub initiation: Option<Value>,
    /// Every conversation's initiation, in order.
    pub initiations: Vec<Value>,
    /// Decoded bytes of each user audio chunk.
    pub chunks: Vec<Vec<u8>>,
    pub pongs: Vec<i64>,
    pub contextual_updates: Vec<String>,
    /// The `context_id` of each contextual update, in the same order.
    pub context_ids: Vec<Option<String>>,
    pub user_messages: Vec<String>,
    pub connections: usize,
    pub closed_by_client: bool,
    /// The agent has stopped reading and writing (`stall_after`).
    pub stalled: bool,
    /// Audio events sent in the flood.
    pub flooded: usize,
    /// The agent ran `end_call`.
    pub ended_call: bool,
}

#[derive(Clone)]
struct Shared {
    behaviour: Behaviour,
    log: Arc<Mutex<Log>>,
    base: String,
    /// Set by [`FakeAgent::drop_next`]: the next conversation's drop.
    drop_next: Arc<Mutex<Option<usize>>>,
}

impl Shared {
    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct FakeAgent {
    /// `http://127.0.0.1:PORT`: the agent's `ELEVENLABS_API_BASE`.
    pub base: String,
    pub log: Arc<Mutex<Log>>,
    drop_next: Arc<Mutex<Option<usize>>>,
    _server: tokio::task::JoinHandle<()>,
}

impl FakeAgent {
    /// Serves an agent on a loopback port of its own.
    pub async fn start(behaviour: Behaviour) -> FakeAgent {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let base = format!("http://{}", listener.local_addr().expect("its address"));
        let log = Arc::new(Mutex::new(Log::default()));
        let drop_next = Arc::new(Mutex::new(None));
        let shared = Shared {
            behaviour,
            log: log.clone(),
            base: base.clone(),
            drop_next: drop_next.clone(),
        };
        let app = Router::new()
            .route(CONVERSATION_PATH, get(conversation))
            .route(SIGNED_URL_PATH, get(signed_url))
            .with_state(shared);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeAgent {
            base,
            log,
            drop_next,
            _server: server,
        }
    }

    pub fn log(&self) -> Log {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The next conversation opened drops after `chunks` audio chunks, then the behaviour
    /// applies again (`None`: no longer armed).
    pub fn drop_next(&self, chunks: Option<usize>) {
        *self.drop_next.lock().unwrap_or_else(|p| p.into_inner()) = chunks;
    }
}

async fn signed_url(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    if headers.get("xi-api-key").and_then(|v| v.to_str().ok()) != Some(API_KEY) {
        return (StatusCode::UNAUTHORIZED, "bad key").into_response();
    }
    let agent = q
        .iter()
        .find(|(k, _)| k == "agent_id")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let ws = s.base.replace("http://", "ws://");
    Json(json!({ "signed_url": format!("{ws}{CONVERSATION_PATH}?agent_id={agent}&conversation_signature={SIGNATURE}") }))
        .into_response()
}

async fn conversation(
    State(s): State<Shared>,
    Query(q): Query<Vec<(String, String)>>,
    ws: WebSocketUpgrade,
) -> Response {
    if s.behaviour.refuse {
        return (StatusCode::INTERNAL_SERVER_ERROR, "down").into_response();
    }
    let signed = q
        .iter()
        .any(|(k, v)| k == "conversation_signature" && v == SIGNATURE);
    if s.behaviour.private && !signed {
        return (StatusCode::FORBIDDEN, "private agent").into_response();
    }
    s.log().connections += 1;
    ws.on_upgrade(move |socket| talk(s, socket))
}

async fn talk(s: Shared, socket: WebSocket) {
    let Some(mut c) = Conversation::accept(socket).await else {
        return;
    };
    // Each conversation its own id: `conv_test_<n>`, n counting connections from 1.
    let conversation_id = {
        let mut log = s.log();
        log.initiation = Some(c.initiation.clone());
        log.initiations.push(c.initiation.clone());
        format!("conv_test_{}", log.connections)
    };
    if !c.metadata(&conversation_id, &s.behaviour.format).await || !c.ping(1, 5).await {
        return;
    }
    let drop_after = s
        .drop_next
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .or(s.behaviour.drop_after);
    let mut chunks = 0usize;
    while let Some(incoming) = c.recv().await {
        match incoming {
            Incoming::Audio(ref chunk) => {
                let bytes = incoming.audio_bytes().unwrap_or_default();
                chunks += 1;
                s.log().chunks.push(bytes);
                if Some(chunks) == drop_after {
                    return; // dropped without a close frame
                }
                if Some(chunks) == s.behaviour.error_after {
                    c.close(1011, "internal error").await;
                    return;
                }
                if Some(chunks) == s.behaviour.stall_after {
                    // Hung: holds the socket, reads nothing more (TCP buffers fill), says nothing.
                    s.log().stalled = true;
                    tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                    return;
                }
                if chunks == 1 {
                    if let Some(n) = s.behaviour.flood {
                        for _ in 0..n {
                            if !c.audio_bytes(&[0x33u8; 8000]).await {
                                return;
                            }
                        }
                        s.log().flooded = n;
                    }
                    c.user_transcript("hello agent").await;
                    c.agent_response("hello caller").await;
                }
                if !c.audio(chunk).await {
                    return;
                }
                if let Some((after, frames)) = s.behaviour.speak_after {
                    if chunks == after {
                        c.agent_response("let me finish this sentence").await;
                        for _ in 0..frames {
                            if !c.audio_bytes(&[SENTENCE; 160]).await {
                                return;
                            }
                        }
                    }
                }
                if Some(chunks) == s.behaviour.end_call_after {
                    c.agent_response("goodbye").await;
                    for _ in 0..50 {
                        if !c.audio_bytes(&[GOODBYE; 160]).await {
                            return;
                        }
                    }
                    c.send(
                        json!({ "type": "agent_tool_response", "agent_tool_response": {
                        "tool_name": "end_call", "tool_call_id": "toolu_1", "tool_type": "system",
                        "is_error": false } }),
                    )
                    .await;
                    s.log().ended_call = true;
                    // ElevenLabs closes normally shortly after; its last audio is on its way.
                    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
                    c.close(1000, "end_call").await;
                    return;
                }
                if Some(chunks) == s.behaviour.interrupt_after {
                    c.interrupt().await;
                    // Stale audio from before the interruption, then fresh audio after it.
                    c.stale_audio(&[0x11u8; 160]).await;
                    c.audio_bytes(&[0x22u8; 160]).await;
                }
            }
            Incoming::Pong(id) => s.log().pongs.push(id),
            Incoming::ContextualUpdate(text, id) => {
                let mut log = s.log();
                log.contextual_updates.push(text);
                log.context_ids.push(id);
            }
            Incoming::UserMessage(text) => s.log().user_messages.push(text),
            Incoming::Other(_) => {}
        }
    }
    if c.closed_by_client {
        s.log().closed_by_client = true;
    }
}
