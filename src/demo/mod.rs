//! `callgate demo`: the whole product on one machine without accounts. Local stand-ins take
//! the place of Stripe (an in-memory API with signed webhooks and a stand-in Stripe.js),
//! Twilio (the browser phone at `/demo/phone`) and ElevenLabs (an agent without AI that plays
//! the caller back). Everything else is the real callgate: the storefront, webhooks, the phone
//! menu, the media bridge, metering and overage billing, on a SQLite file.
//!
//! Every page carries a "demo" banner, and the demo refuses to start with live Stripe keys
//! in the environment, so it cannot be mistaken for (or turned into) a live deployment.

pub mod agent;
pub mod phone;
pub mod stripe;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;

use crate::config::BridgeSettings;
use crate::config::{Config, ConfigError, Env};
use crate::http::AppState;
use crate::{App, StartError};

/// The stand-ins, reachable from callgate's demo routes.
pub struct DemoServices {
    pub stripe: stripe::FakeStripe,
    pub hub: Arc<agent::Hub>,
    pub calls: Mutex<HashMap<String, phone::DemoCall>>,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0} holds a live key: the demo never runs with live keys (unset it, or use `callgate serve`)")]
    LiveKey(&'static str),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("cannot start a demo stand-in: {0}")]
    StandIn(std::io::Error),
}

impl From<ConfigError> for DemoError {
    fn from(e: ConfigError) -> Self {
        DemoError::Start(e.into())
    }
}

/// How to run the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub listen: SocketAddr,
    /// The demo's own SQLite file (never the operator's `DATABASE_URL`).
    pub database: PathBuf,
    /// Minutes included in the demo plan: small, so the warning and overage come soon.
    pub minutes: i64,
    /// Recorded prompts, if any (else the browser reads the `<Say>` texts aloud).
    pub audio_dir: PathBuf,
    /// The bridge's clock (tests make a metered second shorter).
    pub bridge: BridgeSettings,
}

/// Variables that must not hold live credentials while the demo runs.
const GUARDED: &[&str] = &[
    "STRIPE_SECRET_KEY",
    "STRIPE_PUBLISHABLE_KEY",
    "STRIPE_WEBHOOK_SECRET",
];

/// Refuses live Stripe keys: a demo must never be one typo away from charging real cards.
pub fn refuse_live_keys(env: &dyn Env) -> Result<(), DemoError> {
    for var in GUARDED {
        if env.get(var).is_some_and(|v| v.contains("_live_")) {
            return Err(DemoError::LiveKey(var));
        }
    }
    Ok(())
}

/// A running demo.
pub struct Demo {
    pub app: Arc<App>,
    /// The stand-ins the demo's routes reach.
    pub services: Arc<DemoServices>,
    pub url: String,
    /// The admin view's password for this run (printed at start).
    pub admin_password: String,
    /// The bound listener, until [`crate::http::serve_router`] takes it.
    pub listener: Option<tokio::net::TcpListener>,
    tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts the stand-ins and builds the app; [`serve`] then runs it.
pub async fn start(options: DemoOptions) -> Result<Demo, DemoError> {
    let listener = crate::app::bind(options.listen).await?;
    let addr = listener.local_addr().map_err(DemoError::StandIn)?;
    let base = format!("http://{addr}");

    let secret_key = format!("sk_test_demo_{}", crate::crypto::random_hex(12));
    let webhook_secret = format!("whsec_demo_{}", crate::crypto::random_hex(16));
    let stripe = stripe::start(
        secret_key.clone(),
        webhook_secret.clone(),
        format!("{base}{}", crate::http::webhook::WEBHOOK_PATH),
    )
    .await
    .map_err(DemoError::StandIn)?;
    let stripe_base = stripe.base.clone();

    let hub = agent::Hub::new();
    let agent_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(DemoError::StandIn)?;
    let agent_base = format!(
        "http://{}",
        agent_listener.local_addr().map_err(DemoError::StandIn)?
    );
    let agent_task = tokio::spawn(agent::serve(agent_listener, hub.clone()));

    let admin_password = format!("demo-{}", crate::crypto::random_hex(8));
    let env: HashMap<String, String> = [
        ("LISTEN_ADDR", addr.to_string()),
        ("BASE_URL", base.clone()),
        (
            "DATABASE_URL",
            format!("sqlite:{}", options.database.display()),
        ),
        ("PLAN_NAME", "Demo talk time".into()),
        ("PLAN_MINUTES", options.minutes.to_string()),
        ("STRIPE_SECRET_KEY", secret_key),
        ("STRIPE_PUBLISHABLE_KEY", "pk_test_demo".into()),
        ("STRIPE_WEBHOOK_SECRET", webhook_secret),
        ("STRIPE_API_BASE", stripe_base),
        ("STRIPE_JS_URL", format!("{base}/demo/stripe.js")),
        (
            "TWILIO_ACCOUNT_SID",
            format!("AC{}", crate::crypto::random_hex(16)),
        ),
        ("TWILIO_AUTH_TOKEN", crate::crypto::random_hex(16)),
        ("TWILIO_PHONE_NUMBER", "+15550100000".into()),
        // `0` during the conversation shows the transfer (no one answers it in the demo).
        ("OPERATOR_NUMBER", "+15550100999".into()),
        ("ELEVENLABS_AGENT_ID", "demo_agent".into()),
        ("ELEVENLABS_API_BASE", agent_base),
        ("BILLING_INTERVAL_SECS", "2".into()),
        ("MAX_CALL_MINUTES", "30".into()),
        ("API_REQUESTS_PER_MINUTE", "600".into()),
        ("AUDIO_DIR", options.audio_dir.display().to_string()),
        ("ADMIN_PASSWORD", admin_password.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut config = Config::from_env(&env)?;
    config.demo = true;
    let mut app = App::build(config).await?;
    app.bridge = options.bridge;
    Ok(Demo {
        app: Arc::new(app),
        services: Arc::new(DemoServices {
            stripe,
            hub,
            calls: Mutex::new(HashMap::new()),
        }),
        admin_password,
        url: base,
        listener: Some(listener),
        tasks: vec![agent_task],
    })
}

/// Runs `callgate demo` until Ctrl-C.
pub async fn run(options: DemoOptions) -> Result<(), DemoError> {
    refuse_live_keys(&crate::config::ProcessEnv)?;
    let mut demo = start(options.clone()).await?;
    println!();
    println!("  callgate demo is running (local stand-ins for Stripe, Twilio and ElevenLabs).");
    println!();
    println!("  1. Buy talk time:      {}/", demo.url);
    println!("  2. Call with a phone:  {}/demo/phone", demo.url);
    println!(
        "  3. See it as the operator: {}/admin  (any user name, password {})",
        demo.url, demo.admin_password
    );
    println!(
        "  Demo data: {} (delete it to start afresh). Ctrl-C stops.",
        options.database.display()
    );
    println!();
    let Some(listener) = demo.listener.take() else {
        return Ok(());
    };
    let routes = demo.router();
    crate::http::serve_router(
        demo.app.clone(),
        routes,
        listener,
        crate::app::shutdown_signal(),
    )
    .await?;
    Ok(())
}

impl Demo {
    /// The product's routes with the stand-ins', every page marked as the demo.
    pub fn router(&self) -> Router {
        let services = self.services.clone();
        crate::http::router_with(self.app.clone(), move |routes| {
            routes
                .merge(stand_in_routes().layer(Extension(services)))
                .layer(axum::middleware::from_fn(mark_pages))
        })
    }
}

fn stand_in_routes() -> Router<AppState> {
    Router::new()
        .route("/demo/phone", get(phone_page))
        .route("/demo/phone/dial", post(phone::dial))
        .route("/demo/phone/next", post(phone::next))
        .route("/demo/phone/hangup", post(phone::hangup))
        .route("/demo/phone/media", get(phone::media))
        .route("/demo/stripe.js", get(stripe_js))
        .route("/demo/stripe/confirm", post(confirm))
}

const PHONE_PAGE: &str = include_str!("../../web/phone.html");

async fn phone_page(State(app): State<AppState>) -> Response {
    let number = app
        .config
        .twilio
        .as_ref()
        .map(|t| crate::http::checkout::display_phone(&t.phone_number))
        .unwrap_or_default();
    let mut resp = Html(crate::http::render(
        PHONE_PAGE,
        &[
            ("number", number),
            ("version", env!("CARGO_PKG_VERSION").to_string()),
        ],
    ))
    .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

async fn stripe_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        stripe::STRIPE_JS,
    )
        .into_response()
}

#[derive(Deserialize)]
struct Confirm {
    client_secret: String,
    card: String,
}

/// What the stand-in Stripe.js calls when the customer presses Pay.
async fn confirm(
    Extension(demo): Extension<Arc<DemoServices>>,
    Json(c): Json<Confirm>,
) -> Response {
    match demo.stripe.confirm(&c.client_secret, &c.card) {
        Ok(pi) => Json(pi).into_response(),
        Err(error) => (StatusCode::PAYMENT_REQUIRED, Json(error)).into_response(),
    }
}

const BANNER: &str =
    "<aside class=\"demo-banner\" aria-label=\"About this demo\"><strong>Demo</strong> \
    Payments, phone calls and the agent are local stand-ins: nothing is charged and no one is \
    called. <a href=\"/\">Storefront</a> · <a href=\"/demo/phone\">Browser phone</a></aside>";

/// Marks every HTML page as the demo.
pub async fn mark_pages(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let html = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/html"));
    if !html {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 4 * 1024 * 1024).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "page too large").into_response();
    };
    let text = String::from_utf8_lossy(&bytes);
    let marked = match text.find("<body") {
        Some(at) => match text[at..].find('>') {
            Some(end) => {
                let split = at + end + 1;
                format!("{}{BANNER}{}", &text[..split], &text[split..])
            }
            None => text.into_owned(),
        },
        None => format!("{BANNER}{text}"),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(marked))
}
