//! Instances that die (issue 28): a crash loses at most one metering interval, whatever the
//! phase of the timers; a restarted instance settles at start-up what its earlier run
//! carried; another instance settles the calls of one that is gone, at once when Twilio
//! reports the call moved on, else when the instance has been silent for a few seconds.
//!
//! Each instance here runs on a runtime of its own with its own connection to the database;
//! its crash stops every task where it stands (`TestApp::crash`), as `kill -9` does.

use std::time::Duration;

use callgate::orders;
use callgate::store::{Call, DynStore, Order};
use callgate_peers::agent::{Behaviour, FakeAgent};
use callgate_peers::twilio::{Caller, Ending, MediaStream};
use tokio::time::Instant;

use crate::support::app::{spawn_crashable, TestApp, ACCOUNT_SID, AUTH_TOKEN, PHONE};
use crate::support::calls::{
    dial_at, leak, live_call_at, operator_code, settled_call, until_closed, WAIT,
};
use crate::support::proxy::Proxy;
use crate::support::Again;

/// One metered second here.
const TICK: Duration = Duration::from_millis(20);
/// Metered seconds per flush (`BridgeSettings::persist_every_secs`, the default 5).
const PERSIST: i64 = 5;

async fn instance(db: &Again, agent: &FakeAgent, name: &str) -> TestApp {
    spawn_crashable(
        db,
        &[
            ("ELEVENLABS_API_BASE", agent.base.as_str()),
            ("INSTANCE_NAME", name),
        ],
        |app| {
            app.bridge.tick = TICK;
            app.bridge.setup_timeout = Duration::from_secs(5);
        },
    )
    .await
}

/// The number every call here comes from.
const FROM: &str = "+15558880001";

async fn code(app: &TestApp, minutes: i64) -> (Order, &'static str) {
    operator_code(&app.app, minutes).await
}

async fn dial(app: &TestApp, code: &'static str) -> (Caller, Ending) {
    dial_at(&app.base, FROM, code).await
}

async fn live_call(app: &TestApp, code: &'static str) -> (Caller, MediaStream, String) {
    live_call_at(&app.base, FROM, code).await
}

/// Waits until the call on `app` has metered `seconds`.
async fn metered(app: &TestApp, call_sid: &str, seconds: i64) {
    let deadline = Instant::now() + WAIT;
    while app.app.metering.metered(call_sid).unwrap_or(0) < seconds {
        assert!(
            Instant::now() < deadline,
            "the call never metered {seconds} s"
        );
        tokio::time::sleep(TICK / 4).await;
    }
}

/// Waits until a flush has written at least `seconds` of the call.
async fn flushed(store: &DynStore, call_sid: &str, seconds: i64) {
    let deadline = Instant::now() + WAIT;
    while stored_seconds(store, call_sid).await < seconds {
        assert!(Instant::now() < deadline, "never flushed {seconds} s");
        tokio::time::sleep(TICK / 4).await;
    }
}

/// The figure the store holds for a call.
async fn stored_seconds(store: &DynStore, call_sid: &str) -> i64 {
    store
        .call(call_sid)
        .await
        .unwrap()
        .unwrap()
        .seconds_metered
        .0
}

/// Waits (up to 10 s) until another instance has settled the call, and returns it.
async fn settled_elsewhere(store: &DynStore, call_sid: &str) -> Call {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let call = store.call(call_sid).await.unwrap().unwrap();
        if call.settled_at.is_some() {
            return call;
        }
        assert!(
            Instant::now() < deadline,
            "never settled by the living instance"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The call was settled on what was flushed (at least `flushed`), and its order debited
/// that, once.
async fn debited_once_as_flushed(store: &DynStore, order_id: &str, call: &Call, flushed: i64) {
    let metered = call.seconds_metered.0;
    assert!(
        metered >= flushed,
        "what was flushed counts: {metered} < {flushed}"
    );
    assert_eq!(
        call.settled_seconds,
        Some(metered),
        "settled on what was flushed"
    );
    let order = store.order(order_id).await.unwrap().unwrap();
    assert_eq!(order.seconds_used.0, metered, "debited once");
}

/// Kills the instance carrying a live call at ten phases: of the call's start against the
/// instance's flush (the flush runs on the instance's clock, the call's seconds on its own),
/// and of the crash within an interval. Each time the store holds the call's figure as of
/// at most one interval before the crash (plus the write's own time: one second here), never
/// more than was metered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loses_at_most_one_metering_interval_at_every_phase() {
    const PHASES: u32 = 10;
    let interval = TICK * PERSIST as u32;
    let mut worst = 0;
    for phase in 0..PHASES {
        let db = crate::support::sqlite().await;
        let agent = FakeAgent::start(Behaviour::default()).await;
        let mut app = instance(&db.again(), &agent, "box-1").await;
        // The flush started with the instance: the call starts this far into its interval.
        tokio::time::sleep(interval * phase / PHASES).await;
        let (_, code) = code(&app, 10).await;
        let (caller, _stream, _) = live_call(&app, code).await;
        metered(&app, &caller.call_sid, 3 * PERSIST).await;
        // And the crash comes this far into a later interval.
        tokio::time::sleep(interval * ((phase * 7) % PHASES) / PHASES).await;
        app.crash();
        let at_crash = app.app.metering.metered(&caller.call_sid).unwrap();
        let stored = stored_seconds(&db.store, &caller.call_sid).await;
        assert!(
            stored <= at_crash,
            "phase {phase}: {stored} s stored of {at_crash} s metered"
        );
        let lost = at_crash - stored;
        assert!(
            lost <= PERSIST + 1,
            "phase {phase}: {lost} s lost ({stored} s stored of {at_crash} s metered), more than one interval of {PERSIST} s"
        );
        worst = worst.max(lost);
        db.cleanup().await;
    }
    eprintln!("worst loss over {PHASES} phases: {worst} s (interval {PERSIST} s)");
}

/// `kill -9`, then the same instance again on the same SQLite file at once: before it
/// answers anything, the call its earlier run carried is settled on what was flushed, so the
/// caller's next call with the code connects (not "in use" until a hold lapses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_instance_settles_what_its_last_run_carried_before_answering() {
    let db = crate::support::sqlite().await;
    let agent = FakeAgent::start(Behaviour::default()).await;
    let mut first = instance(&db.again(), &agent, "box-1").await;
    let (order, code) = code(&first, 10).await;
    let (caller, _stream, _) = live_call(&first, code).await;
    flushed(&db.store, &caller.call_sid, PERSIST).await;
    first.crash();

    let again = instance(&db.again(), &agent, "box-1").await;
    let (_, ending) = dial(&again, code).await;
    assert!(
        matches!(ending, Ending::Stream { .. }),
        "the code connects on the restarted instance at once: {ending:?}"
    );
    let call = db.store.call(&caller.call_sid).await.unwrap().unwrap();
    assert!(call.settled_at.is_some(), "the crashed call was settled");
    debited_once_as_flushed(&db.store, &order.id, &call, PERSIST).await;
    db.cleanup().await;
}

/// Two instances on one PostgreSQL database. The one carrying a live call dies; Twilio, as
/// it does when the stream's socket drops, goes on with the call on the other (the verbs
/// after the stream, then the status callback). The caller can call again within five
/// seconds of the crash, and the dead call is debited once, what was flushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_frees_the_code_of_a_dead_ones_call_when_twilio_moves_on() {
    let Some(db) = crate::support::postgres().await else {
        return;
    };
    let agent = FakeAgent::start(Behaviour::default()).await;
    let mut dying = instance(&db.again(), &agent, "box-1").await;
    let living = instance(&db.again(), &agent, "box-2").await;
    let (order, code) = code(&dying, 10).await;
    let (mut caller, mut stream, after) = live_call(&dying, code).await;
    flushed(&db.store, &caller.call_sid, PERSIST).await;
    dying.crash();
    let crashed = Instant::now();
    // Its heartbeat still looks fresh (it died a moment ago): kept so here, so that only
    // Twilio's word can free the code within the five seconds.
    let ghost = callgate::store::Instance {
        id: dying.app.instance_id.clone(),
        name: "box-1".into(),
    };
    let store = db.store.clone();
    let beating = tokio::spawn(async move {
        loop {
            {
                use callgate::domain::clock::Clock;
                let now = callgate::domain::clock::SystemClock.now();
                store.beat(&ghost, now).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    // Twilio sees the socket close and carries on with the call where the balancer sends it.
    assert!(
        until_closed(&mut stream, WAIT).await,
        "the dead instance's socket never closed"
    );
    let after = after.replace(&dying.base, &living.base);
    let goodbye = caller.after_stream(&after).await;
    assert!(matches!(goodbye, Ending::HungUp), "{goodbye:?}");
    let status = caller
        .status_callback(&living.url("/voice/status"), "completed", Some("9"))
        .await;
    assert_eq!(status, 200);

    // The caller redials at once, and again until the code connects.
    let redialled = loop {
        let (_, ending) = dial(&living, code).await;
        if matches!(ending, Ending::Stream { .. }) {
            break crashed.elapsed();
        }
        assert!(
            crashed.elapsed() < Duration::from_secs(5),
            "the code still refused 5 s after its instance died: {ending:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("the code connected again {redialled:?} after its instance died");
    beating.abort();
    let call = settled_call(&living, &caller.call_sid).await;
    debited_once_as_flushed(&db.store, &order.id, &call, PERSIST).await;
    db.cleanup().await;
}

/// Without any word from Twilio (the instance cut off, its callers' sockets still open),
/// the other instance settles the call once the dead one has been silent for a few seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_settles_the_calls_of_a_silent_one() {
    let Some(db) = crate::support::postgres().await else {
        return;
    };
    let agent = FakeAgent::start(Behaviour::default()).await;
    let mut dying = instance(&db.again(), &agent, "box-1").await;
    let living = instance(&db.again(), &agent, "box-2").await;
    let (order, code) = code(&dying, 10).await;
    let (caller, _stream, _) = live_call(&dying, code).await;
    flushed(&db.store, &caller.call_sid, PERSIST).await;
    dying.crash();
    let crashed = Instant::now();
    let call = settled_elsewhere(&db.store, &caller.call_sid).await;
    eprintln!("settled {:?} after its instance died", crashed.elapsed());
    let (_, ending) = dial(&living, code).await;
    assert!(matches!(ending, Ending::Stream { .. }), "{ending:?}");
    debited_once_as_flushed(&db.store, &order.id, &call, PERSIST).await;
    db.cleanup().await;
}

/// An instance cut off from the database while its callers are still connected (the link
/// drops: no error, only silence, so its writes hang rather than fail) stops its own calls
/// before another instance, taking it for dead, settles them: no call goes on unmetered beside
/// its settlement. The debit is what was flushed before the cut, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_cut_off_from_the_database_ends_its_calls_before_another_settles_them() {
    let Some(db) = crate::support::postgres().await else {
        return;
    };
    let again = db.again();
    let link = Proxy::start(again.pg_target()).await;
    let agent = FakeAgent::start(Behaviour::default()).await;
    let cut_off = instance(&again.via(link.addr), &agent, "box-1").await;
    let living = instance(&again, &agent, "box-2").await;
    let (order, code) = code(&cut_off, 30).await;
    let (caller, mut stream, _) = live_call(&cut_off, code).await;
    flushed(&db.store, &caller.call_sid, PERSIST).await;
    link.blackhole();
    let dropped = Instant::now();
    let flushed_then = stored_seconds(&db.store, &caller.call_sid).await;
    assert!(
        until_closed(&mut stream, Duration::from_secs(15)).await,
        "the call went on with its instance cut off from the database"
    );
    let closed = dropped.elapsed();
    let call = settled_elsewhere(&db.store, &caller.call_sid).await;
    let settled = dropped.elapsed();
    eprintln!("cut off: the stream closed {closed:?} and the call was settled {settled:?} after the link dropped");
    assert!(
        closed < settled,
        "the caller was still talking when the call was settled ({closed:?} against {settled:?})"
    );
    let (_, ending) = dial(&living, code).await;
    assert!(matches!(ending, Ending::Stream { .. }), "{ending:?}");
    debited_once_as_flushed(&db.store, &order.id, &call, flushed_then).await;
    link.restore();
    db.cleanup().await;
}

/// Two instances on one PostgreSQL database, whose live calls would otherwise learn of a
/// change only at their flush or re-check (both far off here): the word passes through
/// PostgreSQL's `NOTIFY`.
async fn signalled_pair(db: &Again, agent: &FakeAgent) -> (TestApp, TestApp) {
    let adjust = |app: &mut callgate::App| {
        app.bridge.tick = TICK;
        app.bridge.setup_timeout = Duration::from_secs(5);
        app.bridge.persist_every_secs = 100_000;
        app.bridge.finish_quiet = Duration::from_millis(50);
    };
    let extra = |name: &'static str| {
        [
            ("ELEVENLABS_API_BASE", leak(agent.base.clone())),
            ("INSTANCE_NAME", name),
        ]
    };
    (
        spawn_crashable(db, &extra("box-1"), adjust).await,
        spawn_crashable(db, &extra("box-2"), adjust).await,
    )
}

/// A refund's revocation arriving at another instance ends the live call within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_another_instance_ends_the_call_within_a_second() {
    let Some(db) = crate::support::postgres().await else {
        return;
    };
    let agent = FakeAgent::start(Behaviour::default()).await;
    let (carrying, other) = signalled_pair(&db.again(), &agent).await;
    let (order, code) = code(&carrying, 10).await;
    let (caller, mut stream, _) = live_call(&carrying, code).await;
    metered(&carrying, &caller.call_sid, 5).await;
    let revoked = Instant::now();
    orders::revoke(&other.app, &order).await.unwrap();
    assert!(
        until_closed(&mut stream, WAIT).await,
        "the call went on after its revocation"
    );
    let took = revoked.elapsed();
    eprintln!("the call ended {took:?} after its revocation on the other instance");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let call = settled_call(&carrying, &caller.call_sid).await;
    assert_eq!(call.end_reason, Some(callgate::store::EndReason::Revoked));
    db.cleanup().await;
}

/// Minutes granted on another instance move the live call's end at once: it runs on past the
/// allowance it started with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minutes_granted_on_another_instance_reach_the_live_call() {
    let Some(db) = crate::support::postgres().await else {
        return;
    };
    let agent = FakeAgent::start(Behaviour::default()).await;
    let (carrying, other) = signalled_pair(&db.again(), &agent).await;
    let (order, code) = code(&carrying, 1).await;
    let (caller, mut stream, _) = live_call(&carrying, code).await;
    metered(&carrying, &caller.call_sid, 5).await;
    callgate::orders::ledger::grant(&other.app, &order.id, callgate::store::Seconds(60))
        .await
        .unwrap()
        .unwrap();
    assert!(
        until_closed(&mut stream, WAIT).await,
        "the call never ended"
    );
    let call = settled_call(&carrying, &caller.call_sid).await;
    assert_eq!(call.end_reason, Some(callgate::store::EndReason::TimeUp));
    assert_eq!(
        call.seconds_metered.0, 120,
        "the call ran to the two minutes it had once the grant arrived"
    );
    db.cleanup().await;
}

/// Nine calls from one number type nine wrong codes at the same instant (each call's code
/// step posted together, after all nine were greeted), spread over `apps`: with the limit at
/// five, how many were judged ("not valid", asked again) and how many refused ("try again
/// later").
pub async fn nine_wrong_codes_at_once(bases: &[String], app: &callgate::App) -> (usize, usize) {
    let mut callers: Vec<Caller> = (0..9)
        .map(|_| Caller::new(AUTH_TOKEN, ACCOUNT_SID, "+15558887777", PHONE))
        .collect();
    for (i, caller) in callers.iter_mut().enumerate() {
        let base = &bases[i % bases.len()];
        let params = caller.call_params("ringing");
        let (status, _) = caller
            .post(&format!("{base}/voice/incoming"), &params)
            .await;
        assert_eq!(status, 200);
    }
    let posts = callers.iter_mut().enumerate().map(|(i, caller)| {
        let base = bases[(i + 1) % bases.len()].clone();
        let (wrong, _) = orders::fresh_code(app);
        let mut params = caller.call_params("in-progress");
        params.push(("Digits".into(), wrong.expose().to_string()));
        async move {
            let (status, twiml) = caller
                .post(&format!("{base}/voice/code?try=1"), &params)
                .await;
            assert_eq!(status, 200);
            twiml
        }
    });
    let answers = futures_util::future::join_all(posts).await;
    let judged = answers
        .iter()
        .filter(|t| t.contains("That code is not valid"))
        .count();
    let refused = answers
        .iter()
        .filter(|t| t.contains("Too many incorrect codes have been entered"))
        .count();
    assert_eq!(judged + refused, 9, "{answers:?}");
    (judged, refused)
}

async fn limits_hold_at_once(store: DynStore) {
    let agent = FakeAgent::start(Behaviour::default()).await;
    let app = crate::support::app::spawn(
        store,
        &[
            ("ELEVENLABS_API_BASE", agent.base.as_str()),
            ("CODE_FAILURES_PER_CALLER_PER_HOUR", "5"),
        ],
    )
    .await;
    let (judged, refused) =
        nine_wrong_codes_at_once(std::slice::from_ref(&app.base), &app.app).await;
    assert_eq!((judged, refused), (5, 4), "five judged, four refused");
}

crate::on_every_backend!(limits_hold_at_once);

/// The same across two instances on one PostgreSQL database, the nine spread over both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrong_code_limit_holds_across_instances_at_once() {
    let Some(db) = crate::support::postgres().await else {
        return;
    };
    let agent = FakeAgent::start(Behaviour::default()).await;
    let extra = [
        ("ELEVENLABS_API_BASE", agent.base.as_str()),
        ("CODE_FAILURES_PER_CALLER_PER_HOUR", "5"),
    ];
    let one = spawn_crashable(&db.again(), &extra, |_| {}).await;
    let two = spawn_crashable(&db.again(), &extra, |_| {}).await;
    let (judged, refused) =
        nine_wrong_codes_at_once(&[one.base.clone(), two.base.clone()], &one.app).await;
    assert_eq!((judged, refused), (5, 4), "five judged, four refused");
    db.cleanup().await;
}
