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

use crate::domain::money::{Cents, Currency, Rounding};
use crate::domain::prompt::Prompt;

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
    Postgres { url: Secret },
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

/// What a customer buys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub price: Cents,
    pub minutes_included: i64,
    pub overage_per_minute: Cents,
    pub currency: Currency,
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElevenLabsConfig {
    pub agent_id: String,
    /// Present for a private agent: used to fetch a signed conversation URL.
    pub api_key: Option<Secret>,
    pub api_base: Url,
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
    pub plan: Plan,
    pub stripe: Option<StripeConfig>,
    pub twilio: Option<TwilioConfig>,
    pub elevenlabs: Option<ElevenLabsConfig>,
    pub voice: VoiceConfig,
    /// Where the storefront loads Stripe.js from.
    pub stripe_js_url: Url,
    pub billing: BillingConfig,
    /// On shutdown, how long live calls may go on before they are ended.
    pub shutdown_grace_secs: u64,
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

/// One row of the configuration table: what the README documents.
pub struct Setting {
    pub var: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
}

/// Every variable callgate reads. The README's table is written from this list.
pub const SETTINGS: &[Setting] = &[
    Setting { var: "LISTEN_ADDR", default: "127.0.0.1:8080", meaning: "address and port the HTTP server binds" },
    Setting { var: "BASE_URL", default: "(none)", meaning: "public https URL of this server, as Twilio and Stripe reach it; required with Twilio" },
    Setting { var: "DATABASE_URL", default: "sqlite:callgate.db", meaning: "`sqlite:PATH` or `postgres://user@host/db`" },
    Setting { var: "MONGODB_URI", default: "(none)", meaning: "the old deployment's MongoDB; used when DATABASE_URL is unset" },
    Setting { var: "CALLGATE_SECRET", default: "key file beside the SQLite db", meaning: "at least 32 characters; keys the access-code hash and encryption. Required with PostgreSQL or MongoDB" },
    Setting { var: "ACCESS_CODE_DIGITS", default: "12", meaning: "length of new access codes (10 to 16)" },
    Setting { var: "PLAN_NAME", default: "Talk time", meaning: "name shown on the storefront" },
    Setting { var: "PLAN_PRICE", default: "10.00", meaning: "price of the plan in the currency's major unit" },
    Setting { var: "PLAN_MINUTES", default: "5", meaning: "agent minutes included in the plan" },
    Setting { var: "OVERAGE_PRICE_PER_MINUTE", default: "1.00", meaning: "price of each started minute beyond the allowance (with consent)" },
    Setting { var: "CURRENCY", default: "usd", meaning: "ISO currency code, lower case" },
    Setting { var: "STRIPE_SECRET_KEY", default: "(none)", meaning: "`sk_...` or `rk_...`; enables payments" },
    Setting { var: "STRIPE_PUBLISHABLE_KEY", default: "(none)", meaning: "`pk_...`; required with STRIPE_SECRET_KEY" },
    Setting { var: "STRIPE_WEBHOOK_SECRET", default: "(none)", meaning: "`whsec_...`; required with STRIPE_SECRET_KEY" },
    Setting { var: "STRIPE_API_BASE", default: "https://api.stripe.com", meaning: "Stripe API base URL (tests point it at a local peer)" },
    Setting { var: "STRIPE_JS_URL", default: "https://js.stripe.com/v3/", meaning: "where the storefront loads Stripe.js from" },
    Setting { var: "TWILIO_ACCOUNT_SID", default: "(none)", meaning: "`AC...`; enables the phone menu" },
    Setting { var: "TWILIO_AUTH_TOKEN", default: "(none)", meaning: "checks X-Twilio-Signature; required with TWILIO_ACCOUNT_SID" },
    Setting { var: "TWILIO_PHONE_NUMBER", default: "(none)", meaning: "the number customers call, E.164 (`+15551234567`)" },
    Setting { var: "TWILIO_API_BASE", default: "https://api.twilio.com", meaning: "Twilio REST base URL" },
    Setting { var: "ELEVENLABS_AGENT_ID", default: "(none)", meaning: "agent id, or a URL with `agent_id=`; enables the bridge" },
    Setting { var: "ELEVENLABS_API_KEY", default: "(none)", meaning: "for a private agent: fetches signed conversation URLs" },
    Setting { var: "ELEVENLABS_API_BASE", default: "https://api.elevenlabs.io", meaning: "ElevenLabs base URL; the agent WebSocket uses the same host" },
    Setting { var: "OVERAGE_ROUNDING", default: "minute", meaning: "`minute`: each started minute of overage billed whole, per call; `second`: to the second" },
    Setting { var: "BILLING_INTERVAL_SECS", default: "10", meaning: "seconds between the billing worker's passes" },
    Setting { var: "BILLING_WORKER", default: "on", meaning: "`off` leaves charging to `callgate billing run` (cron)" },
    Setting { var: "SAY_VOICE", default: "Polly.Joanna", meaning: "Twilio `<Say>` voice for prompts without an audio file" },
    Setting { var: "SAY_LANGUAGE", default: "en-US", meaning: "Twilio `<Say>` language" },
    Setting { var: "AUDIO_DIR", default: "audio", meaning: "folder of recorded prompts (`greeting.mp3`, ...), served at `/audio/`" },
    Setting { var: "PROMPT_<NAME>", default: "built in", meaning: "replaces a prompt's words, e.g. `PROMPT_GREETING` (names in `src/prompts.rs`)" },
    Setting { var: "CODE_FAILURES_PER_CALLER_PER_HOUR", default: "10", meaning: "wrong codes one caller number may enter per hour" },
    Setting { var: "CODE_FAILURES_PER_HOUR", default: "1000", meaning: "wrong codes from all callers per hour before code entry pauses" },
    Setting { var: "MAX_CALL_MINUTES", default: "60", meaning: "longest call, with or without overage" },
    Setting { var: "SHUTDOWN_GRACE_SECS", default: "60", meaning: "on SIGTERM, how long live calls may go on before they are ended (metered, with an apology)" },
    Setting { var: "API_REQUESTS_PER_MINUTE", default: "60", meaning: "requests a minute one client IP may make to `/api/...` (429 beyond; per instance)" },
    Setting { var: "ADMIN_PASSWORD", default: "(none: no admin view)", meaning: "at least 12 characters; turns on `/admin` (HTTP Basic, any user name); 10 wrong tries per client IP, then one a minute" },
    Setting { var: "TRUSTED_PROXIES", default: "(none)", meaning: "comma-separated addresses or CIDR ranges of your reverse proxies; their `X-Forwarded-For` gives the client address every per-client limit uses" },
    Setting { var: "HEADER_TIMEOUT_SECS", default: "10", meaning: "longest wait for a request's headers before the connection is closed (slow clients)" },
    Setting { var: "REQUEST_TIMEOUT_SECS", default: "30", meaning: "longest a whole request may take, body included (408 beyond)" },
    Setting { var: "MAX_CONNECTIONS", default: "4096", meaning: "open HTTP connections at most; beyond, new ones wait in the kernel's queue" },
    Setting { var: "METRICS_TOKEN", default: "(none: loopback only)", meaning: "bearer token `/metrics` asks for; without it only clients on this machine that came through no proxy may read `/metrics`" },
    Setting { var: "METRICS_LISTEN", default: "(none)", meaning: "address and port of a second listener that serves `/metrics` alone without a token, e.g. `127.0.0.1:9090`" },
    Setting { var: "PENDING_ORDER_TTL_HOURS", default: "24", meaning: "hours an unpaid order is kept; then its PaymentIntent is cancelled and the order pruned" },
    Setting { var: "LOG_FORMAT", default: "text", meaning: "`text` or `json`" },
    Setting { var: "RUST_LOG", default: "info", meaning: "log filter, e.g. `callgate=debug,info`" },
];

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

/// Reads a variable, treating an empty or all-blank value as unset.
fn read(env: &dyn Env, var: &str) -> Option<String> {
    env.get(var)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
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

    /// Builds and validates the configuration from any source of variables.
    pub fn from_env(env: &dyn Env) -> Result<Config, ConfigError> {
        let listen = match read(env, "LISTEN_ADDR") {
            Some(v) => v.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "LISTEN_ADDR",
                    format!("`{v}` is not an address and port such as 127.0.0.1:8080"),
                )
            })?,
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };

        let base_url = read(env, "BASE_URL")
            .map(|v| parse_base_url(&v))
            .transpose()?;

        let database = parse_database(env)?;

        let secret = secret_var(env, "CALLGATE_SECRET", 32, "openssl rand -hex 32")?;
        if secret.is_none() && !matches!(database, DatabaseConfig::Sqlite { .. }) {
            return Err(ConfigError::Missing {
                var: "CALLGATE_SECRET",
                hint: "with a shared database every instance must use the same secret (try `openssl rand -hex 32`)".into(),
            });
        }

        let access_code_digits = match read(env, "ACCESS_CODE_DIGITS") {
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (10..=16).contains(&n) => n,
                _ => {
                    return Err(invalid(
                        "ACCESS_CODE_DIGITS",
                        format!("`{v}` is not a whole number from 10 to 16"),
                    ))
                }
            },
            None => 12,
        };

        let plan = parse_plan(env)?;
        let stripe = parse_stripe(env)?;
        let twilio = parse_twilio(env)?;
        let elevenlabs = parse_elevenlabs(env)?;
        if twilio.is_some() && base_url.is_none() {
            return Err(ConfigError::Missing {
                var: "BASE_URL",
                hint: "Twilio signs requests over the public URL, so set the https URL Twilio reaches this server at".into(),
            });
        }

        let voice = parse_voice(env)?;
        let billing = BillingConfig {
            rounding: match read(env, "OVERAGE_ROUNDING").as_deref() {
                None | Some("minute") => Rounding::PerStartedMinute,
                Some("second") => Rounding::PerSecond,
                Some(other) => {
                    return Err(invalid(
                        "OVERAGE_ROUNDING",
                        format!("`{other}` is neither `minute` nor `second`"),
                    ))
                }
            },
            interval_secs: whole_number(env, "BILLING_INTERVAL_SECS", 10, 1..=3600)? as u64,
            worker: match read(env, "BILLING_WORKER").as_deref() {
                None | Some("on") => true,
                Some("off") => false,
                Some(other) => {
                    return Err(invalid(
                        "BILLING_WORKER",
                        format!("`{other}` is neither `on` nor `off`"),
                    ))
                }
            },
        };
        let stripe_js_url = parse_url(
            "STRIPE_JS_URL",
            &read(env, "STRIPE_JS_URL").unwrap_or_else(|| "https://js.stripe.com/v3/".into()),
        )?;

        let log_format = match read(env, "LOG_FORMAT").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid(
                    "LOG_FORMAT",
                    format!("`{other}` is neither `text` nor `json`"),
                ))
            }
        };

        Ok(Config {
            listen,
            base_url,
            database,
            secret,
            access_code_digits,
            plan,
            stripe,
            twilio,
            elevenlabs,
            voice,
            stripe_js_url,
            billing,
            shutdown_grace_secs: whole_number(env, "SHUTDOWN_GRACE_SECS", 60, 0..=86_400)? as u64,
            api_requests_per_minute: whole_number(env, "API_REQUESTS_PER_MINUTE", 60, 1..=100_000)?
                as u32,
            log_format,
            admin_password: secret_var(env, "ADMIN_PASSWORD", 12, "openssl rand -base64 18")?,
            demo: false,
            http: parse_http(env)?,
            pending_order_ttl_hours: whole_number(env, "PENDING_ORDER_TTL_HOURS", 24, 1..=24 * 30)?,
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

fn whole_number(
    env: &dyn Env,
    var: &'static str,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, ConfigError> {
    match read(env, var) {
        None => Ok(default),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(invalid(
                var,
                format!(
                    "`{v}` is not a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            )),
        },
    }
}

/// An optional secret of at least `min` characters; `suggest` is a command that makes one.
fn secret_var(
    env: &dyn Env,
    var: &'static str,
    min: usize,
    suggest: &str,
) -> Result<Option<Secret>, ConfigError> {
    match read(env, var) {
        Some(v) if v.chars().count() < min => Err(invalid(
            var,
            format!("must be at least {min} characters (try `{suggest}`)"),
        )),
        v => Ok(v.map(Secret::new)),
    }
}

fn parse_http(env: &dyn Env) -> Result<HttpConfig, ConfigError> {
    let trusted_proxies = match read(env, "TRUSTED_PROXIES") {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<ipnet::IpNet>()
                    .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        invalid(
                            "TRUSTED_PROXIES",
                            format!(
                                "`{p}` is neither an address nor a CIDR range such as 10.0.0.0/8"
                            ),
                        )
                    })
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(HttpConfig {
        trusted_proxies,
        header_timeout_secs: whole_number(env, "HEADER_TIMEOUT_SECS", 10, 1..=600)? as u64,
        request_timeout_secs: whole_number(env, "REQUEST_TIMEOUT_SECS", 30, 1..=3600)? as u64,
        max_connections: whole_number(env, "MAX_CONNECTIONS", 4096, 1..=1_000_000)? as usize,
        metrics_token: secret_var(env, "METRICS_TOKEN", 16, "openssl rand -hex 16")?,
        metrics_listen: read(env, "METRICS_LISTEN")
            .map(|v| {
                v.parse::<SocketAddr>().map_err(|_| {
                    invalid(
                        "METRICS_LISTEN",
                        format!("`{v}` is not an address and port such as 127.0.0.1:9090"),
                    )
                })
            })
            .transpose()?,
    })
}

fn parse_voice(env: &dyn Env) -> Result<VoiceConfig, ConfigError> {
    let prompt_texts = Prompt::ALL
        .iter()
        .map(|p| {
            (
                *p,
                read(env, &p.env_var()).unwrap_or_else(|| p.default_text().to_string()),
            )
        })
        .collect();
    Ok(VoiceConfig {
        say_voice: read(env, "SAY_VOICE").unwrap_or_else(|| "Polly.Joanna".into()),
        say_language: read(env, "SAY_LANGUAGE").unwrap_or_else(|| "en-US".into()),
        audio_dir: PathBuf::from(read(env, "AUDIO_DIR").unwrap_or_else(|| "audio".into())),
        prompt_texts,
        failures_per_caller_per_hour: whole_number(
            env,
            "CODE_FAILURES_PER_CALLER_PER_HOUR",
            10,
            1..=10_000,
        )?,
        failures_per_hour: whole_number(env, "CODE_FAILURES_PER_HOUR", 1000, 1..=1_000_000)?,
        max_call_minutes: whole_number(env, "MAX_CALL_MINUTES", 60, 1..=1440)?,
    })
}

fn parse_url(var: &'static str, value: &str) -> Result<Url, ConfigError> {
    let url =
        Url::parse(value).map_err(|e| invalid(var, format!("`{value}` is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid(
            var,
            format!("`{value}` must be an http or https URL with a host"),
        ));
    }
    Ok(url)
}

fn parse_base_url(value: &str) -> Result<Url, ConfigError> {
    let mut url = parse_url("BASE_URL", value)?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("BASE_URL", "must not carry a query or fragment"));
    }
    // Paths are joined onto the base, so keep exactly one trailing slash off.
    let trimmed = url.path().trim_end_matches('/').to_string();
    url.set_path(&trimmed);
    Ok(url)
}

fn parse_database(env: &dyn Env) -> Result<DatabaseConfig, ConfigError> {
    if let Some(url) = read(env, "DATABASE_URL") {
        return parse_database_url(&url);
    }
    if let Some(uri) = read(env, "MONGODB_URI") {
        if !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://")) {
            return Err(invalid(
                "MONGODB_URI",
                "must start with mongodb:// or mongodb+srv://",
            ));
        }
        return Ok(DatabaseConfig::Mongo {
            uri: Secret::new(uri),
        });
    }
    Ok(DatabaseConfig::Sqlite {
        path: PathBuf::from("callgate.db"),
    })
}

/// Parses `DATABASE_URL`: `sqlite:PATH`, `sqlite://PATH`, `postgres://...` or `postgresql://...`.
pub fn parse_database_url(value: &str) -> Result<DatabaseConfig, ConfigError> {
    const VAR: &str = "DATABASE_URL";
    if let Some(rest) = value.strip_prefix("sqlite:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() {
            return Err(invalid(
                VAR,
                "a sqlite URL needs a file path, e.g. sqlite:callgate.db",
            ));
        }
        if path == ":memory:" {
            return Err(invalid(
                VAR,
                "an in-memory database would lose every order at restart; name a file",
            ));
        }
        return Ok(DatabaseConfig::Sqlite {
            path: PathBuf::from(path),
        });
    }
    if value.starts_with("postgres://") || value.starts_with("postgresql://") {
        let parsed = Url::parse(value)
            .map_err(|e| invalid(VAR, format!("not a valid PostgreSQL URL ({e})")))?;
        if parsed.host().is_none() && !value.contains("host=") {
            return Err(invalid(
                VAR,
                "a PostgreSQL URL needs a host, e.g. postgres://user@localhost/callgate",
            ));
        }
        return Ok(DatabaseConfig::Postgres {
            url: Secret::new(value),
        });
    }
    if value.starts_with("mongodb://") || value.starts_with("mongodb+srv://") {
        return Ok(DatabaseConfig::Mongo {
            uri: Secret::new(value),
        });
    }
    Err(invalid(
        VAR,
        "expected sqlite:PATH or postgres://user@host/database",
    ))
}

fn parse_plan(env: &dyn Env) -> Result<Plan, ConfigError> {
    let currency = match read(env, "CURRENCY") {
        Some(v) => Currency::parse(&v).ok_or_else(|| {
            invalid(
                "CURRENCY",
                format!("`{v}` is not a three-letter ISO currency code"),
            )
        })?,
        None => Currency::parse("usd").unwrap_or_default(),
    };
    let money = |var: &'static str, default: &str| -> Result<Cents, ConfigError> {
        let raw = read(env, var).unwrap_or_else(|| default.to_string());
        currency
            .parse_amount(&raw)
            .map_err(|reason| invalid(var, format!("`{raw}`: {reason}")))
    };
    let price = money("PLAN_PRICE", "10.00")?;
    if price.0 <= 0 {
        return Err(invalid("PLAN_PRICE", "must be more than zero"));
    }
    let overage_per_minute = money("OVERAGE_PRICE_PER_MINUTE", "1.00")?;
    let minutes_included = match read(env, "PLAN_MINUTES") {
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (1..=10_000).contains(&n) => n,
            _ => {
                return Err(invalid(
                    "PLAN_MINUTES",
                    format!("`{v}` is not a whole number of minutes from 1 to 10000"),
                ))
            }
        },
        None => 5,
    };
    Ok(Plan {
        name: read(env, "PLAN_NAME").unwrap_or_else(|| "Talk time".to_string()),
        price,
        minutes_included,
        overage_per_minute,
        currency,
    })
}

/// Reads a group of variables that must be set all together or not at all.
fn group<const N: usize>(
    env: &dyn Env,
    vars: [&'static str; N],
) -> Result<Option<[String; N]>, ConfigError> {
    let values = vars.map(|v| read(env, v));
    if values.iter().all(Option::is_none) {
        return Ok(None);
    }
    let set: Vec<&str> = vars
        .iter()
        .zip(&values)
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| *k)
        .collect();
    let mut out = Vec::with_capacity(N);
    for (var, value) in vars.iter().zip(values) {
        match value {
            Some(v) => out.push(v),
            None => {
                return Err(ConfigError::Missing {
                    var,
                    hint: format!("it goes together with {}", set.join(", ")),
                })
            }
        }
    }
    Ok(out.try_into().ok())
}

fn require_prefix(var: &'static str, value: &str, prefixes: &[&str]) -> Result<(), ConfigError> {
    if prefixes.iter().any(|p| value.starts_with(p)) && value.len() > 5 {
        Ok(())
    } else {
        Err(invalid(
            var,
            format!("expected a value starting with {}", prefixes.join(" or ")),
        ))
    }
}

fn parse_stripe(env: &dyn Env) -> Result<Option<StripeConfig>, ConfigError> {
    let Some([secret_key, publishable_key, webhook_secret]) = group(
        env,
        [
            "STRIPE_SECRET_KEY",
            "STRIPE_PUBLISHABLE_KEY",
            "STRIPE_WEBHOOK_SECRET",
        ],
    )?
    else {
        return Ok(None);
    };
    require_prefix("STRIPE_SECRET_KEY", &secret_key, &["sk_", "rk_"])?;
    require_prefix("STRIPE_PUBLISHABLE_KEY", &publishable_key, &["pk_"])?;
    require_prefix("STRIPE_WEBHOOK_SECRET", &webhook_secret, &["whsec_"])?;
    let api_base = parse_url(
        "STRIPE_API_BASE",
        &read(env, "STRIPE_API_BASE").unwrap_or_else(|| "https://api.stripe.com".into()),
    )?;
    Ok(Some(StripeConfig {
        secret_key: Secret::new(secret_key),
        publishable_key,
        webhook_secret: Secret::new(webhook_secret),
        api_base,
    }))
}

fn parse_twilio(env: &dyn Env) -> Result<Option<TwilioConfig>, ConfigError> {
    let Some([account_sid, auth_token, phone_number]) = group(
        env,
        [
            "TWILIO_ACCOUNT_SID",
            "TWILIO_AUTH_TOKEN",
            "TWILIO_PHONE_NUMBER",
        ],
    )?
    else {
        return Ok(None);
    };
    let sid_ok = account_sid.len() == 34
        && account_sid.starts_with("AC")
        && account_sid[2..].chars().all(|c| c.is_ascii_hexdigit());
    if !sid_ok {
        return Err(invalid(
            "TWILIO_ACCOUNT_SID",
            "expected `AC` followed by 32 hexadecimal characters",
        ));
    }
    let digits = phone_number.strip_prefix('+').unwrap_or("");
    if !(8..=15).contains(&digits.len()) || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(invalid(
            "TWILIO_PHONE_NUMBER",
            "expected E.164 form: `+` and 8 to 15 digits, e.g. +15551234567",
        ));
    }
    let api_base = parse_url(
        "TWILIO_API_BASE",
        &read(env, "TWILIO_API_BASE").unwrap_or_else(|| "https://api.twilio.com".into()),
    )?;
    Ok(Some(TwilioConfig {
        account_sid,
        auth_token: Secret::new(auth_token),
        phone_number,
        api_base,
    }))
}

/// Takes an agent id either bare or from a URL's `agent_id` query parameter, as the old
/// deployment allowed.
pub fn parse_agent_id(value: &str) -> Result<String, ConfigError> {
    const VAR: &str = "ELEVENLABS_AGENT_ID";
    let id = if value.contains("://") || value.contains('?') {
        let url = Url::parse(value)
            .or_else(|_| Url::parse(&format!("https://placeholder/{value}")))
            .map_err(|_| invalid(VAR, "neither an agent id nor a URL"))?;
        url.query_pairs()
            .find(|(k, _)| k == "agent_id")
            .map(|(_, v)| v.into_owned())
            .ok_or_else(|| invalid(VAR, "the URL has no agent_id= parameter"))?
    } else {
        value.to_string()
    };
    if id.is_empty()
        || id.len() > 128
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(invalid(VAR, "an agent id is letters, digits, `_` and `-`"));
    }
    Ok(id)
}

fn parse_elevenlabs(env: &dyn Env) -> Result<Option<ElevenLabsConfig>, ConfigError> {
    let Some(raw) = read(env, "ELEVENLABS_AGENT_ID") else {
        if read(env, "ELEVENLABS_API_KEY").is_some() {
            return Err(ConfigError::Missing {
                var: "ELEVENLABS_AGENT_ID",
                hint: "ELEVENLABS_API_KEY is set, but no agent to talk to".into(),
            });
        }
        return Ok(None);
    };
    let api_base = parse_url(
        "ELEVENLABS_API_BASE",
        &read(env, "ELEVENLABS_API_BASE").unwrap_or_else(|| "https://api.elevenlabs.io".into()),
    )?;
    Ok(Some(ElevenLabsConfig {
        agent_id: parse_agent_id(&raw)?,
        api_key: read(env, "ELEVENLABS_API_KEY").map(Secret::new),
        api_base,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(cfg.plan.price, Cents(1000));
        assert_eq!(cfg.plan.minutes_included, 5);
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
}

impl Default for BridgeSettings {
    fn default() -> Self {
        BridgeSettings {
            tick: Duration::from_secs(1),
            warn_before_secs: 60,
            setup_timeout: Duration::from_secs(10),
            persist_every_secs: 5,
            agent_silence: Duration::from_secs(20),
        }
    }
}
