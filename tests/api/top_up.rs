//! Top-ups on the web (issue 26): a code's owner adds minutes with the Payment Element
//! (localstripe), the signed webhook credits them once however often it comes, and a refund
//! or dispute of the top-up takes back exactly its minutes, never the code.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::support::app::{spawn, TestApp};
use crate::support::stripe::{LocalStripe, WEBHOOK_SECRET};
use callgate::billing::reconcile::Mismatch;
use callgate::store::{DynStore, EntryKind, Order, OrderStatus};

const PACKS: &str = "Ten more=10@8.00;Thirty more=30@20.00";
const CARD: &str = "4242424242424242";

async fn shop(store: DynStore) -> Option<(TestApp, LocalStripe)> {
    let stripe = crate::support::stripe::start().await?;
    let mut env = stripe.env();
    env.push(("TOP_UPS", PACKS.to_string()));
    let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = spawn(store, &vars).await;
    stripe.register_webhook(&app.url("/webhooks/stripe")).await;
    Some((app, stripe))
}

/// A bought plan (5 minutes, $10.00), paid and fulfilled by its webhook.
async fn bought(app: &TestApp, stripe: &LocalStripe) -> Order {
    let (status, created) = app.checkout("/api/create-payment-intent", json!({})).await;
    assert_eq!(status, 200, "{created}");
    let pi = created["paymentIntent"].as_str().unwrap();
    assert_eq!(stripe.pay(pi, CARD).await.0, 200);
    app.paid_order(pi).await
}

fn token(app: &TestApp, order: &Order) -> String {
    app.app.vault.account_token(&order.id)
}

async fn status(app: &TestApp, order: &Order, pi: &str) -> Value {
    let resp = reqwest::Client::new()
        .get(app.url("/api/top-up/status"))
        .query(&[
            ("order", order.id.as_str()),
            ("token", &token(app, order)),
            ("payment_intent", pi),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// Waits until the page's status call says the top-up is credited (localstripe's webhook).
async fn credited(app: &TestApp, order: &Order, pi: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = status(app, order, pi).await;
        if body["credited"] == true {
            return body;
        }
        assert!(Instant::now() < deadline, "the top-up's webhook never came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn reload(app: &TestApp, order: &Order) -> Order {
    app.app.store.order(&order.id).await.unwrap().unwrap()
}

async fn ledger_is_clean(app: &TestApp) {
    let report = callgate::billing::reconcile::check(&app.app).await.unwrap();
    let left: Vec<&Mismatch> = report.mismatches.iter().collect();
    assert!(left.is_empty(), "ledger check: {left:?}");
    assert!(report.entries > 0);
}

async fn a_top_up_adds_its_minutes_once_and_its_refund_takes_back_only_them(store: DynStore) {
    let Some((app, stripe)) = shop(store).await else {
        return;
    };
    let order = bought(&app, &stripe).await;
    assert_eq!(order.seconds_included.0, 300);

    // Bad input: clear errors, nothing started at Stripe, nothing stored.
    let intents_before = stripe.get("/v1/payment_intents?limit=100").await["data"]
        .as_array()
        .unwrap()
        .len();
    let good = token(&app, &order);
    let mut flipped = good.clone();
    let last = flipped.pop().unwrap();
    flipped.push(if last == '0' { '1' } else { '0' });
    for (body, want) in [
        (
            json!({ "order": order.id, "token": flipped, "pack": "ten-more" }),
            404,
        ),
        (
            json!({ "order": "ord_nobody", "token": good, "pack": "ten-more" }),
            404,
        ),
        (
            json!({ "order": order.id, "token": good, "pack": "free-minutes" }),
            400,
        ),
        (json!({ "order": order.id, "token": good }), 400),
        (json!({ "order": order.id, "token": good, "pack": 30 }), 400),
        (json!("ten-more"), 400),
    ] {
        let (status, answer) = app.checkout("/api/top-up", body.clone()).await;
        assert_eq!(status, want, "{body} -> {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    let intents_after = stripe.get("/v1/payment_intents?limit=100").await["data"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        intents_before, intents_after,
        "a refused top-up asks Stripe nothing"
    );

    // The pack by its id: a price or minutes from the browser are not read.
    let (code, started) = app
        .checkout(
            "/api/top-up",
            json!({ "order": order.id, "token": good, "pack": "thirty-more", "amount": 1, "minutes": 9999 }),
        )
        .await;
    assert_eq!(code, 200, "{started}");
    assert_eq!(started["amountDisplay"], "$20.00");
    let pi = started["paymentIntent"].as_str().unwrap().to_string();
    let remote = stripe.get(&format!("/v1/payment_intents/{pi}")).await;
    assert_eq!(remote["amount"], 2000);
    assert_eq!(remote["metadata"]["minutes"], "30");
    assert_eq!(remote["metadata"]["order_id"], order.id.as_str());
    assert_eq!(
        status(&app, &order, &pi).await["credited"],
        false,
        "not before it is paid"
    );
    assert_eq!(
        reload(&app, &order).await.seconds_included.0,
        300,
        "nothing until paid"
    );

    assert_eq!(stripe.pay(&pi, CARD).await.0, 200);
    let body = credited(&app, &order, &pi).await;
    assert_eq!(body["minutesLeft"], 35);
    assert_eq!(reload(&app, &order).await.seconds_included.0, 300 + 1800);

    // The same webhook again, and once more under another event id: credited once.
    let paid = stripe.get(&format!("/v1/payment_intents/{pi}")).await;
    for _ in 0..2 {
        let id = callgate::store::new_id("evt");
        let status = app
            .stripe_event(
                WEBHOOK_SECRET,
                &id,
                "payment_intent.succeeded",
                paid.clone(),
            )
            .await;
        assert_eq!(status, 200);
    }
    let topped = reload(&app, &order).await;
    assert_eq!(topped.seconds_included.0, 2100);
    assert_eq!(topped.status, OrderStatus::Paid);
    ledger_is_clean(&app).await;

    // The account page lists the top-up and links the top-up page.
    let page = reqwest::get(app.url(&callgate::orders::account::path(&app.app, &order.id)))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Top-up: 30 minutes"), "{page}");
    assert!(page.contains(&callgate::orders::account::top_up_path(&app.app, &order.id)));

    // Its refund takes back its minutes, once (a dispute after it changes nothing), and
    // leaves the code usable.
    for kind in [
        "charge.refunded",
        "charge.dispute.created",
        "charge.refunded",
    ] {
        let object =
            json!({ "id": "ch_top", "object": "charge", "refunded": true, "payment_intent": pi });
        let status = app
            .stripe_event(
                WEBHOOK_SECRET,
                &callgate::store::new_id("evt"),
                kind,
                object,
            )
            .await;
        assert_eq!(status, 200);
    }
    let after = reload(&app, &order).await;
    assert_eq!(
        (after.status, after.seconds_included.0),
        (OrderStatus::Paid, 300)
    );
    let entries = app.app.store.entries_for_order(&order.id).await.unwrap();
    let kinds: Vec<EntryKind> = entries.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [EntryKind::Purchase, EntryKind::TopUp, EntryKind::Refund]
    );
    assert_eq!(entries.iter().map(|e| e.amount.0).sum::<i64>(), 1000);
    ledger_is_clean(&app).await;

    // The purchase's refund revokes the code as before; a revoked code takes no top-up.
    let purchase_pi = order.stripe_payment_intent.clone().unwrap();
    let object = json!({ "id": "ch_buy", "object": "charge", "refunded": true, "payment_intent": purchase_pi });
    app.stripe_event(WEBHOOK_SECRET, "evt_buy_refund", "charge.refunded", object)
        .await;
    let revoked = reload(&app, &order).await;
    assert_eq!(
        (revoked.status, revoked.seconds_included.0),
        (OrderStatus::Revoked, 0)
    );
    let (code, answer) = app
        .checkout(
            "/api/top-up",
            json!({ "order": order.id, "token": good, "pack": "ten-more" }),
        )
        .await;
    assert_eq!(
        (code, answer["error"].as_str()),
        (400, Some("this code is no longer valid"))
    );
    ledger_is_clean(&app).await;
}

/// A top-up's refund that overtakes its own webhook: the top-up is credited from Stripe's
/// record and reversed at once; the late webhook then changes nothing. An exhausted code
/// can be topped up.
async fn a_refund_before_its_webhook_still_reverses_exactly_once(store: DynStore) {
    let Some((app, stripe)) = shop(store).await else {
        return;
    };
    let order = bought(&app, &stripe).await;
    callgate::orders::ledger::prior_use(&app.app, &order, callgate::store::Seconds(300))
        .await
        .unwrap();
    assert_eq!(reload(&app, &order).await.seconds_left().0, 0, "exhausted");
    let (code, started) = app
        .checkout(
            "/api/top-up",
            json!({ "order": order.id, "token": token(&app, &order), "pack": "ten-more" }),
        )
        .await;
    assert_eq!(code, 200, "{started}");
    let pi = started["paymentIntent"].as_str().unwrap().to_string();
    // Paid at Stripe, its webhook not delivered: the endpoint is unregistered for a moment.
    stripe.register_webhook("http://127.0.0.1:9/nowhere").await;
    assert_eq!(stripe.pay(&pi, CARD).await.0, 200);
    let object =
        json!({ "id": "ch_early", "object": "charge", "refunded": true, "payment_intent": pi });
    assert_eq!(
        app.stripe_event(
            WEBHOOK_SECRET,
            "evt_early_refund",
            "charge.refunded",
            object
        )
        .await,
        200
    );
    let paid = stripe.get(&format!("/v1/payment_intents/{pi}")).await;
    assert_eq!(
        app.stripe_event(
            WEBHOOK_SECRET,
            "evt_late_paid",
            "payment_intent.succeeded",
            paid
        )
        .await,
        200
    );
    let after = reload(&app, &order).await;
    assert_eq!(
        after.seconds_included.0, 300,
        "credited and taken back, once each"
    );
    let kinds: Vec<EntryKind> = app
        .app
        .store
        .entries_for_order(&order.id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            EntryKind::Purchase,
            EntryKind::PriorUse,
            EntryKind::TopUp,
            EntryKind::Refund
        ]
    );
    ledger_is_clean(&app).await;
}

/// The account by its code typed on the web: spaces and dashes allowed; a wrong code, an
/// unknown one and garbage get one 404; wrong codes count against the phone menu's limits,
/// so after the client's limit even the right code is refused (429) for the hour.
async fn a_typed_code_opens_its_account_and_guessing_is_throttled(store: DynStore) {
    let app = spawn(store, &[("CODE_FAILURES_PER_CALLER_PER_HOUR", "3")]).await;
    let grant = callgate::orders::OperatorGrant {
        minutes: 5,
        overage: false,
        customer: None,
        payment_method: None,
    };
    let (order, code) = callgate::orders::issue_operator_code(&app.app, &grant)
        .await
        .unwrap();
    let find = |typed: String| {
        let app = &app;
        async move {
            app.checkout("/api/account/find", json!({ "code": typed }))
                .await
        }
    };
    let (status, found) = find(code.grouped()).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(
        found["account"],
        callgate::orders::account::path(&app.app, &order.id)
    );
    assert_eq!(
        found["topUp"],
        callgate::orders::account::top_up_path(&app.app, &order.id)
    );
    let mut wrong = code.expose().to_string();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });
    for typed in [
        wrong.clone(),
        "not a code".to_string(),
        "000000000000".to_string(),
    ] {
        let (status, answer) = find(typed.clone()).await;
        assert_eq!(status, 404, "{typed}: {answer}");
        assert!(!answer.to_string().contains(&order.id), "nothing leaks");
    }
    let (status, answer) = find(code.expose().to_string()).await;
    assert_eq!(
        status, 429,
        "over the limit even the right code waits: {answer}"
    );
    assert_eq!(app.checkout("/api/account/find", json!({})).await.0, 400);
}

on_every_backend!(
    a_top_up_adds_its_minutes_once_and_its_refund_takes_back_only_them,
    a_refund_before_its_webhook_still_reverses_exactly_once,
    a_typed_code_opens_its_account_and_guessing_is_throttled,
);
