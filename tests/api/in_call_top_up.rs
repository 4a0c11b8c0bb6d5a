//! Top-ups during the call (issue 26): a code with a saved card hears the offer at the
//! warning, `#` then `#` buys one pack off-session (localstripe), the minutes are added while
//! the call goes on; a decline or a bank's authentication is told to the caller and the call
//! ends at its old allowance; a hang-up between the presses buys nothing, one after the
//! second press loses nothing, and the top-up's webhook credits nothing twice.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::support::app::{spawn_with, TestApp};
use crate::support::calls::{
    connected_call_with, ended_call, open, order_of, settled_call, settled_order, TICK,
};
use crate::support::stripe::{LocalStripe, WEBHOOK_SECRET};
use callgate::domain::message::{Address, MessageKind};
use callgate::orders::OperatorGrant;
use callgate::store::{DynStore, EntryKind, Order};
use callgate_peers::agent::{Behaviour, FakeAgent};
use callgate_peers::twilio::{MediaStream, Received};

/// The pack `#` buys: the first configured top-up.
const PACKS: &str = "Ten more=10@8.00;Thirty more=30@20.00";
const GOOD_CARD: &str = "4242424242424242";
/// Attaches, then every charge is declined.
const DECLINED_CARD: &str = "4000000000000341";
/// Off-session charges need the customer's bank to authenticate.
const AUTH_CARD: &str = "4000002760003184";

struct Shop {
    app: TestApp,
    stripe: LocalStripe,
    _agent: FakeAgent,
}

async fn shop(store: DynStore) -> Option<Shop> {
    let stripe = crate::support::stripe::start().await?;
    let agent = FakeAgent::start(Behaviour::default()).await;
    let mut env = stripe.env();
    env.push(("TOP_UPS", PACKS.to_string()));
    env.push(("ELEVENLABS_API_BASE", agent.base.clone()));
    env.push(("MAX_CALL_MINUTES", "30".into()));
    let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = spawn_with(store, &vars, |app| {
        app.bridge.tick = TICK;
        app.bridge.setup_timeout = Duration::from_secs(5);
    })
    .await;
    stripe.register_webhook(&app.url("/webhooks/stripe")).await;
    Some(Shop {
        app,
        stripe,
        _agent: agent,
    })
}

/// A call on a fresh code of `minutes` with overage consent and `card` saved, its stream open
/// and the first caller audio sent (metering runs from there).
async fn call(
    shop: &Shop,
    minutes: i64,
    card: &str,
) -> (callgate_peers::twilio::Caller, MediaStream, Order) {
    let (customer, payment_method) = shop.stripe.saved_card(card).await;
    let grant = OperatorGrant {
        minutes,
        overage: true,
        customer: Some(customer),
        payment_method: Some(payment_method),
    };
    let (caller, url, params, _) = connected_call_with(&shop.app, &grant).await;
    let mut stream = open(&caller, &url, &params).await;
    assert!(stream.send_media(&[0x55; 160]).await);
    let order = order_of(&shop.app, &caller.call_sid).await;
    (caller, stream, order)
}

/// Reads what callgate sends until the mark `name` (the prompt of that name was played);
/// panics if the stream closes first.
async fn heard(stream: &mut MediaStream, name: &str) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while Instant::now() < deadline {
        match stream.next(Duration::from_millis(200)).await {
            Some(Received::Mark(m)) if m == name => return got,
            Some(Received::Closed) => panic!("the stream closed before {name}: {got:?}"),
            Some(other) => got.push(other),
            None => {}
        }
    }
    panic!("{name} never played")
}

/// The PaymentIntents Stripe holds for this call's top-ups.
async fn intents_of_call(stripe: &LocalStripe, call_sid: &str) -> Vec<Value> {
    let list = stripe.get("/v1/payment_intents?limit=100").await;
    list["data"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|pi| pi["metadata"]["call_sid"] == call_sid)
        .collect()
}

async fn top_up_entries(app: &TestApp, order: &Order) -> usize {
    app.app
        .store
        .entries_for_order(&order.id)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == EntryKind::TopUp)
        .count()
}

async fn two_hashes_buy_a_pack_while_the_call_goes_on(store: DynStore) {
    let Some(shop) = shop(store).await else {
        return;
    };
    let (caller, mut stream, order) = call(&shop, 2, GOOD_CARD).await;
    heard(&mut stream, "top_up_offer").await;
    assert!(stream.send_dtmf('#').await);
    heard(&mut stream, "top_up_confirm").await;
    assert!(stream.send_dtmf('#').await);
    heard(&mut stream, "top_up_added").await;
    // The call goes past its old two minutes, unwarned of paid time.
    loop {
        let c = shop
            .app
            .app
            .store
            .call(&caller.call_sid)
            .await
            .unwrap()
            .unwrap();
        if c.seconds_metered.0 > 130 {
            break;
        }
        match stream.next(Duration::from_millis(50)).await {
            Some(Received::Mark(m)) => assert_ne!(m, "paid_time", "no paid time after a top-up"),
            Some(Received::Closed) => panic!("the call ended at its old allowance"),
            _ => {}
        }
    }
    stream.hang_up().await;
    let settled = settled_call(&shop.app, &caller.call_sid).await;
    assert!(settled.seconds_metered.0 > 120);
    let now = settled_order(&shop.app, &caller.call_sid).await;
    assert_eq!(
        now.seconds_included.0,
        120 + 600,
        "the pack's ten minutes added"
    );
    assert!(
        shop.app
            .app
            .store
            .charges_for_order(&order.id)
            .await
            .unwrap()
            .is_empty(),
        "the seconds past the old allowance are the pack's, not overage"
    );
    let intents = intents_of_call(&shop.stripe, &caller.call_sid).await;
    assert_eq!(intents.len(), 1, "one charge: {intents:?}");
    assert_eq!(intents[0]["amount"], 800);
    assert_eq!(intents[0]["status"], "succeeded");
    assert_eq!(intents[0]["metadata"]["callgate_kind"], "top_up");
    // The top-up's own webhook, late or replayed (a restart between the charge and its
    // credit leaves the webhook to credit it), credits nothing more.
    for _ in 0..2 {
        let status = shop
            .app
            .stripe_event(
                WEBHOOK_SECRET,
                &callgate::store::new_id("evt"),
                "payment_intent.succeeded",
                intents[0].clone(),
            )
            .await;
        assert_eq!(status, 200);
    }
    assert_eq!(top_up_entries(&shop.app, &order).await, 1, "credited once");
    let report = callgate::billing::reconcile::check(&shop.app.app)
        .await
        .unwrap();
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
}

async fn a_declined_card_is_told_and_the_call_ends_at_its_old_allowance(store: DynStore) {
    let Some(shop) = shop(store).await else {
        return;
    };
    let (caller, mut stream, order) = call(&shop, 2, DECLINED_CARD).await;
    heard(&mut stream, "top_up_offer").await;
    stream.send_dtmf('#').await;
    heard(&mut stream, "top_up_confirm").await;
    stream.send_dtmf('#').await;
    heard(&mut stream, "top_up_declined").await;
    // Further presses buy nothing: the card was refused.
    stream.send_dtmf('#').await;
    stream.send_dtmf('#').await;
    let rest = stream
        .talk_until_closed(&[0x55; 160], Duration::from_secs(20))
        .await;
    assert_eq!(
        rest.last(),
        Some(&Received::Closed),
        "callgate ended the call"
    );
    assert!(!rest.contains(&Received::Mark("top_up_confirm".into())));
    assert!(
        !rest.contains(&Received::Mark("paid_time".into())),
        "no paid time on a refused card"
    );
    let call = ended_call(&shop.app, &caller.call_sid).await;
    assert_eq!(call.end_reason.map(|r| r.as_str()), Some("time_up"));
    assert_eq!(call.seconds_metered.0, 120, "ended at the old two minutes");
    assert_eq!(top_up_entries(&shop.app, &order).await, 0);
    let intents = intents_of_call(&shop.stripe, &caller.call_sid).await;
    assert!(
        intents.iter().all(|pi| pi["status"] != "succeeded"),
        "{intents:?}"
    );
}

async fn a_bank_asking_to_authenticate_is_told_and_the_link_is_sent(store: DynStore) {
    let Some(shop) = shop(store).await else {
        return;
    };
    let (caller, mut stream, order) = call(&shop, 2, AUTH_CARD).await;
    let to = Address::email("caller@example.com").unwrap();
    callgate::notify::queue_receipts(&shop.app.app, &order, &[to])
        .await
        .unwrap();
    heard(&mut stream, "top_up_offer").await;
    stream.send_dtmf('#').await;
    heard(&mut stream, "top_up_confirm").await;
    stream.send_dtmf('#').await;
    heard(&mut stream, "top_up_confirm_online").await;
    let rest = stream
        .talk_until_closed(&[0x55; 160], Duration::from_secs(20))
        .await;
    assert_eq!(rest.last(), Some(&Received::Closed));
    let call = ended_call(&shop.app, &caller.call_sid).await;
    assert_eq!(call.seconds_metered.0, 120, "ended at the old two minutes");
    assert_eq!(top_up_entries(&shop.app, &order).await, 0);
    let intents = intents_of_call(&shop.stripe, &caller.call_sid).await;
    assert_eq!(intents.len(), 1);
    assert_eq!(
        intents[0]["status"], "canceled",
        "nothing left to complete by surprise"
    );
    let links: Vec<_> = shop
        .app
        .app
        .store
        .messages_for_order(&order.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.kind == MessageKind::TopUpLink)
        .collect();
    assert_eq!(
        links.len(),
        1,
        "the top-up link goes where the receipt went"
    );
    assert_eq!(links[0].to, "caller@example.com");
}

async fn a_hang_up_between_the_presses_buys_nothing_and_one_after_loses_nothing(store: DynStore) {
    let Some(shop) = shop(store).await else {
        return;
    };
    // Between the presses.
    let (caller, mut stream, order) = call(&shop, 1, GOOD_CARD).await;
    stream.send_dtmf('#').await;
    heard(&mut stream, "top_up_confirm").await;
    stream.hang_up().await;
    settled_call(&shop.app, &caller.call_sid).await;
    assert!(
        intents_of_call(&shop.stripe, &caller.call_sid)
            .await
            .is_empty(),
        "nothing charged"
    );
    assert_eq!(top_up_entries(&shop.app, &order).await, 0);

    // At once after the second press, in paid time: the purchase completes and the call is
    // settled on the minutes it bought, so no second of it is overage.
    let (caller, mut stream, order) = call(&shop, 1, GOOD_CARD).await;
    heard(&mut stream, "paid_time").await;
    past(&shop, &mut stream, &caller.call_sid, 65).await;
    stream.send_dtmf('#').await;
    heard(&mut stream, "top_up_confirm").await;
    stream.send_dtmf('#').await;
    stream.hang_up().await;
    settled_call(&shop.app, &caller.call_sid).await;
    assert_eq!(
        top_up_entries(&shop.app, &order).await,
        1,
        "bought, credited"
    );
    let now = settled_order(&shop.app, &caller.call_sid).await;
    assert_eq!(now.seconds_included.0, 60 + 600);
    assert!(now.seconds_used.0 > 65, "hung up in paid time");
    assert!(
        shop.app
            .app
            .store
            .charges_for_order(&order.id)
            .await
            .unwrap()
            .is_empty(),
        "settled on the pack's minutes: no overage"
    );
    assert_eq!(
        intents_of_call(&shop.stripe, &caller.call_sid).await.len(),
        1
    );
}

/// Waits until the call has metered more than `seconds`; panics if it ends first.
async fn past(shop: &Shop, stream: &mut MediaStream, call_sid: &str, seconds: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let c = shop.app.app.store.call(call_sid).await.unwrap().unwrap();
        if c.seconds_metered.0 > seconds {
            return;
        }
        assert!(Instant::now() < deadline, "never reached {seconds} s");
        if let Some(Received::Closed) = stream.next(Duration::from_millis(50)).await {
            panic!("the call ended at {} s", c.seconds_metered.0);
        }
    }
}

async fn a_live_call_learns_of_a_web_top_up_and_of_its_refund(store: DynStore) {
    let Some(shop) = shop(store).await else {
        return;
    };
    // A code without a saved card: its call ends at its allowance.
    let grant = OperatorGrant {
        minutes: 2,
        overage: false,
        customer: None,
        payment_method: None,
    };
    let (caller, url, params, _) = connected_call_with(&shop.app, &grant).await;
    let mut stream = open(&caller, &url, &params).await;
    assert!(stream.send_media(&[0x55; 160]).await);
    let order_id = order_of(&shop.app, &caller.call_sid).await.id;
    past(&shop, &mut stream, &caller.call_sid, 5).await;

    // Ten minutes bought on the web while the call runs: it goes on past its old minute.
    let token = shop.app.app.vault.account_token(&order_id);
    let started = callgate::orders::top_up::start(&shop.app.app, &order_id, &token, "ten-more")
        .await
        .unwrap();
    assert_eq!(
        shop.stripe.pay(&started.payment_intent, GOOD_CARD).await.0,
        200
    );
    // Its webhook, delivered now (localstripe's own comes a second later, and changes nothing).
    let pi = shop
        .stripe
        .get(&format!("/v1/payment_intents/{}", started.payment_intent))
        .await;
    let status = shop
        .app
        .stripe_event(
            WEBHOOK_SECRET,
            "evt_top_paid",
            "payment_intent.succeeded",
            pi,
        )
        .await;
    assert_eq!(status, 200);
    past(&shop, &mut stream, &caller.call_sid, 135).await;

    // Its refund takes the ten minutes back: 135 s used of two minutes, the call ends now.
    let object = serde_json::json!({ "id": "ch_top", "object": "charge", "refunded": true,
                                     "payment_intent": started.payment_intent });
    let status = shop
        .app
        .stripe_event(WEBHOOK_SECRET, "evt_top_refund", "charge.refunded", object)
        .await;
    assert_eq!(status, 200);
    let rest = stream
        .talk_until_closed(&[0x55; 160], Duration::from_secs(20))
        .await;
    assert_eq!(
        rest.last(),
        Some(&Received::Closed),
        "callgate ended the call"
    );
    let call = ended_call(&shop.app, &caller.call_sid).await;
    assert_eq!(call.end_reason.map(|r| r.as_str()), Some("time_up"));
    assert!(
        call.seconds_metered.0 < 300,
        "cut when its balance no longer carried it, not at 11 minutes: {}",
        call.seconds_metered.0
    );
}

on_every_backend!(
    a_live_call_learns_of_a_web_top_up_and_of_its_refund,
    two_hashes_buy_a_pack_while_the_call_goes_on,
    a_declined_card_is_told_and_the_call_ends_at_its_old_allowance,
    a_bank_asking_to_authenticate_is_told_and_the_link_is_sent,
    a_hang_up_between_the_presses_buys_nothing_and_one_after_loses_nothing,
);
