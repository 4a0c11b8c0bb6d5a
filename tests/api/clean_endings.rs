//! Clean endings (issue 27): when callgate ends a call (the allowance, a revocation, a
//! shutdown) the agent finishes the sentence it is speaking before the stream ends, bounded;
//! when the agent ends the conversation itself (`end_call`), its goodbye is played and the
//! call hangs up without more words. The Twilio simulator echoes each mark only once the
//! audio before it has played at 8 kHz real time, so "played" here means heard.

use std::time::Duration;

use crate::support::app::{spawn_with, TestApp};
use crate::support::calls::{connected_call, ended_call, open, order_of, settled_call, TICK};
use callgate::store::DynStore;
use callgate_peers::agent::{Behaviour, FakeAgent, GOODBYE, SENTENCE};
use callgate_peers::twilio::{Ending, Received};
use tokio::time::Instant;

const CALLER_AUDIO: [u8; 160] = [0x55; 160];

async fn app(store: DynStore, agent: &FakeAgent, finish_limit: Duration) -> TestApp {
    spawn_with(
        store,
        &[
            ("ELEVENLABS_API_BASE", agent.base.as_str()),
            ("SHUTDOWN_GRACE_SECS", "1"),
            ("SHUTDOWN_HANDOVER_SECS", "0"),
        ],
        move |app| {
            app.bridge.tick = TICK;
            app.bridge.setup_timeout = Duration::from_secs(5);
            app.bridge.finish_limit = finish_limit;
        },
    )
    .await
}

fn is_frame_of(byte: u8) -> impl Fn(&Received) -> bool {
    move |r| matches!(r, Received::Media(f) if f.first() == Some(&byte))
}

/// When the first frame of `byte` arrived, how many there were, and when the stream closed.
fn heard(got: &[(Instant, Received)], byte: u8) -> (Instant, usize, Instant) {
    let of = is_frame_of(byte);
    let first = got
        .iter()
        .find(|(_, r)| of(r))
        .map(|(at, _)| *at)
        .unwrap_or_else(|| panic!("no frame of {byte:#x} heard"));
    let count = got.iter().filter(|(_, r)| of(r)).count();
    let closed = got
        .iter()
        .find(|(_, r)| *r == Received::Closed)
        .map(|(at, _)| *at)
        .expect("the stream was closed");
    let last_frame = got.iter().rposition(|(_, r)| of(r)).unwrap_or_default();
    let close_at = got.iter().position(|(_, r)| *r == Received::Closed);
    assert!(
        close_at > Some(last_frame),
        "the sentence came before the close"
    );
    (first, count, closed)
}

/// At the allowance the agent's sentence, sent faster than it plays, is heard to its end
/// before the stream closes; the seconds it took are not billed; the closing words follow.
async fn the_agent_finishes_its_sentence_at_the_allowance(store: DynStore) {
    let agent = FakeAgent::start(Behaviour {
        speak_after: Some((20, 75)),
        ..Default::default()
    })
    .await;
    let app = app(store, &agent, Duration::from_secs(4)).await;
    let (mut caller, url, params, after) = connected_call(&app, 1, false).await;
    let mut stream = open(&caller, &url, &params).await;
    let got = stream
        .talk_timed(&CALLER_AUDIO, Duration::from_secs(20), |_| false)
        .await;
    let (first, count, closed) = heard(&got, SENTENCE);
    assert_eq!(count, 75, "the whole sentence was sent on");
    assert!(
        closed - first >= Duration::from_millis(1500),
        "the stream stayed open until the 1.5 s sentence had played ({:?})",
        closed - first
    );
    assert!(
        stream.echoed.iter().any(|m| m.starts_with("speech:")),
        "callgate waited on a mark: {:?}",
        stream.echoed
    );
    let call = settled_call(&app, &caller.call_sid).await;
    assert_eq!(call.end_reason.map(|r| r.as_str()), Some("time_up"));
    assert_eq!(
        call.settled_seconds,
        Some(60),
        "exactly the allowance: the finish is not billed"
    );
    caller.after_stream(&after).await;
    assert!(
        caller.transcript().contains("Your time is up"),
        "{}",
        caller.transcript()
    );
}

/// A sentence longer than the bound is cut at the bound: the call does not wait 30 s.
async fn a_sentence_longer_than_the_bound_is_cut_at_it(store: DynStore) {
    let agent = FakeAgent::start(Behaviour {
        speak_after: Some((20, 1500)),
        ..Default::default()
    })
    .await;
    let app = app(store, &agent, Duration::from_secs(1)).await;
    let (caller, url, params, _) = connected_call(&app, 1, false).await;
    let mut stream = open(&caller, &url, &params).await;
    let got = stream
        .talk_timed(&CALLER_AUDIO, Duration::from_secs(20), |_| false)
        .await;
    let (first, _, closed) = heard(&got, SENTENCE);
    assert!(
        closed - first < Duration::from_secs(10),
        "ended at the bound, not after the 30 s sentence ({:?})",
        closed - first
    );
    let call = ended_call(&app, &caller.call_sid).await;
    assert_eq!(call.end_reason.map(|r| r.as_str()), Some("time_up"));
}

/// The agent says goodbye and runs `end_call`: the goodbye is heard to its end, the call
/// hangs up without callgate's own closing words, and its end reason says the agent ended it.
async fn the_agent_ends_the_call_after_its_goodbye_plays(store: DynStore) {
    let agent = FakeAgent::start(Behaviour {
        end_call_after: Some(20),
        ..Default::default()
    })
    .await;
    let app = app(store, &agent, Duration::from_secs(4)).await;
    let (mut caller, url, params, after) = connected_call(&app, 5, false).await;
    let mut stream = open(&caller, &url, &params).await;
    let got = stream
        .talk_timed(&CALLER_AUDIO, Duration::from_secs(20), |_| false)
        .await;
    let (first, count, closed) = heard(&got, GOODBYE);
    assert_eq!(count, 50, "the whole goodbye was sent on");
    assert!(
        closed - first >= Duration::from_secs(1),
        "the stream stayed open until the 1 s goodbye had played ({:?})",
        closed - first
    );
    assert!(agent.log().ended_call);
    let call = settled_call(&app, &caller.call_sid).await;
    assert_eq!(call.end_reason.map(|r| r.as_str()), Some("agent_ended"));
    let metered = call.seconds_metered.0;
    assert!(
        metered > 0 && metered < 300,
        "metered up to the end_call, not the allowance: {metered}"
    );
    assert_eq!(caller.after_stream(&after).await, Ending::HungUp);
    let said = caller.transcript();
    assert!(
        !said.contains("Goodbye."),
        "no words of callgate's after the agent's: {said}"
    );
    assert!(!said.contains("sorry"), "no apology: {said}");
    // The waiver is for broken calls only: this one is billed in full.
    let order = order_of(&app, &caller.call_sid).await;
    assert_eq!(order.seconds_used.0, metered);
}

/// A refund mid-sentence and a shutdown mid-sentence end the call once the sentence played.
async fn revocation_and_shutdown_let_the_sentence_finish(store: DynStore) {
    for shutdown in [false, true] {
        let agent = FakeAgent::start(Behaviour {
            speak_after: Some((20, 150)),
            ..Default::default()
        })
        .await;
        let mut app = app(store.clone(), &agent, Duration::from_secs(6)).await;
        let (caller, url, params, _) = connected_call(&app, 5, false).await;
        let mut stream = open(&caller, &url, &params).await;
        let mut got = stream
            .talk_timed(
                &CALLER_AUDIO,
                Duration::from_secs(20),
                is_frame_of(SENTENCE),
            )
            .await;
        // The agent is mid-sentence (3 s of it queued): now the call must end.
        if shutdown {
            app.begin_shutdown();
        } else {
            let order = order_of(&app, &caller.call_sid).await;
            callgate::orders::revoke(&app.app, &order).await.unwrap();
        }
        got.extend(
            stream
                .talk_timed(&CALLER_AUDIO, Duration::from_secs(20), |_| false)
                .await,
        );
        let (first, count, closed) = heard(&got, SENTENCE);
        assert_eq!(
            count, 150,
            "shutdown {shutdown}: the whole sentence was sent on"
        );
        assert!(
            closed - first >= Duration::from_secs(3),
            "shutdown {shutdown}: open until the 3 s sentence had played ({:?})",
            closed - first
        );
        let call = ended_call(&app, &caller.call_sid).await;
        let want = if shutdown { "shutdown" } else { "revoked" };
        assert_eq!(call.end_reason.map(|r| r.as_str()), Some(want));
    }
}

on_every_backend!(
    the_agent_finishes_its_sentence_at_the_allowance,
    a_sentence_longer_than_the_bound_is_cut_at_it,
    the_agent_ends_the_call_after_its_goodbye_plays,
    revocation_and_shutdown_let_the_sentence_finish,
);
