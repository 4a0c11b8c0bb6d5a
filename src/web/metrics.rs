//! `GET /metrics` in Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::AppState;
use crate::metrics::{ACTIVE_CALLS, FRAMES, FRAME_LATENCY};

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics() -> impl IntoResponse {
    let mut out = String::new();
    let secs = |us: u64| us as f64 / 1e6;
    let _ = writeln!(
        out,
        "# HELP callgate_active_calls Calls bridged to the agent right now."
    );
    let _ = writeln!(out, "# TYPE callgate_active_calls gauge");
    let _ = writeln!(
        out,
        "callgate_active_calls {}",
        ACTIVE_CALLS.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP callgate_bridge_frames_total Audio frames forwarded, both directions."
    );
    let _ = writeln!(out, "# TYPE callgate_bridge_frames_total counter");
    let _ = writeln!(
        out,
        "callgate_bridge_frames_total {}",
        FRAMES.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP callgate_bridge_frame_latency_seconds Time a frame spends inside callgate."
    );
    let _ = writeln!(out, "# TYPE callgate_bridge_frame_latency_seconds summary");
    for q in [0.5, 0.9, 0.99, 0.999] {
        let _ = writeln!(
            out,
            "callgate_bridge_frame_latency_seconds{{quantile=\"{q}\"}} {}",
            secs(FRAME_LATENCY.quantile_us(q))
        );
    }
    let _ = writeln!(
        out,
        "callgate_bridge_frame_latency_seconds_count {}",
        FRAME_LATENCY.count()
    );
    let _ = writeln!(
        out,
        "# TYPE callgate_bridge_frame_latency_max_seconds gauge"
    );
    let _ = writeln!(
        out,
        "callgate_bridge_frame_latency_max_seconds {}",
        secs(FRAME_LATENCY.max_us())
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
