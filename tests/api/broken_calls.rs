//! Fair billing of broken calls (issue 27): a call whose agent fails in its first
//! `FREE_FAILURE_SECS` costs nothing; a later failure is billed only until the agent was last
//! heard. The seconds given back are their own ledger entry, the caller hears the apology,
//! and the admin call page says why the call ended and what was given back.

use std::time::Duration;

use crate::support::app::{spawn_with, TestApp};
use crate::support::calls::{
    admin_call_page, connected_call, ended_call, heard_the_agent, open, settled_order, TICK,
};
use callgate::domain::entry::Entry;
use callgate::store::{DynStore, EntryKind};
use callgate_peers::agent::{Behaviour, FakeAgent};
use callgate_peers::twilio::Received;

const PASSWORD: &str = "broken-calls-admin";

async fn app(store: DynStore, agent: &FakeAgent, tick: Duration, silence: Duration) -> TestApp {
    spawn_with(
        store,
        &[
            ("ELEVENLABS_API_BASE", agent.base.as_str()),
            ("ADMIN_PASSWORD", PASSWORD),
        ],
        |app| {
            app.bridge.tick = tick;
            app.bridge.setup_timeout = Duration::from_secs(5);
            app.bridge.agent_silence = silence;
        },
    )
    .await
}

async fn an_agent_failing_in_the_first_seconds_costs_nothing(store: DynStore) {
    // Closes with 1011 after ten chunks (200 ms): a few metered seconds in, at 50 ms each.
    let agent = FakeAgent::start(Behaviour {
        error_after: Some(10),
        ..Behaviour::default()
    })
    .await;
    let app = app(
        store,
        &agent,
        Duration::from_millis(50),
        Duration::from_secs(20),
    )
    .await;
    let (mut caller, url, params, after) = connected_call(&app, 5, false).await;
    let mut stream = open(&caller, &url, &params).await;
    heard_the_agent(&mut stream).await;
    let got = stream
        .talk_until_closed(&[0x42; 160], Duration::from_secs(30))
        .await;
    assert_eq!(got.last(), Some(&Received::Closed));
    let call = ended_call(&app, &caller.call_sid).await;
    assert_eq!(call.end_reason.map(|r| r.as_str()), Some("agent_failed"));
    let metered = call.seconds_metered.0;
    assert!(metered <= 15, "failed early: {metered} s");

    let order = settled_order(&app, &caller.call_sid).await;
    assert_eq!(
        order.seconds_left().0,
        300,
        "the caller keeps all five minutes"
    );
    let waiver = app
        .app
        .store
        .entry(&Entry::waiver_id(&caller.call_sid))
        .await
        .unwrap();
    if metered > 0 {
        let waiver = waiver.expect("the waived seconds are their own entry");
        assert_eq!(
            (waiver.kind, waiver.seconds.0, waiver.amount.0),
            (EntryKind::Waived, metered, 0)
        );
    }
    let report = callgate::billing::reconcile::check(&app.app).await.unwrap();
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);

    // The caller hears the apology; the operator sees why and what was given back.
    caller.after_stream(&after).await;
    assert!(
        caller.transcript().contains("not available right now"),
        "{}",
        caller.transcript()
    );
    let page = admin_call_page(&app, PASSWORD, &caller.call_sid).await;
    if metered > 0 {
        assert!(page.contains("id=\"waived\""), "{page}");
        assert!(page.contains("given back: the agent failed"));
    }
}

async fn a_later_failure_is_billed_only_until_the_agent_was_last_heard(store: DynStore) {
    // Talks about 30 metered seconds, then hangs: silent for the 300 ms window (30 metered
    // seconds here) before callgate gives up on it.
    let agent = FakeAgent::start(Behaviour {
        stall_after: Some(15),
        ..Behaviour::default()
    })
    .await;
    let app = app(store, &agent, TICK, Duration::from_millis(300)).await;
    let (caller, url, params, _) = connected_call(&app, 5, false).await;
    let mut stream = open(&caller, &url, &params).await;
    heard_the_agent(&mut stream).await;
    let got = stream
        .talk_until_closed(&[0x42; 160], Duration::from_secs(30))
        .await;
    assert_eq!(got.last(), Some(&Received::Closed));
    let call = ended_call(&app, &caller.call_sid).await;
    assert_eq!(call.end_reason.map(|r| r.as_str()), Some("agent_failed"));
    let order = settled_order(&app, &caller.call_sid).await;
    let waived = app
        .app
        .store
        .entry(&Entry::waiver_id(&caller.call_sid))
        .await
        .unwrap()
        .map_or(0, |e| e.seconds.0);
    let billed = 300 - order.seconds_left().0;
    assert_eq!(billed, call.seconds_metered.0 - waived);
    assert!(
        billed > 15,
        "the agent talked past the free seconds: billed {billed} s"
    );
    assert!(
        waived >= 15,
        "the silent window is not billed: {waived} s waived of {} s",
        call.seconds_metered.0
    );
}

on_every_backend!(
    an_agent_failing_in_the_first_seconds_costs_nothing,
    a_later_failure_is_billed_only_until_the_agent_was_last_heard,
);
