//! `POST /webhooks/elevenlabs`: ElevenLabs' post-call webhook. Signed (`ElevenLabs-Signature`),
//! answered at once (ElevenLabs switches off a webhook that keeps failing), kept once per
//! conversation so a retry or a replay changes nothing.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;

use crate::http::AppState;
use crate::memory::{self, Kept};
use crate::telephony::post_call;

pub const AGENT_WEBHOOK_PATH: &str = "/webhooks/elevenlabs";

/// The post-call webhook: not rate-limited (it is signed).
pub fn router() -> Router<AppState> {
    Router::new().route(AGENT_WEBHOOK_PATH, post(webhook))
}

fn reply(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "status": message }))).into_response()
}

async fn webhook(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(secret) = app
        .config
        .elevenlabs
        .as_ref()
        .and_then(|e| e.webhook_secret.as_ref())
    else {
        return reply(
            StatusCode::NOT_FOUND,
            "the post-call webhook is not configured",
        );
    };
    let header = headers
        .get(post_call::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    if let Err(e) = post_call::verify(header, &body, secret.expose(), app.clock.now()) {
        tracing::warn!(reason = %e, "refused an ElevenLabs webhook");
        return reply(StatusCode::UNAUTHORIZED, "invalid signature");
    }
    let report = match post_call::parse(&body) {
        Ok(Some(report)) => report,
        Ok(None) => return reply(StatusCode::OK, "ignored"),
        Err(e) => {
            tracing::warn!(error = %e, "signed ElevenLabs webhook is not a post-call report");
            return reply(StatusCode::BAD_REQUEST, "not a post-call report");
        }
    };
    match memory::keep(&app, report).await {
        Ok(Kept::New) => reply(StatusCode::OK, "kept"),
        Ok(Kept::Again) => reply(StatusCode::OK, "already kept"),
        Ok(Kept::NotOurs) => reply(StatusCode::OK, "not a call of this gateway"),
        Err(e) => {
            tracing::error!(error = %e, "post-call report not kept");
            reply(StatusCode::SERVICE_UNAVAILABLE, "try again")
        }
    }
}
