//! Overage billing: settlement, the charge worker, Stripe's outcomes and the faults around
//! them. Against localstripe where it serves, and a recording Stripe stand-in that honours
//! idempotency keys where it does not.

use std::sync::Arc;

use callgate::billing;
use callgate::domain::clock::ManualClock;
use callgate::domain::money::{Cents, Seconds};
use callgate::store::{
    new_id, ChargeState, DynStore, Hold, NewCall, NewOrder, Order, OrderSource, Settlement,
};
use callgate::App;
use callgate_peers::stripe::{FakeStripe, Next};
use serde_json::{json, Value};

const T0: i64 = 1_800_000_000;

fn stripe_env(base: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "STRIPE_SECRET_KEY",
            crate::support::stripe::SECRET_KEY.into(),
        ),
        (
            "STRIPE_PUBLISHABLE_KEY",
            crate::support::stripe::PUBLISHABLE_KEY.into(),
        ),
        (
            "STRIPE_WEBHOOK_SECRET",
            crate::support::stripe::WEBHOOK_SECRET.into(),
        ),
        ("STRIPE_API_BASE", base.into()),
        ("BILLING_WORKER", "off".into()),
    ]
}

fn vars<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A paid order with a saved card, as a consented purchase leaves it.
async fn order(app: &App, minutes: i64, customer: &str, payment_method: &str) -> Order {
    let (_, code) = callgate::orders::fresh_code(app);
    app.store
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
            stripe_customer: Some(customer.into()),
            stripe_payment_method: Some(payment_method.into()),
            client_secret_hash: None,
            code: Some(code),
            now: app.clock.now(),
        })
        .await
        .unwrap()
}

/// A call on the order whose bridge metered `seconds` and has finished.
async fn bridged_call(app: &App, order: &Order, seconds: i64) -> String {
    let sid = format!("CA{}", new_id("x").trim_start_matches("x_"));
    let now = app.clock.now();
    let store = &app.store;
    store
        .upsert_call(&NewCall {
            call_sid: sid.clone(),
            from_number: "+15550001".into(),
            to_number: "+15550002".into(),
            now,
        })
        .await
        .unwrap();
    assert!(matches!(
        store
            .hold_order_for_call(&order.id, &sid, now + 150, now)
            .await
            .unwrap(),
        Hold::Held(_)
    ));
    assert!(store
        .bridge_started(&sid, None, now + 30, now, "inst_test")
        .await
        .unwrap());
    store
        .bridge_finished(
            &sid,
            Seconds(seconds),
            callgate::store::EndReason::CallerHungUp,
            now,
        )
        .await
        .unwrap();
    sid
}

async fn used(app: &App, order_id: &str) -> Seconds {
    app.store
        .order(order_id)
        .await
        .unwrap()
        .unwrap()
        .seconds_used
}

fn settled_charge(s: Settlement) -> callgate::store::Charge {
    match s {
        Settlement::Settled {
            charge: Some(c), ..
        } => *c,
        other => panic!("expected a charge, got {other:?}"),
    }
}

// ---- settlement ----------------------------------------------------------------------

async fn allowance_is_spent_once_across_calls(store: DynStore) {
    let fake = FakeStripe::start(&[]).await;
    let app = crate::support::app::build(
        store,
        &vars(&stripe_env(&fake.base)),
        Arc::new(ManualClock::new(T0)),
    );
    let order = order(&app, 5, "cus_1", "pm_1").await;
    // 200 s, then 200 s: the second call crosses the 300 s allowance by 100 s.
    let first = bridged_call(&app, &order, 200).await;
    let s1 = callgate::settlement::settle(&app, &first).await.unwrap();
    assert!(
        matches!(
            s1,
            Settlement::Settled {
                seconds: Seconds(200),
                overage: Seconds(0),
                charge: None
            }
        ),
        "{s1:?}"
    );
    let second = bridged_call(&app, &order, 200).await;
    let charge = settled_charge(callgate::settlement::settle(&app, &second).await.unwrap());
    assert_eq!(charge.seconds_billed, Seconds(100));
    assert_eq!(
        charge.amount,
        Cents(200),
        "100 s = 2 started minutes at $1.00"
    );
    assert_eq!(used(&app, &order.id).await, Seconds(400));
    // Settling again, or a late status callback, changes nothing.
    assert_eq!(
        callgate::settlement::settle(&app, &second).await.unwrap(),
        Settlement::AlreadySettled
    );
    app.store
        .end_call(&callgate::store::EndCall {
            call_sid: second.clone(),
            from_number: "+1".into(),
            to_number: "+2".into(),
            twilio_status: callgate::store::TwilioStatus::Completed,
            duration: Some(999),
            reason: callgate::store::EndReason::TwilioCompleted,
            now: T0,
        })
        .await
        .unwrap();
    assert_eq!(
        callgate::settlement::settle(&app, &second).await.unwrap(),
        Settlement::AlreadySettled
    );
    assert_eq!(app.store.list_charges(None, 10).await.unwrap().len(), 1);
    assert_eq!(used(&app, &order.id).await, Seconds(400));
}

async fn racing_settlements_charge_once(store: DynStore) {
    let fake = FakeStripe::start(&[]).await;
    let app = Arc::new(crate::support::app::build(
        store,
        &vars(&stripe_env(&fake.base)),
        Arc::new(ManualClock::new(T0)),
    ));
    let order = order(&app, 1, "cus_1", "pm_1").await;
    let sid = bridged_call(&app, &order, 150).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (app, sid) = (app.clone(), sid.clone());
        tasks.push(tokio::spawn(async move {
            callgate::settlement::settle(&app, &sid).await
        }));
    }
    let mut settled = 0;
    for t in tasks {
        if matches!(t.await.unwrap().unwrap(), Settlement::Settled { .. }) {
            settled += 1;
        }
    }
    assert_eq!(settled, 1);
    assert_eq!(app.store.list_charges(None, 10).await.unwrap().len(), 1);
    assert_eq!(used(&app, &order.id).await, Seconds(150));
}

async fn a_crashed_bridge_is_settled_from_its_metering_once_its_hold_lapses(store: DynStore) {
    let fake = FakeStripe::start(&[]).await;
    let clock = Arc::new(ManualClock::new(T0));
    let app = crate::support::app::build(store, &vars(&stripe_env(&fake.base)), clock.clone());
    let order = order(&app, 0, "cus_1", "pm_1").await;
    let sid = format!("CA{}", new_id("x").trim_start_matches("x_"));
    app.store
        .upsert_call(&NewCall {
            call_sid: sid.clone(),
            from_number: "+1".into(),
            to_number: "+2".into(),
            now: T0,
        })
        .await
        .unwrap();
    app.store
        .hold_order_for_call(&order.id, &sid, T0 + 150, T0)
        .await
        .unwrap();
    assert!(app
        .store
        .bridge_started(&sid, None, T0 + 40, T0 + 10, "inst_test")
        .await
        .unwrap());
    // The last heartbeat: 40 s metered, the hold renewed to T0 + 80.
    let stop = app
        .store
        .record_metering_many(&[(sid.clone(), Seconds(40))], T0 + 80, T0 + 50)
        .await
        .unwrap();
    assert!(stop.is_empty(), "a live call on a paid order goes on");
    // The instance died: no bridge end. Twilio reports 100 s; it is not the meter.
    app.store
        .end_call(&callgate::store::EndCall {
            call_sid: sid.clone(),
            from_number: "+1".into(),
            to_number: "+2".into(),
            twilio_status: callgate::store::TwilioStatus::Completed,
            duration: Some(100),
            reason: callgate::store::EndReason::TwilioCompleted,
            now: T0 + 60,
        })
        .await
        .unwrap();
    clock.advance(60);
    assert_eq!(
        callgate::settlement::settle(&app, &sid).await.unwrap(),
        Settlement::NotReady,
        "the hold is live: its bridge may still be metering"
    );
    assert!(
        app.store
            .calls_to_settle(10, T0 + 60)
            .await
            .unwrap()
            .is_empty(),
        "nor does the billing pass take it"
    );
    clock.advance(21);
    assert_eq!(
        app.store.calls_to_settle(10, T0 + 81).await.unwrap(),
        vec![sid.clone()]
    );
    let charge = settled_charge(callgate::settlement::settle(&app, &sid).await.unwrap());
    assert_eq!(
        charge.seconds_billed,
        Seconds(40),
        "what the bridge metered before it died"
    );
    let order = app.store.order(&order.id).await.unwrap().unwrap();
    assert_eq!(order.seconds_used, Seconds(40));
    assert_eq!(order.active_call_sid, None, "the code is free again");
}

// ---- the worker against the recording stand-in --------------------------------------

async fn server_errors_are_retried_with_the_same_key(store: DynStore) {
    let fake = FakeStripe::start(&[Next::ServerError, Next::ServerError, Next::Succeed]).await;
    let app = crate::support::app::build(
        store,
        &vars(&stripe_env(&fake.base)),
        Arc::new(ManualClock::new(T0)),
    );
    let order = order(&app, 1, "cus_9", "pm_9").await;
    let sid = bridged_call(&app, &order, 61).await;
    let charge = settled_charge(callgate::settlement::settle(&app, &sid).await.unwrap());
    let report = billing::run_once(&app, "worker-a").await.unwrap();
    assert_eq!(
        report.charged,
        vec![(charge.id.clone(), ChargeState::Succeeded)]
    );
    assert_eq!(fake.requests(), 3, "two 500s, then success");
    let keys = fake.keys();
    assert!(
        keys.iter()
            .all(|k| k.as_deref() == Some(format!("callgate-overage-{}", charge.id).as_str())),
        "{keys:?}"
    );
    assert_eq!(fake.intents(), 1);
    let stored = app.store.charge(&charge.id).await.unwrap().unwrap();
    assert_eq!(stored.stripe_payment_intent.as_deref(), Some("pi_fake_1"));
    let form = fake.request_log()[2].1.clone();
    assert_eq!(form["amount"], "100");
    assert_eq!(form["customer"], "cus_9");
    assert_eq!(form["payment_method"], "pm_9");
    assert_eq!(form["off_session"], "true");
    assert_eq!(form["confirm"], "true");
    // Nothing is due any more.
    assert!(billing::run_once(&app, "worker-a")
        .await
        .unwrap()
        .charged
        .is_empty());
}

async fn a_worker_killed_after_stripe_answered_charges_once(store: DynStore) {
    let fake = FakeStripe::start(&[]).await;
    let clock = Arc::new(ManualClock::new(T0));
    let app = crate::support::app::build(store, &vars(&stripe_env(&fake.base)), clock.clone());
    let order = order(&app, 1, "cus_1", "pm_1").await;
    let sid = bridged_call(&app, &order, 90).await;
    let charge = settled_charge(callgate::settlement::settle(&app, &sid).await.unwrap());
    // Worker A leases the charge, Stripe charges the card, and A dies before recording it.
    let leased = app
        .store
        .claim_charge("worker-a", T0 + billing::LEASE_SECS, T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(leased.id, charge.id);
    let stripe = app.stripe.as_ref().unwrap();
    // An off-session charge, confirmed at once, as the worker sends it.
    let form = vec![
        ("amount".to_string(), "100".to_string()),
        ("confirm".to_string(), "true".to_string()),
    ];
    stripe
        .create_payment_intent(&form, &format!("callgate-overage-{}", charge.id))
        .await
        .unwrap();
    assert_eq!(fake.intents(), 1);
    // While the lease holds, nobody else takes it.
    assert!(billing::run_once(&app, "worker-b")
        .await
        .unwrap()
        .charged
        .is_empty());
    // The lease lapses; worker B retries with the same key and Stripe replays the charge.
    clock.advance(billing::LEASE_SECS + 1);
    let report = billing::run_once(&app, "worker-b").await.unwrap();
    assert_eq!(
        report.charged,
        vec![(charge.id.clone(), ChargeState::Succeeded)]
    );
    assert_eq!(fake.intents(), 1, "still one charge on the card");
    let stored = app.store.charge(&charge.id).await.unwrap().unwrap();
    assert_eq!(stored.stripe_payment_intent.as_deref(), Some("pi_fake_1"));
    assert_eq!(stored.attempts, 2);
}

async fn two_workers_race_and_each_charge_is_made_once(store: DynStore) {
    let fake = FakeStripe::start(&[]).await;
    let app = Arc::new(crate::support::app::build(
        store,
        &vars(&stripe_env(&fake.base)),
        Arc::new(ManualClock::new(T0)),
    ));
    let mut ids = Vec::new();
    for _ in 0..10 {
        let order = order(&app, 1, "cus_1", "pm_1").await;
        let sid = bridged_call(&app, &order, 120).await;
        ids.push(settled_charge(callgate::settlement::settle(&app, &sid).await.unwrap()).id);
    }
    let (a, b) = tokio::join!(
        billing::run_once(&app, "worker-a"),
        billing::run_once(&app, "worker-b")
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        a.charged.len() + b.charged.len(),
        10,
        "every charge attempted exactly once"
    );
    assert_eq!(fake.intents(), 10);
    let mut keys = fake.keys();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 10);
    for id in ids {
        assert_eq!(
            app.store.charge(&id).await.unwrap().unwrap().state,
            ChargeState::Succeeded
        );
    }
}

async fn authentication_required_and_declines_are_recorded_not_retried(store: DynStore) {
    let fake = FakeStripe::start(&[Next::AuthenticationRequired, Next::Decline]).await;
    let app = crate::support::app::build(
        store,
        &vars(&stripe_env(&fake.base)),
        Arc::new(ManualClock::new(T0)),
    );
    let needs_auth = order(&app, 1, "cus_a", "pm_a").await;
    let declined = order(&app, 1, "cus_d", "pm_d").await;
    let c1 = settled_charge(
        callgate::settlement::settle(&app, &bridged_call(&app, &needs_auth, 70).await)
            .await
            .unwrap(),
    );
    billing::run_once(&app, "w").await.unwrap();
    let c2 = settled_charge(
        callgate::settlement::settle(&app, &bridged_call(&app, &declined, 70).await)
            .await
            .unwrap(),
    );
    billing::run_once(&app, "w").await.unwrap();

    let c1 = app.store.charge(&c1.id).await.unwrap().unwrap();
    assert_eq!(c1.state, ChargeState::RequiresAction);
    assert_eq!(
        c1.stripe_payment_intent.as_deref(),
        Some("pi_fake_1"),
        "the intent from Stripe's 402"
    );
    assert_eq!(c1.pay_token.as_ref().map(String::len), Some(48));
    assert_eq!(c1.last_error.as_deref(), Some("authentication_required"));
    assert!(app
        .store
        .order(&needs_auth.id)
        .await
        .unwrap()
        .unwrap()
        .overage_blocked
        .is_some());

    let c2 = app.store.charge(&c2.id).await.unwrap().unwrap();
    assert_eq!(c2.state, ChargeState::Declined);
    assert!(
        c2.last_error
            .as_deref()
            .unwrap()
            .contains("insufficient_funds"),
        "{:?}",
        c2.last_error
    );
    assert_eq!(
        app.store
            .order(&declined.id)
            .await
            .unwrap()
            .unwrap()
            .overage_blocked
            .map(|b| b.as_str()),
        Some("declined overage")
    );

    // Neither is tried again.
    let before = fake.requests();
    assert!(billing::run_once(&app, "w")
        .await
        .unwrap()
        .charged
        .is_empty());
    assert_eq!(fake.requests(), before);

    // The customer pays the held charge on-session: the suspension lifts.
    assert!(billing::overage_paid(&app, &c1.id, "pi_fake_1")
        .await
        .unwrap());
    assert_eq!(
        app.store.charge(&c1.id).await.unwrap().unwrap().state,
        ChargeState::Succeeded
    );
    assert_eq!(
        app.store
            .order(&needs_auth.id)
            .await
            .unwrap()
            .unwrap()
            .overage_blocked,
        None
    );
}

/// Point 6: consent without a saved card is no licence for overage. Such an order's call is
/// debited in full, but no charge is created and nothing is sent to Stripe.
async fn consent_without_a_saved_card_creates_no_charge(store: DynStore) {
    let fake = FakeStripe::start(&[]).await;
    let app = crate::support::app::build(
        store,
        &vars(&stripe_env(&fake.base)),
        Arc::new(ManualClock::new(T0)),
    );
    let grant = callgate::orders::OperatorGrant {
        minutes: 1,
        overage: true,
        customer: None,
        payment_method: None,
    };
    let (order, _) = callgate::orders::issue_operator_code(&app, &grant)
        .await
        .unwrap();
    let settled = callgate::settlement::settle(&app, &bridged_call(&app, &order, 61).await)
        .await
        .unwrap();
    assert!(
        matches!(
            settled,
            Settlement::Settled {
                seconds: Seconds(61),
                overage: Seconds(1),
                charge: None
            }
        ),
        "{settled:?}"
    );
    billing::run_once(&app, "w").await.unwrap();
    assert!(app.store.list_charges(None, 10).await.unwrap().is_empty());
    assert_eq!(used(&app, &order.id).await, Seconds(61));
    assert_eq!(fake.requests(), 0);
}

/// Point 3: a charge still queued on an order that was revoked (say, leased while the refund
/// canceled the others) is canceled by the worker, never sent to Stripe.
async fn no_worker_charges_a_revoked_order(store: DynStore) {
    let fake = FakeStripe::start(&[]).await;
    let app = crate::support::app::build(
        store,
        &vars(&stripe_env(&fake.base)),
        Arc::new(ManualClock::new(T0)),
    );
    let order = order(&app, 1, "cus_1", "pm_1").await;
    let c = settled_charge(
        callgate::settlement::settle(&app, &bridged_call(&app, &order, 90).await)
            .await
            .unwrap(),
    );
    app.store
        .move_order(&order.id, callgate::store::OrderStatus::Revoked, T0)
        .await
        .unwrap();
    billing::run_once(&app, "w").await.unwrap();
    let c = app.store.charge(&c.id).await.unwrap().unwrap();
    assert_eq!(c.state, ChargeState::Canceled);
    assert_eq!(fake.requests(), 0, "nothing sent to Stripe");
}

/// Stripe accepts connections and never answers: the pass ends (bounded by the client's
/// timeouts), the charge stays queued with the failure recorded, and once Stripe answers
/// again it is charged exactly once, under the same key.
async fn a_hanging_stripe_leaves_the_charge_queued_then_charges_it_once(store: DynStore) {
    let fake = FakeStripe::start(&[]).await;
    let proxy =
        crate::support::proxy::Proxy::start(fake.base.trim_start_matches("http://").to_string())
            .await;
    proxy.hang();
    let clock = Arc::new(ManualClock::new(T0));
    let via = format!("http://{}", proxy.addr);
    let mut app = crate::support::app::build(store, &vars(&stripe_env(&via)), clock.clone());
    app.stripe = Some(callgate::stripe::client::StripeClient::with_timeouts(
        app.config.stripe.as_ref().unwrap(),
        std::time::Duration::from_millis(500),
        std::time::Duration::from_millis(300),
    ));
    let order = order(&app, 1, "cus_h", "pm_h").await;
    let sid = bridged_call(&app, &order, 90).await;
    let charge = settled_charge(callgate::settlement::settle(&app, &sid).await.unwrap());
    let started = std::time::Instant::now();
    let report = billing::run_once(&app, "worker-a").await.unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    assert_eq!(
        report.charged,
        vec![(charge.id.clone(), ChargeState::Pending)]
    );
    let queued = app.store.charge(&charge.id).await.unwrap().unwrap();
    assert_eq!(queued.state, ChargeState::Pending);
    assert!(queued.next_attempt_at > T0, "backing off");
    assert!(queued.last_error.is_some(), "{queued:?}");
    assert_eq!(fake.requests(), 0, "nothing reached Stripe");

    proxy.restore();
    clock.advance(queued.next_attempt_at - T0);
    let report = billing::run_once(&app, "worker-a").await.unwrap();
    assert_eq!(
        report.charged,
        vec![(charge.id.clone(), ChargeState::Succeeded)]
    );
    assert_eq!(fake.intents(), 1);
    assert!(
        fake.keys()
            .iter()
            .all(|k| k.as_deref()
                == Some(callgate::billing::retry::idempotency_key(&charge).as_str()))
    );
}

on_every_backend!(
    a_hanging_stripe_leaves_the_charge_queued_then_charges_it_once,
    allowance_is_spent_once_across_calls,
    racing_settlements_charge_once,
    a_crashed_bridge_is_settled_from_its_metering_once_its_hold_lapses,
    server_errors_are_retried_with_the_same_key,
    a_worker_killed_after_stripe_answered_charges_once,
    two_workers_race_and_each_charge_is_made_once,
    authentication_required_and_declines_are_recorded_not_retried,
    consent_without_a_saved_card_creates_no_charge,
    no_worker_charges_a_revoked_order,
);

/// The database drops out mid-pass: the pass fails cleanly, the charge stays queued, and
/// the next pass charges it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_unavailable_for_a_moment() {
    let Some((db, proxy)) = crate::support::postgres_behind_proxy().await else {
        return;
    };
    let fake = FakeStripe::start(&[]).await;
    let app = crate::support::app::build(
        db.store.clone(),
        &vars(&stripe_env(&fake.base)),
        Arc::new(ManualClock::new(T0)),
    );
    let order = order(&app, 1, "cus_1", "pm_1").await;
    let charge = settled_charge(
        callgate::settlement::settle(&app, &bridged_call(&app, &order, 90).await)
            .await
            .unwrap(),
    );
    proxy.cut();
    assert!(
        billing::run_once(&app, "w").await.is_err(),
        "an unreachable database is an error, not a panic"
    );
    assert_eq!(fake.requests(), 0, "nothing charged without a lease");
    proxy.restore();
    let mut report = None;
    for _ in 0..50 {
        match billing::run_once(&app, "w").await {
            Ok(r) => {
                report = Some(r);
                break;
            }
            Err(_) => tokio::task::yield_now().await,
        }
    }
    let report = report.expect("the database came back");
    assert_eq!(
        report.charged,
        vec![(charge.id.clone(), ChargeState::Succeeded)]
    );
    assert_eq!(fake.intents(), 1);
    db.cleanup().await;
}

// ---- against localstripe -------------------------------------------------------------

async fn localstripe_card(
    stripe: &crate::support::stripe::LocalStripe,
    number: &str,
) -> (String, String) {
    stripe.saved_card(number).await
}

#[tokio::test]
async fn localstripe_charges_the_saved_card_once() {
    let Some(stripe) = crate::support::stripe::start().await else {
        return;
    };
    let db = crate::support::sqlite().await;
    let app = crate::support::app::build(
        db.store.clone(),
        &vars(&stripe_env(&stripe.base)),
        Arc::new(callgate::domain::clock::SystemClock),
    );
    let (cus, pm) = localstripe_card(&stripe, "4242424242424242").await;
    let order = order(&app, 1, &cus, &pm).await;
    let charge = settled_charge(
        callgate::settlement::settle(&app, &bridged_call(&app, &order, 125).await)
            .await
            .unwrap(),
    );
    assert_eq!(charge.amount, Cents(200), "65 s over: 2 started minutes");
    let report = billing::run_once(&app, "w").await.unwrap();
    assert_eq!(
        report.charged,
        vec![(charge.id.clone(), ChargeState::Succeeded)]
    );
    let stored = app.store.charge(&charge.id).await.unwrap().unwrap();
    let pi = stripe
        .get(&format!(
            "/v1/payment_intents/{}",
            stored.stripe_payment_intent.unwrap()
        ))
        .await;
    assert_eq!(pi["amount"], 200);
    assert_eq!(pi["customer"], cus.as_str());
    assert_eq!(pi["status"], "succeeded");
    assert_eq!(pi["metadata"]["charge_id"], charge.id.as_str());
    assert!(
        billing::run_once(&app, "w")
            .await
            .unwrap()
            .charged
            .is_empty(),
        "no second attempt"
    );
}

#[tokio::test]
async fn localstripe_declined_card_suspends_overage_for_the_next_call() {
    let Some(stripe) = crate::support::stripe::start().await else {
        return;
    };
    let db = crate::support::sqlite().await;
    let env = stripe_env(&stripe.base);
    let app = crate::support::app::spawn(db.store.clone(), &vars(&env)).await;
    let (cus, pm) = localstripe_card(&stripe, "4000000000000341").await;
    let order = order(&app.app, 1, &cus, &pm).await;
    let charge = settled_charge(
        callgate::settlement::settle(&app.app, &bridged_call(&app.app, &order, 70).await)
            .await
            .unwrap(),
    );
    billing::run_once(&app.app, "w").await.unwrap();
    let stored = app.app.store.charge(&charge.id).await.unwrap().unwrap();
    assert_eq!(stored.state, ChargeState::Declined);
    assert_eq!(stored.attempts, 1);
    assert!(
        billing::run_once(&app.app, "w")
            .await
            .unwrap()
            .charged
            .is_empty(),
        "no retry loop"
    );
    // The next call with this code hears why it cannot go on.
    let code = callgate::orders::code_of(
        &app.app,
        &app.app.store.order(&order.id).await.unwrap().unwrap(),
    )
    .unwrap();
    let mut caller = callgate_peers::twilio::Caller::new(
        crate::support::app::AUTH_TOKEN,
        crate::support::app::ACCOUNT_SID,
        "+15557000001",
        crate::support::app::PHONE,
    )
    .types([Some(
        Box::leak(code.expose().to_string().into_boxed_str()) as &str
    )]);
    assert_eq!(
        caller.dial(&app.url("/voice/incoming")).await,
        callgate_peers::twilio::Ending::HungUp
    );
    assert!(
        caller.transcript().contains("extra minutes are paused"),
        "{}",
        caller.transcript()
    );
}

#[tokio::test]
async fn localstripe_authentication_is_completed_on_the_pay_page() {
    let Some(stripe) = crate::support::stripe::start().await else {
        return;
    };
    let db = crate::support::sqlite().await;
    let mut env = stripe_env(&stripe.base);
    env.push((
        "STRIPE_JS_URL",
        format!("{}/js.stripe.com/v3/", stripe.base),
    ));
    let app = crate::support::app::spawn(db.store.clone(), &vars(&env)).await;
    stripe.register_webhook(&app.url("/webhooks/stripe")).await;
    let (cus, pm) = localstripe_card(&stripe, "4000002760003184").await;
    let order = order(&app.app, 1, &cus, &pm).await;
    let charge = settled_charge(
        callgate::settlement::settle(&app.app, &bridged_call(&app.app, &order, 70).await)
            .await
            .unwrap(),
    );
    billing::run_once(&app.app, "w").await.unwrap();
    let held = app.app.store.charge(&charge.id).await.unwrap().unwrap();
    assert_eq!(
        held.state,
        ChargeState::RequiresAction,
        "localstripe answers requires_action where Stripe sends 402"
    );
    let token = held.pay_token.clone().unwrap();
    assert!(app
        .app
        .store
        .order(&order.id)
        .await
        .unwrap()
        .unwrap()
        .overage_blocked
        .is_some());
    let details: Value = reqwest::get(app.url(&format!("/api/pay/{token}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        details,
        json!({ "status": "due", "amountDisplay": "$1.00", "clientSecret": details["clientSecret"] })
    );
    assert_eq!(
        reqwest::get(app.url(&format!("/api/pay/{}", "0".repeat(48))))
            .await
            .unwrap()
            .status(),
        404
    );

    let Some(browser) = crate::support::browser::start().await else {
        return;
    };
    browser
        .client
        .goto(&app.url(&format!("/pay/{token}")))
        .await
        .unwrap();
    browser.wait_for("main[data-state='due']").await;
    assert_eq!(browser.text("#amount").await, "$1.00");
    browser.screenshot("pay-due").await;
    browser
        .client
        .find(fantoccini::Locator::Css("#confirm"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // localstripe's Stripe.js asks whether to pass 3-D Secure.
    let ok = browser.wait_for("button").await;
    let buttons = browser
        .client
        .find_all(fantoccini::Locator::Css("button"))
        .await
        .unwrap();
    let mut clicked = false;
    for b in buttons {
        if b.text()
            .await
            .unwrap_or_default()
            .contains("Complete authentication")
        {
            b.click().await.unwrap();
            clicked = true;
            break;
        }
    }
    drop(ok);
    assert!(clicked, "the 3-D Secure prompt appeared");
    browser.wait_for("main[data-state='paid']").await;
    browser.screenshot("pay-paid").await;
    browser.close().await;
    let paid = app.app.store.charge(&charge.id).await.unwrap().unwrap();
    assert_eq!(paid.state, ChargeState::Succeeded);
    assert_eq!(
        app.app
            .store
            .order(&order.id)
            .await
            .unwrap()
            .unwrap()
            .overage_blocked,
        None
    );
}

/// The whole path: a consented purchase on localstripe, a call through the bridge that runs
/// past the allowance, Twilio's status callback, the worker: one overage PaymentIntent, for
/// the right amount, on the buyer's saved card.
#[tokio::test]
async fn consented_purchase_then_a_long_call_is_charged_once() {
    use callgate_peers::twilio::{Caller, Ending, MediaStream, Received};
    let Some(stripe) = crate::support::stripe::start().await else {
        return;
    };
    let agent =
        callgate_peers::agent::FakeAgent::start(callgate_peers::agent::Behaviour::default()).await;
    let db = crate::support::sqlite().await;
    let mut env = stripe_env(&stripe.base);
    env.push(("ELEVENLABS_API_BASE", agent.base.clone()));
    env.push(("PLAN_MINUTES", "1".into()));
    env.push(("MAX_CALL_MINUTES", "2".into()));
    let app = crate::support::app::spawn_with(db.store.clone(), &vars(&env), |app| {
        app.bridge.tick = std::time::Duration::from_millis(10);
    })
    .await;
    stripe.register_webhook(&app.url("/webhooks/stripe")).await;

    let (pi, _) = app.start_purchase(true).await;
    assert_eq!(stripe.pay(&pi, "4242424242424242").await.0, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let order = loop {
        // The webhook arrives about a second after the payment.
        let o = app
            .app
            .store
            .order_by_payment_intent(&pi)
            .await
            .unwrap()
            .unwrap();
        if o.code_sealed.is_some() {
            break o;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the payment webhook never came"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let code = callgate::orders::code_of(&app.app, &order).unwrap();

    let mut caller = Caller::new(
        crate::support::app::AUTH_TOKEN,
        crate::support::app::ACCOUNT_SID,
        "+15557000009",
        crate::support::app::PHONE,
    )
    .types([Some(
        Box::leak(code.expose().to_string().into_boxed_str()) as &str
    )]);
    let Ending::Stream {
        url, parameters, ..
    } = caller.dial(&app.url("/voice/incoming")).await
    else {
        panic!("not connected")
    };
    let mut stream = MediaStream::open(&url, &caller.account(), &caller.call_sid, &parameters)
        .await
        .unwrap();
    let got = stream
        .talk_until_closed(&[0x55; 160], std::time::Duration::from_secs(30))
        .await;
    assert_eq!(got.last(), Some(&Received::Closed));
    assert_eq!(
        caller
            .status_callback(&app.url("/voice/status"), "completed", Some("130"))
            .await,
        200
    );
    assert_eq!(
        caller
            .status_callback(&app.url("/voice/status"), "completed", Some("130"))
            .await,
        200,
        "a duplicate callback"
    );

    let report = billing::run_once(&app.app, "w").await.unwrap();
    assert_eq!(report.charged.len(), 1, "{report:?}");
    assert_eq!(report.charged[0].1, ChargeState::Succeeded);
    assert!(billing::run_once(&app.app, "w")
        .await
        .unwrap()
        .charged
        .is_empty());

    let customer = app
        .app
        .store
        .order(&order.id)
        .await
        .unwrap()
        .unwrap()
        .stripe_customer
        .unwrap();
    let all = stripe.get("/v1/payment_intents").await;
    let mine: Vec<&Value> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["customer"] == customer.as_str())
        .collect();
    assert_eq!(mine.len(), 2, "the purchase and one overage charge");
    let overage = mine
        .iter()
        .find(|p| p["metadata"]["callgate_kind"] == "overage")
        .expect("the overage charge");
    assert_eq!(
        overage["amount"], 100,
        "120 s metered, 60 s included: one started minute at $1.00"
    );
    assert_eq!(overage["status"], "succeeded");
    assert_eq!(
        overage["payment_method"],
        order.stripe_payment_method.as_deref().unwrap()
    );
    let used = used(&app.app, &order.id).await;
    assert_eq!(used, Seconds(120));
}
