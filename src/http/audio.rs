//! Recorded prompts under `AUDIO_DIR`, served as plain static files for Twilio to fetch and
//! cache: content type by extension, long `Cache-Control`, `ETag` with `If-None-Match`, and
//! HEAD and Range requests (answered by tower-http's `ServeDir`).

use std::path::PathBuf;
use std::time::UNIX_EPOCH;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::services::ServeDir;

use super::AppState;

/// A day is the floor Twilio's cache needs; prompts change rarely, so a week.
const CACHE_CONTROL: &str = "public, max-age=604800";

pub fn router(app: &AppState) -> Router<AppState> {
    let dir = app.config.voice.audio_dir.clone();
    Router::new()
        .nest_service("/audio", ServeDir::new(&dir))
        .layer(middleware::from_fn_with_state(dir, etag_and_cache))
}

/// A strong validator from the file's size and modification time.
async fn etag_for(dir: &std::path::Path, name: &str) -> Option<String> {
    let simple = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.starts_with('.');
    if !simple {
        return None;
    }
    let meta = tokio::fs::metadata(dir.join(name)).await.ok()?;
    let mtime = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    Some(format!("\"{:x}-{:x}\"", meta.len(), mtime.as_nanos()))
}

async fn etag_and_cache(State(dir): State<PathBuf>, req: Request, next: Next) -> Response {
    let name = req
        .uri()
        .path()
        .trim_start_matches("/audio/")
        .trim_start_matches('/')
        .to_string();
    let etag = etag_for(&dir, &name).await;
    if let Some(tag) = &etag {
        let matches = req
            .headers()
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
        if matches {
            let mut resp = StatusCode::NOT_MODIFIED.into_response();
            set(&mut resp, header::ETAG, tag);
            set(&mut resp, header::CACHE_CONTROL, CACHE_CONTROL);
            return resp;
        }
    }
    let mut resp = next.run(req).await;
    if resp.status().is_success() {
        if let Some(tag) = &etag {
            set(&mut resp, header::ETAG, tag);
        }
        set(&mut resp, header::CACHE_CONTROL, CACHE_CONTROL);
    }
    resp
}

fn set(resp: &mut Response, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
}
