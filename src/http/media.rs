//! `GET /media`: Twilio's media stream, upgraded and handed to the bridge.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::bridge::{session, SOCKET_BUFFER, TWILIO_READ};
use crate::http::AppState;
use crate::telephony::twilio::signature;

pub use crate::telephony::twilio::MEDIA_PATH;

/// Largest Twilio frame accepted (a 20 ms media frame is about 300 bytes).
const MAX_TWILIO_MESSAGE: usize = 64 * 1024;

pub fn router() -> Router<AppState> {
    Router::new().route(MEDIA_PATH, get(media))
}

/// `GET /media`: Twilio opens the stream. The upgrade request is signed over the `wss://`
/// URL; the stream's one-time token is checked once `start` arrives.
async fn media(State(app): State<AppState>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    let Some(twilio) = app.config.twilio.as_ref() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "phone menu not configured").into_response();
    };
    let sig = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !signature::validate(twilio.auth_token.expose(), &app.stream_url(), &[], sig) {
        tracing::warn!("refused a media stream without a valid X-Twilio-Signature");
        return (StatusCode::FORBIDDEN, "invalid Twilio signature").into_response();
    }
    // Small buffers: a call's frames are a few hundred bytes, and thousands of calls share
    // the machine's memory.
    ws.max_message_size(MAX_TWILIO_MESSAGE)
        .max_frame_size(MAX_TWILIO_MESSAGE)
        .read_buffer_size(TWILIO_READ)
        .write_buffer_size(SOCKET_BUFFER)
        .on_upgrade(move |socket| session::run(app, socket))
}
