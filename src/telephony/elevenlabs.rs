//! The ElevenLabs side: where to connect (a signed URL for a private agent, the agent id for
//! a public one) and the agent WebSocket protocol's messages.

use std::borrow::Cow;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::config::ElevenLabsConfig;
use crate::telephony::audio::Base64Audio;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot get a signed conversation URL: {0}")]
    SignedUrl(String),
    #[error("cannot connect to the agent: {0}")]
    Connect(String),
    #[error("agent message is not valid: {0}")]
    Protocol(String),
}

/// A message from the agent, reduced to what the bridge acts on. Audio is borrowed from the
/// frame (no copy), as it arrives many times a second.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent<'a> {
    Metadata {
        conversation_id: Option<String>,
        output_format: String,
        input_format: String,
    },
    /// Base64 audio in the agent's output format.
    Audio {
        event_id: i64,
        audio: Cow<'a, str>,
    },
    Interruption {
        event_id: i64,
    },
    Ping {
        event_id: i64,
        ping_ms: Option<i64>,
    },
    AgentResponse(String),
    UserTranscript(String),
    /// The agent ran one of its tools (`agent_tool_response`, sent when the agent's client
    /// events include it); `end_call` means it ended the conversation.
    ToolResponse {
        tool_name: String,
    },
    Error(String),
    /// Any other type: logged at debug level and ignored.
    Other(String),
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    conversation_initiation_metadata_event: Option<MetadataEvent>,
    #[serde(default, borrow)]
    audio_event: Option<AudioEvent<'a>>,
    #[serde(default)]
    interruption_event: Option<IdEvent>,
    #[serde(default)]
    ping_event: Option<PingEvent>,
    #[serde(default)]
    agent_response_event: Option<Value>,
    #[serde(default)]
    user_transcription_event: Option<Value>,
    /// The tool event's body: `agent_tool_response` as the schema spells it (some servers
    /// have sent `agent_tool_response_event`, the other events' pattern: both are read).
    #[serde(default)]
    agent_tool_response: Option<Value>,
    #[serde(default)]
    agent_tool_response_event: Option<Value>,
}

#[derive(Deserialize)]
struct MetadataEvent {
    conversation_id: Option<String>,
    agent_output_audio_format: Option<String>,
    user_input_audio_format: Option<String>,
}

#[derive(Deserialize)]
struct AudioEvent<'a> {
    #[serde(borrow)]
    audio_base_64: Cow<'a, str>,
    #[serde(default)]
    event_id: i64,
}

#[derive(Deserialize)]
struct IdEvent {
    #[serde(default)]
    event_id: i64,
}

#[derive(Deserialize)]
struct PingEvent {
    #[serde(default)]
    event_id: i64,
    ping_ms: Option<i64>,
}

fn field(v: &Option<Value>, key: &str) -> String {
    v.as_ref()
        .and_then(|v| v.get(key))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Parses one text frame from the agent.
pub fn parse(text: &str) -> Result<AgentEvent<'_>, AgentError> {
    let raw: Raw = serde_json::from_str(text).map_err(|e| AgentError::Protocol(e.to_string()))?;
    let missing = |what: &str| AgentError::Protocol(format!("{} without {what}", raw.kind));
    Ok(match raw.kind.as_ref() {
        "conversation_initiation_metadata" => {
            let m = raw
                .conversation_initiation_metadata_event
                .ok_or_else(|| missing("conversation_initiation_metadata_event"))?;
            AgentEvent::Metadata {
                conversation_id: m.conversation_id,
                output_format: m.agent_output_audio_format.unwrap_or_default(),
                input_format: m.user_input_audio_format.unwrap_or_default(),
            }
        }
        "audio" => {
            let a = raw.audio_event.ok_or_else(|| missing("audio_event"))?;
            AgentEvent::Audio {
                event_id: a.event_id,
                audio: a.audio_base_64,
            }
        }
        "interruption" => AgentEvent::Interruption {
            event_id: raw
                .interruption_event
                .map(|e| e.event_id)
                .unwrap_or_default(),
        },
        "ping" => {
            let p = raw.ping_event.ok_or_else(|| missing("ping_event"))?;
            AgentEvent::Ping {
                event_id: p.event_id,
                ping_ms: p.ping_ms,
            }
        }
        "agent_response" => {
            AgentEvent::AgentResponse(field(&raw.agent_response_event, "agent_response"))
        }
        "user_transcript" => {
            AgentEvent::UserTranscript(field(&raw.user_transcription_event, "user_transcript"))
        }
        "agent_tool_response" => {
            let body = raw.agent_tool_response.or(raw.agent_tool_response_event);
            if body.is_none() {
                return Err(missing("agent_tool_response"));
            }
            AgentEvent::ToolResponse {
                tool_name: field(&body, "tool_name"),
            }
        }
        "error" => AgentEvent::Error(text.chars().take(500).collect()),
        other => AgentEvent::Other(other.to_string()),
    })
}

/// Caller audio for the agent (base64, in the agent's input format): checked base64 needs
/// no escaping, so the message is written as it is, in a buffer of its size.
pub fn user_audio(audio: Base64Audio<'_>) -> String {
    const HEAD: &str = "{\"user_audio_chunk\":\"";
    const TAIL: &str = "\"}";
    let audio = audio.as_str();
    let mut out = String::with_capacity(HEAD.len() + audio.len() + TAIL.len());
    out.push_str(HEAD);
    out.push_str(audio);
    out.push_str(TAIL);
    out
}

pub fn pong(event_id: i64) -> String {
    serde_json::json!({ "type": "pong", "event_id": event_id }).to_string()
}

/// The first message: who is calling and what they have left, for the agent's prompt.
pub fn initiation(dynamic_variables: &Value) -> String {
    serde_json::json!({
        "type": "conversation_initiation_client_data",
        "dynamic_variables": dynamic_variables,
    })
    .to_string()
}

/// The `context_id` of what the agent is told about the caller's time and balance: each
/// update replaces the one before in the agent's context, so only the latest stands.
pub const TIME_CONTEXT: &str = "callgate_time";

/// The tool the agent ends the conversation with.
pub const END_CALL_TOOL: &str = "end_call";

/// What the agent should know mid-call about the caller's time (that it is nearly up, that
/// paid time started, that minutes were bought): under [`TIME_CONTEXT`].
pub fn time_update(text: &str) -> String {
    serde_json::json!({ "type": "contextual_update", "text": text, "context_id": TIME_CONTEXT })
        .to_string()
}

/// The WebSocket base for the configured API base: `https` -> `wss`, `http` -> `ws`.
fn ws_base(config: &ElevenLabsConfig) -> String {
    let base = config.api_base.as_str().trim_end_matches('/');
    if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    }
}

/// Where to open the conversation: a signed URL for a private agent (with an API key),
/// otherwise the public agent URL.
pub async fn conversation_url(
    config: &ElevenLabsConfig,
    http: &reqwest::Client,
) -> Result<String, AgentError> {
    let Some(key) = &config.api_key else {
        return Ok(format!(
            "{}/v1/convai/conversation?agent_id={}",
            ws_base(config),
            config.agent_id
        ));
    };
    let url = format!(
        "{}/v1/convai/conversation/get-signed-url?agent_id={}",
        config.api_base.as_str().trim_end_matches('/'),
        config.agent_id
    );
    let resp = http
        .get(url)
        .header("xi-api-key", key.expose())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| AgentError::SignedUrl(e.to_string()))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(AgentError::SignedUrl(format!("HTTP {status}")));
    }
    let body: Value = resp
        .json()
        .await
        .map_err(|e| AgentError::SignedUrl(e.to_string()))?;
    body.get("signed_url")
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(|| AgentError::SignedUrl("answer has no signed_url".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_documented_messages() {
        let meta = parse(r#"{"type":"conversation_initiation_metadata","conversation_initiation_metadata_event":{"conversation_id":"c1","agent_output_audio_format":"ulaw_8000","user_input_audio_format":"ulaw_8000"}}"#).unwrap();
        assert_eq!(
            meta,
            AgentEvent::Metadata {
                conversation_id: Some("c1".into()),
                output_format: "ulaw_8000".into(),
                input_format: "ulaw_8000".into()
            }
        );
        assert_eq!(
            parse(r#"{"type":"audio","audio_event":{"audio_base_64":"AAA=","event_id":7}}"#)
                .unwrap(),
            AgentEvent::Audio {
                event_id: 7,
                audio: "AAA=".into()
            }
        );
        assert_eq!(
            parse(r#"{"type":"interruption","interruption_event":{"event_id":9}}"#).unwrap(),
            AgentEvent::Interruption { event_id: 9 }
        );
        assert_eq!(
            parse(r#"{"type":"ping","ping_event":{"event_id":3,"ping_ms":20}}"#).unwrap(),
            AgentEvent::Ping {
                event_id: 3,
                ping_ms: Some(20)
            }
        );
        assert_eq!(
            parse(r#"{"type":"user_transcript","user_transcription_event":{"user_transcript":"hello"}}"#).unwrap(),
            AgentEvent::UserTranscript("hello".into())
        );
        assert_eq!(
            parse(r#"{"type":"agent_response","agent_response_event":{"agent_response":"hi"}}"#)
                .unwrap(),
            AgentEvent::AgentResponse("hi".into())
        );
        let end = r#"{"type":"agent_tool_response","agent_tool_response":{"tool_name":"end_call","tool_call_id":"t1","tool_type":"system","is_error":false}}"#;
        assert_eq!(
            parse(end).unwrap(),
            AgentEvent::ToolResponse {
                tool_name: END_CALL_TOOL.into()
            }
        );
        let other_spelling = r#"{"type":"agent_tool_response","agent_tool_response_event":{"tool_name":"end_call"}}"#;
        assert_eq!(parse(other_spelling).unwrap(), parse(end).unwrap());
        assert_eq!(
            parse(r#"{"type":"vad_score","vad_score_event":{"vad_score":0.5}}"#).unwrap(),
            AgentEvent::Other("vad_score".into())
        );
    }

    #[test]
    fn rejects_malformed_messages() {
        for bad in [
            "",
            "{",
            "[]",
            r#"{"no_type":1}"#,
            r#"{"type":"audio"}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"agent_tool_response"}"#,
            r#"{"type":"audio","audio_event":{"audio_base_64":5}}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn builds_client_messages() {
        let audio = Base64Audio::check("AAA=", &mut Vec::new()).unwrap();
        assert_eq!(user_audio(audio), r#"{"user_audio_chunk":"AAA="}"#);
        let parsed: Value = serde_json::from_str(&user_audio(audio)).unwrap();
        assert_eq!(parsed["user_audio_chunk"], "AAA=");
        let pong: Value = serde_json::from_str(&pong(4)).unwrap();
        assert_eq!(pong, serde_json::json!({"type":"pong","event_id":4}));
        let init: Value =
            serde_json::from_str(&initiation(&serde_json::json!({"caller_number":"+1"}))).unwrap();
        assert_eq!(init["type"], "conversation_initiation_client_data");
        assert_eq!(init["dynamic_variables"]["caller_number"], "+1");
        let update: Value = serde_json::from_str(&time_update("two minutes")).unwrap();
        assert_eq!(
            update,
            serde_json::json!({"type":"contextual_update","text":"two minutes","context_id":TIME_CONTEXT})
        );
    }
}
