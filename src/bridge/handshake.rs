//! Opening the agent's conversation: the socket (a signed URL for a private agent), the
//! initiation with the call's dynamic variables, and the formats both ways from the metadata.

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as AgMessage;

use crate::telephony::audio::AgentFormat;
use crate::telephony::elevenlabs::{self, AgentEvent};
use crate::App;

/// The agent's socket.
pub type AgentSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const AGENT_MAX_MESSAGE: usize = 1 << 20;

/// A conversation ready for audio.
pub struct Conversation {
    pub socket: AgentSocket,
    pub conversation_id: Option<String>,
    /// What the agent speaks, and what it hears.
    pub output: AgentFormat,
    pub input: AgentFormat,
}

impl Conversation {
    /// μ-law 8 kHz both ways: Twilio's payloads pass through untouched.
    pub fn passthrough(&self) -> bool {
        self.output == AgentFormat::Ulaw8000 && self.input == AgentFormat::Ulaw8000
    }
}

/// Why the conversation could not be opened; `kind` is the metric's label, if any.
pub struct Failed {
    pub kind: Option<&'static str>,
}

/// Connects, sends the initiation with `vars`, and waits for the metadata, each within the
/// bridge's setup timeout.
pub async fn open(app: &App, vars: &Value) -> Result<Conversation, Failed> {
    let Some(agent_config) = app.config.elevenlabs.as_ref() else {
        return Err(Failed { kind: None });
    };
    let setup = async {
        let url = elevenlabs::conversation_url(agent_config, &app.http).await?;
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(AGENT_MAX_MESSAGE))
            .max_frame_size(Some(AGENT_MAX_MESSAGE))
            .read_buffer_size(super::SOCKET_BUFFER)
            .write_buffer_size(super::SOCKET_BUFFER);
        let (ws, _) =
            tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true)
                .await
                .map_err(|e| elevenlabs::AgentError::Connect(e.to_string()))?;
        Ok::<_, elevenlabs::AgentError>(ws)
    };
    let mut agent = match tokio::time::timeout(app.bridge.setup_timeout, setup).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "agent unavailable");
            let kind = match e {
                elevenlabs::AgentError::SignedUrl(_) => "signed_url",
                _ => "connect",
            };
            return Err(Failed { kind: Some(kind) });
        }
        Err(_) => {
            tracing::error!("agent connection timed out");
            return Err(Failed {
                kind: Some("timeout"),
            });
        }
    };
    let metadata = async {
        agent
            .send(AgMessage::text(elevenlabs::initiation(vars)))
            .await
            .ok()?;
        while let Some(Ok(msg)) = agent.next().await {
            let AgMessage::Text(text) = msg else { continue };
            match elevenlabs::parse(&text) {
                Ok(AgentEvent::Metadata {
                    conversation_id,
                    output_format,
                    input_format,
                }) => return Some((conversation_id, output_format, input_format)),
                Ok(AgentEvent::Ping { event_id, .. }) => {
                    agent
                        .send(AgMessage::text(elevenlabs::pong(event_id)))
                        .await
                        .ok()?;
                }
                _ => continue,
            }
        }
        None
    };
    let Ok(Some((conversation_id, output_format, input_format))) =
        tokio::time::timeout(app.bridge.setup_timeout, metadata).await
    else {
        tracing::error!("agent sent no conversation metadata");
        let _ = agent.send(AgMessage::Close(None)).await;
        return Err(Failed {
            kind: Some("no_metadata"),
        });
    };
    let (Some(output), Some(input)) = (
        AgentFormat::parse(&output_format),
        AgentFormat::parse(&input_format),
    ) else {
        tracing::error!(%output_format, %input_format, "agent audio format unusable on a phone line; set the agent to ulaw_8000 both ways");
        let _ = agent.send(AgMessage::Close(None)).await;
        return Err(Failed {
            kind: Some("audio_format"),
        });
    };
    let conversation = Conversation {
        socket: agent,
        conversation_id,
        output,
        input,
    };
    if !conversation.passthrough() {
        tracing::info!(%output_format, %input_format, "agent is not on ulaw_8000: transcoding");
    }
    Ok(conversation)
}
