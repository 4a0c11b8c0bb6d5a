//! Keys during the call (issue 27): `*` tells the minutes left, or in paid time its price,
//! played into the call from the operator's recordings (numbers and words joined), and tells
//! the agent the same; `0` ends the conversation and dials the operator (its time free, or
//! with `TRANSFER_METERED` taken from the included minutes, once); a key the call does not use
//! is ignored. Keys never reach the agent as audio. (`#` buys a top-up: in_call_top_up.rs.)

use std::path::Path;
use std::time::Duration;

use crate::support::calls::{connected_call, ended_call, heard_the_agent, open, order_of, TICK};
use callgate::store::DynStore;
use callgate_peers::agent::{Behaviour, FakeAgent};
use callgate_peers::twilio::{Ending, MediaStream, Received};

/// An 8 kHz mono μ-law WAV of `ulaw`, as callgate writes them.
fn write_wav(dir: &Path, name: &str, ulaw: &[u8]) {
    std::fs::write(dir.join(name), callgate::telephony::audio::ulaw_wav(ulaw)).unwrap();
}

/// The app with recordings in its `AUDIO_DIR`: each file's bytes are its own value, so what
/// is played says which files were joined.
async fn app_with_recordings(
    store: DynStore,
    agent: &FakeAgent,
    files: &[(&str, u8)],
) -> (crate::support::app::TestApp, tempfile::TempDir) {
    app_with(store, agent, files, &[]).await
}

async fn app_with(
    store: DynStore,
    agent: &FakeAgent,
    files: &[(&str, u8)],
    extra: &[(&str, &str)],
) -> (crate::support::app::TestApp, tempfile::TempDir) {
    let audio = tempfile::tempdir().unwrap();
    for (name, byte) in files {
        write_wav(audio.path(), name, &[*byte; 240]);
    }
    let dir = audio.path().to_str().unwrap().to_string();
    let mut vars = vec![
        ("ELEVENLABS_API_BASE", agent.base.as_str()),
        ("AUDIO_DIR", dir.as_str()),
    ];
    vars.extend_from_slice(extra);
    let app = crate::support::app::spawn_with(store, &vars, |app| {
        app.bridge.tick = TICK;
        app.bridge.setup_timeout = Duration::from_secs(5);
    })
    .await;
    (app, audio)
}

/// What callgate played after its last `clear`, up to the mark `name`, as one stream of bytes
/// (the agent's echoes, bytes of 0x55, left out).
async fn played(stream: &mut MediaStream, name: &str) -> Vec<u8> {
    let mut audio = Vec::new();
    loop {
        match stream.next(Duration::from_secs(10)).await {
            Some(Received::Mark(m)) if m == name => return audio,
            Some(Received::Clear) => audio.clear(),
            Some(Received::Media(frame)) if frame.iter().any(|&b| b != 0x55) => audio.extend(frame),
            Some(Received::Closed) | None => panic!("{name} never played"),
            Some(_) => {}
        }
    }
}

async fn star_tells_the_minutes_left(store: DynStore) {
    let agent = FakeAgent::start(Behaviour::default()).await;
    let files = [("number_2.wav", 0x12), ("time_left.wav", 0x34)];
    let (app, _audio) = app_with_recordings(store, &agent, &files).await;
    let (_caller, url, params, _) = connected_call(&app, 2, false).await;
    let mut stream = open(&_caller, &url, &params).await;
    heard_the_agent(&mut stream).await;
    // A key this call does not use: nothing played, the call goes on.
    assert!(stream.send_dtmf('5').await);
    assert!(stream.send_dtmf('*').await);
    let audio = played(&mut stream, "time_left").await;
    assert_eq!(
        audio,
        [vec![0x12; 240], vec![0x34; 240]].concat(),
        "\"two\" then \"minutes left\", from the recordings"
    );
    // The agent is told too (sent just after the audio; it arrives a moment later).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let told = agent.log().contextual_updates;
        if told.iter().any(|t| t.contains("2 minutes")) {
            // Every word on the time goes under one context id: only the latest stays.
            let ids = agent.log().context_ids;
            assert!(
                !ids.is_empty() && ids.iter().all(|id| id.as_deref() == Some("callgate_time")),
                "{ids:?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent is told too: {told:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stream.hang_up().await;
}

async fn star_in_paid_time_tells_its_price(store: DynStore) {
    let agent = FakeAgent::start(Behaviour::default()).await;
    // The price of overage here: $1.00 a minute ("one dollars"? the operator records words
    // that suit; the test checks which files are joined).
    let files = [
        ("in_paid_time.wav", 0x21),
        ("number_1.wav", 0x43),
        ("currency_major.wav", 0x65),
        ("per_minute.wav", 0x76),
    ];
    let (app, _audio) = app_with_recordings(store, &agent, &files).await;
    let (caller, url, params, _) = connected_call(&app, 1, true).await;
    let order = order_of(&app, &caller.call_sid).await;
    assert_eq!(order.overage_price.0, 100, "the test's price");
    let mut stream = open(&caller, &url, &params).await;
    heard_the_agent(&mut stream).await;
    played(&mut stream, "paid_time").await;
    assert!(stream.send_dtmf('*').await);
    let audio = played(&mut stream, "per_minute").await;
    assert_eq!(
        audio,
        [
            vec![0x21; 240],
            vec![0x43; 240],
            vec![0x65; 240],
            vec![0x76; 240]
        ]
        .concat(),
        "\"you are in paid time, at\" \"one\" \"dollars\" \"a minute\""
    );
    stream.hang_up().await;
}

const OPERATOR: &str = "+15550109999";

async fn zero_transfers_to_the_operator_for_free(store: DynStore) {
    let agent = FakeAgent::start(Behaviour::default()).await;
    let (app, _audio) = app_with(store, &agent, &[], &[("OPERATOR_NUMBER", OPERATOR)]).await;
    let (mut caller, url, params, after) = connected_call(&app, 5, false).await;
    let mut stream = open(&caller, &url, &params).await;
    heard_the_agent(&mut stream).await;
    assert!(stream.send_dtmf('0').await);
    let rest = stream
        .talk_until_closed(&[0x55; 160], Duration::from_secs(10))
        .await;
    assert_eq!(
        rest.last(),
        Some(&Received::Closed),
        "the conversation ends"
    );
    let call = ended_call(&app, &caller.call_sid).await;
    assert_eq!(call.end_reason.map(|r| r.as_str()), Some("transferred"));
    assert_eq!(
        caller.after_stream(&after).await,
        Ending::Dialled(OPERATOR.into())
    );
    assert!(
        caller.transcript().contains("Connecting you to a person"),
        "{}",
        caller.transcript()
    );
    assert_eq!(
        caller
            .dialled
            .clone()
            .map(|(_, limit, action)| (limit, action)),
        Some((None, None)),
        "unmetered: no limit, nothing reported back"
    );
    assert_eq!(caller.dial_ended(600).await, Ending::HungUp);
    let order = order_of(&app, &caller.call_sid).await;
    assert_eq!(
        order.seconds_used, call.seconds_metered,
        "only the conversation is used"
    );
}

async fn a_metered_transfer_takes_its_time_from_the_minutes_once(store: DynStore) {
    let agent = FakeAgent::start(Behaviour::default()).await;
    let extra = [("OPERATOR_NUMBER", OPERATOR), ("TRANSFER_METERED", "on")];
    let (app, _audio) = app_with(store, &agent, &[], &extra).await;
    let (mut caller, url, params, after) = connected_call(&app, 2, false).await;
    let mut stream = open(&caller, &url, &params).await;
    heard_the_agent(&mut stream).await;
    assert!(stream.send_dtmf('0').await);
    stream
        .talk_until_closed(&[0x55; 160], Duration::from_secs(10))
        .await;
    let call = ended_call(&app, &caller.call_sid).await;
    let metered = call.seconds_metered.0;
    assert!(metered < 120);
    assert_eq!(
        caller.after_stream(&after).await,
        Ending::Dialled(OPERATOR.into())
    );
    let (_, limit, action) = caller.dialled.clone().unwrap();
    assert_eq!(limit, Some(120 - metered), "limited to what is left");
    assert!(action.is_some());
    // Twilio cuts the operator's call at the limit and reports it; a repeat changes nothing.
    assert_eq!(caller.dial_ended(600).await, Ending::HungUp);
    assert_eq!(caller.dial_ended(600).await, Ending::HungUp);
    let order = order_of(&app, &caller.call_sid).await;
    assert_eq!(
        order.seconds_left().0,
        0,
        "the transfer used the rest, once"
    );
    let entries = app.app.store.entries_for_order(&order.id).await.unwrap();
    let transfers: Vec<_> = entries
        .iter()
        .filter(|e| e.kind == callgate::store::EntryKind::Transfer)
        .collect();
    assert_eq!(transfers.len(), 1);
    assert_eq!(transfers[0].seconds.0, -(120 - metered));
    let report = callgate::billing::reconcile::check(&app.app).await.unwrap();
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
}

on_every_backend!(
    star_tells_the_minutes_left,
    star_in_paid_time_tells_its_price,
    zero_transfers_to_the_operator_for_free,
    a_metered_transfer_takes_its_time_from_the_minutes_once,
);
