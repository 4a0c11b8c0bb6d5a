//! Receipts and lost codes (issue 26): after a purchase the code, the number and the account
//! link go to the email address (a real SMTP server, aiosmtpd) and the mobile number (a
//! stand-in for Twilio's Messages API) given at checkout; a relay that is down delays them
//! (retried, visible in /admin), never the purchase; find-my-code sends the codes again to
//! the same address only.

use std::sync::Arc;

use serde_json::json;

use crate::support::app::{spawn_with, TestApp, ACCOUNT_SID, AUTH_TOKEN};
use crate::support::sms::{Answer, MessagesApi};
use crate::support::smtp::SmtpSink;
use crate::support::stripe::LocalStripe;
use callgate::domain::clock::{Clock, ManualClock};
use callgate::store::{DynStore, MessageKind, MessageState, Order, OrderStatus};

const EMAIL: &str = "Ann@Example.com";
const MOBILE: &str = "+1 (555) 777-0100";
const PASSWORD: &str = "admin-pass-0123";

struct Shop {
    app: TestApp,
    stripe: LocalStripe,
    smtp: SmtpSink,
    sms: MessagesApi,
    clock: Arc<ManualClock>,
}

async fn shop(store: DynStore) -> Option<Shop> {
    crate::support::logs::capture();
    let stripe = crate::support::stripe::start().await?;
    let smtp = SmtpSink::start().await?;
    let sms = MessagesApi::start(ACCOUNT_SID, AUTH_TOKEN).await;
    let clock = Arc::new(ManualClock::new(callgate::domain::clock::SystemClock.now()));
    let mut env = stripe.env();
    env.extend([
        ("SMTP_URL", smtp.url()),
        ("MAIL_FROM", "Talk time <receipts@example.com>".to_string()),
        ("TWILIO_API_BASE", sms.base.clone()),
        ("BILLING_WORKER", "off".to_string()),
        ("ADMIN_PASSWORD", PASSWORD.to_string()),
        ("TRUSTED_PROXIES", "127.0.0.1/32".to_string()),
    ]);
    let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let manual = clock.clone();
    let app = spawn_with(store, &vars, move |app| app.clock = manual).await;
    stripe.register_webhook(&app.url("/webhooks/stripe")).await;
    Some(Shop {
        app,
        stripe,
        smtp,
        sms,
        clock,
    })
}

/// A purchase with both contacts, paid, fulfilled by its webhook: the order and its client
/// secret (the success page's proof).
async fn bought(s: &Shop) -> (Order, String) {
    let (status, created) = s
        .app
        .checkout(
            "/api/create-payment-intent",
            json!({ "email": EMAIL, "phone": MOBILE }),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let pi = created["paymentIntent"].as_str().unwrap();
    assert_eq!(s.stripe.pay(pi, "4242424242424242").await.0, 200);
    let order = s.app.paid_order(pi).await;
    // The webhook pays the order first, then queues its receipts: wait for both.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let queued = s.app.app.store.list_messages(100).await.unwrap();
        if queued.iter().filter(|m| m.order_id == order.id).count() == 2 {
            return (order, created["clientSecret"].as_str().unwrap().to_string());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "its receipts were never queued"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn pass(s: &Shop) -> callgate::notify::SendReport {
    callgate::billing::run_once(&s.app.app, "test")
        .await
        .unwrap()
        .messages
}

async fn receipts_reach_both_addresses_once_and_a_relay_that_is_down_only_delays_them(
    store: DynStore,
) {
    let Some(s) = shop(store).await else { return };
    // Both relays down when the purchase completes: the purchase stands, the receipts wait.
    s.smtp.set_down(true).await;
    s.sms.answer(Answer::Down);
    let (order, secret) = bought(&s).await;
    let code = callgate::orders::code_of(&s.app.app, &order).unwrap();
    // The success page says where the receipts went, masked.
    let details: serde_json::Value = reqwest::Client::new()
        .get(s.app.url("/api/order-details"))
        .query(&[
            (
                "payment_intent",
                order.stripe_payment_intent.as_deref().unwrap(),
            ),
            ("client_secret", secret.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(details["sentTo"], json!(["a•••@example.com", "+1•••0100"]));
    let first = pass(&s).await;
    assert_eq!(
        (first.sent, first.retrying, first.failed),
        (0, 2, 0),
        "{first:?}"
    );
    let queued = s.app.app.store.list_messages(10).await.unwrap();
    assert_eq!(queued.len(), 2);
    for m in &queued {
        assert_eq!(
            (m.state, m.tries, m.kind),
            (MessageState::Pending, 1, MessageKind::Receipt)
        );
        assert!(m.last_error.is_some(), "{m:?}");
    }
    let page = reqwest::Client::new()
        .get(s.app.url("/admin/messages"))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("ann@example.com") && page.contains("pending"),
        "{page}"
    );
    assert!(!page.contains(code.expose()), "no code in /admin");
    // Not before its time: the next try is 30 s on.
    assert_eq!(pass(&s).await, callgate::notify::SendReport::default());

    s.smtp.set_down(false).await;
    s.sms.answer(Answer::Queued);
    s.clock.advance(31);
    let second = pass(&s).await;
    assert_eq!((second.sent, second.retrying), (2, 0), "{second:?}");
    let mails = s.smtp.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, ["ann@example.com"]);
    assert!(
        mails[0].data.contains(&code.grouped()),
        "the code is in the email"
    );
    let account = callgate::orders::account::path(&s.app.app, &order.id);
    assert!(mails[0].data.contains(&account), "and the account link");
    let texts = s.sms.sent();
    assert_eq!(texts.len(), 1);
    assert_eq!(texts[0].to, "+15557770100");
    assert_eq!(texts[0].from, crate::support::app::PHONE);
    assert!(texts[0].body.contains(&code.grouped()) && texts[0].body.contains(&account));
    let callback = texts[0].status_callback.clone().expect("a status callback");
    assert_eq!(callback, s.app.url("/sms/status"));

    // Twilio's signed report: delivered. An unsigned one is refused.
    let params = vec![
        ("MessageSid".to_string(), texts[0].sid.clone()),
        ("MessageStatus".to_string(), "delivered".to_string()),
    ];
    let unsigned = reqwest::Client::new()
        .post(&callback)
        .form(&params)
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 403);
    let signature = callgate::telephony::twilio::signature::compute(AUTH_TOKEN, &callback, &params);
    let signed = reqwest::Client::new()
        .post(&callback)
        .header("X-Twilio-Signature", signature)
        .form(&params)
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 204);
    // A late `sent` (callbacks come in any order) does not undo `delivered`.
    let late = vec![
        ("MessageSid".to_string(), texts[0].sid.clone()),
        ("MessageStatus".to_string(), "sent".to_string()),
    ];
    let signature = callgate::telephony::twilio::signature::compute(AUTH_TOKEN, &callback, &late);
    let resp = reqwest::Client::new()
        .post(&callback)
        .header("X-Twilio-Signature", signature)
        .form(&late)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let states: Vec<(callgate::store::Channel, MessageState)> = s
        .app
        .app
        .store
        .list_messages(10)
        .await
        .unwrap()
        .iter()
        .map(|m| (m.channel, m.state))
        .collect();
    assert!(states.contains(&(callgate::store::Channel::Sms, MessageState::Delivered)));
    assert!(states.contains(&(callgate::store::Channel::Email, MessageState::Sent)));

    // The purchase's webhook again: no second receipt.
    let pi = order.stripe_payment_intent.clone().unwrap();
    let paid = s.stripe.get(&format!("/v1/payment_intents/{pi}")).await;
    let status = s
        .app
        .stripe_event(
            crate::support::stripe::WEBHOOK_SECRET,
            "evt_again",
            "payment_intent.succeeded",
            paid,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(s.app.app.store.list_messages(10).await.unwrap().len(), 2);
}

async fn a_refused_number_fails_without_retrying_and_bad_contacts_are_refused_at_checkout(
    store: DynStore,
) {
    let Some(s) = shop(store).await else { return };
    s.sms.answer(Answer::Refused);
    let (order, _) = bought(&s).await;
    let report = pass(&s).await;
    assert_eq!((report.sent, report.failed), (1, 1), "{report:?}");
    let sms = s
        .app
        .app
        .store
        .list_messages(10)
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.channel == callgate::store::Channel::Sms)
        .unwrap();
    assert_eq!((sms.state, sms.tries), (MessageState::Failed, 1));
    assert!(sms.last_error.unwrap().contains("21211"));
    assert_eq!(order.status, OrderStatus::Paid);

    let before = s.app.app.store.list_orders(10).await.unwrap().len();
    for body in [
        json!({ "email": "ann@example" }),
        json!({ "email": "ann@example.com>" }),
        json!({ "phone": "555 0100" }),
        json!({ "phone": 15557770100u64 }),
    ] {
        let (status, answer) = s
            .app
            .checkout("/api/create-payment-intent", body.clone())
            .await;
        assert_eq!(status, 400, "{body} -> {answer}");
    }
    assert_eq!(s.app.app.store.list_orders(10).await.unwrap().len(), before);
}

async fn a_lost_code_goes_back_to_its_address_only(store: DynStore) {
    let Some(s) = shop(store).await else { return };
    let (order, _) = bought(&s).await;
    let code = callgate::orders::code_of(&s.app.app, &order).unwrap();
    pass(&s).await;
    assert_eq!(s.smtp.mails().len(), 1);

    // Each from its own client address: the per-client rate limit is another test's.
    let asked = std::sync::atomic::AtomicU32::new(0);
    let ask = |contact: &str| {
        let n = asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        find_from(&s.app, format!("203.0.113.{n}"), contact.to_string())
    };
    let (known_status, known) = ask("ANN@example.com ").await;
    let (unknown_status, unknown) = ask("bob@example.com").await;
    assert_eq!((known_status, unknown_status), (202, 202));
    assert_eq!(
        known, unknown,
        "the same answer whether the address is known or not"
    );
    assert!(
        !known.to_string().contains(code.expose()),
        "never on the screen"
    );
    pass(&s).await;
    let mails = s.smtp.mails();
    assert_eq!(mails.len(), 2, "one more, to the known address only");
    assert_eq!(mails[1].to, ["ann@example.com"]);
    assert!(mails[1].data.contains(&code.grouped()));
    assert!(crate::support::logs::count() > 0, "the logs are captured");
    for shown in [code.expose().to_string(), code.grouped()] {
        assert_eq!(
            crate::support::logs::lines_with(&shown),
            Vec::<String>::new(),
            "a code in a log line"
        );
    }

    // By SMS, to the number the receipt went to.
    assert_eq!(ask("+15557770100").await.0, 202);
    pass(&s).await;
    let texts = s.sms.sent();
    assert_eq!(texts.len(), 2);
    assert_eq!(texts[1].to, "+15557770100");

    // Three requests an hour per address; more get the same answer and nothing is sent.
    for _ in 0..3 {
        assert_eq!(ask(EMAIL).await.0, 202);
    }
    pass(&s).await;
    assert_eq!(
        s.smtp.mails().len(),
        4,
        "two more made three this hour, then none"
    );
    assert_eq!(ask("not an address").await.0, 400);
}

async fn find_from(app: &TestApp, client: String, contact: String) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(app.url("/api/find-code"))
        .header("X-Forwarded-For", client)
        .json(&json!({ "contact": contact }))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

/// A flood of find-my-code requests from one client is cut off by its rate limit.
async fn a_flood_of_lost_code_requests_is_refused(store: DynStore) {
    let Some(s) = shop(store).await else { return };
    let mut statuses = Vec::new();
    for i in 0..8 {
        let (status, _) =
            find_from(&s.app, "198.51.100.7".into(), format!("x{i}@example.com")).await;
        statuses.push(status);
    }
    assert_eq!(&statuses[..5], &[202; 5]);
    assert!(statuses[5..].iter().all(|&st| st == 429), "{statuses:?}");
}

on_every_backend!(
    receipts_reach_both_addresses_once_and_a_relay_that_is_down_only_delays_them,
    a_refused_number_fails_without_retrying_and_bad_contacts_are_refused_at_checkout,
    a_lost_code_goes_back_to_its_address_only,
    a_flood_of_lost_code_requests_is_refused,
);
