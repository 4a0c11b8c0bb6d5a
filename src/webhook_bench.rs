//! `callgate bench-webhooks`: the voice webhooks under load, on the database you name.
//!
//! A callgate server runs in this process on loopback (logging at warn, the billing worker
//! off) over SQLite (a fresh temporary file) or PostgreSQL (a fresh schema, dropped after).
//! Concurrent simulated callers each place calls the way Twilio does, with signed requests:
//! the incoming webhook (greeting), the code-check webhook with the caller's valid code
//! (which holds the order and answers `<Connect><Stream>`), and the status callback that ends
//! the call (which releases the hold and settles it). A second run sends only wrong codes,
//! each from a new caller number (what a guessing attack costs). Latency is measured at the
//! client, from request sent to answer read, and printed per webhook with requests per second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::metrics::Histogram;
use crate::orders::{self, OperatorGrant};
use crate::voice::{signature, CODE_PATH, INCOMING_PATH, STATUS_PATH};
use crate::App;

const AUTH_TOKEN: &str = "bench-auth-token";
const ACCOUNT_SID: &str = "AC00000000000000000000000000000000";
const PHONE: &str = "+15550000000";

#[derive(Debug, Clone)]
pub struct WebhookBench {
    /// `None`: a temporary SQLite file; else a `postgres://` URL (a schema is made and dropped).
    pub database_url: Option<String>,
    pub concurrency: usize,
    pub duration: Duration,
}

#[derive(Default)]
struct Figures {
    incoming: Histogram,
    code: Histogram,
    wrong_code: Histogram,
    status: Histogram,
    errors: AtomicU64,
}

fn form(call_sid: &str, from: &str, status: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = [
        ("CallSid", call_sid),
        ("AccountSid", ACCOUNT_SID),
        ("From", from),
        ("To", PHONE),
        ("CallStatus", status),
        ("Direction", "inbound"),
    ]
    .iter()
    .chain(extra.iter())
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    params.sort();
    params
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    params: &[(String, String)],
    into: &Histogram,
    errors: &AtomicU64,
) -> Option<String> {
    let sig = signature::compute(AUTH_TOKEN, url, params);
    let started = Instant::now();
    let result = async {
        let resp = http
            .post(url)
            .header("X-Twilio-Signature", sig)
            .form(params)
            .send()
            .await?;
        let ok = resp.status().is_success();
        let body = resp.text().await?;
        Ok::<_, reqwest::Error>(ok.then_some(body))
    }
    .await;
    into.record(started.elapsed());
    match result {
        Ok(Some(body)) => Some(body),
        _ => {
            errors.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// A schema on the PostgreSQL server for this run only.
async fn fresh_schema(url: &str) -> anyhow::Result<(String, String)> {
    use sqlx::Connection;
    let schema = format!("bench_{}", std::process::id());
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&mut conn)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await?;
    let sep = if url.contains('?') { '&' } else { '?' };
    Ok((
        format!("{url}{sep}options=-c%20search_path%3D{schema}"),
        schema,
    ))
}

async fn drop_schema(url: &str, schema: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(url).await {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&mut conn)
            .await;
    }
}

/// Runs both passes and prints their figures.
pub async fn run(bench: WebhookBench) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (database, schema) = match &bench.database_url {
        None => (
            format!("sqlite:{}", dir.path().join("bench.db").display()),
            None,
        ),
        Some(url) if url.starts_with("postgres") => {
            let (scoped, schema) = fresh_schema(url).await?;
            (scoped, Some(schema))
        }
        Some(other) => anyhow::bail!("--database-url must be a postgres:// URL, not `{other}`"),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let env: std::collections::HashMap<String, String> = [
        ("DATABASE_URL", database.as_str()),
        ("CALLGATE_SECRET", "bench-secret-0123456789abcdef0123456789"),
        ("BASE_URL", base.as_str()),
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
        ("TWILIO_PHONE_NUMBER", PHONE),
        ("ELEVENLABS_AGENT_ID", "bench"),
        ("BILLING_WORKER", "off"),
        ("CODE_FAILURES_PER_HOUR", "1000000"),
        (
            "AUDIO_DIR",
            &dir.path().join("no-audio").display().to_string(),
        ),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let app = Arc::new(App::build(Config::from_env(&env)?).await?);
    let server = tokio::spawn(crate::serve(
        app.clone(),
        listener,
        std::future::pending::<()>(),
    ));

    let grant = OperatorGrant {
        minutes: 600,
        overage: false,
        customer: None,
        payment_method: None,
    };
    let mut codes = Vec::with_capacity(bench.concurrency);
    for _ in 0..bench.concurrency {
        let (_, code) = orders::issue_operator_code(&app, &grant).await?;
        codes.push(code.expose().to_string());
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(bench.concurrency * 2)
        .build()?;
    println!(
        "--- callgate bench-webhooks: voice webhooks on {}, {} concurrent callers, {:?} per pass ---",
        app.store.backend(),
        bench.concurrency,
        bench.duration
    );

    // Pass 1: whole calls (incoming, valid code, status).
    let figures = Arc::new(Figures::default());
    let calls = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + bench.duration;
    let mut tasks = Vec::new();
    for (w, code) in codes.iter().enumerate() {
        let (http, base, figures, calls, code) = (
            http.clone(),
            base.clone(),
            figures.clone(),
            calls.clone(),
            code.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let from = format!("+1555{:07}", w);
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let sid = format!("CA{:08x}{:024x}", w, n);
                let f = &*figures;
                post(
                    &http,
                    &format!("{base}{INCOMING_PATH}"),
                    &form(&sid, &from, "ringing", &[]),
                    &f.incoming,
                    &f.errors,
                )
                .await;
                let answer = post(
                    &http,
                    &format!("{base}{CODE_PATH}?try=1"),
                    &form(&sid, &from, "in-progress", &[("Digits", &code)]),
                    &f.code,
                    &f.errors,
                )
                .await;
                if !answer.is_some_and(|a| a.contains("<Connect>")) {
                    f.errors.fetch_add(1, Ordering::Relaxed);
                }
                post(
                    &http,
                    &format!("{base}{STATUS_PATH}"),
                    &form(&sid, &from, "completed", &[("CallDuration", "3")]),
                    &f.status,
                    &f.errors,
                )
                .await;
                calls.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = started.elapsed().as_secs_f64();
    let line = |name: &str, h: &Histogram, secs: f64| {
        println!(
            "{name:<22} {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  p99.9 {:>6.2} ms  max {:>7.2} ms  ({} requests)",
            h.count() as f64 / secs,
            h.quantile_us(0.5) as f64 / 1e3,
            h.quantile_us(0.99) as f64 / 1e3,
            h.quantile_us(0.999) as f64 / 1e3,
            h.max_us() as f64 / 1e3,
            h.count()
        )
    };
    println!(
        "whole calls: {:.0} calls/s, {:.0} webhook requests/s, {} errors",
        calls.load(Ordering::Relaxed) as f64 / secs,
        (figures.incoming.count() + figures.code.count() + figures.status.count()) as f64 / secs,
        figures.errors.load(Ordering::Relaxed)
    );
    line("incoming (greeting)", &figures.incoming, secs);
    line("code check (valid)", &figures.code, secs);
    line("status callback", &figures.status, secs);

    // Pass 2: the code-check webhook alone, wrong codes from ever-new callers.
    let figures = Arc::new(Figures::default());
    let started = Instant::now();
    let deadline = started + bench.duration;
    let mut tasks = Vec::new();
    for w in 0..bench.concurrency {
        let (http, base, figures) = (http.clone(), base.clone(), figures.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let sid = format!("CA{:08x}{:024x}", w + 0x8000_0000, n);
                let from = format!("+1666{:04}{:06}", w, n % 1_000_000);
                let f = &*figures;
                // A different wrong code each time, as a guesser types (the per-code lock
                // would otherwise answer from the first few).
                let digits = format!("{:012}", rand::random::<u64>() % 1_000_000_000_000);
                let answer = post(
                    &http,
                    &format!("{base}{CODE_PATH}?try=1"),
                    &form(&sid, &from, "in-progress", &[("Digits", &digits)]),
                    &f.wrong_code,
                    &f.errors,
                )
                .await;
                if !answer.is_some_and(|a| a.contains("<Gather")) {
                    f.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "wrong codes only: {} errors",
        figures.errors.load(Ordering::Relaxed)
    );
    line("code check (wrong)", &figures.wrong_code, secs);

    server.abort();
    if let (Some(url), Some(schema)) = (&bench.database_url, schema) {
        drop_schema(url, &schema).await;
    }
    Ok(())
}
