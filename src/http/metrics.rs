//! `GET /metrics` in Prometheus text format: live calls and the bridge's frame latency,
//! requests by route and status with latency histograms (the webhooks among them), charges by
//! state, and Stripe and ElevenLabs errors by kind.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::AppState;
use crate::metrics::{
    ErrorCounts, Histogram, ACTIVE_CALLS, AGENT_ERRORS, CUT_OFF, FRAMES, FRAME_LATENCY, HTTP,
    IGNORED_PAYMENTS, ORPHANED_CALLS, STRIPE_ERRORS,
};

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

/// Serves `METRICS_LISTEN`: `/metrics` alone, without a token (the operator chose an
/// address only their monitoring reaches). Runs until aborted.
pub async fn serve_listener(app: AppState, listener: tokio::net::TcpListener) {
    let routes = Router::new()
        .route("/metrics", get(|State(app): State<AppState>| render(app)))
        .with_state(app);
    if let Err(e) = axum::serve(listener, routes).await {
        tracing::error!(error = %e, "the metrics listener stopped");
    }
}

/// Upper bounds of the request latency histogram, in seconds.
const LE: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let inner: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
                .collect();
            let _ = write!(self.0, "{{{}}}", inner.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn errors(&mut self, name: &str, help: &str, counts: &ErrorCounts) {
        self.family(name, "counter", help);
        for (kind, n) in counts.snapshot() {
            self.sample(name, &[("kind", kind)], n);
        }
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        for le in LE {
            let bound = format!("{le}");
            let mut l = labels.to_vec();
            l.push(("le", &bound));
            self.sample(&format!("{name}_bucket"), &l, h.count_le((le * 1e6) as u64));
        }
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        self.sample(&format!("{name}_bucket"), &l, h.count());
        self.sample(&format!("{name}_sum"), labels, h.sum_us() as f64 / 1e6);
        self.sample(&format!("{name}_count"), labels, h.count());
    }
}

/// Escapes a label value (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Whether a request names a client other than its peer: any header a reverse proxy adds
/// (`Forwarded`, `Via`, `X-Forwarded-*`, `X-Real-IP` and the other `*-IP` spellings of
/// nginx, Caddy, CDNs and load balancers).
fn came_through_a_proxy(headers: &axum::http::HeaderMap) -> bool {
    headers.keys().any(|name| {
        let name = name.as_str();
        name == "forwarded"
            || name == "via"
            || name.starts_with("x-forwarded")
            || name.ends_with("-ip")
    })
}

/// Who may scrape the main listener: with `METRICS_TOKEN`, whoever sends it as a bearer
/// token; without one, only a loopback peer that is not a trusted proxy and sent no proxy
/// header of any kind. A same-host proxy that adds none must be fronted by `METRICS_TOKEN`
/// or `METRICS_LISTEN` (the README says so).
fn may_scrape(app: &AppState, req: &axum::extract::Request) -> bool {
    let headers = req.headers();
    match &app.config.http.metrics_token {
        Some(token) => headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| crate::crypto::secrets_equal(given.trim(), token.expose())),
        None => {
            let trusted = &app.config.http.trusted_proxies;
            super::client_ip::peer(req.extensions())
                .is_some_and(|ip| ip.is_loopback() && !trusted.iter().any(|net| net.contains(&ip)))
                && !came_through_a_proxy(headers)
        }
    }
}

async fn metrics(State(app): State<AppState>, req: axum::extract::Request) -> Response {
    if !may_scrape(&app, &req) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "set METRICS_TOKEN and send it as a bearer token, or read /metrics on METRICS_LISTEN",
        )
            .into_response();
    }
    render(app).await
}

async fn render(app: AppState) -> Response {
    let mut t = Text(String::new());
    let secs = |us: u64| us as f64 / 1e6;

    t.family(
        "callgate_active_calls",
        "gauge",
        "Calls bridged to the agent right now.",
    );
    t.sample(
        "callgate_active_calls",
        &[],
        ACTIVE_CALLS.load(Ordering::Relaxed),
    );
    t.family(
        "callgate_draining",
        "gauge",
        "1 while shutting down (new calls are turned away).",
    );
    t.sample("callgate_draining", &[], u8::from(app.lifecycle.draining()));
    t.family(
        "callgate_bridge_frames_total",
        "counter",
        "Audio frames forwarded, both directions.",
    );
    t.sample(
        "callgate_bridge_frames_total",
        &[],
        FRAMES.load(Ordering::Relaxed),
    );
    t.family(
        "callgate_orphaned_calls_total",
        "counter",
        "Calls settled here because the instance carrying them was gone (crashed, cut off, restarted).",
    );
    t.sample(
        "callgate_orphaned_calls_total",
        &[],
        ORPHANED_CALLS.load(Ordering::Relaxed),
    );
    t.family(
        "callgate_cut_off_total",
        "counter",
        "Times this instance lost the database long enough to end its own live calls (others then settle them).",
    );
    t.sample(
        "callgate_cut_off_total",
        &[],
        CUT_OFF.load(Ordering::Relaxed),
    );
    t.family(
        "callgate_bridge_frame_latency_seconds",
        "summary",
        "Time a frame spends inside callgate.",
    );
    for q in [0.5, 0.9, 0.99, 0.999] {
        t.sample(
            "callgate_bridge_frame_latency_seconds",
            &[("quantile", &q.to_string())],
            secs(FRAME_LATENCY.quantile_us(q)),
        );
    }
    t.sample(
        "callgate_bridge_frame_latency_seconds_sum",
        &[],
        secs(FRAME_LATENCY.sum_us()),
    );
    t.sample(
        "callgate_bridge_frame_latency_seconds_count",
        &[],
        FRAME_LATENCY.count(),
    );
    t.family(
        "callgate_bridge_frame_latency_max_seconds",
        "gauge",
        "Longest time a frame spent inside callgate.",
    );
    t.sample(
        "callgate_bridge_frame_latency_max_seconds",
        &[],
        secs(FRAME_LATENCY.max_us()),
    );

    t.family(
        "callgate_http_requests_total",
        "counter",
        "Requests served, by route pattern and status.",
    );
    for ((route, status), n) in HTTP.requests() {
        t.sample(
            "callgate_http_requests_total",
            &[("route", &route), ("status", &status.to_string())],
            n,
        );
    }
    t.family(
        "callgate_http_request_duration_seconds",
        "histogram",
        "Time to answer a request, by route pattern (the webhooks among them).",
    );
    for (route, h) in HTTP.latencies() {
        t.histogram(
            "callgate_http_request_duration_seconds",
            &[("route", &route)],
            &h,
        );
    }

    t.errors(
        "callgate_stripe_errors_total",
        "Failed Stripe requests by kind (each attempt, including those retried).",
        &STRIPE_ERRORS,
    );
    t.errors(
        "callgate_elevenlabs_errors_total",
        "ElevenLabs agent failures by kind (`dropped`: during a call).",
        &AGENT_ERRORS,
    );
    t.errors(
        "callgate_stripe_payments_ignored_total",
        "Succeeded PaymentIntents that paid no order: created elsewhere, or for another amount or currency.",
        &IGNORED_PAYMENTS,
    );

    // Charges by state and orders by plan come from the database: skipped (and said so) if it
    // does not answer.
    let (counts, plans) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(2), app.store.count_charges_by_state()),
        tokio::time::timeout(Duration::from_secs(2), app.store.orders_by_plan()),
    );
    let counts = counts.ok().and_then(Result::ok);
    let plans = plans.ok().and_then(Result::ok);
    t.family(
        "callgate_store_up",
        "gauge",
        "1 if the database answered this scrape.",
    );
    t.sample(
        "callgate_store_up",
        &[],
        u8::from(counts.is_some() && plans.is_some()),
    );
    if let Some(plans) = plans {
        t.family(
            "callgate_orders",
            "gauge",
            "Orders by the plan they bought and their state.",
        );
        t.family(
            "callgate_orders_amount_cents",
            "gauge",
            "What those orders cost together, in the currency's minor unit.",
        );
        for p in &plans {
            let labels = [("plan", p.plan.as_str()), ("status", p.status.as_str())];
            t.sample("callgate_orders", &labels, p.orders);
            t.sample("callgate_orders_amount_cents", &labels, p.amount);
        }
    }
    if let Some(counts) = counts {
        t.family("callgate_charges", "gauge", "Overage charges by state.");
        for (state, n) in counts {
            t.sample("callgate_charges", &[("state", state.as_str())], n);
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], t.0).into_response()
}
