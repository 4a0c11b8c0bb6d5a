//! A local stand-in for an ElevenLabs agent that echoes the caller's audio back: for the load
//! test and the demo. It speaks the same protocol as the real agent (metadata first, then an
//! `audio` event per `user_audio_chunk`).

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

/// Serves the echo agent on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    let app = Router::new().route("/v1/convai/conversation", get(upgrade));
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
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if let Some(chunk) = v.get("user_audio_chunk").and_then(Value::as_str) {
            event_id += 1;
            let out = json!({ "type": "audio", "audio_event": { "audio_base_64": chunk, "event_id": event_id } });
            if socket.send(Message::text(out.to_string())).await.is_err() {
                return;
            }
        }
    }
}
