//! A fake ElevenLabs Conversational AI agent, speaking the documented WebSocket protocol:
//! it waits for `conversation_initiation_client_data`, sends `conversation_initiation_metadata`
//! and a `ping`, echoes each `user_audio_chunk` back as an `audio` event with a rising
//! `event_id`, sends transcript events, and on request interrupts, drops or stalls.
//! It also serves the signed-URL endpoint of a private agent.

use std::sync::{Arc, Mutex};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

pub const API_KEY: &str = "xi-test-key";

/// How the agent behaves.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// `agent_output_audio_format` and `user_input_audio_format`.
    pub format: String,
    /// After this many audio chunks: an interruption, one stale audio event, one fresh one.
    pub interrupt_after: Option<usize>,
    /// After this many audio chunks: close the socket (a dropped agent).
    pub drop_after: Option<usize>,
    /// Refuse the WebSocket upgrade (an agent that is down).
    pub refuse: bool,
    /// Require the signed URL's token (a private agent).
    pub private: bool,
    /// After this many audio chunks: neither read nor write again, keeping the socket open.
    pub stall_after: Option<usize>,
    /// On the first audio chunk: send this many 1-second audio events as fast as possible.
    pub flood: Option<usize>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            format: "ulaw_8000".into(),
            interrupt_after: None,
            drop_after: None,
            refuse: false,
            private: false,
            stall_after: None,
            flood: None,
        }
    }
}

/// What the agent saw.
#[derive(Debug, Default, Clone)]
pub struct Log {
    pub initiation: Option<Value>,
    /// Decoded bytes of each user audio chunk.
    pub chunks: Vec<Vec<u8>>,
    pub pongs: Vec<i64>,
    pub contextual_updates: Vec<String>,
    pub connections: usize,
    pub closed_by_client: bool,
    /// The agent has stopped reading and writing (`stall_after`).
    pub stalled: bool,
    /// Audio events sent in the flood.
    pub flooded: usize,
}

#[derive(Clone)]
struct Shared {
    behaviour: Behaviour,
    log: Arc<Mutex<Log>>,
    base: String,
}

pub struct FakeAgent {
    /// `http://127.0.0.1:PORT`: the agent's `ELEVENLABS_API_BASE`.
    pub base: String,
    pub log: Arc<Mutex<Log>>,
    _server: tokio::task::JoinHandle<()>,
}

impl FakeAgent {
    pub async fn start(behaviour: Behaviour) -> FakeAgent {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Log::default()));
        let shared = Shared {
            behaviour,
            log: log.clone(),
            base: base.clone(),
        };
        let app = Router::new()
            .route("/v1/convai/conversation", get(conversation))
            .route("/v1/convai/conversation/get-signed-url", get(signed_url))
            .with_state(shared);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeAgent {
            base,
            log,
            _server: server,
        }
    }

    pub fn log(&self) -> Log {
        self.log.lock().unwrap().clone()
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
    Json(json!({ "signed_url": format!("{ws}/v1/convai/conversation?agent_id={agent}&conversation_signature=sig123") })).into_response()
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
        .any(|(k, v)| k == "conversation_signature" && v == "sig123");
    if s.behaviour.private && !signed {
        return (StatusCode::FORBIDDEN, "private agent").into_response();
    }
    s.log.lock().unwrap().connections += 1;
    ws.on_upgrade(move |socket| talk(s, socket))
}

async fn send(socket: &mut WebSocket, v: Value) -> bool {
    socket.send(Message::text(v.to_string())).await.is_ok()
}

async fn talk(s: Shared, mut socket: WebSocket) {
    // The client speaks first.
    let Some(Ok(Message::Text(first))) = socket.recv().await else {
        return;
    };
    let init: Value = serde_json::from_str(&first).unwrap_or(Value::Null);
    s.log.lock().unwrap().initiation = Some(init);
    let f = &s.behaviour.format;
    let meta = json!({ "type": "conversation_initiation_metadata", "conversation_initiation_metadata_event": {
        "conversation_id": "conv_test_1", "agent_output_audio_format": f, "user_input_audio_format": f } });
    if !send(&mut socket, meta).await {
        return;
    }
    if !send(
        &mut socket,
        json!({ "type": "ping", "ping_event": { "event_id": 1, "ping_ms": 5 } }),
    )
    .await
    {
        return;
    }

    let mut event_id = 0i64;
    let mut chunks = 0usize;
    while let Some(msg) = socket.recv().await {
        let text = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(_)) | Err(_) => {
                s.log.lock().unwrap().closed_by_client = true;
                return;
            }
            Ok(_) => continue,
        };
        let v: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(_) => continue,
        };
        if let Some(chunk) = v.get("user_audio_chunk").and_then(Value::as_str) {
            let bytes = B64.decode(chunk).unwrap_or_default();
            chunks += 1;
            s.log.lock().unwrap().chunks.push(bytes.clone());
            if Some(chunks) == s.behaviour.drop_after {
                return; // dropped without a close frame
            }
            if Some(chunks) == s.behaviour.stall_after {
                // Hung: holds the socket, reads nothing more (TCP buffers fill), says nothing.
                s.log.lock().unwrap().stalled = true;
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                return;
            }
            if chunks == 1 {
                if let Some(n) = s.behaviour.flood {
                    let second = B64.encode([0x33u8; 8000]);
                    for _ in 0..n {
                        event_id += 1;
                        let v = json!({ "type": "audio", "audio_event": { "audio_base_64": second, "event_id": event_id } });
                        if !send(&mut socket, v).await {
                            return;
                        }
                    }
                    s.log.lock().unwrap().flooded = n;
                }
            }
            if chunks == 1 {
                send(&mut socket, json!({ "type": "user_transcript", "user_transcription_event": { "user_transcript": "hello agent" } })).await;
                send(&mut socket, json!({ "type": "agent_response", "agent_response_event": { "agent_response": "hello caller" } })).await;
            }
            event_id += 1;
            let echo = json!({ "type": "audio", "audio_event": { "audio_base_64": chunk, "event_id": event_id } });
            if !send(&mut socket, echo).await {
                return;
            }
            if Some(chunks) == s.behaviour.interrupt_after {
                send(&mut socket, json!({ "type": "interruption", "interruption_event": { "event_id": event_id } })).await;
                // Stale audio from before the interruption, then fresh audio after it.
                let stale = B64.encode([0x11u8; 160]);
                let fresh = B64.encode([0x22u8; 160]);
                send(&mut socket, json!({ "type": "audio", "audio_event": { "audio_base_64": stale, "event_id": event_id } })).await;
                event_id += 1;
                send(&mut socket, json!({ "type": "audio", "audio_event": { "audio_base_64": fresh, "event_id": event_id } })).await;
            }
        } else if v["type"] == "pong" {
            s.log
                .lock()
                .unwrap()
                .pongs
                .push(v["event_id"].as_i64().unwrap_or(-1));
        } else if v["type"] == "contextual_update" {
            s.log
                .lock()
                .unwrap()
                .contextual_updates
                .push(v["text"].as_str().unwrap_or_default().to_string());
        }
    }
}
