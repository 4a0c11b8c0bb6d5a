//! The find-my-code page: a customer who lost their code gives the email address or mobile
//! number their receipt went to, and every code sent there is sent to it again
//! (`notify::find_codes`), never shown here. The answer is the same whether the address is
//! known or not; requests are limited per address (in `notify`) and per client address (a
//! stricter rate limit than the rest of the API, here).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{extract::State, Json, Router};
use serde_json::{json, Value};

use super::checkout::ApiError;
use super::pages::{page, render};
use super::ratelimit::{self, RateLimiter};
use super::AppState;
use crate::notify::{self, Find};

const FIND_CODE: &str = include_str!("../../web/find-code.html");

/// Requests per client address: a burst of 5, then one a minute.
const BURST: u32 = 5;
const PER_MINUTE: u32 = 1;

pub fn page_router() -> Router<AppState> {
    Router::new().route("/find-code", get(find_page))
}

pub fn api_router() -> Router<AppState> {
    let limiter = RateLimiter::with_burst(BURST, PER_MINUTE);
    Router::new()
        .route("/api/find-code", post(find))
        .route_layer(axum::middleware::from_fn_with_state(
            limiter,
            ratelimit::limit,
        ))
}

async fn find_page() -> Response {
    page(render(
        FIND_CODE,
        &[("version", env!("CARGO_PKG_VERSION").to_string())],
    ))
}

/// `POST /api/find-code` `{ "contact": email or mobile number }`: 202 with the same words
/// for any valid address; 400 for one that is neither.
async fn find(State(app): State<AppState>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let body: Value = serde_json::from_slice(&body)
        .map_err(|_| ApiError::BadRequest("the body must be a JSON object".into()))?;
    let contact = body
        .get("contact")
        .and_then(Value::as_str)
        .filter(|c| c.len() <= 254)
        .ok_or_else(|| ApiError::BadRequest("contact is missing".into()))?;
    match notify::find_codes(&app, contact).await? {
        Find::Accepted => Ok((
            StatusCode::ACCEPTED,
            Json(json!({
                "message": "If we have sent a code to this address, it is on its way to it again."
            })),
        )
            .into_response()),
        Find::Invalid => Err(ApiError::BadRequest(
            "enter the email address or the mobile number (with its country code) you gave at checkout".into(),
        )),
    }
}
