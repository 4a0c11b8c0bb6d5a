//! The console's actions on money and live calls, end to end. Refunds against localstripe:
//! the operator asks once on a page of its own, callgate asks Stripe's Refunds API, and the
//! refund comes back as Stripe's signed `charge.refunded`, the same path as a refund made in
//! Stripe's dashboard. Ending a live call through Twilio's API, Twilio played by the test.

use crate::support::app::TestApp;
use crate::support::calls::{app_with_agent, heard_the_agent, open, until_closed, WAIT};
use crate::support::stripe::LocalStripe;
use callgate::store::{AuditAction, AuditResult, DynStore, EndReason, Order, OrderStatus};
use callgate_peers::agent::{Behaviour, FakeAgent};
use serde_json::Value;

const PASSWORD: &str = "refund desk password";

async fn shop(store: DynStore, agent: &FakeAgent) -> Option<(TestApp, LocalStripe)> {
    let stripe = crate::support::stripe::start().await?;
    let mut env = stripe.env();
    env.push(("ADMIN_PASSWORD", PASSWORD.to_string()));
    let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = app_with_agent(store, agent, &vars).await;
    stripe.register_webhook(&app.url("/webhooks/stripe")).await;
    Some((app, stripe))
}

/// A purchase paid with a card at Stripe and fulfilled by its webhook: the order and code.
async fn bought(app: &TestApp, stripe: &LocalStripe) -> (Order, &'static str) {
    let (pi, secret) = app.start_purchase(false).await;
    let (status, paid) = stripe.pay(&pi, "4242424242424242").await;
    assert_eq!(status, 200, "{paid}");
    let order = app.paid_order(&pi).await;
    let details: Value = reqwest::Client::new()
        .get(app.url("/api/order-details"))
        .query(&[("payment_intent", pi.as_str()), ("client_secret", &secret)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let code = details["code"].as_str().expect("a code").to_string();
    (order, Box::leak(code.into_boxed_str()))
}

/// The operator's browser: the device cookie its first page set, sent with every request
/// after; redirects not followed.
struct Operator {
    http: reqwest::Client,
    cookie: String,
}

async fn operator(app: &TestApp) -> Operator {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = http
        .get(app.url("/admin"))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    let cookie = resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    Operator { http, cookie }
}

impl Operator {
    fn request(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        req.basic_auth("admin", Some(PASSWORD))
            .header("cookie", &self.cookie)
    }
}

async fn get(op: &Operator, app: &TestApp, path: &str) -> (u16, String) {
    let resp = op.request(op.http.get(app.url(path))).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Posts the form of the page at `page` whose action is `action`: its status and where it
/// leads (or its page).
async fn submit(http: &Operator, app: &TestApp, page: &str, action: &str) -> (u16, String) {
    let (status, html) = get(http, app, page).await;
    assert_eq!(status, 200, "{page}: {html}");
    assert!(
        html.contains(&format!("<form method=\"post\" action=\"{action}\">")),
        "{page} has no form for {action}: {html}"
    );
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a form token")
        .to_string();
    let resp = http
        .request(http.http.post(app.url(action)))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let to = resp
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .map(String::from);
    match to {
        Some(to) => (status, to),
        None => (status, resp.text().await.unwrap()),
    }
}

/// Posts the form a page showed earlier (`html`), as a second tab would after the page changed.
async fn submit_blind(op: &Operator, app: &TestApp, action: &str, html: &str) -> (u16, String) {
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a form token");
    let resp = op
        .request(op.http.post(app.url(action)))
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Stripe's refunds of PaymentIntent `pi`.
async fn refunds_at_stripe(stripe: &LocalStripe, pi: &str) -> usize {
    let list = stripe
        .get(&format!("/v1/refunds?payment_intent={pi}"))
        .await;
    list["data"].as_array().map_or(0, Vec::len)
}

/// The operator refunds a purchase whose code is on a live call: asked once (the page's GET
/// changes nothing), then refunded at Stripe; a second click at once is the same refund
/// (one at Stripe). Stripe's `charge.refunded` then ends the call, revokes the code and
/// charges nothing after; a later click is refused, saying the payment was refunded. The
/// order's page and the audit log show each step, by the same device.
async fn a_console_refund_ends_the_live_call_and_refunds_once(store: DynStore) {
    let agent = FakeAgent::start(Behaviour::default()).await;
    let Some((app, stripe)) = shop(store, &agent).await else {
        return;
    };
    let (order, code) = bought(&app, &stripe).await;
    let (caller, url, params, _) =
        crate::support::calls::connected_at(&app.base, "+15558880701", code).await;
    let mut stream = open(&caller, &url, &params).await;
    heard_the_agent(&mut stream).await;

    let http = operator(&app).await;
    let page = format!("/admin/orders/{}", order.id);
    let ask = format!("/admin/orders/{}/refund", order.id);
    let (_, shown) = get(&http, &app, &page).await;
    assert!(shown.contains(&format!("href=\"{ask}\"")), "{shown}");
    let (status, confirm) = get(&http, &app, &ask).await;
    assert_eq!(status, 200);
    assert!(
        confirm.contains("Refund this payment?") && confirm.contains("$10.00"),
        "{confirm}"
    );
    let pi = order.stripe_payment_intent.clone().unwrap();
    assert_eq!(
        refunds_at_stripe(&stripe, &pi).await,
        0,
        "asking refunds nothing"
    );

    let (status, to) = submit(&http, &app, &ask, &ask).await;
    assert_eq!(status, 303, "{to}");
    let (status, again) = submit(&http, &app, &ask, &ask).await;
    assert_eq!(
        status, 303,
        "a second click at once: the same refund ({again})"
    );
    assert_eq!(refunds_at_stripe(&stripe, &pi).await, 1, "refunded once");
    let (_, after) = get(&http, &app, &to).await;
    assert!(
        after.contains("Stripe accepted the refund of the purchase"),
        "{after}"
    );

    assert!(
        until_closed(&mut stream, WAIT).await,
        "the refund never ended the call"
    );
    let call = crate::support::calls::settled_call(&app, &caller.call_sid).await;
    assert_eq!(call.end_reason, Some(EndReason::Revoked));
    let now = app.app.store.order(&order.id).await.unwrap().unwrap();
    assert_eq!(now.status, OrderStatus::Revoked);
    assert!(app
        .app
        .store
        .charges_for_order(&order.id)
        .await
        .unwrap()
        .is_empty());

    let (status, refused) = submit(&http, &app, &ask, &ask).await;
    assert_eq!(status, 409, "{refused}");
    assert!(refused.contains("refunded already"), "{refused}");
    assert_eq!(refunds_at_stripe(&stripe, &pi).await, 1);

    let (_, shown) = get(&http, &app, &page).await;
    assert!(
        shown.contains("<span class=\"badge revoked\">revoked</span>"),
        "{shown}"
    );
    assert!(
        shown.contains("<td>refund</td>"),
        "the ledger's reversal: {shown}"
    );
    assert!(
        !shown.contains(&format!("href=\"{ask}\"")),
        "a refunded purchase offers no second refund: {shown}"
    );
    let audit = app.app.store.audit_about(&order.id, 10).await.unwrap();
    let steps: Vec<(AuditAction, AuditResult)> =
        audit.iter().rev().map(|e| (e.action, e.result)).collect();
    assert_eq!(
        steps,
        [
            (AuditAction::Refund, AuditResult::Done),
            (AuditAction::Refund, AuditResult::Done),
            (AuditAction::Refund, AuditResult::Refused),
        ]
    );
    assert!(audit.iter().all(|e| e.actor == audit[0].actor), "{audit:?}");
    assert!(audit[2].detail.contains("Stripe refund re_"), "{audit:?}");
}

/// A refund Stripe refuses is shown, and nothing changes: the payment was refunded in
/// Stripe's dashboard while callgate's webhook endpoint was unreachable, so callgate still
/// holds it paid; the console's refund meets Stripe's refusal, says it, records it, and the
/// code still connects.
async fn a_refund_stripe_refuses_is_shown_and_changes_nothing(store: DynStore) {
    let agent = FakeAgent::start(Behaviour::default()).await;
    let Some((app, stripe)) = shop(store, &agent).await else {
        return;
    };
    let (order, code) = bought(&app, &stripe).await;
    let pi = order.stripe_payment_intent.clone().unwrap();
    // The endpoint moves away; the dashboard's refund is never delivered to callgate.
    stripe.register_webhook("http://127.0.0.1:9/gone").await;
    let (status, body) = stripe.post("/v1/refunds", &[("payment_intent", &pi)]).await;
    assert_eq!(status, 200, "{body}");

    let http = operator(&app).await;
    let ask = format!("/admin/orders/{}/refund", order.id);
    let (status, refused) = submit(&http, &app, &ask, &ask).await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused.contains("Stripe refused the refund") && refused.contains("already been refunded"),
        "{refused}"
    );
    assert!(
        refused.contains(&format!("href=\"/admin/orders/{}\"", order.id)),
        "a way back: {refused}"
    );
    assert_eq!(refunds_at_stripe(&stripe, &pi).await, 1);
    let now = app.app.store.order(&order.id).await.unwrap().unwrap();
    assert_eq!(now.status, OrderStatus::Paid, "nothing changed");
    let audit = app.app.store.audit_about(&order.id, 10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (audit[0].action, audit[0].result),
        (AuditAction::Refund, AuditResult::Refused)
    );
    let (caller, url, params, _) =
        crate::support::calls::connected_at(&app.base, "+15558880702", code).await;
    let mut stream = open(&caller, &url, &params).await;
    heard_the_agent(&mut stream).await;
    stream.hang_up().await;
}

/// The operator ends a live call: asked once (the GET changes nothing, Twilio is not asked),
/// then Twilio's API is asked to hang up; Twilio ends the stream and reports the call
/// completed, and the call is metered and settled like any other. The call's page says what
/// happened and offers no second ending; a second post is refused; the log has both.
async fn the_console_ends_a_live_call_through_twilio(store: DynStore) {
    use crate::support::app::{ACCOUNT_SID, AUTH_TOKEN};
    let agent = FakeAgent::start(Behaviour::default()).await;
    let twilio = crate::support::sms::MessagesApi::start(ACCOUNT_SID, AUTH_TOKEN).await;
    let app = app_with_agent(
        store,
        &agent,
        &[
            ("ADMIN_PASSWORD", PASSWORD),
            ("TWILIO_API_BASE", &twilio.base),
        ],
    )
    .await;
    let (mut caller, url, params, _) = crate::support::calls::connected_call(&app, 5, false).await;
    let mut stream = open(&caller, &url, &params).await;
    heard_the_agent(&mut stream).await;
    let sid = caller.call_sid.clone();

    let op = operator(&app).await;
    let page = format!("/admin/calls/{sid}");
    let ask = format!("{page}/end");
    let (_, shown) = get(&op, &app, &page).await;
    assert!(shown.contains(&format!("href=\"{ask}\"")), "{shown}");
    let (status, confirm) = get(&op, &app, &ask).await;
    assert_eq!(status, 200);
    assert!(confirm.contains("End this call?"), "{confirm}");
    assert!(twilio.ended().is_empty(), "asking ends nothing");

    let (status, to) = submit(&op, &app, &ask, &ask).await;
    assert_eq!(status, 303, "{to}");
    assert_eq!(twilio.ended(), vec![sid.clone()]);
    // Twilio's part: the stream stops, then the call's final status.
    stream.hang_up().await;
    let status = caller
        .status_callback(&app.url("/voice/status"), "completed", Some("9"))
        .await;
    assert_eq!(status, 200);
    let call = crate::support::calls::settled_call(&app, &sid).await;
    assert!(
        call.ended_at.is_some() && call.settled_at.is_some(),
        "{call:?}"
    );
    assert!(call.seconds_metered.0 >= 1, "metered: {call:?}");
    let order = app
        .app
        .store
        .order(call.order_id.as_deref().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(order.status, OrderStatus::Paid, "the code stays valid");

    let (_, after) = get(&op, &app, &to).await;
    assert!(after.contains("Twilio was asked to hang up"), "{after}");
    assert!(after.contains("<td>end call</td>"), "{after}");
    assert!(!after.contains(&format!("href=\"{ask}\"")), "{after}");
    let (status, refused) = submit_blind(&op, &app, &ask, &confirm).await;
    assert_eq!(status, 409, "{refused}");
    assert!(refused.contains("ended already"), "{refused}");
    let audit = app.app.store.audit_about(&sid, 10).await.unwrap();
    let steps: Vec<(AuditAction, AuditResult)> =
        audit.iter().rev().map(|e| (e.action, e.result)).collect();
    assert_eq!(
        steps,
        [
            (AuditAction::EndCall, AuditResult::Done),
            (AuditAction::EndCall, AuditResult::Refused),
        ]
    );
}

/// An overage charge Stripe paid (off-session, on the saved card), in the store as the
/// billing worker leaves it: its id.
async fn paid_overage(app: &TestApp, stripe: &LocalStripe, order: &Order) -> String {
    use callgate::store::{ChargeState, ChargeUpdate, NewCall, NewCharge};
    let (customer, card) = stripe.saved_card("4242424242424242").await;
    let (status, pi) = stripe
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "200"),
                ("currency", "usd"),
                ("customer", &customer),
                ("payment_method", &card),
                ("off_session", "true"),
                ("confirm", "true"),
            ],
        )
        .await;
    assert_eq!(
        (status, pi["status"].as_str()),
        (200, Some("succeeded")),
        "{pi}"
    );
    let store = &app.app.store;
    let now = app.app.clock.now();
    let sid = format!(
        "CA{}",
        callgate::store::new_id("x").trim_start_matches("x_")
    );
    store
        .upsert_call(&NewCall {
            call_sid: sid.clone(),
            from_number: "+15558880703".into(),
            to_number: "+15550002222".into(),
            now,
        })
        .await
        .unwrap();
    let (charge, _) = store
        .insert_charge(&NewCharge {
            id: callgate::store::new_id("chg"),
            call_sid: sid,
            order_id: order.id.clone(),
            amount: callgate::domain::money::Cents(200),
            currency: Default::default(),
            seconds_billed: callgate::domain::money::Seconds(120),
            now: now - 10,
        })
        .await
        .unwrap();
    store
        .claim_charge("test", now + 60, now)
        .await
        .unwrap()
        .expect("the charge is due");
    let update = ChargeUpdate {
        state: ChargeState::Succeeded,
        stripe_payment_intent: pi["id"].as_str().map(String::from),
        last_error: None,
        next_attempt_at: None,
        pay_token: None,
    };
    store
        .finish_charge(&charge.id, "test", &update, now)
        .await
        .unwrap();
    charge.id
}

/// An overage charge refunded from the order's page: asked once, refunded at Stripe, marked
/// refunded when Stripe's `charge.refunded` comes back; the order and its code stay as they
/// are; the charge is then offered no second refund.
async fn an_overage_charge_is_refunded_on_its_own(store: DynStore) {
    use callgate::store::ChargeState;
    let agent = FakeAgent::start(Behaviour::default()).await;
    let Some((app, stripe)) = shop(store, &agent).await else {
        return;
    };
    let (order, _) = bought(&app, &stripe).await;
    let charge_id = paid_overage(&app, &stripe, &order).await;
    let op = operator(&app).await;
    let page = format!("/admin/orders/{}", order.id);
    let ask = format!("/admin/charges/{charge_id}/refund");
    let (_, shown) = get(&op, &app, &page).await;
    assert!(shown.contains(&format!("href=\"{ask}\"")), "{shown}");
    let (status, to) = submit(&op, &app, &ask, &ask).await;
    assert_eq!(status, 303, "{to}");
    assert!(to.starts_with(&page), "{to}");
    let pi = app
        .app
        .store
        .charge(&charge_id)
        .await
        .unwrap()
        .unwrap()
        .stripe_payment_intent
        .unwrap();
    assert_eq!(refunds_at_stripe(&stripe, &pi).await, 1);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let charge = app.app.store.charge(&charge_id).await.unwrap().unwrap();
        if charge.state == ChargeState::Refunded {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never marked refunded: {charge:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let now = app.app.store.order(&order.id).await.unwrap().unwrap();
    assert_eq!(now.status, OrderStatus::Paid, "the code stays valid");
    let (status, _) = get(&op, &app, &ask).await;
    assert_eq!(status, 303, "a refunded charge has nothing left to confirm");
    let audit = app.app.store.audit_about(&charge_id, 10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (
            audit[0].action,
            audit[0].result,
            audit[0].order_id.as_deref()
        ),
        (
            AuditAction::Refund,
            AuditResult::Done,
            Some(order.id.as_str())
        )
    );
}

crate::on_every_backend!(
    an_overage_charge_is_refunded_on_its_own,
    the_console_ends_a_live_call_through_twilio,
    a_console_refund_ends_the_live_call_and_refunds_once,
    a_refund_stripe_refuses_is_shown_and_changes_nothing,
);
