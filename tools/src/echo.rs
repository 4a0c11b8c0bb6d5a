//! A local stand-in for an ElevenLabs agent that echoes the caller's audio back: for the load
//! test and the demo. It speaks the same protocol as the real agent (metadata first, then an
//! `audio` event per `user_audio_chunk`).

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::json;

/// The one message the echo answers; any other is ignored.
#[derive(serde::Deserialize)]
struct UserAudio<'a> {
    #[serde(borrow, default)]
    user_audio_chunk: Option<std::borrow::Cow<'a, str>>,
}

/// Serves the echo agent on `listener` until the task is dropped. Its sockets send at once
/// (no Nagle delay): an agent that held its small frames back would add tens of milliseconds
/// to every round trip the load test times, and they would be blamed on the bridge.
pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let app = Router::new().route("/v1/convai/conversation", get(upgrade));
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await
}

async fn upgrade(ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(echo)
}

async fn echo(mut socket: WebSocket) {
    // The client's initiation data comes first.
    if !matches!(socket.recv().await, Some(Ok(Message::Text(_)))) {
        return;
    }
    let meta = json!({ "type": "conversation_initiation_metadata", "conversation_initiation_metadata_event": {
        "conversation_id": "echo", "agent_output_audio_format": "ulaw_8000", "user_input_audio_format": "ulaw_8000" } });
    if socket.send(Message::text(meta.to_string())).await.is_err() {
        return;
    }
    let mut event_id = 0u64;
    while let Some(Ok(msg)) = socket.recv().await {
        let Message::Text(text) = msg else {
            if matches!(msg, Message::Close(_)) {
                return;
            }
            continue;
        };
        // Read in place and answered with one write: the agent must cost the load test
        // as little as it can, since it shares the machine with what is measured.
        let Ok(msg) = serde_json::from_str::<UserAudio>(&text) else {
            continue;
        };
        if let Some(chunk) = msg.user_audio_chunk {
            event_id += 1;
            let out = if chunk
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
            {
                format!(
                    r#"{{"type":"audio","audio_event":{{"audio_base_64":"{chunk}","event_id":{event_id}}}}}"#
                )
            } else {
                json!({ "type": "audio", "audio_event": { "audio_base_64": chunk, "event_id": event_id } })
                    .to_string()
            };
            if socket.send(Message::text(out)).await.is_err() {
                return;
            }
        }
    }
}
