//! An ElevenLabs Conversational AI agent's end of its WebSocket, from the documented protocol
//! (`wss://api.elevenlabs.io/v1/convai/conversation?agent_id=...`): the client speaks first
//! with `conversation_initiation_client_data`; the agent answers with
//! `conversation_initiation_metadata` (its audio formats), then streams `audio` events with a
//! rising `event_id`, `interruption`, transcripts, `ping`s (answered with `pong`); the client
//! sends `user_audio_chunk`, `pong`, `contextual_update` and `user_message`.
//!
//! [`Conversation`] is that protocol, once; [`FakeAgent`] (the tests' agent, whose behaviours
//! are scripted), [`echo`] (the load test's) and the demo's agent are built on it.

pub mod echo;
mod fake;

use axum::extract::ws::{Message, WebSocket};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

pub use fake::{Behaviour, FakeAgent, Log, API_KEY, GOODBYE, SENTENCE};

/// The agent's WebSocket path.
pub const CONVERSATION_PATH: &str = "/v1/convai/conversation";
/// The signed-URL endpoint of a private agent.
pub const SIGNED_URL_PATH: &str = "/v1/convai/conversation/get-signed-url";
/// The audio format callgate asks for: μ-law at 8 kHz, Twilio's own.
pub const ULAW_8000: &str = "ulaw_8000";

/// One message from the agent's client (callgate).
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// `user_audio_chunk`: the caller's audio, base64 as sent.
    Audio(String),
    /// `pong` to the ping with this `event_id`.
    Pong(i64),
    /// `contextual_update`: text added to the agent's context without a reply, and its
    /// `context_id` (a later update under the same id replaces it).
    ContextualUpdate(String, Option<String>),
    /// `user_message`: text the agent answers as if spoken.
    UserMessage(String),
    /// Any other JSON message.
    Other(Value),
}

impl Incoming {
    /// Reads one text frame; `None` if it is not JSON.
    pub fn parse(text: &str) -> Option<Incoming> {
        #[derive(serde::Deserialize)]
        struct Wire<'a> {
            #[serde(borrow, default)]
            user_audio_chunk: Option<std::borrow::Cow<'a, str>>,
            #[serde(borrow, default, rename = "type")]
            kind: Option<std::borrow::Cow<'a, str>>,
        }
        // The audio chunk, by far the most frequent, is read without building a tree.
        let wire: Wire = serde_json::from_str(text).ok()?;
        if let Some(chunk) = wire.user_audio_chunk {
            return Some(Incoming::Audio(chunk.into_owned()));
        }
        let v: Value = serde_json::from_str(text).ok()?;
        let text_of = |v: &Value| v["text"].as_str().unwrap_or_default().to_string();
        Some(match wire.kind.as_deref() {
            Some("pong") => Incoming::Pong(v["event_id"].as_i64().unwrap_or(-1)),
            Some("contextual_update") => {
                Incoming::ContextualUpdate(text_of(&v), v["context_id"].as_str().map(String::from))
            }
            Some("user_message") => Incoming::UserMessage(text_of(&v)),
            _ => Incoming::Other(v),
        })
    }

    /// The decoded bytes of an audio chunk.
    pub fn audio_bytes(&self) -> Option<Vec<u8>> {
        match self {
            Incoming::Audio(b64) => B64.decode(b64).ok(),
            _ => None,
        }
    }
}

/// The agent's side of one conversation.
pub struct Conversation {
    socket: WebSocket,
    /// The client's `conversation_initiation_client_data`.
    pub initiation: Value,
    event_id: i64,
    /// The client closed the socket (a close frame or a broken connection).
    pub closed_by_client: bool,
}

impl Conversation {
    /// Waits for the client's initiation (the client speaks first); `None` if the first
    /// message is not text.
    pub async fn accept(mut socket: WebSocket) -> Option<Conversation> {
        let Some(Ok(Message::Text(first))) = socket.recv().await else {
            return None;
        };
        Some(Conversation {
            socket,
            initiation: serde_json::from_str(&first).unwrap_or(Value::Null),
            event_id: 0,
            closed_by_client: false,
        })
    }

    /// One of the initiation's `dynamic_variables`.
    pub fn variable(&self, name: &str) -> &Value {
        &self.initiation["dynamic_variables"][name]
    }

    /// `conversation_initiation_metadata`, with `format` for both directions.
    pub async fn metadata(&mut self, conversation_id: &str, format: &str) -> bool {
        self.send(json!({ "type": "conversation_initiation_metadata", "conversation_initiation_metadata_event": {
            "conversation_id": conversation_id, "agent_output_audio_format": format,
            "user_input_audio_format": format } }))
            .await
    }

    /// Closes the conversation with `code` (1011: an error on the agent's side).
    pub async fn close(&mut self, code: u16, reason: &str) {
        let frame = axum::extract::ws::CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = self.socket.send(Message::Close(Some(frame))).await;
    }

    pub async fn send(&mut self, v: Value) -> bool {
        self.send_text(v.to_string()).await
    }

    pub async fn send_text(&mut self, text: String) -> bool {
        self.socket.send(Message::text(text)).await.is_ok()
    }

    /// The `event_id` of the last audio sent.
    pub fn event_id(&self) -> i64 {
        self.event_id
    }

    /// One `audio` event of base64 audio under the next `event_id`.
    pub async fn audio(&mut self, b64: &str) -> bool {
        self.event_id += 1;
        let id = self.event_id;
        let text = if b64
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
        {
            // Base64 needs no escaping: written in place, the echo costs the load test little.
            format!(
                r#"{{"type":"audio","audio_event":{{"audio_base_64":"{b64}","event_id":{id}}}}}"#
            )
        } else {
            json!({ "type": "audio", "audio_event": { "audio_base_64": b64, "event_id": id } })
                .to_string()
        };
        self.send_text(text).await
    }

    /// One `audio` event of these bytes.
    pub async fn audio_bytes(&mut self, bytes: &[u8]) -> bool {
        self.audio(&B64.encode(bytes)).await
    }

    /// An `audio` event under the current `event_id` (audio from before an interruption,
    /// which the client must drop).
    pub async fn stale_audio(&mut self, bytes: &[u8]) -> bool {
        let id = self.event_id;
        self.send(json!({ "type": "audio", "audio_event": { "audio_base_64": B64.encode(bytes), "event_id": id } }))
            .await
    }

    /// `interruption`: the caller talked over the agent; audio up to the current event is void.
    pub async fn interrupt(&mut self) -> bool {
        let id = self.event_id;
        self.send(json!({ "type": "interruption", "interruption_event": { "event_id": id } }))
            .await
    }

    pub async fn ping(&mut self, event_id: i64, ping_ms: u64) -> bool {
        self.send(
            json!({ "type": "ping", "ping_event": { "event_id": event_id, "ping_ms": ping_ms } }),
        )
        .await
    }

    pub async fn user_transcript(&mut self, text: &str) -> bool {
        self.send(json!({ "type": "user_transcript", "user_transcription_event": { "user_transcript": text } }))
            .await
    }

    pub async fn agent_response(&mut self, text: &str) -> bool {
        self.send(
            json!({ "type": "agent_response", "agent_response_event": { "agent_response": text } }),
        )
        .await
    }

    /// The next message from the client; `None` once the socket is closed.
    pub async fn recv(&mut self) -> Option<Incoming> {
        loop {
            match self.socket.recv().await {
                Some(Ok(Message::Text(text))) => match Incoming::parse(&text) {
                    Some(incoming) => return Some(incoming),
                    None => continue,
                },
                Some(Ok(Message::Close(_))) | Some(Err(_)) => {
                    self.closed_by_client = true;
                    return None;
                }
                None => return None,
                Some(Ok(_)) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_read_by_their_documented_names() {
        assert_eq!(
            Incoming::parse(r#"{"user_audio_chunk":"AAEC"}"#),
            Some(Incoming::Audio("AAEC".into()))
        );
        assert_eq!(
            Incoming::parse(r#"{"type":"pong","event_id":3}"#),
            Some(Incoming::Pong(3))
        );
        assert_eq!(
            Incoming::parse(r#"{"type":"contextual_update","text":"2 minutes left"}"#),
            Some(Incoming::ContextualUpdate("2 minutes left".into(), None))
        );
        assert_eq!(
            Incoming::parse(r#"{"type":"user_message","text":"hi"}"#),
            Some(Incoming::UserMessage("hi".into()))
        );
        assert!(matches!(
            Incoming::parse(r#"{"type":"user_activity"}"#),
            Some(Incoming::Other(_))
        ));
        assert_eq!(Incoming::parse("not json"), None);
    }
}
