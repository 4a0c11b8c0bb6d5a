//! The application: every service a feature or an operator command needs, built once.
//! Features take `&App`; nothing here knows a feature, a route or a page.

pub mod lifecycle;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::{BridgeSettings, Config, ConfigError, DatabaseConfig, Secret};
use crate::domain::clock::{Clock, SystemClock};
use crate::domain::codes::CodeVault;
use crate::store::{DynStore, StoreError};
use crate::stripe::StripeClient;
use crate::telephony::prompts::AudioCatalog;

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
    /// What callgate plays into a live call itself (the warning, paid time, top-ups).
    pub stream_audio: crate::telephony::audio::StreamAudio,
    /// For outside calls that are not Stripe's (ElevenLabs' signed URLs).
    pub http: reqwest::Client,
    /// Wakes the billing worker when a charge becomes due.
    pub billing_wakeup: Arc<tokio::sync::Notify>,
    /// Draining and live calls, for a shutdown that does not cut callers off.
    pub lifecycle: lifecycle::Lifecycle,
    /// Code attempts, written by group commit, and the counts the menu's throttles read.
    pub attempts: crate::write_behind::attempts::AttemptLog,
    /// Arriving calls' first rows, written by group commit behind the greeting.
    pub arrivals: crate::write_behind::arrivals::ArrivalLog,
    /// Live calls' metering, written in batches.
    pub metering: crate::write_behind::metering::MeteringBook,
    /// This run's own id: the calls it bridges carry it (see `liveness`).
    pub instance_id: String,
}

impl App {
    /// Opens and migrates the store, and loads the code keys.
    pub async fn build(config: Config) -> Result<App, StartError> {
        let store = crate::store::open(&config.database).await?;
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
            stream_audio: crate::telephony::audio::StreamAudio::load(&config.voice.audio_dir),
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(5))
                .timeout(std::time::Duration::from_secs(15))
                .build()
                .unwrap_or_default(),
            billing_wakeup: Arc::new(tokio::sync::Notify::new()),
            lifecycle: lifecycle::Lifecycle::default(),
            attempts: Default::default(),
            arrivals: Default::default(),
            metering: Default::default(),
            instance_id: crate::store::new_id("run"),
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

    /// The media stream's URL: the public URL with a WebSocket scheme.
    pub fn stream_url(&self) -> String {
        let url = self.public_url(crate::telephony::twilio::MEDIA_PATH);
        if let Some(rest) = url.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = url.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            url
        }
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
            let text = crate::crypto::random_hex(32);
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

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

/// Where long operator work reports each step done (the CLI draws a bar on a terminal; the
/// server and `--json` report to no one).
#[derive(Clone, Default)]
pub struct Progress(Option<Arc<dyn Fn(u64) + Send + Sync>>);

impl Progress {
    pub fn new(step: impl Fn(u64) + Send + Sync + 'static) -> Progress {
        Progress(Some(Arc::new(step)))
    }

    /// `n` more steps done.
    pub fn advance(&self, n: u64) {
        if let Some(step) = &self.0 {
            step(n);
        }
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Progress(reported)"
        } else {
            "Progress(none)"
        })
    }
}
