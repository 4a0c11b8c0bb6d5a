//! The HTTP surface, routes only: each handler reads its request, calls a feature, and
//! writes the answer. `serve` runs it with the billing worker and drains calls on shutdown.

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
use tower_http::timeout::TimeoutLayer;

use std::future::Future;

use tokio::net::TcpListener;

use crate::{App, StartError};

mod account;
pub mod admin;
mod agent_webhook;
mod audio;
pub mod checkout;
pub mod client_ip;
mod find_code;
pub mod media;
pub mod metrics;
mod pages;
pub mod pay;
pub(crate) mod ratelimit;
mod security;
pub mod server;
mod top_up;
pub mod voice;
pub mod webhook;

pub use pages::{pay_page, render};

/// The state every handler receives: cheap to clone.
pub type AppState = Arc<App>;

/// Largest request body accepted anywhere (webhooks are a few KiB).
pub const BODY_LIMIT: usize = 64 * 1024;

/// Every route of the product.
pub fn router(app: AppState) -> Router {
    router_with(app, |routes| routes)
}

/// The product's routes, with `extend` given them before the outer layers (security
/// headers, compression, limits) wrap them all: `callgate demo` adds its stand-ins here.
pub fn router_with(
    app: AppState,
    extend: impl FnOnce(Router<AppState>) -> Router<AppState>,
) -> Router {
    let csp: std::sync::Arc<str> = security::content_security_policy(&app.config).into();
    let limiter = ratelimit::RateLimiter::new(app.config.api_requests_per_minute);
    let mut routes: Router<AppState> = Router::new()
        .merge(health_router())
        .merge(voice::router())
        .merge(media::router())
        .merge(webhook::router())
        .merge(agent_webhook::router())
        .merge(pay::page_router())
        .merge(
            Router::new()
                .merge(checkout::router())
                .merge(pay::api_router())
                .merge(top_up::api_router())
                .merge(account::api_router())
                .route_layer(axum::middleware::from_fn_with_state(
                    limiter,
                    ratelimit::limit,
                )),
        )
        .merge(audio::router(&app))
        .merge(pages::router())
        .merge(account::router())
        .merge(top_up::page_router())
        .merge(find_code::page_router())
        .merge(find_code::api_router())
        .merge(metrics::router())
        .merge(admin::router(&app))
        .route_layer(axum::middleware::from_fn(route_stats));
    routes = extend(routes).fallback(pages::not_found);
    let request_timeout = Duration::from_secs(app.config.http.request_timeout_secs);
    routes
        .layer(axum::middleware::from_fn_with_state(csp, security::headers))
        .layer(CompressionLayer::new())
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            client_ip::resolve,
        ))
        .layer(axum::middleware::from_fn(request_id))
        .with_state(app)
}

/// Serves the HTTP surface on `listener` until `shutdown` resolves; then drains live calls
/// (HTTP keeps serving meanwhile: their closing TwiML and status callbacks still arrive),
/// and finishes requests in flight.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let routes = router(app.clone());
    serve_router(app, routes, listener, shutdown).await
}

/// [`serve`] with the routes given (the demo's are the product's and its stand-ins').
pub async fn serve_router(
    app: Arc<App>,
    router: Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    // Bound before anything starts: a taken metrics port fails the start.
    let metrics_server = match app.config.http.metrics_listen {
        Some(addr) => {
            let listener = crate::app::bind(addr).await?;
            Some(tokio::spawn(metrics::serve_listener(app.clone(), listener)))
        }
        None => None,
    };
    // This instance beats in the store from now on; what an earlier run of it carried is
    // settled before the first request.
    let port = listener.local_addr().map_err(StartError::Serve)?.port();
    let me = crate::liveness::instance(&app, crate::liveness::name(&app, port));
    let beating = crate::liveness::start(&app, me).await;
    let signals = crate::liveness::relay_signals(&app).await;
    // Live calls' metering, flushed on one clock for the whole instance.
    app.metering.start(crate::write_behind::metering::Flush {
        store: app.store.clone(),
        clock: app.clock.clone(),
        every: app.bridge.tick * app.bridge.persist_every_secs.max(1) as u32,
    });
    let worker = app
        .config
        .billing
        .worker
        .then(|| crate::billing::spawn_worker(app.clone()));
    let attempts_of = app.clone();
    let limits = app.config.http.clone();
    let grace = std::time::Duration::from_secs(app.config.shutdown_grace_secs);
    let handover = std::time::Duration::from_secs(app.config.shutdown_handover_secs);
    let drained = async move {
        shutdown.await;
        app.lifecycle.drain(handover, grace).await;
        // Drained: no call of this run remains to be carried.
        beating.stop().await;
        if let Some(signals) = signals {
            signals.stop().await;
        }
        crate::liveness::stopped(&app).await;
    };
    let served = server::run(listener, router, &limits, drained)
        .await
        .map_err(StartError::Serve);
    if let Some(worker) = worker {
        worker.abort();
    }
    if let Some(metrics_server) = metrics_server {
        metrics_server.abort();
    }
    // Code attempts and arriving calls are written behind the answers: write the last ones.
    attempts_of.attempts.flush().await;
    attempts_of.arrivals.flush().await;
    served
}

/// Accepts a caller's `X-Request-Id` if it is short and plain, else makes one; every log line
/// of the request carries it (in the `request` span), and the response returns it.
async fn request_id(mut req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use tracing::Instrument;
    let given = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
        .map(String::from);
    let id = given.unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
    let value = axum::http::HeaderValue::from_str(&id).ok();
    if let Some(v) = &value {
        req.headers_mut().insert(REQUEST_ID, v.clone());
    }
    // The path only: a query string may carry a client secret.
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path()
    );
    let mut resp = next.run(req).instrument(span).await;
    if let Some(v) = value {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}

const REQUEST_ID: &str = "x-request-id";

/// Counts each request by its route pattern and status, and times it.
async fn route_stats(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let took = started.elapsed();
    let status = resp.status();
    crate::metrics::HTTP.record(&route, status.as_u16(), took);
    if status.is_server_error() {
        tracing::warn!(%route, status = status.as_u16(), ms = took.as_millis() as u64, "request failed");
    } else {
        tracing::debug!(%route, status = status.as_u16(), ms = took.as_millis() as u64, "request served");
    }
    resp
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
    if app.lifecycle.leaving() {
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
