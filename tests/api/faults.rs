//! Fault injection around live calls: an agent that hangs or floods, a thousand bad requests,
//! the database pausing. Calls in progress go on (or end politely and metered), nothing is
//! lost, and memory stays bounded. Other faults live beside the code they test: Stripe 500s,
//! a hanging Stripe and a killed worker in billing.rs, the database cut mid-billing there and
//! under /readyz in health.rs, a dropped agent or Twilio side and malformed frames in bridge.rs.
//!
//! The memory checks read this process's resident set, so these tests run one at a time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::calls::{connected_call, ended_call, open, TICK, WAIT};
use callgate_peers::agent::{Behaviour, FakeAgent};
use callgate_peers::twilio::Received;

/// One test at a time: they measure the process's memory.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn app(
    store: callgate::store::DynStore,
    agent: &FakeAgent,
    silence: Duration,
) -> crate::support::app::TestApp {
    crate::support::app::spawn_with(
        store,
        &[
            ("ELEVENLABS_API_BASE", agent.base.as_str()),
            // Payments on (webhooks are checked), though no test here reaches Stripe.
            ("STRIPE_SECRET_KEY", "sk_test_faults"),
            ("STRIPE_PUBLISHABLE_KEY", "pk_test_faults"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_faults"),
            ("STRIPE_API_BASE", "http://127.0.0.1:9"),
        ],
        |app| {
            app.bridge.tick = TICK;
            app.bridge.setup_timeout = Duration::from_secs(5);
            app.bridge.agent_silence = silence;
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_agent_ends_the_call_instead_of_billing_silence() {
    let _one = SERIAL.lock().await;
    let db = crate::support::sqlite().await;
    let agent = FakeAgent::start(Behaviour {
        stall_after: Some(3),
        ..Behaviour::default()
    })
    .await;
    let app = app(db.store.clone(), &agent, Duration::from_millis(400)).await;
    let (mut caller, url, params, after) = connected_call(&app, 5, false).await;
    let mut stream = open(&caller, &url, &params).await;
    let got = stream
        .talk_until_closed(&[0x42; 160], Duration::from_secs(20))
        .await;
    assert_eq!(got.last(), Some(&Received::Closed), "callgate hung up");
    assert!(agent.log().stalled);
    let call = ended_call(&app, &caller.call_sid).await;
    assert_eq!(call.end_reason.map(|r| r.as_str()), Some("agent_failed"));
    // Billed for the silence window at most (400 ms = 40 metered seconds here), plus slack.
    assert!(
        call.seconds_metered.0 <= 150,
        "billed {} s of a hung agent",
        call.seconds_metered.0
    );
    caller.after_stream(&after).await;
    assert!(
        caller.transcript().contains("not available right now"),
        "{}",
        caller.transcript()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_agent_is_paced_by_the_caller_with_bounded_memory() {
    let _one = SERIAL.lock().await;
    let db = crate::support::sqlite().await;
    const FLOOD: usize = 3000; // 3000 s of audio: 24 MB, 32 MB as JSON
    let agent = FakeAgent::start(Behaviour {
        flood: Some(FLOOD),
        ..Behaviour::default()
    })
    .await;
    let app = app(db.store.clone(), &agent, Duration::from_secs(20)).await;
    let (caller, url, params, _) = connected_call(&app, 60, false).await;
    let mut stream = open(&caller, &url, &params).await;
    let before = rss_kib();
    assert!(stream.send_media(&[1; 160]).await);
    // Twilio reads nothing for a while: callgate must wait for it, not buffer the flood.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = rss_kib();
    let mut media = 0usize;
    let deadline = Instant::now() + Duration::from_secs(120);
    while media < FLOOD && Instant::now() < deadline {
        match stream.next(WAIT).await {
            Some(Received::Media(bytes)) => {
                if bytes.len() == 8000 {
                    media += 1;
                }
            }
            Some(Received::Closed) | None => break,
            Some(_) => {}
        }
    }
    assert_eq!(media, FLOOD, "every second of the flood reached the caller");
    let grew_mib = during.saturating_sub(before) / 1024;
    assert!(
        grew_mib < 24,
        "memory grew {grew_mib} MiB while the caller was not reading a 32 MB flood"
    );
    // The call is still up and works both ways.
    assert!(stream.send_media(&[2; 160]).await);
    stream.stop().await;
    let call = ended_call(&app, &caller.call_sid).await;
    assert_eq!(call.end_reason.map(|r| r.as_str()), Some("caller_hung_up"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_bad_requests_do_not_disturb_a_live_call() {
    let _one = SERIAL.lock().await;
    let db = crate::support::sqlite().await;
    let agent = FakeAgent::start(Behaviour::default()).await;
    let app = app(db.store.clone(), &agent, Duration::from_secs(20)).await;
    let (caller, url, params, _) = connected_call(&app, 60, false).await;
    let mut stream = open(&caller, &url, &params).await;
    let before = rss_kib();

    let base = app.base.clone();
    let statuses = Arc::new(std::sync::Mutex::new(Vec::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..25 {
        let (base, statuses, next) = (base.clone(), statuses.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            // A fresh connection each time: a 413 closes its connection before the body is read.
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= 1000 {
                    return;
                }
                let req = match i % 8 {
                    0 => http
                        .post(format!("{base}/voice/incoming"))
                        .form(&[("CallSid", "CAx"), ("From", "+1555")]),
                    1 => http
                        .post(format!("{base}/voice/code?try=1"))
                        .header("X-Twilio-Signature", "forged")
                        .form(&[("CallSid", "CAx"), ("Digits", "123456789012")]),
                    2 => http
                        .post(format!("{base}/webhooks/stripe"))
                        .header("Stripe-Signature", "t=1,v1=00")
                        .body(r#"{"id":"evt_x","type":"payment_intent.succeeded"}"#),
                    3 => http
                        .post(format!("{base}/webhooks/stripe"))
                        .body(vec![b'x'; 200 * 1024]),
                    4 => http.get(format!(
                        "{base}/api/order-details?payment_intent=pi_{i}&client_secret=nope"
                    )),
                    5 => http.get(format!("{base}/media")),
                    6 => http.get(format!("{base}/admin/../../etc/passwd")),
                    _ => http
                        .post(format!("{base}/voice/status"))
                        .header("Content-Type", "application/x-www-form-urlencoded")
                        .body(vec![0xff, 0xfe, 0x00, b'=', 0x80]),
                };
                let status = match req.send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                statuses.lock().unwrap().push((i % 8, status));
            }
        }));
    }
    // Meanwhile the caller talks, at real-time pace, and hears every frame back.
    let mut echoed = 0;
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    while workers.iter().any(|w| !w.is_finished()) || echoed < 20 {
        pace.tick().await;
        assert!(stream.send_media(&[5; 160]).await, "the call was dropped");
        match stream.next(WAIT).await {
            Some(Received::Media(f)) => {
                assert_eq!(f, vec![5; 160]);
                echoed += 1;
            }
            other => panic!("the live call was disturbed: {other:?}"),
        }
    }
    for w in workers {
        w.await.unwrap();
    }
    let statuses = statuses.lock().unwrap().clone();
    assert_eq!(statuses.len(), 1000);
    for (kind, status) in &statuses {
        // The oversized body is refused (413) before it is read; the client, still sending,
        // may see the connection reset instead of the answer.
        if *kind == 3 && *status == 0 {
            continue;
        }
        assert!(
            (400..500).contains(status),
            "bad request of kind {kind} got {status}"
        );
    }
    assert!(
        statuses.iter().any(|(k, s)| *k == 3 && *s == 413),
        "oversized bodies are refused with 413"
    );
    let grew_mib = rss_kib().saturating_sub(before) / 1024;
    assert!(grew_mib < 32, "memory grew {grew_mib} MiB");
    stream.stop().await;
    let call = ended_call(&app, &caller.call_sid).await;
    assert_eq!(call.end_reason.map(|r| r.as_str()), Some("caller_hung_up"));
    assert!(call.seconds_metered.0 > 0);
}

/// Talks for `ms`, every frame echoed; returns how many.
async fn talk(stream: &mut callgate_peers::twilio::MediaStream, ms: u64) -> usize {
    let until = Instant::now() + Duration::from_millis(ms);
    let mut n = 0;
    while Instant::now() < until {
        assert!(stream.send_media(&[3; 160]).await, "the call was dropped");
        assert_eq!(stream.next(WAIT).await, Some(Received::Media(vec![3; 160])));
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_pause_mid_call_does_not_drop_it_and_metering_is_kept() {
    let _one = SERIAL.lock().await;
    let Some((db, proxy)) = crate::support::postgres_behind_proxy().await else {
        return;
    };
    let agent = FakeAgent::start(Behaviour::default()).await;
    let app = app(db.store.clone(), &agent, Duration::from_secs(20)).await;
    let (caller, url, params, _) = connected_call(&app, 60, false).await;
    let mut stream = open(&caller, &url, &params).await;
    talk(&mut stream, 300).await;
    proxy.cut();
    // The database is gone for a second (100 metered seconds): the call goes on.
    let during = talk(&mut stream, 1000).await;
    assert!(during > 10);
    proxy.restore();
    talk(&mut stream, 300).await;
    // While the call is still live, the batched metering reaches the database again.
    let deadline = Instant::now() + WAIT;
    loop {
        let live = app.app.store.call(&caller.call_sid).await.unwrap().unwrap();
        if live.seconds_metered.0 >= 100 {
            assert!(live.bridge_ended_at.is_none());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metering never persisted mid-call: {live:?}"
        );
        talk(&mut stream, 100).await;
    }
    stream.stop().await;
    let call = ended_call(&app, &caller.call_sid).await;
    assert_eq!(call.end_reason.map(|r| r.as_str()), Some("caller_hung_up"));
    assert!(call.bridge_ended_at.is_some(), "final metering stored");
    assert!(
        call.seconds_metered.0 >= 100,
        "metered {} s of about 160",
        call.seconds_metered.0
    );
    db.cleanup().await;
}

/// The pool does not ping a connection it hands out if the connection was in use moments ago
/// (a round trip per statement saved), but one that sat idle is pinged first: a database
/// connection dropped while idle (a restart, a failover, a proxy closing it) is replaced
/// before a request uses it, not answered with an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_while_idle_is_replaced_before_use() {
    use callgate::store::SlotWant;
    let _one = SERIAL.lock().await;
    let Some((db, proxy)) = crate::support::postgres_behind_proxy().await else {
        return;
    };
    let store = db.store.clone();
    let want = [SlotWant {
        key: "caller:+15550001111",
        limit: 5,
    }];
    // Both pools in use: the durable one (a read) and the lax one (a slot taken).
    let read = || async { store.call("CA-not-there").await };
    let take = || async { store.take_slots(&want, 0, 1).await };
    for _ in 0..3 {
        read().await.expect("warm read");
        take().await.expect("warm slot");
    }
    // Every connection closed under the pool, then the database reachable again.
    proxy.cut();
    proxy.restore();
    // The pool's idle connections are now older than the ping threshold: waited out on the
    // clock (this is the pool's rule being tested, not a server being waited for).
    tokio::time::sleep(
        callgate::store::PostgresStore::PING_AFTER_IDLE + Duration::from_millis(100),
    )
    .await;
    for n in 0..3 {
        read()
            .await
            .unwrap_or_else(|e| panic!("read {n} after the drop: {e}"));
        take()
            .await
            .unwrap_or_else(|e| panic!("slot {n} after the drop: {e}"));
    }
    db.cleanup().await;
}
