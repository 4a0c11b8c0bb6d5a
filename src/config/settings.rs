//! Every variable callgate reads, as one table: each row carries its name, its default, its
//! parser and its help. [`super::Config::from_env`] walks [`SETTINGS`] to check every value
//! set, then reads each typed row; the README's table is checked against the same rows,
//! defaults included.

use std::net::SocketAddr;
use std::path::PathBuf;

use url::Url;

use super::{invalid, parse, read, ConfigError, DatabaseConfig, Env, LogFormat, Secret};
use crate::domain::money::{Currency, Rounding};
use crate::domain::prompt::Prompt;

/// What an unset variable means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unset {
    /// This value, parsed as if it had been given.
    Value(&'static str),
    /// Nothing: the feature it turns on stays off, or another rule decides. The text says
    /// what that means, for the README.
    Means(&'static str),
}

/// One typed row of the table.
pub struct Var<T: 'static> {
    pub var: &'static str,
    pub unset: Unset,
    pub help: &'static str,
    pub parse: fn(&str) -> Result<T, String>,
}

impl<T> Var<T> {
    /// The value given, else the default; `None` when unset without a default.
    pub fn get(&self, env: &dyn Env) -> Result<Option<T>, ConfigError> {
        let raw = match (read(env, self.var), self.unset) {
            (Some(v), _) => v,
            (None, Unset::Value(default)) => default.to_string(),
            (None, Unset::Means(_)) => return Ok(None),
        };
        (self.parse)(&raw)
            .map(Some)
            .map_err(|reason| invalid(self.var, reason))
    }

    /// The value of a row that has a default.
    pub fn value(&self, env: &dyn Env) -> Result<T, ConfigError> {
        self.get(env)?.ok_or(ConfigError::Missing {
            var: self.var,
            hint: "it has no default".into(),
        })
    }
}

/// A row as the README and the walk see it, whatever its type.
pub trait Row: Sync {
    fn var(&self) -> &'static str;
    /// The default as the README shows it.
    fn shown_default(&self) -> String;
    fn help(&self) -> &'static str;
    /// Checks the value set (if any): a malformed value is reported even when nothing reads
    /// it (an integration switched off).
    fn check(&self, env: &dyn Env) -> Result<(), ConfigError>;
}

impl<T> Row for Var<T> {
    fn var(&self) -> &'static str {
        self.var
    }
    fn shown_default(&self) -> String {
        match self.unset {
            Unset::Value(v) => format!("`{v}`"),
            Unset::Means(text) => text.to_string(),
        }
    }
    fn help(&self) -> &'static str {
        self.help
    }
    fn check(&self, env: &dyn Env) -> Result<(), ConfigError> {
        self.get(env).map(|_| ())
    }
}

/// A family of variables named by a pattern (`PROMPT_<NAME>`) or read by another part of the
/// process (`RUST_LOG`): documented here, checked by their readers.
pub struct Family {
    pub var: &'static str,
    pub shown_default: &'static str,
    pub help: &'static str,
}

impl Row for Family {
    fn var(&self) -> &'static str {
        self.var
    }
    fn shown_default(&self) -> String {
        self.shown_default.to_string()
    }
    fn help(&self) -> &'static str {
        self.help
    }
    fn check(&self, _env: &dyn Env) -> Result<(), ConfigError> {
        Ok(())
    }
}

// Parsers shared by several rows.

fn text(v: &str) -> Result<String, String> {
    Ok(v.to_string())
}

fn addr(v: &str) -> Result<SocketAddr, String> {
    v.parse()
        .map_err(|_| format!("`{v}` is not an address and port such as 127.0.0.1:8080"))
}

fn whole<const MIN: i64, const MAX: i64>(v: &str) -> Result<i64, String> {
    match v.parse::<i64>() {
        Ok(n) if (MIN..=MAX).contains(&n) => Ok(n),
        _ => Err(format!("`{v}` is not a whole number from {MIN} to {MAX}")),
    }
}

/// A secret of at least `MIN` characters.
fn secret<const MIN: usize>(v: &str) -> Result<Secret, String> {
    if v.chars().count() < MIN {
        return Err(format!(
            "must be at least {MIN} characters (try `openssl rand -hex {MIN}`)"
        ));
    }
    Ok(Secret::new(v))
}

fn on_off(v: &str) -> Result<bool, String> {
    match v {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("`{other}` is neither `on` nor `off`")),
    }
}

fn prefixed(v: &str, prefixes: &[&str]) -> Result<String, String> {
    if prefixes.iter().any(|p| v.starts_with(p)) && v.len() > 5 {
        Ok(v.to_string())
    } else {
        Err(format!(
            "expected a value starting with {}",
            prefixes.join(" or ")
        ))
    }
}

/// A plan's price as written (`10.00`), checked against its currency by `from_env`.
fn amount(v: &str) -> Result<String, String> {
    if !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.') {
        Ok(v.to_string())
    } else {
        Err(format!("`{v}` is not an amount such as 10.00"))
    }
}

pub const LISTEN_ADDR: Var<SocketAddr> = Var {
    var: "LISTEN_ADDR",
    unset: Unset::Value("127.0.0.1:8080"),
    help: "address and port the HTTP server binds (`--listen` overrides)",
    parse: addr,
};
pub const BASE_URL: Var<Url> = Var {
    var: "BASE_URL",
    unset: Unset::Means("none"),
    help: "public https URL of this server, as Twilio and Stripe reach it; required with Twilio",
    parse: parse::base_url,
};
pub const DATABASE_URL: Var<DatabaseConfig> = Var {
    var: "DATABASE_URL",
    unset: Unset::Means("`sqlite:callgate.db` (or `MONGODB_URI`)"),
    help: "`sqlite:PATH` or `postgres://user@host/db`",
    parse: parse::database_url,
};
/// PostgreSQL connections per instance when `DATABASE_CONNECTIONS` is unset.
pub const DEFAULT_DATABASE_CONNECTIONS: u32 = 10;
pub const DATABASE_CONNECTIONS: Var<i64> = Var {
    var: "DATABASE_CONNECTIONS",
    unset: Unset::Value("10"),
    help: "PostgreSQL only: the connections each instance keeps for requests (as many again for throttling writes, which do not wait for the disk, and 1 to listen); instances times this stays under the server's `max_connections`, or goes through a pooler (see docs/instances.md)",
    parse: whole::<1, 1000>,
};
pub const MONGODB_URI: Var<DatabaseConfig> = Var {
    var: "MONGODB_URI",
    unset: Unset::Means("none"),
    help: "the old deployment's MongoDB; used when `DATABASE_URL` is unset",
    parse: parse::mongodb_uri,
};
pub const CALLGATE_SECRET: Var<Secret> = Var {
    var: "CALLGATE_SECRET",
    unset: Unset::Means("key file beside the SQLite db"),
    help: "at least 32 characters; keys the access-code hash and encryption. Required with PostgreSQL or MongoDB",
    parse: secret::<32>,
};
pub const ACCESS_CODE_DIGITS: Var<i64> = Var {
    var: "ACCESS_CODE_DIGITS",
    unset: Unset::Value("12"),
    help: "length of new access codes (10 to 16)",
    parse: whole::<10, 16>,
};
pub const PLAN_NAME: Var<String> = Var {
    var: "PLAN_NAME",
    unset: Unset::Value("Talk time"),
    help: "name shown on the storefront",
    parse: text,
};
pub const PLAN_PRICE: Var<String> = Var {
    var: "PLAN_PRICE",
    unset: Unset::Value("10.00"),
    help: "price of the plan in the currency's major unit",
    parse: amount,
};
pub const PLAN_MINUTES: Var<i64> = Var {
    var: "PLAN_MINUTES",
    unset: Unset::Value("5"),
    help: "agent minutes included in the plan (1 to 10000)",
    parse: whole::<1, 10_000>,
};
pub const PLANS: Var<Vec<parse::PlanSpec>> = Var {
    var: "PLANS",
    unset: Unset::Means("one plan, from `PLAN_NAME`, `PLAN_MINUTES` and `PLAN_PRICE`"),
    help: "several plans, `NAME=MINUTES@PRICE` separated by `;`, e.g. `Quick chat=5@5.00;Half hour=30@20.00`; replaces the three `PLAN_` settings",
    parse: parse::plans,
};
pub const TOP_UPS: Var<Vec<parse::PlanSpec>> = Var {
    var: "TOP_UPS",
    unset: Unset::Means("the plans themselves"),
    help: "minutes a customer can add to a code, `NAME=MINUTES@PRICE` separated by `;`, e.g. `10 more minutes=10@8.00`",
    parse: parse::plans,
};
pub const OVERAGE_PRICE_PER_MINUTE: Var<String> = Var {
    var: "OVERAGE_PRICE_PER_MINUTE",
    unset: Unset::Value("1.00"),
    help: "price of each started minute beyond the allowance (with consent)",
    parse: amount,
};
pub const CURRENCY: Var<Currency> = Var {
    var: "CURRENCY",
    unset: Unset::Value("usd"),
    help: "ISO currency code",
    parse: |v| {
        Currency::parse(v).ok_or_else(|| format!("`{v}` is not a three-letter ISO currency code"))
    },
};
pub const STRIPE_SECRET_KEY: Var<String> = Var {
    var: "STRIPE_SECRET_KEY",
    unset: Unset::Means("none"),
    help: "`sk_...` or `rk_...`; enables payments",
    parse: |v| prefixed(v, &["sk_", "rk_"]),
};
pub const STRIPE_PUBLISHABLE_KEY: Var<String> = Var {
    var: "STRIPE_PUBLISHABLE_KEY",
    unset: Unset::Means("none"),
    help: "`pk_...`; required with `STRIPE_SECRET_KEY`",
    parse: |v| prefixed(v, &["pk_"]),
};
pub const STRIPE_WEBHOOK_SECRET: Var<String> = Var {
    var: "STRIPE_WEBHOOK_SECRET",
    unset: Unset::Means("none"),
    help: "`whsec_...`; required with `STRIPE_SECRET_KEY`",
    parse: |v| prefixed(v, &["whsec_"]),
};
pub const STRIPE_API_BASE: Var<Url> = Var {
    var: "STRIPE_API_BASE",
    unset: Unset::Value("https://api.stripe.com"),
    help: "Stripe API base URL (tests point it at a local peer)",
    parse: parse::http_url,
};
pub const STRIPE_JS_URL: Var<Url> = Var {
    var: "STRIPE_JS_URL",
    unset: Unset::Value("https://js.stripe.com/v3/"),
    help: "where the storefront loads Stripe.js from",
    parse: parse::http_url,
};
pub const TWILIO_ACCOUNT_SID: Var<String> = Var {
    var: "TWILIO_ACCOUNT_SID",
    unset: Unset::Means("none"),
    help: "`AC...`; enables the phone menu",
    parse: parse::twilio_sid,
};
pub const TWILIO_AUTH_TOKEN: Var<String> = Var {
    var: "TWILIO_AUTH_TOKEN",
    unset: Unset::Means("none"),
    help: "checks `X-Twilio-Signature`; required with `TWILIO_ACCOUNT_SID`",
    parse: text,
};
pub const TWILIO_PHONE_NUMBER: Var<String> = Var {
    var: "TWILIO_PHONE_NUMBER",
    unset: Unset::Means("none"),
    help: "the number customers call, E.164 (`+15551234567`)",
    parse: parse::e164,
};
pub const TWILIO_API_BASE: Var<Url> = Var {
    var: "TWILIO_API_BASE",
    unset: Unset::Value("https://api.twilio.com"),
    help: "Twilio REST base URL",
    parse: parse::http_url,
};
pub const ELEVENLABS_AGENT_ID: Var<String> = Var {
    var: "ELEVENLABS_AGENT_ID",
    unset: Unset::Means("none"),
    help: "agent id, or a URL with `agent_id=` (as the old deployment allowed); enables the bridge",
    parse: parse::agent_id,
};
pub const ELEVENLABS_API_KEY: Var<Secret> = Var {
    var: "ELEVENLABS_API_KEY",
    unset: Unset::Means("none"),
    help: "for a private agent: fetches signed conversation URLs",
    parse: |v| Ok(Secret::new(v)),
};
pub const ELEVENLABS_API_BASE: Var<Url> = Var {
    var: "ELEVENLABS_API_BASE",
    unset: Unset::Value("https://api.elevenlabs.io"),
    help: "ElevenLabs base URL; the agent WebSocket uses the same host",
    parse: parse::http_url,
};
pub const ELEVENLABS_WEBHOOK_SECRET: Var<Secret> = Var {
    var: "ELEVENLABS_WEBHOOK_SECRET",
    unset: Unset::Means("none"),
    help: "the post-call webhook's HMAC secret: enables `/webhooks/elevenlabs` (summaries the agent remembers)",
    parse: |v| Ok(Secret::new(v)),
};
pub const ELEVENLABS_VOICE_ID: Var<String> = Var {
    var: "ELEVENLABS_VOICE_ID",
    unset: Unset::Means("the agent's own voice"),
    help: "the voice `callgate prompts generate` speaks the prompts in",
    parse: |v| Ok(v.to_string()),
};
pub const OVERAGE_ROUNDING: Var<Rounding> = Var {
    var: "OVERAGE_ROUNDING",
    unset: Unset::Value("minute"),
    help:
        "`minute`: each started minute of overage billed whole, per call; `second`: to the second",
    parse: |v| match v {
        "minute" => Ok(Rounding::PerStartedMinute),
        "second" => Ok(Rounding::PerSecond),
        other => Err(format!("`{other}` is neither `minute` nor `second`")),
    },
};
pub const BILLING_INTERVAL_SECS: Var<i64> = Var {
    var: "BILLING_INTERVAL_SECS",
    unset: Unset::Value("10"),
    help: "seconds between the billing worker's passes",
    parse: whole::<1, 3600>,
};
pub const BILLING_WORKER: Var<bool> = Var {
    var: "BILLING_WORKER",
    unset: Unset::Value("on"),
    help: "`off` leaves charging to `callgate billing run` (cron)",
    parse: on_off,
};
pub const SAY_VOICE: Var<String> = Var {
    var: "SAY_VOICE",
    unset: Unset::Value("Polly.Joanna"),
    help: "Twilio `<Say>` voice for prompts without an audio file",
    parse: text,
};
pub const SAY_LANGUAGE: Var<String> = Var {
    var: "SAY_LANGUAGE",
    unset: Unset::Value("en-US"),
    help: "Twilio `<Say>` language",
    parse: text,
};
pub const AUDIO_DIR: Var<PathBuf> = Var {
    var: "AUDIO_DIR",
    unset: Unset::Value("audio"),
    help: "folder of recorded prompts (`greeting.mp3`, ...), served at `/audio/`",
    parse: |v| Ok(PathBuf::from(v)),
};
pub const PROMPTS: Family = Family {
    var: "PROMPT_<NAME>",
    shown_default: "built in",
    help: "replaces a prompt's words, e.g. `PROMPT_GREETING`; names below",
};
pub const CODE_FAILURES_PER_CALLER_PER_HOUR: Var<i64> = Var {
    var: "CODE_FAILURES_PER_CALLER_PER_HOUR",
    unset: Unset::Value("10"),
    help: "wrong codes one caller number may enter per hour",
    parse: whole::<1, 10_000>,
};
pub const CODE_FAILURES_PER_HOUR: Var<i64> = Var {
    var: "CODE_FAILURES_PER_HOUR",
    unset: Unset::Value("1000"),
    help: "wrong codes from all callers per hour before code entry pauses for everyone",
    parse: whole::<1, 1_000_000>,
};
pub const MAX_CALL_MINUTES: Var<i64> = Var {
    var: "MAX_CALL_MINUTES",
    unset: Unset::Value("60"),
    help: "longest call, with or without overage",
    parse: whole::<1, 1440>,
};
pub const FREE_FAILURE_SECS: Var<i64> = Var {
    var: "FREE_FAILURE_SECS",
    unset: Unset::Value("15"),
    help: "a call whose agent fails within this many seconds costs nothing; later, only the seconds until the failure are billed",
    parse: whole::<0, 3600>,
};
pub const OPERATOR_NUMBER: Var<String> = Var {
    var: "OPERATOR_NUMBER",
    unset: Unset::Means("none (`0` during a call does nothing)"),
    help: "a person's number, E.164: `0` during the conversation ends the stream and dials it",
    parse: parse::e164,
};
pub const TRANSFER_METERED: Var<bool> = Var {
    var: "TRANSFER_METERED",
    unset: Unset::Value("off"),
    help: "`on`: the time with the operator comes off the code's included minutes (the transfer is limited to what is left, never charged as overage); `off`: it is free",
    parse: on_off,
};
pub const SHUTDOWN_GRACE_SECS: Var<i64> = Var {
    var: "SHUTDOWN_GRACE_SECS",
    unset: Unset::Value("60"),
    help:
        "on SIGTERM, how long live calls may go on before they are ended (metered, with an apology)",
    parse: whole::<0, 86_400>,
};
pub const SHUTDOWN_HANDOVER_SECS: Var<i64> = Var {
    var: "SHUTDOWN_HANDOVER_SECS",
    unset: Unset::Value("2"),
    help: "on SIGTERM, how long new calls are still taken after `/readyz` turns 503, so a load balancer moves them elsewhere before this instance refuses any (at least its health-check interval times its fall count)",
    parse: whole::<0, 600>,
};
pub const INSTANCE_NAME: Var<String> = Var {
    var: "INSTANCE_NAME",
    unset: Unset::Means("this host's name and the port it listens on"),
    help: "this instance's place among several: a restart under the same name settles at once the calls its earlier run carried (give each instance its own)",
    parse: text,
};
pub const API_REQUESTS_PER_MINUTE: Var<i64> = Var {
    var: "API_REQUESTS_PER_MINUTE",
    unset: Unset::Value("60"),
    help: "requests a minute one client address may make to the storefront API, `/api/...` and its old `/.netlify/functions/...` aliases together (429 with `Retry-After` beyond; per instance)",
    parse: whole::<1, 100_000>,
};
pub const SMTP_URL: Var<String> = Var {
    var: "SMTP_URL",
    unset: Unset::Means("none (no receipts by email)"),
    help: "the mail relay for receipts and lost codes: `smtps://user:pass@host:465` (TLS) or `smtp://user:pass@host:587?tls=required` (STARTTLS); `smtp://host:port` is unencrypted, for a relay on the same host",
    parse: |v| match v.split_once("://") {
        Some(("smtp" | "smtps", rest)) if !rest.is_empty() => Ok(v.to_string()),
        _ => Err("must start with `smtp://` or `smtps://`".into()),
    },
};
pub const MAIL_FROM: Var<String> = Var {
    var: "MAIL_FROM",
    unset: Unset::Means("none; required with `SMTP_URL`"),
    help: "the sender of receipts, e.g. `Talk time <receipts@example.com>`",
    parse: |v| {
        if v.contains('@') && !v.contains(['\r', '\n']) {
            Ok(v.to_string())
        } else {
            Err(format!("`{v}` is not an email address"))
        }
    },
};
pub const ADMIN_PASSWORD: Var<Secret> = Var {
    var: "ADMIN_PASSWORD",
    unset: Unset::Means("none (no admin view)"),
    help: "at least 12 characters; turns on `/admin` (HTTP Basic, any user name); 10 wrong tries per client address, then one a minute (a browser that logged in before is never locked out)",
    parse: secret::<12>,
};
pub const TRUSTED_PROXIES: Var<Vec<ipnet::IpNet>> = Var {
    var: "TRUSTED_PROXIES",
    unset: Unset::Means("none"),
    help: "comma-separated addresses or CIDR ranges of your reverse proxies (e.g. `127.0.0.1` for a proxy on the same machine); their `X-Forwarded-For` gives the client address that every per-client limit uses. Without it, every client behind the proxy shares the proxy's limits",
    parse: parse::proxies,
};
pub const HEADER_TIMEOUT_SECS: Var<i64> = Var {
    var: "HEADER_TIMEOUT_SECS",
    unset: Unset::Value("10"),
    help: "longest wait for a request's headers; slower clients are disconnected (slowloris)",
    parse: whole::<1, 600>,
};
pub const REQUEST_TIMEOUT_SECS: Var<i64> = Var {
    var: "REQUEST_TIMEOUT_SECS",
    unset: Unset::Value("30"),
    help: "longest a whole request may take, body included (408 beyond)",
    parse: whole::<1, 3600>,
};
pub const MAX_CONNECTIONS: Var<i64> = Var {
    var: "MAX_CONNECTIONS",
    unset: Unset::Value("4096"),
    help: "open HTTP connections at most; beyond, new ones wait in the kernel's queue until one closes",
    parse: whole::<1, 1_000_000>,
};
pub const METRICS_TOKEN: Var<Secret> = Var {
    var: "METRICS_TOKEN",
    unset: Unset::Means("none (loopback only)"),
    help: "at least 16 characters; `/metrics` then asks for it as a bearer token. Without it only a loopback client that came through no proxy (no `Forwarded`, `Via`, `X-Forwarded-*` or `*-IP` header, and not a `TRUSTED_PROXIES` address) may read `/metrics`. A same-host proxy that adds no header at all makes every request look local: set this, or `METRICS_LISTEN`",
    parse: secret::<16>,
};
pub const METRICS_LISTEN: Var<SocketAddr> = Var {
    var: "METRICS_LISTEN",
    unset: Unset::Means("none"),
    help: "address and port of a second listener serving `/metrics` alone, without a token, e.g. `127.0.0.1:9090` (keep it off the public network)",
    parse: addr,
};
pub const PENDING_ORDER_TTL_HOURS: Var<i64> = Var {
    var: "PENDING_ORDER_TTL_HOURS",
    unset: Unset::Value("24"),
    help: "hours an unpaid order (an abandoned checkout) is kept; then the billing pass cancels its PaymentIntent at Stripe and prunes it (one Stripe can no longer cancel, because it was paid, stays)",
    parse: whole::<1, 720>,
};
pub const LOG_FORMAT: Var<LogFormat> = Var {
    var: "LOG_FORMAT",
    unset: Unset::Value("text"),
    help: "`text` or `json`",
    parse: |v| match v {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("`{other}` is neither `text` nor `json`")),
    },
};
pub const RUST_LOG: Family = Family {
    var: "RUST_LOG",
    shown_default: "`info`",
    help: "log filter, e.g. `callgate=debug,info`",
};

/// Every variable callgate reads, in the README's order.
pub static SETTINGS: &[&dyn Row] = &[
    &LISTEN_ADDR,
    &BASE_URL,
    &DATABASE_URL,
    &DATABASE_CONNECTIONS,
    &MONGODB_URI,
    &CALLGATE_SECRET,
    &ACCESS_CODE_DIGITS,
    &PLAN_NAME,
    &PLAN_PRICE,
    &PLAN_MINUTES,
    &PLANS,
    &TOP_UPS,
    &OVERAGE_PRICE_PER_MINUTE,
    &CURRENCY,
    &STRIPE_SECRET_KEY,
    &STRIPE_PUBLISHABLE_KEY,
    &STRIPE_WEBHOOK_SECRET,
    &STRIPE_API_BASE,
    &STRIPE_JS_URL,
    &TWILIO_ACCOUNT_SID,
    &TWILIO_AUTH_TOKEN,
    &TWILIO_PHONE_NUMBER,
    &TWILIO_API_BASE,
    &ELEVENLABS_AGENT_ID,
    &ELEVENLABS_API_KEY,
    &ELEVENLABS_API_BASE,
    &ELEVENLABS_WEBHOOK_SECRET,
    &ELEVENLABS_VOICE_ID,
    &OVERAGE_ROUNDING,
    &BILLING_INTERVAL_SECS,
    &BILLING_WORKER,
    &SAY_VOICE,
    &SAY_LANGUAGE,
    &AUDIO_DIR,
    &PROMPTS,
    &CODE_FAILURES_PER_CALLER_PER_HOUR,
    &CODE_FAILURES_PER_HOUR,
    &MAX_CALL_MINUTES,
    &FREE_FAILURE_SECS,
    &OPERATOR_NUMBER,
    &TRANSFER_METERED,
    &SHUTDOWN_GRACE_SECS,
    &SHUTDOWN_HANDOVER_SECS,
    &INSTANCE_NAME,
    &API_REQUESTS_PER_MINUTE,
    &SMTP_URL,
    &MAIL_FROM,
    &ADMIN_PASSWORD,
    &TRUSTED_PROXIES,
    &HEADER_TIMEOUT_SECS,
    &REQUEST_TIMEOUT_SECS,
    &MAX_CONNECTIONS,
    &METRICS_TOKEN,
    &METRICS_LISTEN,
    &PENDING_ORDER_TTL_HOURS,
    &LOG_FORMAT,
    &RUST_LOG,
];

/// The prompt texts: each `PROMPT_<NAME>` given, else the built-in words.
pub fn prompt_texts(env: &dyn Env) -> Vec<(Prompt, String)> {
    Prompt::ALL
        .iter()
        .map(|p| {
            (
                *p,
                read(env, &p.env_var()).unwrap_or_else(|| p.default_text().to_string()),
            )
        })
        .collect()
}

/// Walks the table: the first malformed value, in the table's order.
pub fn check_all(env: &dyn Env) -> Result<(), ConfigError> {
    SETTINGS.iter().try_for_each(|row| row.check(env))
}
