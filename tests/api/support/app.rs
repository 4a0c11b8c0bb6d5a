//! callgate itself, started in-process on a free loopback port against a test database.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use callgate::config::Config;
use callgate::domain::clock::{Clock, SystemClock};
use callgate::store::DynStore;
use callgate::App;

pub const AUTH_TOKEN: &str = "test-auth-token-0123456789";
pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const PHONE: &str = "+15550100200";

pub struct TestApp {
    /// `http://127.0.0.1:PORT`, which is also the app's BASE_URL.
    pub base: String,
    pub app: Arc<App>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    _audio: tempfile::TempDir,
    /// The instance's own runtime, when it can crash ([`spawn_crashable`]).
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The storefront's checkout call at `path` (new or old), with a JSON body: the status
    /// and the JSON answer (`null` when the answer is not JSON).
    pub async fn checkout(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let resp = reqwest::Client::new()
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Starts a purchase as the storefront does: the PaymentIntent's id and client secret.
    pub async fn start_purchase(&self, overage_accepted: bool) -> (String, String) {
        let (status, created) = self
            .checkout(
                "/api/create-payment-intent",
                serde_json::json!({ "overage_accepted": overage_accepted }),
            )
            .await;
        assert_eq!(status, 200, "{created}");
        (
            created["paymentIntent"].as_str().unwrap().to_string(),
            created["clientSecret"].as_str().unwrap().to_string(),
        )
    }

    /// Delivers a Stripe event (`id`, `kind`, `data.object`) to the webhook, signed with
    /// `secret` as Stripe signs it; the status answered.
    pub async fn stripe_event(
        &self,
        secret: &str,
        id: &str,
        kind: &str,
        object: serde_json::Value,
    ) -> u16 {
        let event = serde_json::json!({ "id": id, "object": "event", "type": kind,
                                        "data": { "object": object } });
        let body = serde_json::to_vec(&event).unwrap();
        let t = self.app.clock.now();
        let signature = callgate::stripe::signature::sign(secret, t, &body);
        reqwest::Client::new()
            .post(self.url("/webhooks/stripe"))
            .header("content-type", "application/json")
            .header("stripe-signature", format!("t={t},v1={signature}"))
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// The order of PaymentIntent `pi` once its webhook has paid it (waits up to 20 s).
    pub async fn paid_order(&self, pi: &str) -> callgate::store::Order {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let order = self.app.store.order_by_payment_intent(pi).await.unwrap();
            if let Some(o) = order.filter(|o| o.status == callgate::store::OrderStatus::Paid) {
                return o;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{pi}: its webhook never paid it"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// What SIGTERM does to `callgate serve`.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl TestApp {
    /// Kills the instance as `kill -9` would: every task of its runtime stops where it is
    /// (sockets closed, nothing more written; what reached the database stays).
    pub fn crash(&mut self) {
        self.shutdown.take();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The test configuration: Twilio and the agent configured, `extra` added or replaced.
pub fn config(base: &str, audio: &Path, extra: &[(&str, &str)]) -> Config {
    let mut env: HashMap<String, String> = [
        ("BASE_URL", base),
        ("CALLGATE_SECRET", "test-secret-0123456789abcdef0123456789"),
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
        ("TWILIO_PHONE_NUMBER", PHONE),
        ("ELEVENLABS_AGENT_ID", "agent_test"),
        ("AUDIO_DIR", audio.to_str().unwrap()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    Config::from_env(&env).expect("test config is valid")
}

/// An app without a server, on a clock of the test's choosing (billing tests).
pub fn build(store: DynStore, extra: &[(&str, &str)], clock: Arc<dyn Clock>) -> App {
    let config = config("http://127.0.0.1:9", Path::new("/nonexistent"), extra);
    App::with_store(config, store, clock).expect("app")
}

/// Starts the app with Twilio and the agent configured.
pub async fn spawn(store: DynStore, extra: &[(&str, &str)]) -> TestApp {
    spawn_with(store, extra, |_| {}).await
}

/// Like [`spawn`], with a last say over the app (e.g. a faster bridge clock).
pub async fn spawn_with(
    store: DynStore,
    extra: &[(&str, &str)],
    adjust: impl FnOnce(&mut App),
) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let audio = tempfile::tempdir().unwrap();
    let mut app = App::with_store(
        config(&base, audio.path(), extra),
        store,
        Arc::new(SystemClock),
    )
    .expect("app");
    adjust(&mut app);
    let app = Arc::new(app);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let served = app.clone();
    tokio::spawn(async move {
        let _ = callgate::http::serve(served, listener, async {
            let _ = rx.await;
        })
        .await;
    });
    TestApp {
        base,
        app,
        shutdown: Some(tx),
        _audio: audio,
        runtime: None,
    }
}

/// An instance that can crash ([`TestApp::crash`]): on a runtime of its own, with its own
/// connection to the database (`db`), as a process of its own would be.
pub async fn spawn_crashable(
    db: &crate::support::Again,
    extra: &[(&str, &str)],
    adjust: impl FnOnce(&mut App) + Send + 'static,
) -> TestApp {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let audio = tempfile::tempdir().unwrap();
    let dir = audio.path().to_path_buf();
    let db = db.clone();
    let extra: Vec<(String, String)> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let (base, app, tx) = runtime
        .spawn(async move {
            let store = db.open().await;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let extra: Vec<(&str, &str)> = extra
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let mut app =
                App::with_store(config(&base, &dir, &extra), store, Arc::new(SystemClock))
                    .expect("app");
            adjust(&mut app);
            let app = Arc::new(app);
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let served = app.clone();
            tokio::spawn(async move {
                let _ = callgate::http::serve(served, listener, async {
                    let _ = rx.await;
                })
                .await;
            });
            (base, app, tx)
        })
        .await
        .expect("instance started");
    TestApp {
        base,
        app,
        shutdown: Some(tx),
        _audio: audio,
        runtime: Some(runtime),
    }
}
