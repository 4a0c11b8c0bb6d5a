//! The Stripe webhook: signed events fulfil, fail, revoke; anything unsigned, stale,
//! malformed or oversized is refused and stores nothing. On every backend.

use crate::support::app::{spawn, TestApp};
use callgate::domain::money::{Cents, Seconds};
use callgate::store::{new_id, DynStore, NewOrder, OrderSource, OrderStatus};
use callgate::stripe::signature::sign;
use serde_json::{json, Value};

const SECRET: &str = "whsec_test_endpoint_secret";

async fn app(store: DynStore) -> TestApp {
    spawn(
        store,
        &[
            ("STRIPE_SECRET_KEY", "sk_test_callgate"),
            ("STRIPE_PUBLISHABLE_KEY", "pk_test_callgate"),
            ("STRIPE_WEBHOOK_SECRET", SECRET),
            // These tests put charges in place by hand; no worker should take them meanwhile.
            ("BILLING_WORKER", "off"),
        ],
    )
    .await
}

fn event(kind: &str, object: Value) -> Value {
    json!({ "id": new_id("evt"), "object": "event", "type": kind, "data": { "object": object } })
}

fn pi(id: &str, metadata: Value) -> Value {
    json!({ "id": id, "object": "payment_intent", "amount": 1000, "currency": "usd",
            "customer": "cus_123", "payment_method": "pm_123", "status": "succeeded", "metadata": metadata })
}

async fn deliver_raw(app: &TestApp, body: &[u8], header: Option<String>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(app.url("/webhooks/stripe"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(h) = header {
        req = req.header("Stripe-Signature", h);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn deliver(app: &TestApp, event: &Value) -> (u16, Value) {
    let body = serde_json::to_vec(event).unwrap();
    let t = app.app.clock.now();
    deliver_raw(
        app,
        &body,
        Some(format!("t={t},v1={}", sign(SECRET, t, &body))),
    )
    .await
}

async fn pending(app: &TestApp, pi: &str) -> callgate::store::Order {
    app.app
        .store
        .insert_order(&NewOrder {
            id: new_id("ord"),
            source: OrderSource::Stripe,
            plan: "Talk time".into(),
            amount: Cents(1000),
            currency: Default::default(),
            seconds_included: Seconds(300),
            overage_consent: false,
            overage_price: Cents(100),
            stripe_payment_intent: Some(pi.into()),
            stripe_customer: None,
            stripe_payment_method: None,
            client_secret_hash: None,
            code: None,
            now: app.app.clock.now(),
        })
        .await
        .unwrap()
}

async fn status_of(app: &TestApp, order_id: &str) -> OrderStatus {
    app.app.store.order(order_id).await.unwrap().unwrap().status
}

async fn succeeded_payment_issues_one_code(store: DynStore) {
    let app = app(store).await;
    let order = pending(&app, "pi_paid").await;
    let ev = event("payment_intent.succeeded", pi("pi_paid", json!({})));
    assert_eq!(deliver(&app, &ev).await.0, 200);
    let paid = app.app.store.order(&order.id).await.unwrap().unwrap();
    assert_eq!(paid.status, OrderStatus::Paid);
    assert_eq!(paid.stripe_payment_method.as_deref(), Some("pm_123"));
    assert_eq!(paid.stripe_customer.as_deref(), Some("cus_123"));
    let code = callgate::orders::code_of(&app.app, &paid).expect("a code is sealed on the order");
    assert_eq!(code.expose().len(), 12);

    // The same event again: acknowledged as a duplicate. Another event for the same payment:
    // handled, but the code does not change.
    let (status, body) = deliver(&app, &ev).await;
    assert_eq!((status, body["duplicate"].as_bool()), (200, Some(true)));
    let other = event("payment_intent.succeeded", pi("pi_paid", json!({})));
    assert_eq!(deliver(&app, &other).await.0, 200);
    let again = app.app.store.order(&order.id).await.unwrap().unwrap();
    assert_eq!(again.code_hash, paid.code_hash);
    assert_eq!(app.app.store.list_orders(10).await.unwrap().len(), 1);
}

async fn racing_deliveries_issue_one_code(store: DynStore) {
    let app = app(store).await;
    pending(&app, "pi_race").await;
    let events: Vec<Value> = (0..8)
        .map(|_| event("payment_intent.succeeded", pi("pi_race", json!({}))))
        .collect();
    let results = futures_join_all(&app, &events).await;
    assert!(results.iter().all(|s| *s == 200), "{results:?}");
    let orders = app.app.store.list_orders(10).await.unwrap();
    assert_eq!(orders.len(), 1);
    assert!(orders[0].code_hash.is_some());
}

async fn futures_join_all(app: &TestApp, events: &[Value]) -> Vec<u16> {
    let mut set = tokio::task::JoinSet::new();
    for ev in events {
        let body = serde_json::to_vec(ev).unwrap();
        let t = app.app.clock.now();
        let header = format!("t={t},v1={}", sign(SECRET, t, &body));
        let url = app.url("/webhooks/stripe");
        set.spawn(async move {
            reqwest::Client::new()
                .post(url)
                .header("Stripe-Signature", header)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    }
    set.join_all().await
}

/// Point 5: a PaymentIntent another product created on the same Stripe account (no order of
/// callgate's, any metadata), or one for another amount or currency than its order asked,
/// buys nothing: acknowledged, ignored, counted in /metrics.
async fn payments_callgate_did_not_create_buy_nothing(store: DynStore) {
    let app = app(store).await;
    let metric = |body: &str, reason: &str| -> u64 {
        let line = format!("callgate_stripe_payments_ignored_total{{kind=\"{reason}\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    let scrape = || async {
        reqwest::get(app.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = scrape().await;
    let foreign = json!({ "id": "pi_foreign", "object": "payment_intent", "amount": 50,
                          "currency": "eur", "status": "succeeded", "metadata": {} });
    let ev = event("payment_intent.succeeded", foreign);
    assert_eq!(deliver(&app, &ev).await.0, 200);
    let meta = pi(
        "pi_meta",
        json!({ "plan": "Long talk", "minutes": "10", "overage_consent": "true" }),
    );
    assert_eq!(
        deliver(&app, &event("payment_intent.succeeded", meta))
            .await
            .0,
        200
    );
    assert!(
        app.app.store.list_orders(10).await.unwrap().is_empty(),
        "no order, no code"
    );
    // Our own pending order, paid with another amount, then another currency.
    let order = pending(&app, "pi_ours").await;
    for (amount, currency) in [(50, "usd"), (1000, "eur")] {
        let mut paid = pi("pi_ours", json!({}));
        paid["amount"] = json!(amount);
        paid["currency"] = json!(currency);
        let ev = event("payment_intent.succeeded", paid);
        assert_eq!(deliver(&app, &ev).await.0, 200);
        assert_eq!(status_of(&app, &order.id).await, OrderStatus::Pending);
    }
    let after = scrape().await;
    // At least: the counters are the process's, and other backends' runs of this test share it.
    assert!(metric(&after, "foreign_payment") >= metric(&before, "foreign_payment") + 2);
    assert!(metric(&after, "amount_mismatch") >= metric(&before, "amount_mismatch") + 2);
    // The right amount and currency still pay it.
    let ev = event("payment_intent.succeeded", pi("pi_ours", json!({})));
    assert_eq!(deliver(&app, &ev).await.0, 200);
    assert_eq!(status_of(&app, &order.id).await, OrderStatus::Paid);
}

async fn failed_refunded_and_disputed_payments(store: DynStore) {
    let app = app(store).await;
    let failing = pending(&app, "pi_fail").await;
    assert_eq!(
        deliver(
            &app,
            &event("payment_intent.payment_failed", pi("pi_fail", json!({})))
        )
        .await
        .0,
        200
    );
    assert_eq!(status_of(&app, &failing.id).await, OrderStatus::Failed);

    for (pi_id, kind, object, revoked) in [
        (
            "pi_partial",
            "charge.refunded",
            json!({ "id": "ch_1", "payment_intent": "pi_partial", "refunded": false, "amount_refunded": 100 }),
            false,
        ),
        (
            "pi_refund",
            "charge.refunded",
            json!({ "id": "ch_2", "payment_intent": "pi_refund", "refunded": true, "amount_refunded": 1000 }),
            true,
        ),
        (
            "pi_dispute",
            "charge.dispute.created",
            json!({ "id": "dp_1", "charge": "ch_3", "payment_intent": "pi_dispute" }),
            true,
        ),
    ] {
        let order = pending(&app, pi_id).await;
        assert_eq!(
            deliver(
                &app,
                &event("payment_intent.succeeded", pi(pi_id, json!({})))
            )
            .await
            .0,
            200
        );
        assert_eq!(deliver(&app, &event(kind, object)).await.0, 200);
        let status = app
            .app
            .store
            .order(&order.id)
            .await
            .unwrap()
            .unwrap()
            .status;
        assert_eq!(
            status == OrderStatus::Revoked,
            revoked,
            "{kind} {pi_id}: {status}"
        );
    }
}

async fn unknown_events_are_acknowledged(store: DynStore) {
    let app = app(store).await;
    let ev = event("customer.created", json!({ "id": "cus_9" }));
    assert_eq!(deliver(&app, &ev).await.0, 200);
    assert!(app
        .app
        .store
        .event_seen(ev["id"].as_str().unwrap())
        .await
        .unwrap());
    assert!(app.app.store.list_orders(10).await.unwrap().is_empty());
}

async fn bad_deliveries_are_refused_and_store_nothing(store: DynStore) {
    let app = app(store).await;
    let order = pending(&app, "pi_bad").await;
    let ev = event("payment_intent.succeeded", pi("pi_bad", json!({})));
    let body = serde_json::to_vec(&ev).unwrap();
    let now = app.app.clock.now();
    let good = sign(SECRET, now, &body);
    let tampered = {
        let mut b = body.clone();
        let at = b.len() - 3;
        b[at] = b'X';
        b
    };
    let cases: Vec<(Vec<u8>, Option<String>, u16)> = vec![
        (body.clone(), None, 400),
        (
            body.clone(),
            Some(format!("t={now},v1={}", "0".repeat(64))),
            400,
        ),
        (
            body.clone(),
            Some(format!("t={now},v1={}", sign("whsec_wrong", now, &body))),
            400,
        ),
        (tampered, Some(format!("t={now},v1={good}")), 400),
        (
            body.clone(),
            Some(format!(
                "t={},v1={}",
                now - 600,
                sign(SECRET, now - 600, &body)
            )),
            400,
        ),
        (
            body.clone(),
            Some(format!(
                "t={},v1={}",
                now + 600,
                sign(SECRET, now + 600, &body)
            )),
            400,
        ),
        (body.clone(), Some("garbage".into()), 400),
        (
            b"{not json".to_vec(),
            Some(format!("t={now},v1={}", sign(SECRET, now, b"{not json"))),
            400,
        ),
        (
            b"{\"id\":1}".to_vec(),
            Some(format!("t={now},v1={}", sign(SECRET, now, b"{\"id\":1}"))),
            400,
        ),
    ];
    for (i, (body, header, expected)) in cases.into_iter().enumerate() {
        let (status, _) = deliver_raw(&app, &body, header).await;
        assert_eq!(status, expected, "case {i}");
    }
    let huge = vec![b' '; 70 * 1024];
    let (status, _) = deliver_raw(
        &app,
        &huge,
        Some(format!("t={now},v1={}", sign(SECRET, now, &huge))),
    )
    .await;
    assert_eq!(status, 413, "bodies over the limit");

    assert!(
        !app.app
            .store
            .event_seen(ev["id"].as_str().unwrap())
            .await
            .unwrap(),
        "nothing recorded"
    );
    assert_eq!(status_of(&app, &order.id).await, OrderStatus::Pending);
    // The genuine delivery still works afterwards.
    assert_eq!(deliver(&app, &ev).await.0, 200);
    assert_eq!(status_of(&app, &order.id).await, OrderStatus::Paid);
}

/// An overage PaymentIntent succeeding (after the customer authenticated) pays its charge;
/// it must never be mistaken for a purchase.
/// A paid order (purchase `pi_id`) with a pending $1.00 overage charge on one call.
async fn paid_with_charge(
    app: &TestApp,
    pi_id: &str,
    call_sid: &str,
    charge_id: &str,
) -> callgate::store::Order {
    let order = pending(app, pi_id).await;
    let paid = event("payment_intent.succeeded", pi(pi_id, json!({})));
    assert_eq!(deliver(app, &paid).await.0, 200);
    let now = app.app.clock.now();
    let s = &app.app.store;
    let call = callgate::store::NewCall {
        call_sid: call_sid.into(),
        from_number: "+1".into(),
        to_number: "+2".into(),
        now,
    };
    s.upsert_call(&call).await.unwrap();
    let charge = callgate::store::NewCharge {
        id: charge_id.into(),
        call_sid: call_sid.into(),
        order_id: order.id.clone(),
        amount: Cents(100),
        currency: Default::default(),
        seconds_billed: Seconds(30),
        now,
    };
    s.insert_charge(&charge).await.unwrap();
    order
}

async fn overage_intents_pay_their_charge_not_a_new_order(store: DynStore) {
    let app = app(store).await;
    let order = paid_with_charge(&app, "pi_purchase", "CA_ov", "chg_1").await;
    let now = app.app.clock.now();
    let s = &app.app.store;
    let charge = s.charge("chg_1").await.unwrap().unwrap();
    s.set_overage_blocked(&order.id, Some(callgate::store::OverageBlock::Unpaid), now)
        .await
        .unwrap();
    let overage = pi(
        "pi_overage",
        json!({ "callgate_kind": "overage", "charge_id": charge.id }),
    );
    assert_eq!(
        deliver(&app, &event("payment_intent.succeeded", overage))
            .await
            .0,
        200
    );
    let paid = s.charge(&charge.id).await.unwrap().unwrap();
    assert_eq!(paid.state, callgate::store::ChargeState::Succeeded);
    assert_eq!(paid.stripe_payment_intent.as_deref(), Some("pi_overage"));
    assert_eq!(
        s.order(&order.id).await.unwrap().unwrap().overage_blocked,
        None
    );
    assert_eq!(
        s.list_orders(10).await.unwrap().len(),
        1,
        "no order for an overage payment"
    );
}

/// A refund or dispute of the purchase also cancels overage not yet paid.
async fn refund_cancels_open_overage(store: DynStore) {
    let app = app(store).await;
    let order = paid_with_charge(&app, "pi_ref", "CA_r", "chg_r").await;
    let s = &app.app.store;
    let refund = json!({ "id": "ch_r", "payment_intent": "pi_ref", "refunded": true });
    assert_eq!(
        deliver(&app, &event("charge.refunded", refund)).await.0,
        200
    );
    assert_eq!(status_of(&app, &order.id).await, OrderStatus::Revoked);
    assert_eq!(
        s.charge("chg_r").await.unwrap().unwrap().state,
        callgate::store::ChargeState::Canceled
    );
}

/// Point 4: refunds and disputes of an overage charge are found among the charges. A dispute
/// suspends overage on its order, which the operator sees in /admin.
async fn reversed_overage_charges_are_recorded_and_a_dispute_suspends_overage(store: DynStore) {
    let app = spawn(
        store,
        &[
            ("STRIPE_SECRET_KEY", "sk_test_callgate"),
            ("STRIPE_PUBLISHABLE_KEY", "pk_test_callgate"),
            ("STRIPE_WEBHOOK_SECRET", SECRET),
            ("BILLING_WORKER", "off"),
            ("ADMIN_PASSWORD", "admin-pass-0123"),
        ],
    )
    .await;
    let order = paid_with_charge(&app, "pi_buy", "CA_d", "chg_d").await;
    let s = &app.app.store;
    let now = app.app.clock.now();
    assert!(s.charge_paid("chg_d", "pi_over_d", now).await.unwrap());
    let refund = json!({ "id": "ch_o", "payment_intent": "pi_over_d", "refunded": true });
    assert_eq!(
        deliver(&app, &event("charge.refunded", refund)).await.0,
        200
    );
    assert_eq!(
        s.charge("chg_d").await.unwrap().unwrap().state,
        callgate::store::ChargeState::Refunded
    );
    assert_eq!(
        status_of(&app, &order.id).await,
        OrderStatus::Paid,
        "the purchase stands"
    );
    let dispute = json!({ "id": "dp_o", "charge": "ch_o", "payment_intent": "pi_over_d" });
    assert_eq!(
        deliver(&app, &event("charge.dispute.created", dispute))
            .await
            .0,
        200
    );
    assert_eq!(
        s.charge("chg_d").await.unwrap().unwrap().state,
        callgate::store::ChargeState::Disputed
    );
    let order = s.order(&order.id).await.unwrap().unwrap();
    assert!(order.overage_blocked.is_some(), "overage suspended");
    assert!(callgate::domain::ledger::overage_allowed(&order).is_err());
    let page = reqwest::Client::new()
        .get(app.url("/admin/charges"))
        .basic_auth("admin", Some("admin-pass-0123"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("disputed"), "{page}");
}

on_every_backend!(
    reversed_overage_charges_are_recorded_and_a_dispute_suspends_overage,
    overage_intents_pay_their_charge_not_a_new_order,
    refund_cancels_open_overage,
    succeeded_payment_issues_one_code,
    racing_deliveries_issue_one_code,
    payments_callgate_did_not_create_buy_nothing,
    failed_refunded_and_disputed_payments,
    unknown_events_are_acknowledged,
    bad_deliveries_are_refused_and_store_nothing,
);
