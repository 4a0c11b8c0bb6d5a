//! callgate: a paid phone gateway to an ElevenLabs voice agent.
//!
//! The money flows storefront -> `payments` -> `store`; a call flows Twilio -> `voice` ->
//! `bridge` <-> `agent`, metered into `store`. `web` wires the HTTP surface; `cli` is the
//! operator's entry point.

pub mod agent;
pub mod bridge;
pub mod cli;
pub mod clock;
pub mod codes;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod import;
pub mod ledger;
pub mod lifecycle;
pub mod loadtest;
pub mod metrics;
pub mod money;
pub mod orders;
pub mod payments;
pub mod prompts;
pub mod store;
pub mod telemetry;
pub mod voice;
pub mod web;
pub mod webhook_bench;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::bridge::BridgeSettings;
use crate::clock::{Clock, SystemClock};
use crate::codes::CodeVault;
use crate::config::{Config, ConfigError, DatabaseConfig, Secret};
use crate::payments::stripe::StripeClient;
use crate::prompts::AudioCatalog;
use crate::store::{DynStore, StoreError};

/// Why callgate could not start. Each says what is wrong and how to fix it, in one line.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0} (check DATABASE_URL or MONGODB_URI, and that the file or server is reachable)")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source} (set LISTEN_ADDR or --listen to a free address)")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("key file {path}: {source} (set CALLGATE_SECRET, or make the folder writable)")]
    KeyFile { path: PathBuf, source: io::Error },
    #[error("server failed: {0}")]
    Serve(io::Error),
}

/// Everything a request handler or an operator command needs, built once.
pub struct App {
    pub config: Config,
    /// Recorded prompts found at start-up.
    pub audio: AudioCatalog,
    pub store: DynStore,
    pub vault: CodeVault,
    pub clock: Arc<dyn Clock>,
    /// Present when payments are configured.
    pub stripe: Option<StripeClient>,
    /// Timing of the media bridge (tests shorten its seconds).
    pub bridge: BridgeSettings,
    /// μ-law audio of the one-minute warning.
    pub warning_audio: Vec<u8>,
    /// For outside calls that are not Stripe's (ElevenLabs' signed URLs).
    pub http: reqwest::Client,
    /// Wakes the billing worker when a charge becomes due.
    pub billing_wakeup: Arc<tokio::sync::Notify>,
    /// Draining and live calls, for a shutdown that does not cut callers off.
    pub lifecycle: lifecycle::Lifecycle,
    /// Everyone's recent wrong codes, cached (see [`voice::flow::FailureGauge`]).
    pub failures: voice::flow::FailureGauge,
    /// Code attempts, written by group commit.
    pub attempts: voice::attempts::AttemptLog,
    /// Live calls' metering, written in batches.
    pub metering: bridge::metering::MeteringBook,
    /// Wrong admin passwords per client IP.
    pub admin_logins: web::admin::LoginGuard,
    /// The local stand-ins, in `callgate demo` only.
    pub demo: Option<Arc<demo::DemoServices>>,
}

impl App {
    /// Opens and migrates the store, and loads the code keys.
    pub async fn build(config: Config) -> Result<App, StartError> {
        let store = store::open(&config.database).await?;
        store.migrate().await?;
        App::with_store(config, store, Arc::new(SystemClock))
    }

    /// Assembles an app over a store that is already open and migrated.
    pub fn with_store(
        config: Config,
        store: DynStore,
        clock: Arc<dyn Clock>,
    ) -> Result<App, StartError> {
        let secret = match (&config.secret, &config.database) {
            (Some(secret), _) => secret.clone(),
            (None, DatabaseConfig::Sqlite { path }) => {
                load_or_create_key_file(&key_file_for(path))?
            }
            (None, _) => {
                return Err(ConfigError::Missing {
                    var: "CALLGATE_SECRET",
                    hint: "required with a shared database".into(),
                }
                .into())
            }
        };
        Ok(App {
            vault: CodeVault::new(&secret),
            audio: AudioCatalog::scan(&config.voice.audio_dir),
            stripe: config.stripe.as_ref().map(StripeClient::new),
            bridge: BridgeSettings::default(),
            warning_audio: bridge::load_warning(&config.voice.audio_dir),
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(5))
                .timeout(std::time::Duration::from_secs(15))
                .build()
                .unwrap_or_default(),
            billing_wakeup: Arc::new(tokio::sync::Notify::new()),
            lifecycle: lifecycle::Lifecycle::default(),
            demo: None,
            failures: Default::default(),
            attempts: Default::default(),
            admin_logins: Default::default(),
            metering: Default::default(),
            config,
            store,
            clock,
        })
    }
}

impl App {
    /// A URL on this server as the outside world reaches it (`BASE_URL` + `path`).
    pub fn public_url(&self, path: &str) -> String {
        let base = self
            .config
            .base_url
            .as_ref()
            .map(|u| u.as_str().trim_end_matches('/').to_string())
            .unwrap_or_else(|| format!("http://{}", self.config.listen));
        format!("{base}{path}")
    }
}

/// Where the generated secret lives when `CALLGATE_SECRET` is unset: beside the SQLite file.
pub fn key_file_for(db_path: &Path) -> PathBuf {
    db_path.with_extension("key")
}

fn load_or_create_key_file(path: &Path) -> Result<Secret, StartError> {
    let err = |source| StartError::KeyFile {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let text = text.trim().to_string();
            if text.len() < 32 {
                return Err(err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "holds fewer than 32 characters",
                )));
            }
            Ok(Secret::new(text))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            use rand::RngCore;
            let mut bytes = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            let text = hex::encode(bytes);
            write_private(path, &text).map_err(err)?;
            tracing::warn!(
                path = %path.display(),
                "CALLGATE_SECRET is not set: generated a key file; back it up with the database, \
                 since stored access codes cannot be checked without it"
            );
            Ok(Secret::new(text))
        }
        Err(e) => Err(err(e)),
    }
}

/// Writes `text` to a new file (never an existing one) that only its owner may read (0600).
pub(crate) fn write_private(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// Binds the listening socket, with an error that says how to fix a taken port.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })
}

/// Serves the HTTP surface on `listener` until `shutdown` resolves; then drains live calls
/// (HTTP keeps serving meanwhile: their closing TwiML and status callbacks still arrive),
/// and finishes requests in flight.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let worker = app
        .config
        .billing
        .worker
        .then(|| payments::billing::spawn_worker(app.clone()));
    let router = web::router(app.clone());
    let attempts_of = app.clone();
    let limits = app.config.http.clone();
    let grace = std::time::Duration::from_secs(app.config.shutdown_grace_secs);
    let drained = async move {
        shutdown.await;
        app.lifecycle.drain(grace).await;
    };
    let served = web::server::run(listener, router, &limits, drained)
        .await
        .map_err(StartError::Serve);
    if let Some(worker) = worker {
        worker.abort();
    }
    // Code attempts are written behind the answers: write the last ones.
    attempts_of.attempts.flush().await;
    served
}
