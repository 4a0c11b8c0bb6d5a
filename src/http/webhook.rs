//! `POST /webhooks/stripe`: verify the signature, deduplicate by event id, hand the event
//! to billing.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use tracing::Instrument;

use crate::billing::events;
use crate::http::AppState;
use crate::stripe::signature;

pub const WEBHOOK_PATH: &str = "/webhooks/stripe";

/// The Stripe webhook: not rate-limited (it is signed).
pub fn router() -> Router<AppState> {
    Router::new().route(WEBHOOK_PATH, post(webhook))
}

fn reply(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// `POST /webhooks/stripe`: verify, deduplicate by event id, handle, remember.
async fn webhook(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(stripe) = app.config.stripe.as_ref() else {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "payments are not configured",
        );
    };
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    if let Err(e) = signature::verify(
        header,
        &body,
        stripe.webhook_secret.expose(),
        app.clock.now(),
    ) {
        tracing::warn!(reason = %e, "refused a Stripe webhook");
        return reply(StatusCode::BAD_REQUEST, "invalid signature");
    }
    let event: events::Event = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "signed Stripe webhook is not an event");
            return reply(StatusCode::BAD_REQUEST, "not a Stripe event");
        }
    };
    let span = tracing::info_span!("stripe_event", event_id = %event.id, kind = %event.kind);
    process(&app, &event).instrument(span).await
}

async fn process(app: &AppState, event: &events::Event) -> Response {
    match app.store.event_seen(&event.id).await {
        Ok(true) => return Json(json!({ "received": true, "duplicate": true })).into_response(),
        Ok(false) => {}
        Err(e) => {
            tracing::error!(error = %e, "cannot check webhook deduplication");
            return reply(StatusCode::SERVICE_UNAVAILABLE, "try again");
        }
    }
    let outcome = match events::handle(app, event).await {
        Ok(o) => o,
        // A 5xx makes Stripe deliver again; handling is idempotent.
        Err(e) => {
            tracing::error!(event_id = %event.id, error = %e, "Stripe event not handled");
            return reply(StatusCode::SERVICE_UNAVAILABLE, "try again");
        }
    };
    if let Err(e) = app
        .store
        .record_event(&event.id, &event.kind, app.clock.now())
        .await
    {
        // Handled but not remembered: a redelivery is handled again, harmlessly.
        tracing::warn!(event_id = %event.id, error = %e, "could not record webhook event");
    }
    tracing::info!(event_id = %event.id, outcome = ?outcome, "Stripe event handled");
    Json(json!({ "received": true })).into_response()
}
