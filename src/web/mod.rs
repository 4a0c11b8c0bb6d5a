//! The HTTP surface: each feature exposes a router over the shared state, merged here.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

use crate::App;

pub mod admin;
mod audio;
mod metrics;
mod pages;
pub(crate) mod ratelimit;
mod security;

pub use pages::{pay_page, render};

/// The state every handler receives: cheap to clone.
pub type AppState = Arc<App>;

/// Largest request body accepted anywhere (webhooks are a few KiB).
pub const BODY_LIMIT: usize = 64 * 1024;

pub fn router(app: AppState) -> Router {
    let csp: std::sync::Arc<str> = security::content_security_policy(&app.config).into();
    let limiter = ratelimit::RateLimiter::new(app.config.api_requests_per_minute);
    let mut routes = Router::new()
        .merge(health_router())
        .merge(crate::voice::router())
        .merge(crate::bridge::router())
        .merge(crate::payments::router())
        .merge(audio::router(&app))
        .merge(pages::router())
        .merge(metrics::router())
        .merge(admin::router());
    if app.config.demo {
        routes = routes
            .merge(crate::demo::router())
            .layer(axum::middleware::from_fn(crate::demo::mark_pages));
    }
    routes
        .layer(axum::middleware::from_fn_with_state(
            limiter,
            ratelimit::limit,
        ))
        .layer(axum::middleware::from_fn_with_state(csp, security::headers))
        .layer(CompressionLayer::new())
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(TraceLayer::new_for_http())
        .with_state(app)
}

fn health_router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// The process is up.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// The database answers within two seconds.
async fn readyz(State(app): State<AppState>) -> Response {
    let backend = app.store.backend();
    if app.lifecycle.draining() {
        return unavailable(backend, "draining");
    }
    match tokio::time::timeout(Duration::from_secs(2), app.store.ping()).await {
        Ok(Ok(())) => Json(json!({ "status": "ready", "database": backend })).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            unavailable(backend, "database error")
        }
        Err(_) => {
            tracing::warn!("readiness check timed out");
            unavailable(backend, "database timed out")
        }
    }
}

fn unavailable(backend: &str, reason: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "status": "unavailable", "database": backend, "reason": reason })),
    )
        .into_response()
}
