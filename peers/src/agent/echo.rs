//! An agent that echoes the caller's audio back, one `audio` event per `user_audio_chunk`:
//! for the load test, where the agent shares the machine with what is measured and must cost
//! as little as it can.

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use super::{Conversation, Incoming, CONVERSATION_PATH, ULAW_8000};

/// Serves the echo agent on `listener` until the task is dropped. Its sockets send at once
/// (no Nagle delay): an agent that held its small frames back would add tens of milliseconds
/// to every round trip the load test times, and they would be blamed on the bridge.
pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let app = Router::new().route(CONVERSATION_PATH, get(upgrade));
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await
}

async fn upgrade(ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(echo)
}

async fn echo(socket: WebSocket) {
    let Some(mut c) = Conversation::accept(socket).await else {
        return;
    };
    if !c.metadata("echo", ULAW_8000).await {
        return;
    }
    while let Some(incoming) = c.recv().await {
        if let Incoming::Audio(chunk) = incoming {
            if !c.audio(&chunk).await {
                return;
            }
        }
    }
}
