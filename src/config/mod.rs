//! Every setting callgate reads, its environment name, its default and its validation.
//!
//! Configuration is read once at start-up from the process environment (after loading an
//! optional `.env` file). Every problem is reported then, naming the variable, never at the
//! first call. Integrations whose variables are all absent are switched off with a warning;
//! a half-configured integration is an error.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::domain::money::Rounding;
use crate::domain::prompt::Prompt;

mod parse;
mod plans;
pub mod settings;

pub use plans::{Plan, Plans};
pub use settings::SETTINGS;

/// A configuration problem, naming the variable at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{var} is required: {hint}")]
    Missing { var: &'static str, hint: String },
    #[error("{var} is malformed: {reason}")]
    Invalid { var: &'static str, reason: String },
    #[error("cannot read .env file: {0}")]
    DotEnv(String),
}

fn invalid(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var,
        reason: reason.into(),
    }
}

pub use crate::crypto::Secret;

/// Where orders, calls and charges are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseConfig {
    /// A SQLite file (the default: `callgate.db` in the working directory).
    Sqlite { path: PathBuf },
    /// A PostgreSQL server; the URL may carry credentials, so it is kept secret.
    /// `connections`: the pool each instance opens (`DATABASE_CONNECTIONS`).
    Postgres { url: Secret, connections: u32 },
    /// MongoDB, from the old deployment's `MONGODB_URI`.
    Mongo { uri: Secret },
}

impl DatabaseConfig {
    /// The engine's cargo feature name.
    pub fn engine(&self) -> &'static str {
        match self {
            DatabaseConfig::Sqlite { .. } => "sqlite",
            DatabaseConfig::Postgres { .. } => "postgres",
            DatabaseConfig::Mongo { .. } => "mongodb",
        }
    }

    /// A short name for logs, without credentials.
    pub fn describe(&self) -> String {
        match self {
            DatabaseConfig::Sqlite { path } => format!("sqlite file {}", path.display()),
            DatabaseConfig::Postgres { .. } => "postgresql".to_string(),
            DatabaseConfig::Mongo { .. } => "mongodb".to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeConfig {
    pub secret_key: Secret,
    pub publishable_key: String,
    pub webhook_secret: Secret,
    pub api_base: Url,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwilioConfig {
    pub account_sid: String,
    pub auth_token: Secret,
    pub phone_number: String,
    pub api_base: Url,
}

/// The mail relay receipts and lost codes go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailConfig {
    /// `smtp://` or `smtps://`, credentials included: a secret.
    pub smtp_url: Secret,
    pub from: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElevenLabsConfig {
    pub agent_id: String,
    /// Present for a private agent: used to fetch a signed conversation URL.
    pub api_key: Option<Secret>,
    pub api_base: Url,
    /// The post-call webhook's secret; without it the webhook is refused.
    pub webhook_secret: Option<Secret>,
    /// The voice prompts are generated in; the agent's own when unset.
    pub voice_id: Option<String>,
}

/// How overage is billed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingConfig {
    pub rounding: Rounding,
    /// Seconds between the billing worker's passes.
    pub interval_secs: u64,
    /// Whether `serve` runs the worker (off: `callgate billing run` from cron does the work).
    pub worker: bool,
}

/// The phone menu's voice, prompt texts and guessing limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoiceConfig {
    pub say_voice: String,
    pub say_language: String,
    /// Folder of recorded prompts (`greeting.mp3`, ...), served at `/audio/`.
    pub audio_dir: PathBuf,
    /// Prompt texts, in `Prompt::ALL` order, defaults replaced by `PROMPT_<NAME>`.
    pub prompt_texts: Vec<(Prompt, String)>,
    /// Wrong codes one caller number may enter per hour before the menu refuses it.
    pub failures_per_caller_per_hour: i64,
    /// Wrong codes from everyone per hour before code entry pauses for all (an attack).
    pub failures_per_hour: i64,
    /// The longest a call may last, allowance or not.
    pub max_call_minutes: i64,
    /// A call whose agent fails within this many seconds costs nothing.
    pub free_failure_secs: i64,
    /// Where `0` during the conversation transfers the caller.
    pub operator_number: Option<String>,
    /// Whether the time with the operator comes off the included minutes.
    pub transfer_metered: bool,
}

impl VoiceConfig {
    pub fn text(&self, prompt: Prompt) -> &str {
        self.prompt_texts
            .iter()
            .find(|(p, _)| *p == prompt)
            .map(|(_, t)| t.as_str())
            .unwrap_or(prompt.default_text())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The whole configuration, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: SocketAddr,
    /// The public URL Twilio and Stripe reach callgate at (used for signatures and links).
    pub base_url: Option<Url>,
    pub database: DatabaseConfig,
    /// Master secret for access-code hashing and encryption.
    pub secret: Option<Secret>,
    pub access_code_digits: usize,
    pub plans: Plans,
    /// What a customer can add to a code they hold (on the web or during a call).
    pub top_ups: Plans,
    pub stripe: Option<StripeConfig>,
    pub twilio: Option<TwilioConfig>,
    pub mail: Option<MailConfig>,
    pub elevenlabs: Option<ElevenLabsConfig>,
    pub voice: VoiceConfig,
    /// Where the storefront loads Stripe.js from.
    pub stripe_js_url: Url,
    pub billing: BillingConfig,
    /// On shutdown, how long live calls may go on before they are ended.
    pub shutdown_grace_secs: u64,
    /// On shutdown, how long new calls are still taken once readiness fails.
    pub shutdown_handover_secs: u64,
    /// This instance's place among several (`INSTANCE_NAME`); host and port when unset.
    pub instance_name: Option<String>,
    /// Requests a minute one client IP may make to `/api/...`.
    pub api_requests_per_minute: u32,
    pub log_format: LogFormat,
    /// Password of the admin view at `/admin` (HTTP Basic); no admin view without it.
    pub admin_password: Option<Secret>,
    /// `callgate demo`: local stand-ins for Stripe, Twilio and ElevenLabs; pages say so.
    pub demo: bool,
    /// What the HTTP server accepts from a connection, and whom it believes about addresses.
    pub http: HttpConfig,
    /// Hours a pending order (a PaymentIntent never paid) is kept before it is cancelled.
    pub pending_order_ttl_hours: i64,
}

/// The HTTP server's limits and its trust in proxies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Proxies whose `X-Forwarded-For` names the client; every per-client limit uses it.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Longest wait for a request's headers (slow clients are cut off).
    pub header_timeout_secs: u64,
    /// Longest a whole request may take, body included.
    pub request_timeout_secs: u64,
    /// Open HTTP connections at most; past this the server stops accepting until one closes.
    pub max_connections: usize,
    /// Bearer token that `/metrics` asks for; without one only loopback clients that came
    /// through no proxy may read it.
    pub metrics_token: Option<Secret>,
    /// A second listener serving `/metrics` alone, without a token.
    pub metrics_listen: Option<SocketAddr>,
}

/// A source of variables: the process environment, or a map in tests.
pub trait Env {
    fn get(&self, var: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, var: &str) -> Option<String> {
        std::env::var(var).ok()
    }
}

impl Env for HashMap<String, String> {
    fn get(&self, var: &str) -> Option<String> {
        HashMap::get(self, var).cloned()
    }
}

impl<const N: usize> Env for [(&str, &str); N] {
    fn get(&self, var: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == var)
            .map(|(_, v)| v.to_string())
    }
}

impl Config {
    /// Loads `.env` (if present, without overriding the environment) and then the environment.
    pub fn load() -> Result<Config, ConfigError> {
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(e) if e.not_found() => {}
            Err(e) => return Err(ConfigError::DotEnv(e.to_string())),
        }
        Config::from_env(&ProcessEnv)
    }

    /// Builds and validates the configuration from any source of variables: every value set
    /// is checked against its row of [`SETTINGS`] first, then the rows are read and the rules
    /// between them (integrations set whole or not at all, Twilio needs `BASE_URL`, a shared
    /// database needs `CALLGATE_SECRET`) applied.
    pub fn from_env(env: &dyn Env) -> Result<Config, ConfigError> {
        use settings as s;
        s::check_all(env)?;

        let base_url = s::BASE_URL.get(env)?;
        let mut database = match (s::DATABASE_URL.get(env)?, s::MONGODB_URI.get(env)?) {
            (Some(db), _) | (None, Some(db)) => db,
            (None, None) => DatabaseConfig::Sqlite {
                path: PathBuf::from("callgate.db"),
            },
        };
        if let DatabaseConfig::Postgres { connections, .. } = &mut database {
            *connections = s::DATABASE_CONNECTIONS.value(env)? as u32;
        }
        let secret = s::CALLGATE_SECRET.get(env)?;
        if secret.is_none() && !matches!(database, DatabaseConfig::Sqlite { .. }) {
            return Err(ConfigError::Missing {
                var: "CALLGATE_SECRET",
                hint: "with a shared database every instance must use the same secret (try `openssl rand -hex 32`)".into(),
            });
        }
        let stripe = stripe(env)?;
        let twilio = twilio(env)?;
        let mail = group(env, [&s::SMTP_URL, &s::MAIL_FROM])?.map(|[url, from]| MailConfig {
            smtp_url: Secret::new(url),
            from,
        });
        let elevenlabs = elevenlabs(env)?;
        if twilio.is_some() && base_url.is_none() {
            return Err(ConfigError::Missing {
                var: "BASE_URL",
                hint: "Twilio signs requests over the public URL, so set the https URL Twilio reaches this server at".into(),
            });
        }
        let (plans, top_ups) = plans::from_env(env)?;
        Ok(Config {
            listen: s::LISTEN_ADDR.value(env)?,
            base_url,
            database,
            secret,
            access_code_digits: s::ACCESS_CODE_DIGITS.value(env)? as usize,
            plans,
            top_ups,
            stripe,
            twilio,
            mail,
            elevenlabs,
            voice: VoiceConfig {
                say_voice: s::SAY_VOICE.value(env)?,
                say_language: s::SAY_LANGUAGE.value(env)?,
                audio_dir: s::AUDIO_DIR.value(env)?,
                prompt_texts: s::prompt_texts(env),
                failures_per_caller_per_hour: s::CODE_FAILURES_PER_CALLER_PER_HOUR.value(env)?,
                failures_per_hour: s::CODE_FAILURES_PER_HOUR.value(env)?,
                max_call_minutes: s::MAX_CALL_MINUTES.value(env)?,
                free_failure_secs: s::FREE_FAILURE_SECS.value(env)?,
                operator_number: s::OPERATOR_NUMBER.get(env)?,
                transfer_metered: s::TRANSFER_METERED.value(env)?,
            },
            stripe_js_url: s::STRIPE_JS_URL.value(env)?,
            billing: BillingConfig {
                rounding: s::OVERAGE_ROUNDING.value(env)?,
                interval_secs: s::BILLING_INTERVAL_SECS.value(env)? as u64,
                worker: s::BILLING_WORKER.value(env)?,
            },
            shutdown_grace_secs: s::SHUTDOWN_GRACE_SECS.value(env)? as u64,
            shutdown_handover_secs: s::SHUTDOWN_HANDOVER_SECS.value(env)? as u64,
            instance_name: s::INSTANCE_NAME.get(env)?,
            api_requests_per_minute: s::API_REQUESTS_PER_MINUTE.value(env)? as u32,
            log_format: s::LOG_FORMAT.value(env)?,
            admin_password: s::ADMIN_PASSWORD.get(env)?,
            demo: false,
            http: HttpConfig {
                trusted_proxies: s::TRUSTED_PROXIES.get(env)?.unwrap_or_default(),
                header_timeout_secs: s::HEADER_TIMEOUT_SECS.value(env)? as u64,
                request_timeout_secs: s::REQUEST_TIMEOUT_SECS.value(env)? as u64,
                max_connections: s::MAX_CONNECTIONS.value(env)? as usize,
                metrics_token: s::METRICS_TOKEN.get(env)?,
                metrics_listen: s::METRICS_LISTEN.get(env)?,
            },
            pending_order_ttl_hours: s::PENDING_ORDER_TTL_HOURS.value(env)?,
        })
    }

    /// Integrations switched off because none of their variables are set.
    pub fn disabled_features(&self) -> Vec<&'static str> {
        let mut off = Vec::new();
        if self.stripe.is_none() {
            off.push(
                "payments: the storefront tells customers it is not taking orders (set \
                 STRIPE_SECRET_KEY, STRIPE_PUBLISHABLE_KEY, STRIPE_WEBHOOK_SECRET)",
            );
        }
        if self.twilio.is_none() {
            off.push("phone menu (set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_PHONE_NUMBER, BASE_URL)");
        }
        if self.elevenlabs.is_none() {
            off.push("agent bridge (set ELEVENLABS_AGENT_ID)");
        }
        off
    }
}

/// Reads a variable, treating an empty or all-blank value as unset.
fn read(env: &dyn Env, var: &str) -> Option<String> {
    env.get(var)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Rows that must be set all together or not at all: `None` when none is set.
fn group<const N: usize>(
    env: &dyn Env,
    rows: [&settings::Var<String>; N],
) -> Result<Option<[String; N]>, ConfigError> {
    let values = rows
        .map(|row| row.get(env))
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    if values.iter().all(Option::is_none) {
        return Ok(None);
    }
    let set: Vec<&str> = rows
        .iter()
        .zip(&values)
        .filter(|(_, v)| v.is_some())
        .map(|(row, _)| row.var)
        .collect();
    let mut out = Vec::with_capacity(N);
    for (row, value) in rows.iter().zip(values) {
        match value {
            Some(v) => out.push(v),
            None => {
                return Err(ConfigError::Missing {
                    var: row.var,
                    hint: format!("it goes together with {}", set.join(", ")),
                })
            }
        }
    }
    Ok(out.try_into().ok())
}

fn stripe(env: &dyn Env) -> Result<Option<StripeConfig>, ConfigError> {
    use settings as s;
    let Some([secret_key, publishable_key, webhook_secret]) = group(
        env,
        [
            &s::STRIPE_SECRET_KEY,
            &s::STRIPE_PUBLISHABLE_KEY,
            &s::STRIPE_WEBHOOK_SECRET,
        ],
    )?
    else {
        return Ok(None);
    };
    Ok(Some(StripeConfig {
        secret_key: Secret::new(secret_key),
        publishable_key,
        webhook_secret: Secret::new(webhook_secret),
        api_base: s::STRIPE_API_BASE.value(env)?,
    }))
}

fn twilio(env: &dyn Env) -> Result<Option<TwilioConfig>, ConfigError> {
    use settings as s;
    let Some([account_sid, auth_token, phone_number]) = group(
        env,
        [
            &s::TWILIO_ACCOUNT_SID,
            &s::TWILIO_AUTH_TOKEN,
            &s::TWILIO_PHONE_NUMBER,
        ],
    )?
    else {
        return Ok(None);
    };
    Ok(Some(TwilioConfig {
        account_sid,
        auth_token: Secret::new(auth_token),
        phone_number,
        api_base: s::TWILIO_API_BASE.value(env)?,
    }))
}

fn elevenlabs(env: &dyn Env) -> Result<Option<ElevenLabsConfig>, ConfigError> {
    use settings as s;
    let api_key = s::ELEVENLABS_API_KEY.get(env)?;
    let Some(agent_id) = s::ELEVENLABS_AGENT_ID.get(env)? else {
        if api_key.is_some() {
            return Err(ConfigError::Missing {
                var: "ELEVENLABS_AGENT_ID",
                hint: "ELEVENLABS_API_KEY is set, but no agent to talk to".into(),
            });
        }
        return Ok(None);
    };
    Ok(Some(ElevenLabsConfig {
        agent_id,
        api_key,
        api_base: s::ELEVENLABS_API_BASE.value(env)?,
        webhook_secret: s::ELEVENLABS_WEBHOOK_SECRET.get(env)?,
        voice_id: s::ELEVENLABS_VOICE_ID.get(env)?,
    }))
}

/// Parses `DATABASE_URL`: `sqlite:PATH`, `postgres://...` or `mongodb://...`.
pub fn parse_database_url(value: &str) -> Result<DatabaseConfig, ConfigError> {
    parse::database_url(value).map_err(|reason| invalid("DATABASE_URL", reason))
}

/// Parses `ELEVENLABS_AGENT_ID`: an agent id, or a URL with `agent_id=`.
pub fn parse_agent_id(value: &str) -> Result<String, ConfigError> {
    parse::agent_id(value).map_err(|reason| invalid("ELEVENLABS_AGENT_ID", reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::Cents;

    #[test]
    fn empty_environment_gives_sqlite_defaults() {
        let cfg = Config::from_env(&[("UNRELATED", "x")]).expect("defaults are valid");
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(
            cfg.database,
            DatabaseConfig::Sqlite {
                path: "callgate.db".into()
            }
        );
        assert_eq!(cfg.plans.all().len(), 1);
        assert_eq!(cfg.plans.first().price, Cents(1000));
        assert_eq!(cfg.plans.first().minutes_included, 5);
        assert!(cfg.stripe.is_none() && cfg.twilio.is_none() && cfg.elevenlabs.is_none());
        assert_eq!(cfg.disabled_features().len(), 3);
    }

    #[test]
    fn agent_id_bare_or_from_url() {
        assert_eq!(parse_agent_id("agent_abc-1").unwrap(), "agent_abc-1");
        assert_eq!(
            parse_agent_id("wss://api.elevenlabs.io/v1/convai/conversation?agent_id=xyz123")
                .unwrap(),
            "xyz123"
        );
        assert_eq!(
            parse_agent_id("https://elevenlabs.io/app/talk-to?foo=1&agent_id=Q9").unwrap(),
            "Q9"
        );
        assert!(matches!(
            parse_agent_id("https://elevenlabs.io/app/talk-to?foo=1"),
            Err(ConfigError::Invalid {
                var: "ELEVENLABS_AGENT_ID",
                ..
            })
        ));
        assert!(parse_agent_id("bad id with spaces").is_err());
    }

    #[test]
    fn database_urls() {
        assert_eq!(
            parse_database_url("sqlite://data/x.db").unwrap(),
            DatabaseConfig::Sqlite {
                path: "data/x.db".into()
            }
        );
        assert_eq!(
            parse_database_url("sqlite:x.db?mode=rwc").unwrap(),
            DatabaseConfig::Sqlite {
                path: "x.db".into()
            }
        );
        assert!(matches!(
            parse_database_url("postgres://u@localhost/db"),
            Ok(DatabaseConfig::Postgres { .. })
        ));
        for bad in [
            "mysql://x",
            "sqlite:",
            "sqlite::memory:",
            "postgres://",
            "nonsense",
        ] {
            let err = parse_database_url(bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    ConfigError::Invalid {
                        var: "DATABASE_URL",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn errors_name_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("LISTEN_ADDR", "localhost")], "LISTEN_ADDR"),
            (&[("DATABASE_URL", "mysql://x")], "DATABASE_URL"),
            (&[("PLAN_PRICE", "ten")], "PLAN_PRICE"),
            (&[("PLAN_PRICE", "1.234")], "PLAN_PRICE"),
            (&[("PLAN_MINUTES", "-3")], "PLAN_MINUTES"),
            (&[("CURRENCY", "dollars")], "CURRENCY"),
            (&[("CALLGATE_SECRET", "short")], "CALLGATE_SECRET"),
            (&[("DATABASE_URL", "postgres://u@h/db")], "CALLGATE_SECRET"),
            (
                &[("STRIPE_SECRET_KEY", "sk_test_123")],
                "STRIPE_PUBLISHABLE_KEY",
            ),
            (&[("BASE_URL", "ftp://x")], "BASE_URL"),
            (&[("LOG_FORMAT", "xml")], "LOG_FORMAT"),
            (&[("ACCESS_CODE_DIGITS", "4")], "ACCESS_CODE_DIGITS"),
            (&[("ELEVENLABS_API_KEY", "k")], "ELEVENLABS_AGENT_ID"),
            (&[("MONGODB_URI", "http://x")], "MONGODB_URI"),
            // Checked by the walk over the table though Stripe and Twilio are off.
            (&[("STRIPE_API_BASE", "ftp://x")], "STRIPE_API_BASE"),
            (&[("TWILIO_API_BASE", "nowhere")], "TWILIO_API_BASE"),
            (&[("METRICS_LISTEN", "9090")], "METRICS_LISTEN"),
            (&[("BILLING_WORKER", "maybe")], "BILLING_WORKER"),
            (&[("PLANS", "Quick=5")], "PLANS"),
            (&[("PLANS", "Quick=0@5.00")], "PLANS"),
            (&[("PLANS", "=5@5.00")], "PLANS"),
            (&[("PLANS", "Quick=5@free")], "PLANS"),
            (&[("PLANS", "Quick=5@1.234")], "PLANS"),
            (&[("PLANS", "Quick=5@0")], "PLANS"),
            (&[("PLANS", "Quick=5@5;quick=10@9")], "PLANS"),
            (&[("PLANS", ";;")], "PLANS"),
            (&[("PLANS", "A=5@5"), ("PLAN_PRICE", "3.00")], "PLANS"),
        ];
        for (vars, expected) in cases {
            let env: HashMap<String, String> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let err = Config::from_env(&env).unwrap_err();
            assert!(
                err.to_string().starts_with(expected),
                "{vars:?} gave `{err}`, expected it to name {expected}"
            );
        }
    }

    #[test]
    fn twilio_needs_base_url_and_valid_values() {
        let twilio = [
            ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"),
            ("TWILIO_AUTH_TOKEN", "tok"),
            ("TWILIO_PHONE_NUMBER", "+15551234567"),
        ];
        let err = Config::from_env(&twilio).unwrap_err();
        assert!(err.to_string().starts_with("BASE_URL"), "{err}");

        let mut env: HashMap<String, String> = twilio
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.insert("BASE_URL".into(), "https://example.com/".into());
        let cfg = Config::from_env(&env).unwrap();
        assert_eq!(cfg.base_url.unwrap().as_str(), "https://example.com/");

        env.insert("TWILIO_PHONE_NUMBER".into(), "555-1234".into());
        let err = Config::from_env(&env).unwrap_err();
        assert!(err.to_string().starts_with("TWILIO_PHONE_NUMBER"), "{err}");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let env = [
            ("STRIPE_SECRET_KEY", "sk_test_supersecretvalue"),
            ("STRIPE_PUBLISHABLE_KEY", "pk_test_public"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_hushhush"),
            ("CALLGATE_SECRET", "0123456789abcdef0123456789abcdef"),
        ];
        let cfg = Config::from_env(&env).unwrap();
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("supersecretvalue"));
        assert!(!shown.contains("hushhush"));
        assert!(!shown.contains("0123456789abcdef"));
        assert!(shown.contains("pk_test_public"));
    }
}

/// Timing of the bridge. One "tick" is one metered second; tests shorten it.
#[derive(Debug, Clone)]
pub struct BridgeSettings {
    /// Length of one metered second.
    pub tick: Duration,
    /// Warn the caller this many seconds before the allowance ends.
    pub warn_before_secs: i64,
    /// Longest wait for Twilio's `start`, the agent's socket and its metadata.
    pub setup_timeout: Duration,
    /// Persist metering every this many seconds.
    pub persist_every_secs: i64,
    /// An agent that sends nothing for this long, not even the pong to a WebSocket ping
    /// (sent every quarter of it), is hung: the call ends with an apology. Also the longest a
    /// write to the agent may wait.
    pub agent_silence: Duration,
    /// A live call reads its order's balance again this often (a change made on this
    /// instance is told at once; one made on another instance arrives within this).
    pub balance_recheck: Duration,
    /// The longest a call's end waits for the agent to finish what it is saying (its audio
    /// already sent, and any still coming, played to the caller).
    pub finish_limit: Duration,
    /// How long the agent must stay quiet, once all its audio was played, to be done.
    pub finish_quiet: Duration,
}

impl Default for BridgeSettings {
    fn default() -> Self {
        BridgeSettings {
            tick: Duration::from_secs(1),
            warn_before_secs: 60,
            setup_timeout: Duration::from_secs(10),
            persist_every_secs: 5,
            agent_silence: Duration::from_secs(20),
            balance_recheck: Duration::from_secs(30),
            finish_limit: Duration::from_secs(4),
            finish_quiet: Duration::from_millis(500),
        }
    }
}
