//! The media bridge: Twilio's bidirectional media stream <-> the ElevenLabs agent, metered,
//! with the allowance enforced here (ElevenLabs does not know it).

pub mod audio;
pub mod metering;
mod session;
pub mod twilio_stream;

use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::voice::{flow::stream_url, signature};
use crate::web::AppState;

pub const MEDIA_PATH: &str = "/media";

/// Largest Twilio frame accepted (a 20 ms media frame is about 300 bytes).
const MAX_TWILIO_MESSAGE: usize = 64 * 1024;

/// Read and write buffer of each WebSocket, per call and side.
pub(crate) const SOCKET_BUFFER: usize = 4 * 1024;

/// Timing of the bridge. One "tick" is one metered second; tests shorten it.
#[derive(Debug, Clone)]
pub struct BridgeSettings {
    /// Length of one metered second.
    pub tick: Duration,
    /// Warn the caller this many seconds before the allowance ends.
    pub warn_before_secs: i64,
    /// Longest wait for Twilio's `start`, the agent's socket and its metadata.
    pub setup_timeout: Duration,
    /// Persist metering every this many seconds.
    pub persist_every_secs: i64,
    /// An agent that sends nothing for this long, not even the pong to a WebSocket ping
    /// (sent every quarter of it), is hung: the call ends with an apology. Also the longest a
    /// write to the agent may wait.
    pub agent_silence: Duration,
}

impl Default for BridgeSettings {
    fn default() -> Self {
        BridgeSettings {
            tick: Duration::from_secs(1),
            warn_before_secs: 60,
            setup_timeout: Duration::from_secs(10),
            persist_every_secs: 5,
            agent_silence: Duration::from_secs(20),
        }
    }
}

/// μ-law audio of the one-minute warning: `AUDIO_DIR/one_minute_left.wav` (8 kHz mono PCM
/// or μ-law) when present, else a two-beep tone.
pub fn load_warning(dir: &std::path::Path) -> Vec<u8> {
    let path = dir.join("one_minute_left.wav");
    match std::fs::read(&path) {
        Ok(bytes) => audio::wav_to_ulaw(&bytes).unwrap_or_else(|| {
            tracing::warn!(path = %path.display(), "not an 8 kHz mono WAV: using the warning tone");
            audio::warning_tone()
        }),
        Err(_) => audio::warning_tone(),
    }
}

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
    if !signature::validate(twilio.auth_token.expose(), &stream_url(&app), &[], sig) {
        tracing::warn!("refused a media stream without a valid X-Twilio-Signature");
        return (StatusCode::FORBIDDEN, "invalid Twilio signature").into_response();
    }
    // Small buffers: a call's frames are a few hundred bytes, and thousands of calls share
    // the machine's memory.
    ws.max_message_size(MAX_TWILIO_MESSAGE)
        .max_frame_size(MAX_TWILIO_MESSAGE)
        .read_buffer_size(SOCKET_BUFFER)
        .write_buffer_size(SOCKET_BUFFER)
        .on_upgrade(move |socket| session::run(app, socket))
}
