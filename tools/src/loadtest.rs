//! `callgate loadtest`: many concurrent simulated calls through a real `callgate serve`
//! child process, against a local echo agent, at real-time pace (one 20 ms frame of 160
//! bytes each way per call). Prints what the bridge costs: calls held, frames per second,
//! added latency per frame (measured inside callgate, from a frame read to it written),
//! CPU seconds per call-minute and resident memory per call.
//!
//! With `--peer-url`, the same callers and agent measure another bridge already running (the
//! ElevenLabs example's Node bridge, say): the callers open its media stream directly, as
//! Twilio would after its TwiML, and its process's CPU and memory are read.
//!
//! Everything runs on loopback; the request loops are bounded in count and time.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use callgate_peers::twilio::twiml::{self, Verb};
use callgate_peers::twilio::{self, Account, MediaStream, Signature};
use tokio::sync::watch;

use callgate::config::Config;
use callgate::orders::{self, OperatorGrant};
use callgate::App;

const AUTH_TOKEN: &str = "loadtest-auth-token";
const ACCOUNT_SID: &str = "AC00000000000000000000000000000000";
const PHONE: &str = "+15550000000";

#[derive(Debug, Clone)]
pub struct LoadTest {
    pub calls: usize,
    pub hold: Duration,
    pub ramp: Duration,
    pub target: Target,
    /// Where the echo agent listens; any free port when `None`.
    pub agent_listen: Option<std::net::SocketAddr>,
}

/// The bridge measured.
#[derive(Debug, Clone)]
pub enum Target {
    /// A `callgate serve` child of this binary, reached through its phone menu.
    Callgate(std::path::PathBuf),
    /// Another bridge, running: its media-stream URL and its process id.
    Peer { url: String, pid: u32 },
}

/// How a simulated call reaches the bridge's media stream.
#[derive(Clone)]
enum Route {
    /// Through callgate's menu: a valid code, then the stream with its one-time token.
    Menu {
        http: reqwest::Client,
        base: String,
        code: String,
    },
    /// Straight to the stream URL.
    Direct(String),
}

/// Figures read from the child process.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    cpu_secs: f64,
    /// Of which in user space (the rest is the kernel's, on the process's behalf).
    user_secs: f64,
    rss_kib: u64,
}

fn sample(pid: u32) -> Sample {
    let stat = crate::cpu::Stat::read(&format!("/proc/{pid}/stat")).unwrap_or_default();
    let (cpu_secs, user_secs) = (stat.cpu_secs(), stat.user_secs);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Sample {
        cpu_secs,
        user_secs,
        rss_kib,
    }
}

async fn metrics(http: &reqwest::Client, base: &str) -> HashMap<String, f64> {
    let text = match http.get(format!("{base}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs the load test and prints its report.
pub async fn run(test: LoadTest) -> anyhow::Result<()> {
    let agent = tokio::net::TcpListener::bind(
        test.agent_listen
            .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
    )
    .await?;
    let agent_base = format!("http://{}", agent.local_addr()?);
    let agent_task = tokio::spawn(callgate_peers::agent::echo::serve(agent));
    let (pid, routes, mut child) = match &test.target {
        Target::Callgate(callgate) => {
            let (pid, routes, child) = start_callgate(&test, callgate, agent_base).await?;
            (pid, routes, Some(child))
        }
        Target::Peer { url, pid } => (*pid, vec![Route::Direct(url.clone()); test.calls], None),
    };
    let idle = sample(pid);
    println!(
        "bridge pid {pid}: idle RSS {} KiB; starting {} calls over {:?}",
        idle.rss_kib, test.calls, test.ramp
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let connected = Arc::new(AtomicUsize::new(0));
    let echoed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    // Outside the bridge: each frame carries its send time, the echo agent returns the audio
    // as it came, and the caller times the round trip (caller -> agent -> caller), the figure
    // that compares with any other bridge. Recorded only while measuring.
    let epoch = Instant::now();
    let round_trip = Arc::new(callgate::metrics::Histogram::new());
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(test.calls);
    let spacing = test.ramp / test.calls.max(1) as u32;
    // Drawn on a terminal only (stderr), so a redirected report stays clean.
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(test.calls as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "starting calls [{bar:30}] {pos}/{len} ({per_sec}, about {eta} left)",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    for (i, route) in routes.into_iter().enumerate() {
        bar.inc(1);
        let stop = stop_rx.clone();
        let meter = Meter {
            epoch,
            connected: connected.clone(),
            echoed: echoed.clone(),
            sent: sent.clone(),
            measuring: measuring.clone(),
            round_trip: round_trip.clone(),
        };
        let failed = failed.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = one_call(i, route, stop, &meter).await {
                if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("call {i} failed: {e}");
                }
            }
        }));
        tokio::time::sleep(spacing).await;
    }
    bar.finish_and_clear();
    // Let the last calls settle, then measure over the hold period.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // callgate's own figures (frames, latency inside the bridge) from its /metrics.
    let http = reqwest::Client::new();
    let metrics_url = child.as_ref().map(|c| c.base.clone());
    let read_metrics = || async {
        match &metrics_url {
            Some(base) => metrics(&http, base).await,
            None => HashMap::new(),
        }
    };
    let before = sample(pid);
    let m0 = read_metrics().await;
    let sent_before = sent.load(Ordering::Relaxed);
    let echoed_before = echoed.load(Ordering::Relaxed);
    let failed_before = failed.load(Ordering::Relaxed);
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let holding = indicatif::ProgressBar::with_draw_target(
        Some(test.hold.as_secs()),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template("measuring [{bar:30}] {pos}/{len} s")
    {
        holding.set_style(style.progress_chars("=> "));
    }
    for _ in 0..test.hold.as_secs() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        holding.inc(1);
    }
    tokio::time::sleep(test.hold - Duration::from_secs(test.hold.as_secs())).await;
    holding.finish_and_clear();
    let held_for = started.elapsed().as_secs_f64();
    measuring.store(false, Ordering::Relaxed);
    let sent_during = sent.load(Ordering::Relaxed) - sent_before;
    let echoed_during = echoed.load(Ordering::Relaxed) - echoed_before;
    let after = sample(pid);
    let m1 = read_metrics().await;
    // Calls still up: callgate counts its own; for a peer, the callers that have not failed.
    let held = m1.get("callgate_active_calls").copied().unwrap_or_else(|| {
        connected
            .load(Ordering::Relaxed)
            .saturating_sub(failed.load(Ordering::Relaxed)) as f64
    });
    let lost_calls = failed.load(Ordering::Relaxed) - failed_before;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }

    // Frames through the bridge, both ways, as the callers counted them (any bridge).
    let frames = (sent_during + echoed_during) as f64;
    let inside = m1.contains_key("callgate_bridge_frames_total") && !m0.is_empty();
    let q = |k: &str| {
        m1.get(&format!(
            "callgate_bridge_frame_latency_seconds{{quantile=\"{k}\"}}"
        ))
        .copied()
        .unwrap_or(0.0)
            * 1e3
    };
    let max_ms = m1
        .get("callgate_bridge_frame_latency_max_seconds")
        .copied()
        .unwrap_or(0.0)
        * 1e3;
    let call_minutes = held.max(1.0) * held_for / 60.0;
    // Frames the callers should have sent while measuring (one every 20 ms each), and how
    // many they did: a generator that falls behind sends less load than it claims.
    let due = held * held_for / 0.020;
    let pace = if due > 0.0 {
        sent_during as f64 / due
    } else {
        0.0
    };
    let rt = |q: f64| round_trip.quantile_us(q) as f64 / 1e3;
    println!(
        "--- callgate loadtest: {} calls requested, {:.0} s hold ---",
        test.calls, held_for
    );
    println!(
        "calls connected       {}",
        connected.load(Ordering::Relaxed)
    );
    println!("calls held at the end {held:.0}");
    println!(
        "calls failed          {} ({lost_calls} while measuring)",
        failed.load(Ordering::Relaxed)
    );
    println!(
        "frames per second     {:.0} (both directions, through the bridge)",
        frames / held_for
    );
    println!(
        "echoes received       {echoed_during} of {sent_during} frames sent while measuring \
         ({:.2} % not back, those in flight at the end included)",
        100.0 * (sent_during.saturating_sub(echoed_during)) as f64 / sent_during.max(1) as f64
    );
    if inside {
        println!(
            "added latency/frame   p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms",
            q("0.5"),
            q("0.99"),
            q("0.999"),
            max_ms
        );
    }
    println!(
        "round trip (outside)  p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  ({} frames, caller -> agent -> caller)",
        rt(0.5),
        rt(0.99),
        rt(0.999),
        round_trip.max_us() as f64 / 1e3,
        round_trip.count()
    );
    println!(
        "generator kept pace   {:.1} % ({sent_during} frames sent of {due:.0} due)",
        pace * 100.0
    );
    if pace >= 0.98 {
        let cpu = after.cpu_secs - before.cpu_secs;
        let user = after.user_secs - before.user_secs;
        println!(
            "CPU per call-minute   {:.4} s  ({cpu:.2} CPU s over {call_minutes:.1} call-minutes)",
            cpu / call_minutes,
        );
        println!(
            "CPU per frame         {:.1} µs user  {:.1} µs kernel  (user/kernel {:.2})",
            user / frames.max(1.0) * 1e6,
            (cpu - user) / frames.max(1.0) * 1e6,
            user / (cpu - user).max(1e-9),
        );
    } else {
        println!(
            "CPU per call-minute   not reported: the generator sent {:.1} % of the frames due, \
             so the bridge carried less than the stated load (use fewer calls, or a second machine)",
            pace * 100.0
        );
    }
    println!(
        "memory per call       {:.1} KiB  (RSS {} KiB held vs {} KiB idle)",
        (after.rss_kib.saturating_sub(idle.rss_kib)) as f64 / held.max(1.0),
        after.rss_kib,
        idle.rss_kib
    );

    if let Some(child) = child.as_mut() {
        let _ = child.process.kill().await;
        let _ = std::fs::remove_dir_all(&child.dir);
    }
    agent_task.abort();
    Ok(())
}

/// The `callgate serve` being measured.
struct Child {
    process: tokio::process::Child,
    /// Its database's folder, removed at the end.
    dir: std::path::PathBuf,
    /// Its `http://` address.
    base: String,
}

/// Starts `callgate serve` on a fresh SQLite file against the echo agent, and issues a code
/// for every call; returns its pid and each call's route.
async fn start_callgate(
    test: &LoadTest,
    callgate: &std::path::Path,
    agent_base: String,
) -> anyhow::Result<(u32, Vec<Route>, Child)> {
    let dir = std::env::temp_dir().join(format!("callgate-loadtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let env: Vec<(&str, String)> = vec![
        (
            "DATABASE_URL",
            format!("sqlite:{}", dir.join("load.db").display()),
        ),
        (
            "CALLGATE_SECRET",
            "loadtest-secret-0123456789abcdef0123".into(),
        ),
        ("LISTEN_ADDR", format!("127.0.0.1:{port}")),
        ("BASE_URL", base.clone()),
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID.into()),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN.into()),
        ("TWILIO_PHONE_NUMBER", PHONE.into()),
        ("ELEVENLABS_AGENT_ID", "loadtest".into()),
        ("ELEVENLABS_API_BASE", agent_base),
        ("MAX_CALL_MINUTES", "600".into()),
        ("CODE_FAILURES_PER_HOUR", "1000000".into()),
        ("AUDIO_DIR", dir.join("no-audio").display().to_string()),
        ("RUST_LOG", "warn".into()),
    ];
    let child = tokio::process::Command::new(callgate)
        .arg("serve")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env_remove("MONGODB_URI")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow::anyhow!("callgate serve exited at once"))?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "callgate serve did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Codes for every call, written to the child's database.
    let vars: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let app = App::build(Config::from_env(&vars)?).await?;
    let grant = OperatorGrant {
        minutes: 600,
        overage: false,
        customer: None,
        payment_method: None,
    };
    let mut codes = Vec::with_capacity(test.calls);
    for _ in 0..test.calls {
        codes.push(
            orders::issue_operator_code(&app, &grant)
                .await?
                .1
                .expose()
                .to_string(),
        );
    }
    let routes = codes
        .into_iter()
        .map(|code| Route::Menu {
            http: http.clone(),
            base: base.clone(),
            code,
        })
        .collect();
    Ok((
        pid,
        routes,
        Child {
            process: child,
            dir,
            base,
        },
    ))
}

/// What every simulated caller counts and times.
struct Meter {
    epoch: Instant,
    connected: Arc<AtomicUsize>,
    echoed: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    measuring: Arc<std::sync::atomic::AtomicBool>,
    round_trip: Arc<callgate::metrics::Histogram>,
}

/// A 20 ms μ-law frame whose first 8 bytes are its send time (µs since the epoch), base64.
/// The rest is the same in every frame and encoded once: base64 of 9 bytes is 12 characters
/// with no padding, so the two encodings join into the encoding of the whole frame.
fn frame(meter: &Meter) -> String {
    static REST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let rest = REST.get_or_init(|| B64.encode([0x55u8; 151]));
    let mut head = [0x55u8; 9];
    let now = meter.epoch.elapsed().as_micros() as u64;
    head[..8].copy_from_slice(&now.to_le_bytes());
    let mut out = B64.encode(head);
    out.push_str(rest);
    out
}

/// What the load test reads of callgate's messages to a caller.
#[derive(serde::Deserialize)]
struct Outgoing<'a> {
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    media: Option<OutgoingMedia<'a>>,
}

#[derive(serde::Deserialize)]
struct OutgoingMedia<'a> {
    #[serde(borrow)]
    payload: std::borrow::Cow<'a, str>,
}

/// The round trip of an echoed frame, from the send time in its first 12 characters.
fn echo_round_trip(meter: &Meter, text: &str) -> Option<Duration> {
    let msg: Outgoing = serde_json::from_str(text).ok()?;
    if msg.event != "media" {
        return None;
    }
    let bytes = B64.decode(msg.media?.payload.get(..12)?).ok()?;
    let sent = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let now = meter.epoch.elapsed().as_micros() as u64;
    now.checked_sub(sent).map(Duration::from_micros)
}

async fn one_call(
    i: usize,
    route: Route,
    mut stop: watch::Receiver<bool>,
    meter: &Meter,
) -> anyhow::Result<()> {
    let call_sid = format!("CA{:032x}", i + 1);
    let account = Account {
        account_sid: ACCOUNT_SID.into(),
        auth_token: AUTH_TOKEN.into(),
    };
    let (url, parameters) = match route {
        Route::Menu { http, base, code } => {
            let url = format!("{base}/voice/code?try=1");
            let form: Vec<(String, String)> = [
                ("CallSid", call_sid.as_str()),
                ("AccountSid", ACCOUNT_SID),
                ("From", &format!("+1555{:07}", i)),
                ("To", PHONE),
                ("Digits", &code),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            let (_, answer) = twilio::post(&http, &url, &form, Signature::Sign(AUTH_TOKEN)).await?;
            let stream = twiml::parse(&answer)?
                .into_iter()
                .find_map(|verb| match verb {
                    Verb::Stream { url, parameters } => Some((url, parameters)),
                    _ => None,
                });
            stream.ok_or_else(|| anyhow::anyhow!("no stream in the answer: {answer}"))?
        }
        Route::Direct(url) => (url, Vec::new()),
    };
    // Opened as Twilio's media servers open it, sending at once: with Nagle's delay a
    // caller's frame could wait for the previous one's acknowledgement, and the round trip
    // would time it.
    let mut stream = MediaStream::open(&url, &account, &call_sid, &parameters).await?;
    let stream_sid = stream.stream_sid.clone();
    meter.connected.fetch_add(1, Ordering::Relaxed);
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            _ = pace.tick() => {
                let media = format!(
                    r#"{{"event":"media","streamSid":"{stream_sid}","media":{{"track":"inbound","payload":"{}"}}}}"#,
                    frame(meter)
                );
                if !stream.send_text(media).await {
                    anyhow::bail!("stream closed by the bridge");
                }
                meter.sent.fetch_add(1, Ordering::Relaxed);
            }
            msg = stream.recv_text() => match msg {
                Some(Ok(text)) => {
                    meter.echoed.fetch_add(1, Ordering::Relaxed);
                    if meter.measuring.load(Ordering::Relaxed) {
                        if let Some(rt) = echo_round_trip(meter, &text) {
                            meter.round_trip.record(rt);
                        }
                    }
                }
                Some(Err(_binary)) => {}
                None => anyhow::bail!("stream closed by the bridge"),
            },
            _ = stop.changed() => break,
        }
    }
    stream.hang_up().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter() -> Meter {
        Meter {
            epoch: Instant::now(),
            connected: Default::default(),
            echoed: Default::default(),
            sent: Default::default(),
            measuring: Default::default(),
            round_trip: Arc::new(callgate::metrics::Histogram::new()),
        }
    }

    #[test]
    fn a_frame_is_160_bytes_of_audio_carrying_its_send_time() {
        let meter = meter();
        let text = frame(&meter);
        let bytes = B64.decode(&text).unwrap();
        assert_eq!(bytes.len(), 160);
        assert!(bytes[8..].iter().all(|b| *b == 0x55));
        let echoed =
            format!(r#"{{"event":"media","streamSid":"MZ1","media":{{"payload":"{text}"}}}}"#);
        let rt = echo_round_trip(&meter, &echoed).unwrap();
        assert!(rt < Duration::from_secs(5));
        assert!(echo_round_trip(&meter, r#"{"event":"mark","mark":{"name":"x"}}"#).is_none());
    }
}
