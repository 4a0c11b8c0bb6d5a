//! Whole calls through the phone menu, driven by the Twilio caller simulator, on every backend.

use crate::support::app::{spawn, TestApp, ACCOUNT_SID, AUTH_TOKEN, PHONE};
use callgate::crypto::sha256_hex;
use callgate::orders::{self, OperatorGrant};
use callgate::store::{AttemptScope, CallState, DynStore, OrderStatus};
use callgate_peers::twilio::{Caller, Ending};

const INCOMING: &str = "/voice/incoming";
const STATUS: &str = "/voice/status";

fn caller(from: &str) -> Caller {
    Caller::new(AUTH_TOKEN, ACCOUNT_SID, from, PHONE)
}

/// A code for `minutes`; with `overage`, consent and a saved card (what overage needs).
async fn issue(app: &TestApp, minutes: i64, overage: bool) -> String {
    let grant = OperatorGrant {
        minutes,
        overage,
        customer: overage.then(|| "cus_test".to_string()),
        payment_method: overage.then(|| "pm_test".to_string()),
    };
    let (_, code) = orders::issue_operator_code(&app.app, &grant).await.unwrap();
    code.expose().to_string()
}

async fn failures(app: &TestApp, caller: &str) -> i64 {
    // Attempts are written behind the answers.
    app.app.attempts.flush().await;
    app.app
        .store
        .count_failures(AttemptScope::Caller(caller), 0, i64::MAX)
        .await
        .unwrap()
}

async fn order_of(app: &TestApp, code: &str) -> callgate::store::Order {
    let code = callgate::domain::codes::AccessCode::parse(code).unwrap();
    orders::find_by_code(&app.app, &code)
        .await
        .unwrap()
        .unwrap()
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn stream_token(ending: &Ending) -> String {
    match ending {
        Ending::Stream { parameters, .. } => parameters
            .iter()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.clone())
            .expect("a token parameter"),
        other => panic!("expected a stream, got {other:?}"),
    }
}

async fn right_code_connects_the_stream(store: DynStore) {
    let app = spawn(store, &[]).await;
    let code = issue(&app, 5, false).await;
    let mut call = caller("+15557770001").types([Some(leak(format!("{code}#")))]);
    let ending = call.dial(&app.url(INCOMING)).await;
    let t = call.transcript();
    assert!(
        t.starts_with("Welcome. | Please enter your access code"),
        "{t}"
    );
    assert!(t.ends_with("Thank you. Connecting you now."), "{t}");
    let Ending::Stream {
        url,
        parameters,
        after,
    } = &ending
    else {
        panic!("{ending:?}")
    };
    assert_eq!(
        url,
        &format!("{}/media", app.base.replace("http://", "ws://"))
    );
    assert!(parameters
        .iter()
        .any(|(k, v)| k == "call_sid" && v == &call.call_sid));
    assert_eq!(
        after.as_deref(),
        Some(app.url("/voice/after-stream").as_str())
    );

    // The token is bound to this call, single use, and stored only as a hash.
    let token = stream_token(&ending);
    assert_eq!(token.len(), 64);
    let now = app.app.clock.now();
    let store = &app.app.store;
    assert_eq!(
        store
            .consume_stream_token(&sha256_hex(&token), "CA_other", now)
            .await
            .unwrap(),
        None
    );
    let grant = store
        .consume_stream_token(&sha256_hex(&token), &call.call_sid, now)
        .await
        .unwrap()
        .unwrap()
        .grant;
    assert_eq!(
        store
            .consume_stream_token(&sha256_hex(&token), &call.call_sid, now)
            .await
            .unwrap(),
        None
    );

    let record = store.call(&call.call_sid).await.unwrap().unwrap();
    assert_eq!(record.order_id.as_deref(), Some(grant.order_id.as_str()));
    assert_eq!(record.from_number, "+15557770001");

    // After the stream: goodbye; then Twilio's status callback closes the record.
    let ending = call.after_stream(after.as_deref().unwrap()).await;
    assert_eq!(ending, Ending::HungUp);
    assert!(call.transcript().ends_with("Goodbye."));
    assert_eq!(
        call.status_callback(&app.url(STATUS), "completed", Some("75"))
            .await,
        200
    );
    let record = store.call(&call.call_sid).await.unwrap().unwrap();
    assert_eq!(record.status, CallState::Ended);
    assert_eq!(record.twilio_duration, Some(75));
    assert!(
        record.settled_at.is_some(),
        "billing accounted for the call at once"
    );
    assert_eq!(
        record.settled_seconds,
        Some(0),
        "the stream never ran: no agent time used"
    );
    let order = store.order(&grant.order_id).await.unwrap().unwrap();
    assert_eq!(order.active_call_sid, None, "the code is free again");
}

async fn wrong_code_then_right(store: DynStore) {
    let app = spawn(store, &[]).await;
    let code = issue(&app, 5, false).await;
    let mut call = caller("+15557770002").types([Some("111122223333#"), Some(leak(code))]);
    let ending = call.dial(&app.url(INCOMING)).await;
    assert!(matches!(ending, Ending::Stream { .. }), "{ending:?}");
    let t = call.transcript();
    assert!(
        t.contains("That code is not valid. Please try again."),
        "{t}"
    );
    let fails = failures(&app, "+15557770002").await;
    assert_eq!(fails, 1);
}

async fn three_wrong_codes_end_the_call(store: DynStore) {
    let app = spawn(store, &[]).await;
    issue(&app, 5, false).await;
    let mut call = caller("+15557770003").types([
        Some("000000000001#"),
        Some("123456789012"),
        Some("999999999999#"),
        Some("never typed"),
    ]);
    let ending = call.dial(&app.url(INCOMING)).await;
    assert_eq!(ending, Ending::HungUp);
    let t = call.transcript();
    assert_eq!(t.matches("That code is not valid").count(), 2, "{t}");
    assert!(t.ends_with("Too many incorrect codes. | Goodbye."), "{t}");
    assert_eq!(call.keypad.len(), 1, "no fourth Gather");
    let fails = failures(&app, "+15557770003").await;
    assert_eq!(fails, 3);
}

async fn no_input_reprompts_then_says_goodbye(store: DynStore) {
    let app = spawn(store, &[]).await;
    let mut call = caller("+15557770004").types([None, None]);
    let ending = call.dial(&app.url(INCOMING)).await;
    assert_eq!(ending, Ending::HungUp);
    let t = call.transcript();
    assert_eq!(t.matches("Please enter your access code").count(), 2, "{t}");
    assert!(t.ends_with("We did not receive a code. | Goodbye."), "{t}");
    assert_eq!(call.requests.len(), 1, "no Gather action without digits");
}

async fn revoked_code_is_refused(store: DynStore) {
    let app = spawn(store, &[]).await;
    let code = issue(&app, 5, false).await;
    let order = order_of(&app, &code).await;
    let revoked = orders::revoke(&app.app, &order).await.unwrap();
    assert_eq!(revoked.status, OrderStatus::Revoked);
    let mut call = caller("+15557770005").types([Some(leak(code))]);
    assert_eq!(call.dial(&app.url(INCOMING)).await, Ending::HungUp);
    assert!(
        call.transcript().contains("This code is no longer valid"),
        "{}",
        call.transcript()
    );
}

async fn code_without_minutes_is_refused_unless_overage(store: DynStore) {
    let app = spawn(store, &[]).await;
    for (overage, connects) in [(false, false), (true, true)] {
        let code = issue(&app, 1, overage).await;
        let order = order_of(&app, &code).await;
        callgate::orders::ledger::prior_use(&app.app, &order, callgate::domain::money::Seconds(60))
            .await
            .unwrap();
        let mut call = caller("+15557770006").types([Some(leak(code))]);
        let ending = call.dial(&app.url(INCOMING)).await;
        assert_eq!(
            matches!(ending, Ending::Stream { .. }),
            connects,
            "overage {overage}: {ending:?}"
        );
        if !connects {
            assert!(
                call.transcript().contains("This code has no minutes left."),
                "{}",
                call.transcript()
            );
        }
    }
}

async fn unsigned_or_missigned_requests_are_refused(store: DynStore) {
    let app = spawn(store, &[]).await;
    let mut call = caller("+15557770007");
    let params = call.call_params("ringing");
    let url = app.url(INCOMING);
    assert_eq!(call.post_with_signature(&url, &params, None).await.0, 403);
    // Signed for another URL (another host, path or query).
    for other in [
        "http://evil.example/voice/incoming",
        &app.url("/voice/code"),
        &format!("{url}?x=1"),
    ] {
        let sig = callgate_peers::twilio::sign(AUTH_TOKEN, other, &params);
        assert_eq!(
            call.post_with_signature(&url, &params, Some(&sig)).await.0,
            403,
            "{other}"
        );
    }
    // Signed with another token.
    let sig = callgate_peers::twilio::sign("wrong-token", &url, &params);
    assert_eq!(
        call.post_with_signature(&url, &params, Some(&sig)).await.0,
        403
    );
    // A tampered parameter.
    let sig = callgate_peers::twilio::sign(AUTH_TOKEN, &url, &params);
    let mut tampered = params.clone();
    tampered[2].1 = "+19999999999".into();
    assert_eq!(
        call.post_with_signature(&url, &tampered, Some(&sig))
            .await
            .0,
        403
    );
    assert!(
        app.app.store.list_calls(10).await.unwrap().is_empty(),
        "nothing recorded"
    );
    // Status callbacks are checked too.
    let status = call.call_params("completed");
    assert_eq!(
        call.post_with_signature(&app.url(STATUS), &status, None)
            .await
            .0,
        403
    );
    assert!(app.app.store.list_calls(10).await.unwrap().is_empty());
}

/// The rule: one live call per code. A second call while the first is connected hears that
/// the code is in use and is ended; once the first call ends, the code works again.
async fn same_code_on_two_calls_at_once(store: DynStore) {
    let app = spawn(store, &[]).await;
    let code = leak(issue(&app, 5, false).await);
    let mut first = caller("+15557770008").types([Some(code)]);
    let mut second = caller("+15557770009").types([Some(code)]);
    let url = app.url(INCOMING);
    let (a, b) = tokio::join!(first.dial(&url), second.dial(&url));
    let connected = [&a, &b]
        .iter()
        .filter(|e| matches!(e, Ending::Stream { .. }))
        .count();
    assert_eq!(connected, 1, "exactly one call gets the code: {a:?} {b:?}");
    let (winner, loser) = if matches!(a, Ending::Stream { .. }) {
        (&mut first, &mut second)
    } else {
        (&mut second, &mut first)
    };
    assert!(
        loser
            .transcript()
            .contains("This code is in use on another call"),
        "{}",
        loser.transcript()
    );
    assert_eq!(
        winner
            .status_callback(&app.url(STATUS), "completed", Some("30"))
            .await,
        200
    );
    let mut third = caller("+15557770010").types([Some(code)]);
    assert!(matches!(
        third.dial(&app.url(INCOMING)).await,
        Ending::Stream { .. }
    ));
}

async fn guessing_is_throttled_across_calls(store: DynStore) {
    let app = spawn(
        store,
        &[
            ("CODE_FAILURES_PER_CALLER_PER_HOUR", "4"),
            ("CODE_FAILURES_PER_HOUR", "7"),
        ],
    )
    .await;
    let code = leak(issue(&app, 5, false).await);
    let mut a = caller("+15557770011").types([
        Some("000000000001"),
        Some("000000000002"),
        Some("000000000003"),
    ]);
    a.dial(&app.url(INCOMING)).await;
    let mut b = caller("+15557770011").types([Some("000000000004"), Some(code)]);
    let ending = b.dial(&app.url(INCOMING)).await;
    assert_eq!(
        ending,
        Ending::HungUp,
        "the fifth try from this number is refused, even a right code"
    );
    assert!(
        b.transcript().contains("Please try again later"),
        "{}",
        b.transcript()
    );
    let mut c = caller("+15557770011");
    c.dial(&app.url(INCOMING)).await;
    assert!(
        c.transcript().contains("Please try again later"),
        "refused at the greeting: {}",
        c.transcript()
    );

    // Another number may still try, until everyone together reaches the global limit.
    let mut d = caller("+15557770012").types([
        Some("000000000005"),
        Some("000000000006"),
        Some("000000000007"),
    ]);
    d.dial(&app.url(INCOMING)).await;
    let mut e = caller("+15557770013").types([Some(code)]);
    assert_eq!(e.dial(&app.url(INCOMING)).await, Ending::HungUp);
    assert!(
        e.transcript().contains("Please try again later"),
        "{}",
        e.transcript()
    );
}

/// Point 8: keypad noise never costs a try, and a code typed in two pauses works once it is
/// complete. A real Gather stops at numDigits keys, so a leading `*` leaves the code one
/// digit short: the caller is asked for the rest and types it.
async fn keypad_noise_and_pauses_do_not_cost_a_try(store: DynStore) {
    let app = spawn(store, &[]).await;
    let code = issue(&app, 5, false).await;
    let last = &code[code.len() - 1..];
    // `*` then the code: the Gather takes `*` + 11 digits; the caller types the last again.
    let mut noisy = caller("+15557770031")
        .types([Some(leak(format!("*{code}"))), Some(leak(last.to_string()))]);
    assert!(
        matches!(noisy.dial(&app.url(INCOMING)).await, Ending::Stream { .. }),
        "{}",
        noisy.transcript()
    );
    assert!(
        !noisy.transcript().contains("not valid"),
        "{}",
        noisy.transcript()
    );
    assert!(noisy
        .transcript()
        .contains("Please enter the rest of your code."));
    // That call ends before its stream opens; the code is free for the next.
    noisy
        .status_callback(&app.url("/voice/status"), "completed", Some("20"))
        .await;
    // The code typed in two pauses, with noise around it.
    let mut paused = caller("+15557770032").types([
        Some(leak(format!("*{}#", &code[..4]))),
        Some(leak(format!("{}#", &code[4..]))),
    ]);
    assert!(
        matches!(paused.dial(&app.url(INCOMING)).await, Ending::Stream { .. }),
        "{}",
        paused.transcript()
    );
    assert_eq!(
        failures(&app, "+15557770032").await,
        0,
        "a pause is no failure"
    );
    // Only noise: asked again, still three real tries.
    let mut fumbling = caller("+15557770033").types([
        Some("*#"),
        Some("000000000001"),
        Some("000000000002"),
        Some("000000000003"),
    ]);
    assert_eq!(fumbling.dial(&app.url(INCOMING)).await, Ending::HungUp);
    let t = fumbling.transcript();
    assert_eq!(t.matches("That code is not valid").count(), 2, "{t}");
    assert!(t.contains("Too many incorrect codes."), "{t}");
}

async fn status_callbacks_in_any_order(store: DynStore) {
    let app = spawn(store, &[]).await;
    let mut call = caller("+15557770014").types([None, None]);
    call.dial(&app.url(INCOMING)).await;
    let url = app.url(STATUS);
    // Completed arrives before in-progress, twice, first with a malformed duration.
    assert_eq!(
        call.status_callback(&url, "completed", Some("12s")).await,
        200
    );
    assert_eq!(
        call.status_callback(&url, "completed", Some("41")).await,
        200
    );
    assert_eq!(
        call.status_callback(&url, "completed", Some("99")).await,
        200
    );
    assert_eq!(call.status_callback(&url, "in-progress", None).await, 200);
    assert_eq!(call.status_callback(&url, "completed", None).await, 200);
    let record = app.app.store.call(&call.call_sid).await.unwrap().unwrap();
    assert_eq!(
        record.status,
        CallState::Ended,
        "a late in-progress does not reopen the call"
    );
    assert_eq!(
        record.twilio_duration,
        Some(41),
        "first numeric duration wins"
    );
    assert_eq!(app.app.store.list_calls(10).await.unwrap().len(), 1);

    // A busy call never answered: recorded, nothing else.
    let mut busy = caller("+15557770015");
    assert_eq!(busy.status_callback(&url, "busy", Some("0")).await, 200);
    let record = app.app.store.call(&busy.call_sid).await.unwrap().unwrap();
    assert_eq!(record.twilio_status.map(|s| s.as_str()), Some("busy"));
}

async fn old_netlify_paths_still_work(store: DynStore) {
    let app = spawn(store, &[]).await;
    let code = leak(issue(&app, 5, false).await);
    let mut call = caller("+15557770016").types([Some(code)]);
    let ending = call
        .dial(&app.url("/.netlify/functions/twilio-call-handler"))
        .await;
    assert!(matches!(ending, Ending::Stream { .. }), "{ending:?}");
    // The old function took the digits at the same URL.
    let mut direct = caller("+15557770017");
    let mut params = direct.call_params("in-progress");
    params.push(("Digits".into(), "123412341234".into()));
    let (status, body) = direct
        .post(&app.url("/.netlify/functions/twilio-call-handler"), &params)
        .await;
    assert_eq!(status, 200);
    assert!(body.contains("That code is not valid"), "{body}");
    assert_eq!(
        call.status_callback(
            &app.url("/.netlify/functions/call-billing-webhook"),
            "completed",
            Some("9")
        )
        .await,
        200
    );
    assert_eq!(
        app.app
            .store
            .call(&call.call_sid)
            .await
            .unwrap()
            .unwrap()
            .twilio_duration,
        Some(9)
    );
}

async fn configured_text_with_markup_is_spoken_verbatim(store: DynStore) {
    let app = spawn(
        store,
        &[
            ("PROMPT_GREETING", "Hi <there> & \"welcome\""),
            ("SAY_VOICE", "Polly.Amy"),
        ],
    )
    .await;
    let mut call = Caller::new(AUTH_TOKEN, ACCOUNT_SID, "<script>&", PHONE).types([None, None]);
    call.dial(&app.url(INCOMING)).await;
    assert!(
        call.transcript().starts_with("Hi <there> & \"welcome\" | "),
        "{}",
        call.transcript()
    );
}

/// Issue 13, point 13: while code entry is paused (everyone's wrong codes over the limit, or
/// this number's after someone spoofed it), a number that already opened a call with its code
/// is still admitted with that code. Anyone else hears the pause, whatever they type, and the
/// spoofer of a known number gains nothing with wrong codes.
async fn a_pause_still_admits_a_known_number_with_its_own_code(store: DynStore) {
    let app = spawn(
        store,
        &[
            ("CODE_FAILURES_PER_CALLER_PER_HOUR", "2"),
            ("CODE_FAILURES_PER_HOUR", "2"),
        ],
    )
    .await;
    let code = leak(issue(&app, 5, false).await);
    let customer = "+15557770051";
    let mut first = caller(customer).types([Some(code)]);
    assert!(matches!(
        first.dial(&app.url(INCOMING)).await,
        Ending::Stream { .. }
    ));
    first
        .status_callback(&app.url(STATUS), "completed", Some("20"))
        .await;

    // Someone spoofing the customer's number guesses: the number, and everyone, is paused.
    let mut spoofer = caller(customer).types([
        Some("000000000001"),
        Some("000000000002"),
        Some("000000000003"),
    ]);
    spoofer.dial(&app.url(INCOMING)).await;
    let mut stranger = caller("+15557770052").types([Some(code)]);
    assert_eq!(stranger.dial(&app.url(INCOMING)).await, Ending::HungUp);
    assert!(
        stranger.transcript().contains("Please try again later"),
        "a right code from a number that never used it waits: {}",
        stranger.transcript()
    );
    let mut spoofed_again = caller(customer).types([Some("000000000004")]);
    assert_eq!(spoofed_again.dial(&app.url(INCOMING)).await, Ending::HungUp);
    assert!(
        spoofed_again
            .transcript()
            .contains("Please try again later"),
        "wrong digits from the known number hear the pause: {}",
        spoofed_again.transcript()
    );
    assert!(!spoofed_again.transcript().contains("not valid"));

    let mut back = caller(customer).types([Some(code)]);
    assert!(
        matches!(back.dial(&app.url(INCOMING)).await, Ending::Stream { .. }),
        "the customer is still admitted: {}",
        back.transcript()
    );
}

const ATTESTED: &str = "TN-Validation-Passed-A";

/// The caller's number remembered for the code this call holds, as the store says.
async fn remembered_for(app: &TestApp, code: &str) -> Vec<String> {
    let order = order_of(app, code).await;
    app.app
        .store
        .remembered_callers(Some(&order.id))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.caller)
        .collect()
}

/// Ends a call the way Twilio reports it (settled at once, the code free again).
async fn hang_up(app: &TestApp, call: &mut Caller) {
    assert_eq!(
        call.status_callback(&app.url(STATUS), "completed", Some("20"))
            .await,
        200
    );
}

/// Remembered callers: after the code, pressing 1 remembers the number; a later call from it
/// skips the code only when Twilio reports the caller ID fully attested (A), and is welcomed
/// back with its minutes; with B, C, a failed check or none, the code is asked as on any call.
async fn a_remembered_number_skips_the_code_only_when_attested(store: DynStore) {
    let app = spawn(store, &[]).await;
    let code = issue(&app, 5, false).await;
    let number = "+15557770042";
    let mut first = caller(number).types([Some(leak(format!("{code}#"))), Some("1")]);
    let ending = first.dial(&app.url(INCOMING)).await;
    let token = stream_token(&ending);
    let t = first.transcript();
    assert!(t.contains("press 1 now"), "{t}");
    assert!(
        t.ends_with(
            "Done. We will recognise this number for your code. | Thank you. Connecting you now."
        ),
        "{t}"
    );
    // The stream the remember step answered with is this call's, on its code.
    let now = app.app.clock.now();
    let opening = app
        .app
        .store
        .consume_stream_token(&sha256_hex(&token), &first.call_sid, now)
        .await
        .unwrap()
        .expect("a valid token");
    assert_eq!(
        opening.order.map(|o| o.id),
        Some(order_of(&app, &code).await.id)
    );
    hang_up(&app, &mut first).await;
    assert_eq!(remembered_for(&app, &code).await, [number]);

    // Attested: no code; welcomed back with the minutes left, offered to forget, connected.
    let mut again = caller(number).with_param("StirVerstat", ATTESTED);
    let ending = again.dial(&app.url(INCOMING)).await;
    let token = stream_token(&ending);
    let t = again.transcript();
    assert!(t.starts_with("Welcome back. We recognised your number. | You have 5 minutes left. | To stop recognising this number, press 9."), "{t}");
    assert!(!t.contains("access code"), "{t}");
    let opening = app
        .app
        .store
        .consume_stream_token(&sha256_hex(&token), &again.call_sid, now)
        .await
        .unwrap()
        .expect("a valid token for the recognised call");
    assert!(
        callgate::domain::call::stream_refusal(opening.call.as_ref(), opening.order.as_ref())
            .is_none()
    );
    hang_up(&app, &mut again).await;

    // Anything short of full attestation: the code is asked (nothing typed: goodbye).
    for verstat in [
        Some("TN-Validation-Passed-B"),
        Some("TN-Validation-Passed-C"),
        Some("TN-Validation-Failed-A"),
        Some("No-TN-Validation"),
        None,
    ] {
        let mut call = caller(number);
        if let Some(v) = verstat {
            call = call.with_param("StirVerstat", v);
        }
        let ending = call.dial(&app.url(INCOMING)).await;
        assert_eq!(ending, Ending::HungUp, "{verstat:?}");
        let t = call.transcript();
        assert!(
            t.starts_with("Welcome. | Please enter your access code"),
            "{verstat:?}: {t}"
        );
        assert!(!t.contains("Welcome back"), "{t}");
    }
    // Another number, attested, is a stranger.
    let mut stranger = caller("+15557770043").with_param("StirVerstat", ATTESTED);
    assert_eq!(stranger.dial(&app.url(INCOMING)).await, Ending::HungUp);
    assert!(stranger
        .transcript()
        .contains("Please enter your access code"));

    // Typing the code again from the remembered number: no offer to remember it twice.
    let mut typed = caller(number).types([Some(leak(format!("{code}#")))]);
    stream_token(&typed.dial(&app.url(INCOMING)).await);
    assert!(
        !typed.transcript().contains("press 1 now"),
        "{}",
        typed.transcript()
    );
}

/// A recognised caller presses 9: the number is forgotten, this call still goes on, and the
/// next call is asked for the code. A remembered code that cannot connect (revoked) is not
/// used: the code is asked.
async fn a_recognised_caller_can_forget_the_number(store: DynStore) {
    let app = spawn(store, &[]).await;
    let code = issue(&app, 5, false).await;
    let order = order_of(&app, &code).await;
    let number = "+15557770044";
    let now = app.app.clock.now();
    app.app
        .store
        .remember_caller(number, &order.id, now)
        .await
        .unwrap();
    // Not pressing 1 at the offer changes nothing.
    let mut declines = caller("+15557770045").types([Some(leak(format!("{code}#"))), Some("5")]);
    stream_token(&declines.dial(&app.url(INCOMING)).await);
    assert!(
        !declines.transcript().contains("Done."),
        "{}",
        declines.transcript()
    );
    hang_up(&app, &mut declines).await;
    assert_eq!(remembered_for(&app, &code).await, [number]);

    let mut call = caller(number)
        .with_param("StirVerstat", ATTESTED)
        .types([Some("9")]);
    let ending = call.dial(&app.url(INCOMING)).await;
    stream_token(&ending);
    let t = call.transcript();
    assert!(t.contains("This number is forgotten. Next time, please enter your code. | Thank you. Connecting you now."), "{t}");
    hang_up(&app, &mut call).await;
    assert!(remembered_for(&app, &code).await.is_empty());
    let mut next = caller(number).with_param("StirVerstat", ATTESTED);
    assert_eq!(next.dial(&app.url(INCOMING)).await, Ending::HungUp);
    assert!(next.transcript().contains("Please enter your access code"));

    // Remembered again, then the code revoked: the code is asked, nothing connects.
    app.app
        .store
        .remember_caller(number, &order.id, now)
        .await
        .unwrap();
    orders::revoke(&app.app, &order).await.unwrap();
    let mut revoked = caller(number).with_param("StirVerstat", ATTESTED);
    assert_eq!(revoked.dial(&app.url(INCOMING)).await, Ending::HungUp);
    assert!(revoked
        .transcript()
        .contains("Please enter your access code"));
}

on_every_backend!(
    a_remembered_number_skips_the_code_only_when_attested,
    a_recognised_caller_can_forget_the_number,
    a_pause_still_admits_a_known_number_with_its_own_code,
    keypad_noise_and_pauses_do_not_cost_a_try,
    right_code_connects_the_stream,
    wrong_code_then_right,
    three_wrong_codes_end_the_call,
    no_input_reprompts_then_says_goodbye,
    revoked_code_is_refused,
    code_without_minutes_is_refused_unless_overage,
    unsigned_or_missigned_requests_are_refused,
    same_code_on_two_calls_at_once,
    guessing_is_throttled_across_calls,
    status_callbacks_in_any_order,
    old_netlify_paths_still_work,
    configured_text_with_markup_is_spoken_verbatim,
);

#[tokio::test]
async fn recorded_prompts_are_played_and_served_for_caching() {
    let db = crate::support::sqlite().await;
    let audio = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(audio.path().join("greeting.mp3"), &bytes).unwrap();
    std::fs::write(audio.path().join("goodbye.wav"), b"RIFF....WAVEfmt ").unwrap();
    let app = spawn(
        db.store.clone(),
        &[("AUDIO_DIR", audio.path().to_str().unwrap())],
    )
    .await;

    let mut call = caller("+15557770020").types([None, None]);
    call.dial(&app.url(INCOMING)).await;
    let t = call.transcript();
    assert!(
        t.starts_with(&format!("[play {}]", app.url("/audio/greeting.mp3"))),
        "{t}"
    );
    assert!(
        t.ends_with(&format!("[play {}]", app.url("/audio/goodbye.wav"))),
        "{t}"
    );
    assert!(
        t.contains("Please enter your access code"),
        "prompts without a file are spoken: {t}"
    );

    let http = reqwest::Client::new();
    let resp = http
        .get(app.url("/audio/greeting.mp3"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "audio/mpeg");
    let cache = resp.headers()["cache-control"]
        .to_str()
        .unwrap()
        .to_string();
    let max_age: u64 = cache.split("max-age=").nth(1).unwrap().parse().unwrap();
    assert!(max_age >= 86_400, "{cache}");
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(resp.bytes().await.unwrap().as_ref(), bytes.as_slice());

    let wav = http
        .get(app.url("/audio/goodbye.wav"))
        .send()
        .await
        .unwrap();
    assert!(
        wav.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("audio/"),
        "{:?}",
        wav.headers()
    );

    let not_modified = http
        .get(app.url("/audio/greeting.mp3"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);

    let head = http
        .head(app.url("/audio/greeting.mp3"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "4000");

    let range = http
        .get(app.url("/audio/greeting.mp3"))
        .header("Range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(range.status(), 206);
    assert_eq!(range.bytes().await.unwrap().as_ref(), &bytes[100..200]);

    assert_eq!(
        http.get(app.url("/audio/missing.mp3"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        http.get(app.url("/audio/../Cargo.toml"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    db.cleanup().await;
}
