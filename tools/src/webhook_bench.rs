//! `callgate bench-webhooks`: the voice webhooks under load, on the database you name.
//!
//! A callgate server runs in this process on loopback (logging at warn, the billing worker
//! off) over SQLite (a fresh temporary file) or PostgreSQL (a fresh schema, dropped after), on
//! a Tokio runtime of its own (threads named `callgate-server`), so that each pass can say how
//! much CPU the server used per request apart from the load generator's, and, when PostgreSQL
//! runs on this machine, how much its processes used.
//! Requests are signed as Twilio signs them and sent over kept-alive HTTP/1.1 connections by a
//! minimal client (a few microseconds a request, so the figures are the server's).
//!
//! 1. Whole calls: each simulated caller places calls back to back: the incoming webhook
//!    (greeting), the code check with the caller's valid code (which holds the order and
//!    answers `<Connect><Stream>`), and the status callback that ends the call.
//! 2. A guessing attack: calls are placed (incoming webhook), then each gets three wrong codes
//!    at the code-check webhook, paced at `--rate` a second in all. The wrong-code limits are
//!    lifted so that every guess is judged and recorded (with the defaults, the global limit
//!    would soon refuse guesses without looking at them, which is cheaper). Latency counts
//!    from when each request was due, not when it could be sent: a server that falls behind
//!    the rate shows it in the figures instead of slowing the load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

use callgate::config::Config;
use callgate::metrics::Histogram;
use callgate::orders::{self, OperatorGrant};
use callgate::telephony::twilio::{CODE_PATH, INCOMING_PATH, STATUS_PATH};
use callgate::App;
use callgate_peers::twilio::sign;

const AUTH_TOKEN: &str = "bench-auth-token";
const ACCOUNT_SID: &str = "AC00000000000000000000000000000000";
const PHONE: &str = "+15550000000";
/// Wrong codes each guessing call sends (Twilio's menu allows three tries a call).
const GUESSES_PER_CALL: usize = 3;

#[derive(Debug, Clone)]
pub struct WebhookBench {
    /// `None`: a temporary SQLite file; else a `postgres://` URL (a schema is made and dropped).
    pub database_url: Option<String>,
    pub concurrency: usize,
    pub duration: Duration,
    /// Code checks a second in the guessing pass; 0: as fast as answers come.
    pub rate: u32,
}

fn form(call_sid: &str, from: &str, status: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    [
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
    .collect()
}

/// One kept-alive HTTP/1.1 connection to the server under test.
struct Client {
    stream: BufStream<TcpStream>,
    base: String,
    request: Vec<u8>,
    line: String,
    body: Vec<u8>,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream: BufStream::new(stream),
            base: format!("http://{addr}"),
            request: Vec::with_capacity(1024),
            line: String::new(),
            body: Vec::with_capacity(2048),
        })
    }

    /// Posts a form signed as Twilio signs it; answers the status and the body.
    async fn post(
        &mut self,
        path: &str,
        params: &[(String, String)],
    ) -> anyhow::Result<(u16, &str)> {
        let sig = sign(AUTH_TOKEN, &format!("{}{path}", self.base), params);
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        self.request.clear();
        self.request.extend_from_slice(
            format!(
                "POST {path} HTTP/1.1\r\nHost: bench\r\nX-Twilio-Signature: {sig}\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        self.request.extend_from_slice(body.as_bytes());
        self.stream.write_all(&self.request).await?;
        self.stream.flush().await?;
        // Status line, headers (only the length matters), body.
        self.line.clear();
        self.stream.read_line(&mut self.line).await?;
        let status: u16 = self
            .line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("bad status line {:?}", self.line))?;
        let mut length = 0usize;
        loop {
            self.line.clear();
            if self.stream.read_line(&mut self.line).await? == 0 {
                anyhow::bail!("connection closed");
            }
            let header = self.line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse()?;
                }
            }
        }
        self.body.resize(length, 0);
        self.stream.read_exact(&mut self.body).await?;
        Ok((status, std::str::from_utf8(&self.body)?))
    }
}

/// Sends one request, records its latency from `due`, and says whether the answer has `expect`.
async fn timed(
    client: &mut Client,
    path: &str,
    params: &[(String, String)],
    expect: &str,
    due: Instant,
    into: &Histogram,
    errors: &AtomicU64,
) -> bool {
    let answer = client.post(path, params).await;
    into.record(due.elapsed());
    let ok = matches!(&answer, Ok((200, body)) if body.contains(expect));
    if !ok {
        errors.fetch_add(1, Ordering::Relaxed);
    }
    ok
}

fn line(name: &str, h: &Histogram, secs: f64) {
    println!(
        "{name:<22} {:>7.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  p99.9 {:>6.2} ms  max {:>7.2} ms  ({} requests)",
        h.count() as f64 / secs,
        h.quantile_us(0.5) as f64 / 1e3,
        h.quantile_us(0.99) as f64 / 1e3,
        h.quantile_us(0.999) as f64 / 1e3,
        h.max_us() as f64 / 1e3,
        h.count()
    )
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
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let base = format!("http://{addr}");
    let audio = dir.path().join("no-audio").display().to_string();
    // The pool size is the operator's knob: `DATABASE_CONNECTIONS=20 callgate-tools ...`.
    let connections = std::env::var("DATABASE_CONNECTIONS").unwrap_or_else(|_| "10".into());
    let env: std::collections::HashMap<String, String> = [
        ("DATABASE_URL", database.as_str()),
        ("DATABASE_CONNECTIONS", connections.as_str()),
        ("CALLGATE_SECRET", "bench-secret-0123456789abcdef0123456789"),
        ("BASE_URL", base.as_str()),
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
        ("TWILIO_PHONE_NUMBER", PHONE),
        ("ELEVENLABS_AGENT_ID", "bench"),
        ("BILLING_WORKER", "off"),
        ("CODE_FAILURES_PER_HOUR", "1000000"),
        ("AUDIO_DIR", audio.as_str()),
        ("SHUTDOWN_HANDOVER_SECS", "0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let config = Config::from_env(&env)?;
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name(SERVER_THREADS)
        .enable_all()
        .build()?;
    let app = Arc::new(server_rt.spawn(App::build(config)).await??);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = server_rt.spawn({
        let app = app.clone();
        async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            callgate::http::serve(app, listener, async move {
                let _ = stopped.await;
            })
            .await?;
            anyhow::Ok(())
        }
    });
    let cpu = Cpu {
        postgres: bench.database_url.as_deref().is_some_and(is_local),
    };
    let result = passes(&server_rt, &app, addr, &bench, cpu).await;
    // Shut the server down as SIGTERM does (its heartbeats and the attempt writer, which
    // write behind the answers, stop and finish) before the schema goes: dropping it under
    // them made them fail with `relation "code_attempts"` (then `"instances"`) `does not
    // exist` at the end of a PostgreSQL run.
    let _ = stop.send(());
    let _ = server.await;
    let flushed = app.clone();
    server_rt
        .spawn(async move { flushed.attempts.flush().await })
        .await?;
    drop(app);
    // Whatever is left on the server's runtime ends before the schema goes (a runtime is shut
    // down from a thread that may block).
    tokio::task::spawn_blocking(move || server_rt.shutdown_timeout(Duration::from_secs(5))).await?;
    if let (Some(url), Some(schema)) = (&bench.database_url, schema) {
        drop_schema(url, &schema).await;
    }
    result
}

/// The name of the server runtime's threads (at most 15 bytes: Linux keeps no more).
const SERVER_THREADS: &str = "callgate-server";

/// Whether a PostgreSQL URL names this machine (its processes' CPU can then be read).
fn is_local(url: &str) -> bool {
    url.parse::<url::Url>()
        .is_ok_and(|u| matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")))
}

/// Where CPU is read from for each pass's figures.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    /// Also PostgreSQL's processes on this machine.
    postgres: bool,
}

impl Cpu {
    fn now(self) -> crate::cpu::Split {
        crate::cpu::Split::now(SERVER_THREADS, self.postgres)
    }
}

async fn passes(
    server_rt: &tokio::runtime::Runtime,
    app: &Arc<App>,
    addr: std::net::SocketAddr,
    bench: &WebhookBench,
    cpu: Cpu,
) -> anyhow::Result<()> {
    let grant = OperatorGrant {
        minutes: 600,
        overage: false,
        customer: None,
        payment_method: None,
    };
    let mut codes = Vec::with_capacity(bench.concurrency);
    for _ in 0..bench.concurrency {
        let (app, grant) = (app.clone(), grant.clone());
        let (_, code) = server_rt
            .spawn(async move { orders::issue_operator_code(&app, &grant).await })
            .await??;
        codes.push(code.expose().to_string());
    }
    println!(
        "--- callgate bench-webhooks: voice webhooks on {}, {} connections, {:?} per pass ---",
        app.store.backend(),
        bench.concurrency,
        bench.duration
    );
    whole_calls(addr, &codes, bench.duration, cpu).await?;
    guessing(addr, bench, cpu).await
}

/// Pass 1: whole calls, each caller as fast as its answers come.
async fn whole_calls(
    addr: std::net::SocketAddr,
    codes: &[String],
    duration: Duration,
    cpu: Cpu,
) -> anyhow::Result<()> {
    #[derive(Default)]
    struct Figures {
        incoming: Histogram,
        code: Histogram,
        status: Histogram,
        errors: AtomicU64,
    }
    let figures = Arc::new(Figures::default());
    let used = cpu.now();
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for (w, code) in codes.iter().enumerate() {
        let mut client = Client::connect(addr).await?;
        let (figures, code) = (figures.clone(), code.clone());
        tasks.push(tokio::spawn(async move {
            let from = format!("+1555{w:07}");
            let f = &*figures;
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let sid = format!("CA{w:08x}{n:024x}");
                let ringing = form(&sid, &from, "ringing", &[]);
                timed(
                    &mut client,
                    INCOMING_PATH,
                    &ringing,
                    "<Gather",
                    Instant::now(),
                    &f.incoming,
                    &f.errors,
                )
                .await;
                let digits = form(&sid, &from, "in-progress", &[("Digits", &code)]);
                let path = format!("{CODE_PATH}?try=1");
                timed(
                    &mut client,
                    &path,
                    &digits,
                    "<Connect>",
                    Instant::now(),
                    &f.code,
                    &f.errors,
                )
                .await;
                let ended = form(&sid, &from, "completed", &[("CallDuration", "3")]);
                timed(
                    &mut client,
                    STATUS_PATH,
                    &ended,
                    "<Response",
                    Instant::now(),
                    &f.status,
                    &f.errors,
                )
                .await;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let secs = started.elapsed().as_secs_f64();
    let used = cpu.now().per(&used, figures.status.count(), "call");
    println!(
        "whole calls: {:.0} calls/s, {} errors",
        figures.code.count() as f64 / secs,
        figures.errors.load(Ordering::Relaxed)
    );
    line("incoming (greeting)", &figures.incoming, secs);
    line("code check (valid)", &figures.code, secs);
    line("status callback", &figures.status, secs);
    println!("{used}");
    Ok(())
}

/// Pass 2: calls placed, then three wrong codes each, paced at `bench.rate` in all.
async fn guessing(
    addr: std::net::SocketAddr,
    bench: &WebhookBench,
    cpu: Cpu,
) -> anyhow::Result<()> {
    let conns = bench.concurrency;
    // Enough calls for the whole pass at the rate asked (or a generous guess when unpaced).
    let guesses = match bench.rate {
        0 => 20_000.0 * bench.duration.as_secs_f64(),
        r => f64::from(r) * bench.duration.as_secs_f64(),
    };
    let calls_per_conn = (guesses / (GUESSES_PER_CALL * conns) as f64).ceil() as usize + 1;
    let sid = |c: usize, k: usize| format!("CA{:08x}{:024x}", c + 0x8000_0000, k);
    let from = |c: usize, k: usize| format!("+1666{c:04}{k:06}");

    // Placing the calls (the incoming webhook), as fast as answers come; not part of the figures.
    let placing = Histogram::default();
    let errors = AtomicU64::new(0);
    let placed = Instant::now();
    let mut clients = Vec::with_capacity(conns);
    for _ in 0..conns {
        clients.push(Client::connect(addr).await?);
    }
    let place = clients.iter_mut().enumerate().map(|(c, client)| {
        let (placing, errors) = (&placing, &errors);
        async move {
            for k in 0..calls_per_conn {
                let ringing = form(&sid(c, k), &from(c, k), "ringing", &[]);
                timed(
                    client,
                    INCOMING_PATH,
                    &ringing,
                    "<Gather",
                    Instant::now(),
                    placing,
                    errors,
                )
                .await;
            }
        }
    });
    futures_util::future::join_all(place).await;
    let secs = placed.elapsed().as_secs_f64();
    println!(
        "guessing: {} calls placed first ({:.0} calls/s, {} errors)",
        placing.count(),
        placing.count() as f64 / secs,
        errors.load(Ordering::Relaxed)
    );

    let wrong = Histogram::default();
    let errors = AtomicU64::new(0);
    let used = cpu.now();
    let started = Instant::now();
    let deadline = started + bench.duration;
    // Connection c sends its n-th guess at started + (n * conns + c) / rate.
    let gap = (bench.rate > 0).then(|| Duration::from_secs_f64(1.0 / f64::from(bench.rate)));
    let guess = clients.iter_mut().enumerate().map(|(c, client)| {
        let (wrong, errors) = (&wrong, &errors);
        async move {
            let mut n = 0usize;
            'calls: for k in 0..calls_per_conn {
                let (sid, from) = (sid(c, k), from(c, k));
                for tried in 1..=GUESSES_PER_CALL {
                    let due = match gap {
                        Some(gap) => started + gap * (n * conns + c) as u32,
                        None => Instant::now(),
                    };
                    if due >= deadline {
                        break 'calls;
                    }
                    // The timer wakes on millisecond ticks: wake up to one early and send then;
                    // latency counts from when it was due or, if earlier, sent.
                    let tick = Duration::from_millis(1);
                    tokio::time::sleep_until(due.checked_sub(tick).unwrap_or(due).into()).await;
                    let due = due.min(Instant::now());
                    // A different wrong code each time, as a guesser types.
                    let digits = format!("{:012}", rand::random::<u64>() % 1_000_000_000_000);
                    let params = form(&sid, &from, "in-progress", &[("Digits", &digits)]);
                    let path = format!("{CODE_PATH}?try={tried}");
                    // The third wrong code ends the call; the first two ask again.
                    let expect = if tried < GUESSES_PER_CALL {
                        "<Gather"
                    } else {
                        "<Hangup"
                    };
                    timed(client, &path, &params, expect, due, wrong, errors).await;
                    n += 1;
                }
            }
        }
    });
    futures_util::future::join_all(guess).await;
    let secs = started.elapsed().as_secs_f64();
    let used = cpu.now().per(&used, wrong.count(), "check");
    match bench.rate {
        0 => println!(
            "wrong codes, unpaced: {} errors",
            errors.load(Ordering::Relaxed)
        ),
        r => println!(
            "wrong codes at {r}/s asked: {:.0}/s sent, {} errors",
            wrong.count() as f64 / secs,
            errors.load(Ordering::Relaxed)
        ),
    }
    line("code check (wrong)", &wrong, secs);
    println!("{used}");
    Ok(())
}
