//! Ledger integrity, as a caller, an attacker and Stripe see it: whole calls through the Twilio
//! simulator and the fake agent, webhooks signed as Stripe signs them. Each test here failed
//! on the main branch before issue 13 (the point it covers is named).

use std::time::Duration;

use crate::support::app::{TestApp, ACCOUNT_SID, AUTH_TOKEN, PHONE};
use crate::support::calls::{app_with_agent, connected_call, open, settled_call, WAIT};
use callgate::domain::money::{Cents, Seconds};
use callgate::store::{new_id, DynStore, NewOrder, Order, OrderSource};
use callgate_peers::agent::{Behaviour, FakeAgent};
use callgate_peers::twilio::{Caller, Ending, Received};
use serde_json::json;

const WEBHOOK_SECRET: &str = "whsec_ledger_test";

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// The operator's password where a test reads the console.
const ADMIN: &str = "ledger-admin-pass";

async fn order_of_call(app: &TestApp, call_sid: &str) -> Order {
    let call = app.app.store.call(call_sid).await.unwrap().unwrap();
    let id = call.order_id.expect("the call names its order");
    app.app.store.order(&id).await.unwrap().unwrap()
}

/// Point 1: the allowance is spent once. A caller cut off at a 60 s allowance redials at once
/// (before any status callback or billing pass): the code has no minutes left.
async fn a_redial_right_after_the_cut_finds_the_allowance_spent(store: DynStore) {
    let agent = FakeAgent::start(Behaviour::default()).await;
    let app = app_with_agent(
        store,
        &agent,
        &[("BILLING_WORKER", "off"), ("ADMIN_PASSWORD", ADMIN)],
    )
    .await;
    let (caller, url, params, _) = connected_call(&app, 1, false).await;
    let code = {
        let order = order_of_call(&app, &caller.call_sid).await;
        callgate::orders::code_of(&app.app, &order).unwrap()
    };
    let mut stream = open(&caller, &url, &params).await;
    stream
        .talk_until_closed(&[0x55; 160], Duration::from_secs(30))
        .await;
    let call = settled_call(&app, &caller.call_sid).await;
    assert_eq!(call.seconds_metered, Seconds(60));
    let order = order_of_call(&app, &caller.call_sid).await;
    assert_eq!(
        order.seconds_used,
        Seconds(60),
        "debited when the bridge ended, not at Twilio's callback"
    );
    assert_eq!(order.active_call_sid, None);

    let mut redial = Caller::new(AUTH_TOKEN, ACCOUNT_SID, "+15558880001", PHONE)
        .types([Some(leak(code.expose().to_string()))]);
    assert_eq!(
        redial.dial(&app.url("/voice/incoming")).await,
        Ending::HungUp
    );
    assert!(
        redial
            .transcript()
            .contains("This code has no minutes left."),
        "{}",
        redial.transcript()
    );
    // The console says what the caller was told, and links the order whose code was typed.
    let refused = app.app.store.call(&redial.call_sid).await.unwrap().unwrap();
    assert_eq!(refused.refused, Some(callgate::store::Refusal::NoMinutes));
    assert_eq!(refused.refused_order_id.as_deref(), Some(order.id.as_str()));
    assert_eq!(
        refused.order_id, None,
        "the refused call never held the order"
    );
    let page = crate::support::calls::admin_call_page(&app, ADMIN, &redial.call_sid).await;
    assert!(
        page.contains("Code refused: no minutes left")
            && page.contains("This code has no minutes left.")
            && page.contains(&format!("href=\"/admin/orders/{}\"", order.id)),
        "{page}"
    );
    assert!(!page.contains("no valid code"), "{page}");
}

/// Point 1, the other half: a caller who hangs up early and redials gets only the rest of
/// the allowance; the two calls together never exceed it.
async fn two_calls_on_one_code_share_one_allowance(store: DynStore) {
    let agent = FakeAgent::start(Behaviour::default()).await;
    let app = app_with_agent(store, &agent, &[("BILLING_WORKER", "off")]).await;
    let (first, url, params, _) = connected_call(&app, 2, false).await;
    let code = {
        let order = order_of_call(&app, &first.call_sid).await;
        callgate::orders::code_of(&app.app, &order).unwrap()
    };
    let mut stream = open(&first, &url, &params).await;
    // Talk until the bridge has metered a few seconds (however slow its set-up), then hang up.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        stream
            .talk_until_closed(&[0x55; 160], Duration::from_millis(50))
            .await;
        let c = app.app.store.call(&first.call_sid).await.unwrap().unwrap();
        if c.seconds_metered.0 >= 10 || tokio::time::Instant::now() > deadline {
            break;
        }
    }
    stream.stop().await;
    let one = settled_call(&app, &first.call_sid).await.seconds_metered;
    assert!(one.0 > 0 && one.0 < 120, "hung up early: {one:?}");

    let mut second = Caller::new(AUTH_TOKEN, ACCOUNT_SID, "+15558880002", PHONE)
        .types([Some(leak(code.expose().to_string()))]);
    let Ending::Stream {
        url, parameters, ..
    } = second.dial(&app.url("/voice/incoming")).await
    else {
        panic!(
            "the rest of the allowance connects: {}",
            second.transcript()
        )
    };
    let mut stream = open(&second, &url, &parameters).await;
    stream
        .talk_until_closed(&[0x55; 160], Duration::from_secs(30))
        .await;
    let two = settled_call(&app, &second.call_sid).await;
    assert_eq!(two.end_reason.map(|r| r.as_str()), Some("time_up"));
    assert_eq!(
        one.0 + two.seconds_metered.0,
        120,
        "the second call ran only what the first left"
    );
    assert_eq!(
        order_of_call(&app, &second.call_sid).await.seconds_used,
        Seconds(120)
    );
}

/// Point 2: a call Twilio reported ended cannot connect with the right code afterwards, and
/// leaves no hold on the code.
async fn an_ended_call_never_connects(store: DynStore) {
    let agent = FakeAgent::start(Behaviour::default()).await;
    let app = app_with_agent(store, &agent, &[("BILLING_WORKER", "off")]).await;
    let grant = callgate::orders::OperatorGrant {
        minutes: 5,
        overage: false,
        customer: None,
        payment_method: None,
    };
    let (order, code) = callgate::orders::issue_operator_code(&app.app, &grant)
        .await
        .unwrap();
    let mut caller = Caller::new(AUTH_TOKEN, ACCOUNT_SID, "+15558880003", PHONE);
    let (status, _) = caller
        .post(&app.url("/voice/incoming"), &caller.call_params("ringing"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        caller
            .status_callback(&app.url("/voice/status"), "completed", Some("3"))
            .await,
        200
    );
    let mut params = caller.call_params("in-progress");
    params.push(("Digits".into(), code.expose().to_string()));
    let (status, twiml) = caller.post(&app.url("/voice/code?try=1"), &params).await;
    assert_eq!(status, 200);
    assert!(
        !twiml.contains("<Connect"),
        "an ended call connected: {twiml}"
    );
    let order = app.app.store.order(&order.id).await.unwrap().unwrap();
    assert_eq!(order.active_call_sid, None, "no hold left behind");

    // The code still works on a live call.
    let mut live = Caller::new(AUTH_TOKEN, ACCOUNT_SID, "+15558880003", PHONE)
        .types([Some(leak(code.expose().to_string()))]);
    assert!(matches!(
        live.dial(&app.url("/voice/incoming")).await,
        Ending::Stream { .. }
    ));
}

/// A paid Stripe order with overage consent and a saved card, and its code.
async fn paid_stripe_order(app: &TestApp, minutes: i64) -> (Order, String) {
    let (code, stored) = callgate::orders::fresh_code(&app.app);
    let order = app
        .app
        .store
        .insert_order(&NewOrder {
            id: new_id("ord"),
            source: OrderSource::Stripe,
            plan: "Talk time".into(),
            amount: Cents(1000),
            currency: Default::default(),
            seconds_included: Seconds::from_minutes(minutes),
            overage_consent: true,
            overage_price: Cents(100),
            stripe_payment_intent: Some(new_id("pi")),
            stripe_customer: Some("cus_ledger".into()),
            stripe_payment_method: Some("pm_ledger".into()),
            client_secret_hash: None,
            code: Some(stored),
            now: app.app.clock.now(),
        })
        .await
        .unwrap();
    (order, code.expose().to_string())
}

async fn deliver(app: &TestApp, kind: &str, object: serde_json::Value) -> u16 {
    app.stripe_event(WEBHOOK_SECRET, &new_id("evt"), kind, object)
        .await
}

/// Point 3: a refund (or a dispute) of the purchase while the code's call is bridged, well
/// into overage: the call ends within a few seconds with a spoken reason, its seconds are
/// debited, and no charge is created or attempted.
async fn a_refund_or_dispute_ends_the_live_call_and_nothing_is_charged(store: DynStore) {
    for kind in ["charge.refunded", "charge.dispute.created"] {
        let agent = FakeAgent::start(Behaviour::default()).await;
        let app = app_with_agent(
            store.clone(),
            &agent,
            &[
                ("STRIPE_SECRET_KEY", "sk_test_callgate"),
                ("STRIPE_PUBLISHABLE_KEY", "pk_test_callgate"),
                ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET),
                ("BILLING_WORKER", "off"),
                ("MAX_CALL_MINUTES", "60"),
            ],
        )
        .await;
        let (order, code) = paid_stripe_order(&app, 1).await;
        let mut caller =
            Caller::new(AUTH_TOKEN, ACCOUNT_SID, "+15558880004", PHONE).types([Some(leak(code))]);
        let Ending::Stream {
            url,
            parameters,
            after,
        } = caller.dial(&app.url("/voice/incoming")).await
        else {
            panic!("not connected: {}", caller.transcript())
        };
        let mut stream = open(&caller, &url, &parameters).await;
        let talking = tokio::spawn(async move {
            stream
                .talk_until_closed(&[0x55; 160], Duration::from_secs(60))
                .await
        });
        // Wait until the call is in paid overage (past its 60 s, as the heartbeat records).
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let c = app.app.store.call(&caller.call_sid).await.unwrap().unwrap();
            if c.seconds_metered.0 > 70 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never reached overage"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let pi = order.stripe_payment_intent.clone().unwrap();
        let object = match kind {
            "charge.refunded" => json!({ "id": "ch_1", "payment_intent": pi, "refunded": true }),
            _ => json!({ "id": "dp_1", "charge": "ch_1", "payment_intent": pi }),
        };
        assert_eq!(deliver(&app, kind, object).await, 200);
        let got = tokio::time::timeout(WAIT, talking)
            .await
            .expect("the call ended within seconds of the revocation")
            .unwrap();
        assert_eq!(got.last(), Some(&Received::Closed), "{kind}");
        let call = settled_call(&app, &caller.call_sid).await;
        assert_eq!(
            call.end_reason.map(|r| r.as_str()),
            Some("revoked"),
            "{kind}"
        );
        assert!(
            call.seconds_metered.0 < 1000,
            "stopped long before the 3600 s maximum: {:?}",
            call.seconds_metered
        );
        let after = after.expect("a Redirect after Connect");
        assert_eq!(caller.after_stream(&after).await, Ending::HungUp);
        assert!(
            caller.transcript().contains("no longer valid"),
            "{}",
            caller.transcript()
        );
        let order = app.app.store.order(&order.id).await.unwrap().unwrap();
        assert_eq!(
            order.seconds_used, call.seconds_metered,
            "debited all the same"
        );
        assert_eq!(order.active_call_sid, None);
        callgate::billing::run_once(&app.app, "w").await.unwrap();
        assert!(
            app.app
                .store
                .list_charges(None, 10)
                .await
                .unwrap()
                .is_empty(),
            "{kind}: no charge on a revoked order"
        );
    }
}

on_every_backend!(
    a_redial_right_after_the_cut_finds_the_allowance_spent,
    two_calls_on_one_code_share_one_allowance,
    an_ended_call_never_connects,
    a_refund_or_dispute_ends_the_live_call_and_nothing_is_charged,
);
