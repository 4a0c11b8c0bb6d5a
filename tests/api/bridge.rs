//! Whole bridged calls: the Twilio caller dials and types the code, Twilio's media stream
//! connects, the fake agent answers; metering, the time limit, barge-in and failures.

use std::time::Duration;

use crate::support::app::{ACCOUNT_SID, AUTH_TOKEN, PHONE};
use crate::support::calls::{
    app_with_agent, connected_call, connected_call_with, ended_call, open, WAIT,
};
use callgate::store::DynStore;
use callgate_peers::agent::{Behaviour, FakeAgent};
use callgate_peers::twilio::{Caller, Ending, MediaStream, Received};

async fn audio_goes_both_ways_and_the_call_is_recorded(store: DynStore) {
    let agent = FakeAgent::start(Behaviour::default()).await;
    let app = app_with_agent(store, &agent, &[]).await;
    let (caller, url, params, _) = connected_call(&app, 5, false).await;
    let mut stream = open(&caller, &url, &params).await;
    for i in 0..5u8 {
        let frame = [i; 160];
        assert!(stream.send_media(&frame).await);
        assert_eq!(
            stream.next(WAIT).await,
            Some(Received::Media(frame.to_vec())),
            "frame {i} echoed untouched"
        );
    }
    stream.stop().await;
    let call = ended_call(&app, &caller.call_sid).await;
    assert_eq!(call.end_reason.map(|r| r.as_str()), Some("caller_hung_up"));
    assert!(call.bridged_at.is_some());
    assert_eq!(call.conversation_id.as_deref(), Some("conv_test_1"));

    let log = agent.log();
    assert_eq!(log.chunks.len(), 5);
    assert_eq!(
        log.chunks[0],
        vec![0u8; 160],
        "μ-law passed through untouched"
    );
    assert_eq!(log.pongs, vec![1], "the agent's ping was answered");
    let init = log.initiation.expect("initiation data");
    assert_eq!(init["type"], "conversation_initiation_client_data");
    assert_eq!(init["dynamic_variables"]["caller_number"], "+15558880001");
    assert_eq!(init["dynamic_variables"]["minutes_remaining"], 5);
    assert_eq!(init["dynamic_variables"]["overage_enabled"], false);
    let transcript = app.app.store.transcript(&caller.call_sid).await.unwrap();
    let lines: Vec<(String, String)> = transcript
        .into_iter()
        .map(|l| (l.speaker.to_string(), l.text))
        .collect();
    assert_eq!(
        lines,
        vec![
            ("caller".into(), "hello agent".into()),
            ("agent".into(), "hello caller".into())
        ]
    );
    // The agent's socket does not outlive the call.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !agent.log().closed_by_client && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        agent.log().closed_by_client,
        "callgate closed the agent socket"
    );
}

async fn barge_in_clears_twilio_and_drops_stale_audio(store: DynStore) {
    let agent = FakeAgent::start(Behaviour {
        interrupt_after: Some(2),
        ..Behaviour::default()
    })
    .await;
    let app = app_with_agent(store, &agent, &[]).await;
    let (caller, url, params, _) = connected_call(&app, 5, false).await;
    let mut stream = open(&caller, &url, &params).await;
    stream.send_media(&[1; 160]).await;
    assert_eq!(stream.next(WAIT).await, Some(Received::Media(vec![1; 160])));
    stream.send_media(&[2; 160]).await;
    assert_eq!(stream.next(WAIT).await, Some(Received::Media(vec![2; 160])));
    assert_eq!(
        stream.next(WAIT).await,
        Some(Received::Clear),
        "interruption becomes Twilio clear"
    );
    assert_eq!(
        stream.next(WAIT).await,
        Some(Received::Media(vec![0x22; 160])),
        "stale audio dropped, fresh audio passed"
    );
    stream.stop().await;
}

async fn allowance_warns_then_ends_the_call(store: DynStore) {
    let agent = FakeAgent::start(Behaviour::default()).await;
    let app = app_with_agent(store, &agent, &[]).await;
    let (mut caller, url, params, after) = connected_call(&app, 2, false).await;
    let mut stream = open(&caller, &url, &params).await;
    let got = stream
        .talk_until_closed(&[0x55; 160], Duration::from_secs(30))
        .await;
    assert_eq!(
        got.last(),
        Some(&Received::Closed),
        "callgate ended the stream"
    );
    let mark = got
        .iter()
        .position(|r| r == &Received::Mark("one_minute_left".into()))
        .expect("a warning was played");
    let clear = got
        .iter()
        .position(|r| r == &Received::Clear)
        .expect("queued audio cleared before the warning");
    assert!(clear < mark);
    let warning_frames = got[clear..mark]
        .iter()
        .filter(|r| matches!(r, Received::Media(m) if m != &vec![0x55; 160]))
        .count();
    assert!(
        warning_frames > 10,
        "warning audio in 20 ms frames: {warning_frames}"
    );
    let call = ended_call(&app, &caller.call_sid).await;
    assert_eq!(call.end_reason.map(|r| r.as_str()), Some("time_up"));
    assert_eq!(
        call.seconds_metered.0, 120,
        "cut exactly at the two-minute allowance"
    );
    assert!(
        !agent.log().contextual_updates.is_empty(),
        "the agent was told time is short"
    );

    // Twilio now runs the TwiML after <Connect>: the polite closing words.
    assert_eq!(caller.after_stream(&after).await, Ending::HungUp);
    assert!(
        caller.transcript().contains("Your time is up"),
        "{}",
        caller.transcript()
    );
}

async fn overage_lets_the_call_run_to_the_maximum(store: DynStore) {
    let agent = FakeAgent::start(Behaviour::default()).await;
    let app = app_with_agent(store, &agent, &[("MAX_CALL_MINUTES", "2")]).await;
    let (caller, url, params, _) = connected_call(&app, 1, true).await;
    let mut stream = open(&caller, &url, &params).await;
    let got = stream
        .talk_until_closed(&[0x55; 160], Duration::from_secs(30))
        .await;
    // Callgate's prompts' marks (the `speech:` ones wait for the agent's last words).
    let marks: Vec<&Received> = got
        .iter()
        .filter(|r| matches!(r, Received::Mark(m) if !m.starts_with("speech:")))
        .collect();
    assert_eq!(
        marks,
        [&Received::Mark("paid_time".into())],
        "paid time announced as it starts (a minute is not warned of a minute ahead)"
    );
    // Heard as audio played into the call (its own tone unrecorded), after a clear.
    let mark = got
        .iter()
        .position(|r| r == &Received::Mark("paid_time".into()))
        .unwrap_or_default();
    let clear = got[..mark]
        .iter()
        .rposition(|r| r == &Received::Clear)
        .expect("queued audio cleared before the notice");
    let notice_frames = got[clear..mark]
        .iter()
        .filter(|r| matches!(r, Received::Media(m) if m != &vec![0x55; 160]))
        .count();
    assert!(
        notice_frames > 10,
        "the notice in 20 ms frames: {notice_frames}"
    );
    let call = ended_call(&app, &caller.call_sid).await;
    assert_eq!(
        call.seconds_metered.0, 120,
        "ran past the 60 s allowance to the 120 s maximum"
    );
    assert_eq!(call.end_reason.map(|r| r.as_str()), Some("time_up"));
}

/// Point 6: an order with overage consent but no saved card (operator-issued, imported)
/// ends at its allowance, warned, as if it had no consent.
async fn consent_without_a_card_ends_at_the_allowance(store: DynStore) {
    let agent = FakeAgent::start(Behaviour::default()).await;
    let app = app_with_agent(store, &agent, &[("MAX_CALL_MINUTES", "3")]).await;
    let grant = callgate::orders::OperatorGrant {
        minutes: 1,
        overage: true,
        customer: None,
        payment_method: None,
    };
    let (caller, url, params, _) = connected_call_with(&app, &grant).await;
    let mut stream = open(&caller, &url, &params).await;
    stream
        .talk_until_closed(&[0x55; 160], Duration::from_secs(30))
        .await;
    let call = ended_call(&app, &caller.call_sid).await;
    assert_eq!(call.end_reason.map(|r| r.as_str()), Some("time_up"));
    assert_eq!(
        call.seconds_metered.0, 60,
        "cut at the 60 s allowance, not the 180 s maximum"
    );
    assert_eq!(
        agent.log().initiation.expect("initiation")["dynamic_variables"]["overage_enabled"],
        false
    );
}

async fn dropped_agent_ends_the_call_with_an_apology(store: DynStore) {
    let agent = FakeAgent::start(Behaviour {
        drop_after: Some(3),
        ..Behaviour::default()
    })
    .await;
    let app = app_with_agent(store, &agent, &[]).await;
    let (mut caller, url, params, after) = connected_call(&app, 5, false).await;
    let mut stream = open(&caller, &url, &params).await;
    let got = stream
        .talk_until_closed(&[0x42; 160], Duration::from_secs(30))
        .await;
    assert_eq!(got.last(), Some(&Received::Closed));
    let call = ended_call(&app, &caller.call_sid).await;
    assert_eq!(call.end_reason.map(|r| r.as_str()), Some("agent_failed"));
    caller.after_stream(&after).await;
    assert!(
        caller.transcript().contains("not available right now"),
        "{}",
        caller.transcript()
    );
}

async fn unreachable_agent_ends_the_call_with_an_apology(store: DynStore) {
    let agent = FakeAgent::start(Behaviour {
        refuse: true,
        ..Behaviour::default()
    })
    .await;
    let app = app_with_agent(store, &agent, &[]).await;
    let (mut caller, url, params, after) = connected_call(&app, 5, false).await;
    let mut stream = open(&caller, &url, &params).await;
    assert_eq!(stream.next(WAIT).await, Some(Received::Closed));
    let call = ended_call(&app, &caller.call_sid).await;
    assert_eq!(call.end_reason.map(|r| r.as_str()), Some("agent_failed"));
    assert_eq!(call.seconds_metered.0, 0, "no agent time, nothing metered");
    caller.after_stream(&after).await;
    assert!(caller.transcript().contains("not available right now"));
}

async fn bad_reused_or_unsigned_streams_are_refused(store: DynStore) {
    let agent = FakeAgent::start(Behaviour::default()).await;
    let app = app_with_agent(store, &agent, &[]).await;
    let (caller, url, params, _) = connected_call(&app, 5, false).await;

    // Unsigned upgrade: refused before any WebSocket exists.
    let unsigned = tokio_tungstenite::connect_async(url.as_str()).await;
    match unsigned {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("unsigned upgrade accepted: {:?}", other.map(|_| ())),
    }
    // A made-up token, and the right token for another call: closed at once.
    let forged = vec![
        ("token".to_string(), "0".repeat(64)),
        ("call_sid".to_string(), caller.call_sid.clone()),
    ];
    let mut s = open(&caller, &url, &forged).await;
    assert_eq!(s.next(WAIT).await, Some(Received::Closed));
    let mut s = MediaStream::open(&url, &caller.account(), "CA_someone_else", &params)
        .await
        .unwrap();
    assert_eq!(s.next(WAIT).await, Some(Received::Closed));
    assert_eq!(
        agent.log().connections,
        0,
        "no agent conversation for a refused stream"
    );

    // The genuine token still works once, and only once.
    let mut s = open(&caller, &url, &params).await;
    s.send_media(&[9; 160]).await;
    assert_eq!(s.next(WAIT).await, Some(Received::Media(vec![9; 160])));
    let mut again = open(&caller, &url, &params).await;
    assert_eq!(
        again.next(WAIT).await,
        Some(Received::Closed),
        "a token is single use"
    );
    s.stop().await;
}

/// Seen from outside: a call whose status callback said `completed` before its stream
/// connected, then its unused token presented on `/media` (as anyone who saw the TwiML
/// could). The agent must never hear of it: no conversation, no caller number sent.
async fn an_ended_calls_token_opens_no_agent(store: DynStore) {
    let agent = FakeAgent::start(Behaviour::default()).await;
    let app = app_with_agent(store, &agent, &[]).await;
    let (mut caller, url, params, _) = connected_call(&app, 5, false).await;
    assert_eq!(
        caller
            .status_callback(&app.url("/voice/status"), "completed", Some("9"))
            .await,
        200
    );
    let mut s = open(&caller, &url, &params).await;
    assert_eq!(s.next(WAIT).await, Some(Received::Closed));
    assert_eq!(
        agent.log().connections,
        0,
        "an ended call's stream opened an agent conversation"
    );
    assert!(
        agent.log().initiation.is_none(),
        "the caller's data reached the agent"
    );
    let call = app.app.store.call(&caller.call_sid).await.unwrap().unwrap();
    assert!(call.bridged_at.is_none());
    assert_eq!(call.seconds_metered.0, 0);
}

/// A code revoked (refund, dispute) between the code step and the stream: the stream is
/// refused before the agent is opened, the caller hears the revocation, the code is free.
async fn a_code_revoked_before_its_stream_opens_no_agent(store: DynStore) {
    let agent = FakeAgent::start(Behaviour::default()).await;
    let app = app_with_agent(store, &agent, &[]).await;
    let (mut caller, url, params, after) = connected_call(&app, 5, false).await;
    let call = app.app.store.call(&caller.call_sid).await.unwrap().unwrap();
    let order = app
        .app
        .store
        .order(call.order_id.as_deref().unwrap())
        .await
        .unwrap()
        .unwrap();
    callgate::orders::revoke(&app.app, &order).await.unwrap();
    let mut s = open(&caller, &url, &params).await;
    assert_eq!(s.next(WAIT).await, Some(Received::Closed));
    assert_eq!(
        agent.log().connections,
        0,
        "a revoked code reached the agent"
    );
    let call = ended_call(&app, &caller.call_sid).await;
    assert_eq!(call.end_reason.map(|r| r.as_str()), Some("revoked"));
    caller.after_stream(&after).await;
    assert!(
        caller
            .transcript()
            .contains("This code is no longer valid."),
        "the caller is told: {}",
        caller.transcript()
    );
}

async fn malformed_frames_are_survived(store: DynStore) {
    use tokio_tungstenite::tungstenite::Message;
    let agent = FakeAgent::start(Behaviour::default()).await;
    let app = app_with_agent(store, &agent, &[]).await;
    let (caller, url, params, _) = connected_call(&app, 5, false).await;
    let mut s = open(&caller, &url, &params).await;
    s.send_raw(Message::binary(vec![1u8, 2, 3])).await;
    s.send_raw(Message::text("{not json")).await;
    s.send_raw(Message::text(
        r#"{"event":"media","media":{"payload":"***not base64***"}}"#,
    ))
    .await;
    s.send_raw(Message::text(r#"{"event":"surprise"}"#)).await;
    s.send_raw(Message::text(r#"{"event":"media"}"#)).await;
    s.send_media(&[7; 160]).await;
    assert_eq!(
        s.next(WAIT).await,
        Some(Received::Media(vec![7; 160])),
        "the call goes on"
    );
    assert_eq!(
        agent.log().chunks.len(),
        1,
        "only the good frame reached the agent"
    );
    // A frame far over the limit closes the stream; the server stays up for the next call.
    s.send_raw(Message::text(format!(
        r#"{{"event":"media","media":{{"payload":"{}"}}}}"#,
        "A".repeat(200_000)
    )))
    .await;
    assert_eq!(s.next(WAIT).await, Some(Received::Closed));
    let call = ended_call(&app, &caller.call_sid).await;
    assert_eq!(call.end_reason.map(|r| r.as_str()), Some("caller_hung_up"));
    let (caller2, url2, params2, _) = connected_call(&app, 5, false).await;
    let mut s2 = open(&caller2, &url2, &params2).await;
    s2.send_media(&[8; 160]).await;
    assert_eq!(s2.next(WAIT).await, Some(Received::Media(vec![8; 160])));
}

async fn private_agent_through_a_signed_url_with_transcoding(store: DynStore) {
    let agent = FakeAgent::start(Behaviour {
        private: true,
        format: "pcm_16000".into(),
        ..Behaviour::default()
    })
    .await;
    let app = app_with_agent(
        store,
        &agent,
        &[("ELEVENLABS_API_KEY", callgate_peers::agent::API_KEY)],
    )
    .await;
    let (caller, url, params, _) = connected_call(&app, 5, false).await;
    let mut s = open(&caller, &url, &params).await;
    let silence = [0xFFu8; 160]; // μ-law zero
    s.send_media(&silence).await;
    let back = s.next(WAIT).await;
    assert_eq!(
        back,
        Some(Received::Media(vec![0xFF; 160])),
        "PCM 16 kHz came back as 160 bytes of μ-law"
    );
    let log = agent.log();
    assert_eq!(log.chunks[0].len(), 640, "20 ms at 16 kHz, 16-bit");
    assert!(
        log.chunks[0].iter().all(|b| *b == 0),
        "μ-law silence is PCM zero"
    );
    s.stop().await;
}

/// Twilio's side vanishes without a `stop` (the TCP connection just drops): the agent socket
/// is closed at once and the call is recorded as ended by the caller.
async fn dropped_twilio_side_closes_the_agent(store: DynStore) {
    let agent = FakeAgent::start(Behaviour::default()).await;
    let app = app_with_agent(store, &agent, &[]).await;
    let (caller, url, params, _) = connected_call(&app, 5, false).await;
    let mut stream = open(&caller, &url, &params).await;
    stream.send_media(&[3; 160]).await;
    assert_eq!(stream.next(WAIT).await, Some(Received::Media(vec![3; 160])));
    drop(stream);
    let call = ended_call(&app, &caller.call_sid).await;
    assert_eq!(call.end_reason.map(|r| r.as_str()), Some("caller_hung_up"));
    let deadline = tokio::time::Instant::now() + WAIT;
    while !agent.log().closed_by_client && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(agent.log().closed_by_client, "the agent socket was closed");
}

on_every_backend!(
    dropped_twilio_side_closes_the_agent,
    audio_goes_both_ways_and_the_call_is_recorded,
    barge_in_clears_twilio_and_drops_stale_audio,
    allowance_warns_then_ends_the_call,
    overage_lets_the_call_run_to_the_maximum,
    consent_without_a_card_ends_at_the_allowance,
    dropped_agent_ends_the_call_with_an_apology,
    unreachable_agent_ends_the_call_with_an_apology,
    bad_reused_or_unsigned_streams_are_refused,
    an_ended_calls_token_opens_no_agent,
    a_code_revoked_before_its_stream_opens_no_agent,
    malformed_frames_are_survived,
    private_agent_through_a_signed_url_with_transcoding,
);

/// Shutdown drains: readiness fails and new calls are turned away at once, the live call goes
/// on for the grace period, then ends metered, and Twilio still gets the closing words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_live_calls_then_ends_them_politely() {
    let db = crate::support::sqlite().await;
    let agent = FakeAgent::start(Behaviour::default()).await;
    let mut app = app_with_agent(
        db.store.clone(),
        &agent,
        &[
            ("SHUTDOWN_GRACE_SECS", "1"),
            ("SHUTDOWN_HANDOVER_SECS", "0"),
        ],
    )
    .await;
    let (mut caller, url, params, after) = connected_call(&app, 5, false).await;
    let mut stream = open(&caller, &url, &params).await;
    stream.send_media(&[4; 160]).await;
    assert_eq!(stream.next(WAIT).await, Some(Received::Media(vec![4; 160])));

    app.begin_shutdown();
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = http.get(app.url("/readyz")).send().await.unwrap().status();
        if status == 503 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "readiness never turned 503"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut newcomer = Caller::new(AUTH_TOKEN, ACCOUNT_SID, "+15558880002", PHONE).types([None]);
    assert_eq!(
        newcomer.dial(&app.url("/voice/incoming")).await,
        Ending::HungUp
    );
    assert!(
        newcomer.transcript().contains("not available right now"),
        "{}",
        newcomer.transcript()
    );

    let got = stream
        .talk_until_closed(&[0x55; 160], Duration::from_secs(20))
        .await;
    assert_eq!(
        got.last(),
        Some(&Received::Closed),
        "the live call was ended after the grace period"
    );
    let call = ended_call(&app, &caller.call_sid).await;
    assert_eq!(call.end_reason.map(|r| r.as_str()), Some("shutdown"));
    assert!(call.seconds_metered.0 > 0, "its minutes were metered");
    caller.after_stream(&after).await;
    assert!(
        caller.transcript().contains("Your minutes have been kept"),
        "{}",
        caller.transcript()
    );
}

/// The TCP sockets of this process with their local and peer addresses (Linux).
fn tcp_sockets() -> Vec<(std::net::SocketAddr, std::net::SocketAddr, bool)> {
    use std::os::fd::BorrowedFd;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        // SAFETY: only read with getsockopt/getsockname; a descriptor closed meanwhile by
        // another test's thread answers an error, which is skipped.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&fd);
        let (Ok(local), Ok(peer), Ok(nodelay)) =
            (sock.local_addr(), sock.peer_addr(), sock.tcp_nodelay())
        else {
            continue;
        };
        if let (Some(local), Some(peer)) = (local.as_socket(), peer.as_socket()) {
            found.push((local, peer, nodelay));
        }
    }
    found
}

/// Issue 13, point 15: every accepted connection, and the connection to the agent, has
/// TCP_NODELAY. Without it a 200-byte media frame waits for the peer's delayed ACK (a 20 to
/// 40 ms stall per round trip against a client that leaves Nagle's algorithm on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_socket_of_a_call_sends_at_once() {
    let db = crate::support::sqlite().await;
    let agent = FakeAgent::start(Behaviour::default()).await;
    let app = app_with_agent(db.store.clone(), &agent, &[]).await;
    let (caller, url, params, _) = connected_call(&app, 5, false).await;
    let mut stream = open(&caller, &url, &params).await;
    assert!(stream.send_media(&[7; 160]).await);
    assert_eq!(stream.next(WAIT).await, Some(Received::Media(vec![7; 160])));
    let port = |base: &str| -> u16 {
        base.rsplit(':')
            .next()
            .unwrap()
            .trim_end_matches('/')
            .parse()
            .unwrap()
    };
    let (app_port, agent_port) = (port(&app.base), port(&agent.base));
    let sockets = tcp_sockets();
    let accepted: Vec<_> = sockets
        .iter()
        .filter(|(local, _, _)| local.port() == app_port)
        .collect();
    assert!(!accepted.is_empty(), "the media stream's socket is found");
    for (local, peer, nodelay) in &accepted {
        assert!(nodelay, "accepted {local} <- {peer} without TCP_NODELAY");
    }
    let to_agent: Vec<_> = sockets
        .iter()
        .filter(|(local, peer, _)| peer.port() == agent_port && local.port() != agent_port)
        .collect();
    assert!(!to_agent.is_empty(), "the agent connection is found");
    for (local, peer, nodelay) in &to_agent {
        assert!(
            nodelay,
            "agent connection {local} -> {peer} without TCP_NODELAY"
        );
    }
    stream.stop().await;
}
