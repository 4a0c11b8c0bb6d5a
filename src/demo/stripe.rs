//! The demo's Stripe: a small in-memory stand-in for the three API calls callgate makes
//! (customers, PaymentIntents, retrieving one), its signed webhooks, and a stand-in for
//! Stripe.js (`/demo/stripe.js`) whose "card form" confirms through `/demo/stripe/confirm`.
//!
//! It follows Stripe's shapes closely enough that callgate's real client, webhook handler
//! and billing worker run unchanged: form-encoded requests, `Idempotency-Key` replay,
//! `metadata[...]`, off-session confirmation against a saved card, and 402 card errors.

use crate::stripe::intent::IntentStatus;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde_json::{json, Value};

use crate::stripe::signature;

/// A card number that the demo declines, like Stripe's test card.
pub const DECLINED_CARD: &str = "4000000000000002";

#[derive(Default)]
struct Ledger {
    customers: HashMap<String, Option<String>>,
    intents: HashMap<String, Value>,
    /// Idempotency-Key -> the answer given the first time.
    replies: HashMap<String, (u16, Value)>,
    seq: u64,
}

/// The demo Stripe's state, shared by its API listener and callgate's `/demo/stripe/confirm`.
pub struct DemoStripe {
    pub secret_key: String,
    pub webhook_secret: String,
    /// Where webhooks go (callgate's own `/webhooks/stripe`).
    webhook_url: String,
    ledger: Mutex<Ledger>,
    http: reqwest::Client,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn card_error(code: &str, decline: Option<&str>, message: &str, pi: Option<&Value>) -> Value {
    json!({ "error": {
        "type": "card_error", "code": code, "decline_code": decline, "message": message,
        "payment_intent": pi,
    }})
}

impl DemoStripe {
    pub fn new(secret_key: String, webhook_secret: String, webhook_url: String) -> Arc<Self> {
        Arc::new(DemoStripe {
            secret_key,
            webhook_secret,
            webhook_url,
            ledger: Mutex::new(Ledger::default()),
            http: reqwest::Client::new(),
        })
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The API: `/v1/customers`, `/v1/payment_intents`, `/v1/payment_intents/{id}`.
    pub fn api(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1/customers", post(create_customer))
            .route("/v1/payment_intents", post(create_payment_intent))
            .route("/v1/payment_intents/{id}", get(retrieve_payment_intent))
            .route_layer(axum::middleware::from_fn_with_state(
                self.clone(),
                require_key,
            ))
            .with_state(self.clone())
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let expected = format!("Bearer {}", self.secret_key);
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| crate::crypto::constant_time_eq(v.as_bytes(), expected.as_bytes()))
    }

    /// Replays the answer to a repeated Idempotency-Key, or computes and keeps a new one.
    fn idempotent(
        &self,
        headers: &HeaderMap,
        make: impl FnOnce(&mut Ledger) -> (u16, Value),
    ) -> (u16, Value) {
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let mut ledger = self.ledger();
        if let Some(reply) = key.as_ref().and_then(|k| ledger.replies.get(k)) {
            return reply.clone();
        }
        let reply = make(&mut ledger);
        if let Some(k) = key {
            ledger.replies.insert(k, reply.clone());
        }
        reply
    }

    /// Confirms a PaymentIntent on-session with the card typed in the demo form. Returns the
    /// PaymentIntent, or a card error.
    pub fn confirm(&self, client_secret: &str, card: &str) -> Result<Value, Value> {
        let card: String = card.chars().filter(char::is_ascii_digit).collect();
        let mut ledger = self.ledger();
        ledger.seq += 1;
        let seq = ledger.seq;
        let Some(pi) = ledger
            .intents
            .values_mut()
            .find(|pi| pi["client_secret"].as_str() == Some(client_secret))
        else {
            return Err(json!({ "error": { "type": "invalid_request_error",
                "message": "No such payment_intent (demo)." } }));
        };
        let status = IntentStatus::parse(pi["status"].as_str().unwrap_or_default());
        if status == IntentStatus::Succeeded {
            return Ok(pi.clone());
        }
        if card.len() < 12 {
            return Err(card_error(
                "incorrect_number",
                None,
                "Your card number is incomplete.",
                None,
            ));
        }
        if card == DECLINED_CARD {
            pi["status"] = json!("requires_payment_method");
            let failed = pi.clone();
            let id = failed["id"].as_str().unwrap_or_default().to_string();
            drop(ledger);
            self.send_event("payment_intent.payment_failed", &id, failed.clone());
            return Err(card_error(
                "card_declined",
                Some("generic_decline"),
                "Your card was declined. (This is the demo's declining card.)",
                Some(&failed),
            ));
        }
        let pm = format!("pm_demo_{seq}_{}", &card[card.len() - 4..]);
        pi["status"] = json!("succeeded");
        pi["payment_method"] = json!(pm);
        let saved_for = (pi["setup_future_usage"] == "off_session")
            .then(|| pi["customer"].as_str().map(String::from))
            .flatten();
        let succeeded = pi.clone();
        if let Some(customer) = saved_for {
            ledger.customers.insert(customer, Some(pm));
        }
        drop(ledger);
        let id = succeeded["id"].as_str().unwrap_or_default().to_string();
        self.send_event("payment_intent.succeeded", &id, succeeded.clone());
        Ok(succeeded)
    }

    /// Delivers a signed event to callgate in the background, as Stripe does, retrying a few
    /// times if callgate is not ready.
    fn send_event(&self, kind: &str, object_id: &str, object: Value) {
        let event = json!({
            "id": format!("evt_demo_{}_{}", object_id, kind.replace('.', "_")),
            "object": "event", "type": kind, "created": now(), "livemode": false,
            "data": { "object": object },
        });
        let body = event.to_string();
        let (http, url, secret) = (
            self.http.clone(),
            self.webhook_url.clone(),
            self.webhook_secret.clone(),
        );
        tokio::spawn(async move {
            for attempt in 0..5u32 {
                let t = now();
                let header = format!("t={t},v1={}", signature::sign(&secret, t, body.as_bytes()));
                let sent = http
                    .post(&url)
                    .header("Stripe-Signature", header)
                    .header("Content-Type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => return,
                    _ => tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await,
                }
            }
            tracing::warn!("demo Stripe could not deliver a webhook event");
        });
    }
}

type Params = Form<Vec<(String, String)>>;

fn param<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn reply((status, body): (u16, Value)) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Json(body),
    )
        .into_response()
}

/// Every call carries the demo's secret key, as Stripe requires.
async fn require_key(
    State(stripe): State<Arc<DemoStripe>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !stripe.authorized(req.headers()) {
        return reply((
            401,
            json!({ "error": { "type": "invalid_request_error", "message": "Invalid API Key provided (demo)." } }),
        ));
    }
    next.run(req).await
}

async fn create_customer(
    State(stripe): State<Arc<DemoStripe>>,
    headers: HeaderMap,
    Form(form): Params,
) -> Response {
    reply(stripe.idempotent(&headers, |ledger| {
        ledger.seq += 1;
        let id = format!("cus_demo_{}", ledger.seq);
        ledger.customers.insert(id.clone(), None);
        (
            200,
            json!({ "id": id, "object": "customer", "email": param(&form, "email") }),
        )
    }))
}

async fn create_payment_intent(
    State(stripe): State<Arc<DemoStripe>>,
    headers: HeaderMap,
    Form(form): Params,
) -> Response {
    let mut succeeded = None;
    let answer = stripe.idempotent(&headers, |ledger| {
        let Some(amount) = param(&form, "amount").and_then(|a| a.parse::<i64>().ok()) else {
            return (
                400,
                json!({ "error": { "type": "invalid_request_error", "param": "amount",
                    "message": "Missing required param: amount." } }),
            );
        };
        ledger.seq += 1;
        let id = format!("pi_demo_{}", ledger.seq);
        let metadata: serde_json::Map<String, Value> = form
            .iter()
            .filter_map(|(k, v)| {
                let key = k.strip_prefix("metadata[")?.strip_suffix(']')?;
                Some((key.to_string(), json!(v)))
            })
            .collect();
        let customer = param(&form, "customer").map(String::from);
        let mut pi = json!({
            "id": id, "object": "payment_intent", "amount": amount,
            "currency": param(&form, "currency").unwrap_or("usd"),
            "customer": customer, "metadata": metadata,
            "client_secret": format!("{id}_secret_{}", crate::store::new_id("s").trim_start_matches("s_")),
            "setup_future_usage": param(&form, "setup_future_usage"),
            "payment_method": param(&form, "payment_method"),
            "status": "requires_payment_method", "livemode": false, "created": now(),
        });
        if param(&form, "confirm") == Some("true") {
            // Off-session: only the card saved on this customer can pay.
            let saved = customer
                .as_ref()
                .and_then(|c| ledger.customers.get(c).cloned().flatten());
            let wanted = param(&form, "payment_method");
            if saved.is_none() || saved.as_deref() != wanted {
                pi["status"] = json!("requires_payment_method");
                ledger.intents.insert(id.clone(), pi.clone());
                return (
                    402,
                    card_error(
                        "card_declined",
                        Some("generic_decline"),
                        "No saved card on this customer (demo).",
                        Some(&pi),
                    ),
                );
            }
            pi["status"] = json!("succeeded");
            succeeded = Some(pi.clone());
        }
        ledger.intents.insert(id, pi.clone());
        (200, pi)
    });
    if let Some(pi) = succeeded {
        let id = pi["id"].as_str().unwrap_or_default().to_string();
        stripe.send_event("payment_intent.succeeded", &id, pi);
    }
    reply(answer)
}

async fn retrieve_payment_intent(
    State(stripe): State<Arc<DemoStripe>>,
    Path(id): Path<String>,
) -> Response {
    match stripe.ledger().intents.get(&id) {
        Some(pi) => reply((200, pi.clone())),
        None => reply((
            404,
            json!({ "error": { "type": "invalid_request_error", "code": "resource_missing",
                "message": format!("No such payment_intent: '{id}'") } }),
        )),
    }
}

/// The stand-in for Stripe.js that the demo's storefront and pay page load.
pub const STRIPE_JS: &str = include_str!("../../web/assets/demo-stripe.js");
