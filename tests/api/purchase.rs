//! The purchase path against localstripe: create the PaymentIntent, pay with a test card,
//! receive localstripe's signed webhook, read the order with the client secret.

use std::time::{Duration, Instant};

use crate::support::app::{spawn, TestApp};
use crate::support::stripe::LocalStripe;
use callgate::store::{DynStore, OrderStatus};
use serde_json::{json, Value};

async fn shop(store: DynStore) -> Option<(TestApp, LocalStripe)> {
    let stripe = crate::support::stripe::start().await?;
    let env = stripe.env();
    let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = spawn(store, &vars).await;
    stripe.register_webhook(&app.url("/webhooks/stripe")).await;
    Some((app, stripe))
}

async fn details(app: &TestApp, path: &str, pi: &str, secret: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(app.url(path))
        .query(&[("payment_intent", pi), ("client_secret", secret)])
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert_eq!(resp.headers()["cache-control"], "no-store");
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Polls the order until it leaves `pending` (the webhook arrives about a second after the
/// payment), up to a deadline.
async fn wait_for_webhook(app: &TestApp, pi: &str, secret: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = details(app, "/api/order-details", pi, secret).await;
        assert_eq!(status, 200, "{body}");
        if body["status"] != "pending" || Instant::now() > deadline {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn purchase_without_overage(store: DynStore) {
    let Some((app, stripe)) = shop(store).await else {
        return;
    };
    let (status, created) = app.checkout("/api/create-payment-intent", json!({})).await;
    assert_eq!(status, 200, "{created}");
    let pi = created["paymentIntent"].as_str().unwrap().to_string();
    let secret = created["clientSecret"].as_str().unwrap().to_string();
    assert_eq!(
        created["publishableKey"],
        crate::support::stripe::PUBLISHABLE_KEY
    );
    assert_eq!(created["amount"], 1000);
    assert_eq!(created["amountDisplay"], "$10.00");

    let remote = stripe.get(&format!("/v1/payment_intents/{pi}")).await;
    assert_eq!(remote["amount"], 1000);
    assert_eq!(
        remote["customer"],
        Value::Null,
        "no customer without consent"
    );
    assert_eq!(
        remote["setup_future_usage"],
        Value::Null,
        "the card is not saved without consent"
    );
    assert_eq!(remote["metadata"]["overage_consent"], "false");
    assert_eq!(remote["metadata"]["minutes"], "5");

    // Before payment: pending, no code. A wrong secret or unknown id: the same 404.
    let (status, body) = details(&app, "/api/order-details", &pi, &secret).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("pending")));
    assert!(body.get("code").is_none());
    let (s1, b1) = details(&app, "/api/order-details", &pi, "pi_wrong_secret_x").await;
    let (s2, b2) = details(&app, "/api/order-details", "pi_unknown", &secret).await;
    assert_eq!((s1, s2), (404, 404));
    assert_eq!(b1, b2, "an id alone reveals nothing");

    let (status, paid) = stripe.pay(&pi, "4242424242424242").await;
    assert_eq!(status, 200, "{paid}");
    let order = wait_for_webhook(&app, &pi, &secret).await;
    assert_eq!(order["status"], "paid", "{order}");
    let code = order["code"].as_str().unwrap();
    assert_eq!(code.len(), 12);
    assert_eq!(
        order["codeDisplay"].as_str().unwrap().replace(' ', ""),
        code
    );
    assert_eq!(order["phone"], crate::support::app::PHONE);
    assert_eq!(order["phoneDisplay"], "+1 555 010 0200");
    assert_eq!(order["minutes"], 5);
    assert_eq!(order["overage"], false);

    let stored = app
        .app
        .store
        .order_by_payment_intent(&pi)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, OrderStatus::Paid);
    assert!(stored.stripe_payment_method.is_some());
    assert_eq!(app.app.store.list_orders(10).await.unwrap().len(), 1);
}

async fn purchase_with_overage_saves_the_card(store: DynStore) {
    let Some((app, stripe)) = shop(store).await else {
        return;
    };
    let (status, created) = app
        .checkout(
            "/.netlify/functions/create-payment-intent",
            json!({ "overage_accepted": true, "email": "caller@example.com" }),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let pi = created["paymentIntent"].as_str().unwrap().to_string();
    let secret = created["clientSecret"].as_str().unwrap().to_string();
    let remote = stripe.get(&format!("/v1/payment_intents/{pi}")).await;
    let customer = remote["customer"]
        .as_str()
        .expect("a customer with consent")
        .to_string();
    assert_eq!(remote["setup_future_usage"], "off_session");
    assert_eq!(remote["metadata"]["overage_consent"], "true");
    let cus = stripe.get(&format!("/v1/customers/{customer}")).await;
    assert_eq!(cus["email"], "caller@example.com");

    assert_eq!(stripe.pay(&pi, "4242424242424242").await.0, 200);
    let order = wait_for_webhook(&app, &pi, &secret).await;
    assert_eq!(order["status"], "paid");
    assert_eq!(order["overage"], true);
    assert_eq!(order["overagePrice"], "$1.00");
    let (status, old) = details(&app, "/.netlify/functions/get-order-details", &pi, &secret).await;
    assert_eq!(status, 200);
    assert_eq!(old["code"], order["code"]);

    let stored = app
        .app
        .store
        .order_by_payment_intent(&pi)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.stripe_customer.as_deref(), Some(customer.as_str()));
    assert!(stored
        .stripe_payment_method
        .as_deref()
        .unwrap()
        .starts_with("pm_"));
    assert!(stored.overage_consent);
}

async fn declined_card_marks_the_order_failed(store: DynStore) {
    let Some((app, stripe)) = shop(store).await else {
        return;
    };
    let (_, created) = app
        .checkout(
            "/api/create-payment-intent",
            json!({ "overage_accepted": false }),
        )
        .await;
    let pi = created["paymentIntent"].as_str().unwrap().to_string();
    let secret = created["clientSecret"].as_str().unwrap().to_string();
    // localstripe declines charges on 0341 (it declines 9995 only when attaching to a customer).
    let (status, body) = stripe.pay(&pi, "4000000000000341").await;
    assert_eq!(status, 402, "{body}");
    let order = wait_for_webhook(&app, &pi, &secret).await;
    assert_eq!(order["status"], "failed", "{order}");
    assert!(order.get("code").is_none());
}

async fn bad_checkout_requests_store_nothing(store: DynStore) {
    let Some((app, _stripe)) = shop(store).await else {
        return;
    };
    for body in [
        "{",
        "[]",
        r#"{"overage_accepted":"yes"}"#,
        r#"{"email":"not-an-address"}"#,
    ] {
        let resp = reqwest::Client::new()
            .post(app.url("/api/create-payment-intent"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert!(err["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    assert!(app.app.store.list_orders(10).await.unwrap().is_empty());
    let (status, _) = details(&app, "/api/order-details", "", "").await;
    assert_eq!(status, 404);
}

/// The three plans of the tests' `PLANS`.
const PLANS: &str = "Quick chat=5@5.00; Quarter hour=15@12.00; Half hour=30@20.00";

/// Several plans: each bought as the storefront names it, priced and timed from the
/// configuration alone (a price or minutes in the request are not read), recorded on the
/// order, paid by localstripe's signed webhook; a plan not on sale is refused and stores
/// nothing.
async fn each_plan_is_bought_at_its_configured_price(store: DynStore) {
    let stripe = match crate::support::stripe::start().await {
        Some(s) => s,
        None => return,
    };
    let mut env = stripe.env();
    env.push(("PLANS", PLANS.to_string()));
    let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = spawn(store, &vars).await;
    stripe.register_webhook(&app.url("/webhooks/stripe")).await;

    for (id, name, cents, minutes) in [
        ("quick-chat", "Quick chat", 500, 5),
        ("quarter-hour", "Quarter hour", 1200, 15),
        ("half-hour", "Half hour", 2000, 30),
    ] {
        let (status, created) = app
            .checkout(
                "/api/create-payment-intent",
                // What a tampering browser might add is ignored.
                json!({ "plan": id, "amount": 1, "price": "0.01", "minutes": 9999 }),
            )
            .await;
        assert_eq!(status, 200, "{created}");
        assert_eq!(
            (created["plan"].as_str(), created["amount"].as_i64()),
            (Some(name), Some(cents))
        );
        let pi = created["paymentIntent"].as_str().unwrap().to_string();
        let secret = created["clientSecret"].as_str().unwrap().to_string();
        let remote = stripe.get(&format!("/v1/payment_intents/{pi}")).await;
        assert_eq!(remote["amount"], cents, "Stripe is asked the plan's price");
        assert_eq!(remote["metadata"]["plan_id"], id);
        let (status, paid) = stripe.pay(&pi, "4242424242424242").await;
        assert_eq!(status, 200, "{paid}");
        let order = wait_for_webhook(&app, &pi, &secret).await;
        assert_eq!(order["status"], "paid", "{order}");
        assert_eq!(
            (order["plan"].as_str(), order["minutes"].as_i64()),
            (Some(name), Some(minutes))
        );
        let stored = app
            .app
            .store
            .order_by_payment_intent(&pi)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.plan, name);
        assert_eq!(stored.amount.0, cents);
        assert_eq!(stored.seconds_included.0, minutes * 60);
    }
    // No plan named: the first, as before plans.
    let (status, created) = app.checkout("/api/create-payment-intent", json!({})).await;
    assert_eq!((status, created["amount"].as_i64()), (200, Some(500)));

    let before = app.app.store.list_orders(50).await.unwrap().len();
    for bad in [
        json!({ "plan": "free" }),
        json!({ "plan": 15 }),
        json!({ "plan": "Quick chat" }),
    ] {
        let (status, body) = app
            .checkout("/api/create-payment-intent", bad.clone())
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains("plan")),
            "{body}"
        );
    }
    assert_eq!(
        app.app.store.list_orders(50).await.unwrap().len(),
        before,
        "nothing stored"
    );

    // The owner sees the plans: on the overview, and in /metrics.
    let totals = app.app.store.orders_by_plan().await.unwrap();
    let paid = |plan: &str| {
        totals
            .iter()
            .find(|t| t.plan == plan && t.status == OrderStatus::Paid)
            .map(|t| (t.orders, t.amount))
    };
    assert_eq!(paid("Quick chat"), Some((1, 500)));
    assert_eq!(paid("Half hour"), Some((1, 2000)));
    let metrics = reqwest::get(app.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"callgate_orders{plan="Quarter hour",status="paid"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"callgate_orders_amount_cents{plan="Half hour",status="paid"} 2000"#)
    );
}

on_every_backend!(
    each_plan_is_bought_at_its_configured_price,
    purchase_without_overage,
    purchase_with_overage_saves_the_card,
    declined_card_marks_the_order_failed,
    bad_checkout_requests_store_nothing,
    unpaid_orders_expire_and_paid_ones_stay,
);

/// Stripe unreachable: a clear 502, no order stored.
#[tokio::test]
async fn stripe_down_is_a_clear_error() {
    let db = crate::support::sqlite().await;
    let base = crate::support::CLOSED_URL;
    let app = spawn(
        db.store.clone(),
        &[
            ("STRIPE_SECRET_KEY", crate::support::stripe::SECRET_KEY),
            (
                "STRIPE_PUBLISHABLE_KEY",
                crate::support::stripe::PUBLISHABLE_KEY,
            ),
            (
                "STRIPE_WEBHOOK_SECRET",
                crate::support::stripe::WEBHOOK_SECRET,
            ),
            ("STRIPE_API_BASE", base),
        ],
    )
    .await;
    let (status, body) = app.checkout("/api/create-payment-intent", json!({})).await;
    assert_eq!(status, 502, "{body}");
    assert!(body["error"].as_str().unwrap().contains("try again"));
    assert!(app.app.store.list_orders(10).await.unwrap().is_empty());
}

/// Issue 13, point 10: checkouts that never pay do not pile up. Past PENDING_ORDER_TTL_HOURS
/// the billing pass cancels their PaymentIntents at Stripe and prunes the orders; one that
/// Stripe can no longer cancel (paid, its webhook late or lost) keeps its order.
async fn unpaid_orders_expire_and_paid_ones_stay(store: DynStore) {
    let Some(stripe) = crate::support::stripe::start().await else {
        return;
    };
    let env = stripe.env();
    let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // No webhook registered: the paid order stays pending as if its webhook were lost.
    let app = spawn(store.clone(), &vars).await;
    let mut intents = Vec::new();
    for _ in 0..2 {
        let (status, body) = app.checkout("/api/create-payment-intent", json!({})).await;
        assert_eq!(status, 200, "{body}");
        let pi = body["clientSecret"]
            .as_str()
            .and_then(|s| s.split("_secret").next())
            .expect("a client secret")
            .to_string();
        intents.push(pi);
    }
    let (status, paid) = stripe.pay(&intents[1], "4242424242424242").await;
    assert_eq!(status, 200, "{paid}");

    let clock = std::sync::Arc::new(callgate::domain::clock::ManualClock::new(
        app.app.clock.now() + 23 * 3600,
    ));
    let billing = crate::support::app::build(store.clone(), &vars, clock.clone());
    let early = callgate::billing::pending::prune_stale(&billing)
        .await
        .unwrap();
    assert_eq!(
        early.pruned + early.kept,
        0,
        "younger than the TTL: not looked at"
    );
    clock.advance(2 * 3600);
    let report = callgate::billing::pending::prune_stale(&billing)
        .await
        .unwrap();
    assert_eq!(
        report,
        callgate::billing::pending::PruneReport { pruned: 1, kept: 1 }
    );
    assert!(store
        .order_by_payment_intent(&intents[0])
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        stripe
            .get(&format!("/v1/payment_intents/{}", intents[0]))
            .await["status"],
        "canceled"
    );
    let kept = store
        .order_by_payment_intent(&intents[1])
        .await
        .unwrap()
        .expect("the paid PaymentIntent's order stays");
    assert_eq!(kept.status, OrderStatus::Pending);
}
