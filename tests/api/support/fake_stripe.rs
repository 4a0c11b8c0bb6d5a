//! A small recording Stripe stand-in for the billing fault tests, where localstripe falls
//! short: it honours `Idempotency-Key` the way Stripe API v1 does (a key whose request ran
//! gets the saved answer again), and answers from a script (500s, 402s).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// A 500 before the request ran (not saved under the key).
    ServerError,
    /// Charge succeeds.
    Succeed,
    /// 402 `authentication_required`, with the PaymentIntent in the error.
    AuthenticationRequired,
    /// 402 `card_declined` (`insufficient_funds`).
    Decline,
}

#[derive(Default)]
pub struct Recorded {
    /// Every POST /v1/payment_intents: (idempotency key, form).
    pub requests: Vec<(Option<String>, HashMap<String, String>)>,
    /// PaymentIntents created, by id.
    pub intents: HashMap<String, Value>,
    saved: HashMap<String, (u16, Value)>,
    script: VecDeque<Next>,
    customers: usize,
}

#[derive(Clone)]
pub struct FakeStripe {
    pub base: String,
    pub state: Arc<Mutex<Recorded>>,
}

impl FakeStripe {
    pub async fn start(script: &[Next]) -> FakeStripe {
        let state = Arc::new(Mutex::new(Recorded {
            script: script.iter().copied().collect(),
            ..Recorded::default()
        }));
        let app = Router::new()
            .route("/v1/payment_intents", post(create).get(list))
            .route("/v1/payment_intents/{id}", get(retrieve))
            .route("/v1/payment_intents/{id}/cancel", post(cancel))
            .route("/v1/customers", post(customer))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeStripe { base, state }
    }

    /// What the customer's browser does: pays a PaymentIntent (with a card saved on its
    /// customer, if it has one). Returns the PaymentIntent as Stripe would send it.
    pub fn pay(&self, id: &str) -> Value {
        let mut s = self.state.lock().unwrap();
        let pi = s.intents.get_mut(id).expect("a PaymentIntent of this fake");
        pi["status"] = json!("succeeded");
        pi["payment_method"] = json!("pm_fake_card");
        pi.clone()
    }

    /// A PaymentIntent some other product made on the same account, paid.
    pub fn foreign_payment(&self, amount: i64, currency: &str) -> Value {
        let mut s = self.state.lock().unwrap();
        let id = format!("pi_fake_{}", s.intents.len() + 1);
        let pi = json!({ "id": id, "object": "payment_intent", "status": "succeeded",
            "amount": amount, "currency": currency, "metadata": {} });
        s.intents.insert(id, pi.clone());
        pi
    }

    /// Scripts the outcome of the next confirmed (off-session) PaymentIntents.
    pub fn script(&self, next: &[Next]) {
        self.state
            .lock()
            .unwrap()
            .script
            .extend(next.iter().copied());
    }

    pub fn clear_script(&self) {
        self.state.lock().unwrap().script.clear();
    }

    /// The confirmed PaymentIntent requests so far (overage charges): (key, form).
    pub fn confirmed(&self) -> Vec<(Option<String>, HashMap<String, String>)> {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|(_, f)| f.get("confirm").map(String::as_str) == Some("true"))
            .cloned()
            .collect()
    }

    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }

    pub fn intents(&self) -> usize {
        self.state.lock().unwrap().intents.len()
    }

    pub fn keys(&self) -> Vec<Option<String>> {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .map(|(k, _)| k.clone())
            .collect()
    }
}

async fn create(
    State(state): State<Arc<Mutex<Recorded>>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let mut s = state.lock().unwrap();
    s.requests.push((key.clone(), form.clone()));
    if let Some((status, body)) = key.as_ref().and_then(|k| s.saved.get(k)).cloned() {
        return (StatusCode::from_u16(status).unwrap(), Json(body)).into_response();
    }
    let confirmed = form.get("confirm").map(String::as_str) == Some("true");
    let next = if confirmed {
        s.script.pop_front().unwrap_or(Next::Succeed)
    } else {
        // A purchase: the browser pays it later (`FakeStripe::pay`).
        Next::Succeed
    };
    if next == Next::ServerError {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": { "type": "api_error", "message": "scripted outage" } })),
        )
            .into_response();
    }
    let id = format!("pi_fake_{}", s.intents.len() + 1);
    let status = match next {
        Next::Succeed if !confirmed => "requires_payment_method",
        Next::Succeed => "succeeded",
        Next::AuthenticationRequired => "requires_action",
        _ => "requires_payment_method",
    };
    let metadata: serde_json::Map<String, Value> = form
        .iter()
        .filter_map(|(k, v)| {
            Some((
                k.strip_prefix("metadata[")?.strip_suffix(']')?.to_string(),
                Value::String(v.clone()),
            ))
        })
        .collect();
    let pi = json!({
        "id": id, "object": "payment_intent", "status": status,
        "amount": form.get("amount").and_then(|a| a.parse::<i64>().ok()),
        "currency": form.get("currency"), "customer": form.get("customer"),
        "payment_method": form.get("payment_method"), "metadata": metadata,
        "client_secret": format!("{id}_secret_fake"),
    });
    s.intents.insert(id.clone(), pi.clone());
    let (code, body) = match next {
        Next::Succeed => (200, pi),
        Next::AuthenticationRequired => (
            402,
            json!({ "error": { "type": "card_error", "code": "authentication_required",
            "message": "This payment requires authentication.", "payment_intent": pi } }),
        ),
        _ => (
            402,
            json!({ "error": { "type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds.", "payment_intent": pi } }),
        ),
    };
    if let Some(k) = key {
        s.saved.insert(k, (code, body.clone()));
    }
    (StatusCode::from_u16(code).unwrap(), Json(body)).into_response()
}

async fn retrieve(State(state): State<Arc<Mutex<Recorded>>>, Path(id): Path<String>) -> Response {
    match state.lock().unwrap().intents.get(&id) {
        Some(pi) => Json(pi.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({ "error": { "type": "invalid_request_error", "message": "no such payment_intent" } }))).into_response(),
    }
}

async fn list(State(state): State<Arc<Mutex<Recorded>>>) -> Response {
    let s = state.lock().unwrap();
    let mut data: Vec<Value> = s.intents.values().cloned().collect();
    data.sort_by_key(|pi| pi["id"].as_str().unwrap_or_default().to_string());
    Json(json!({ "object": "list", "data": data, "has_more": false })).into_response()
}

async fn cancel(State(state): State<Arc<Mutex<Recorded>>>, Path(id): Path<String>) -> Response {
    let mut s = state.lock().unwrap();
    match s.intents.get_mut(&id) {
        Some(pi) if pi["status"] != "succeeded" => {
            pi["status"] = json!("canceled");
            Json(pi.clone()).into_response()
        }
        Some(_) => (StatusCode::BAD_REQUEST, Json(json!({ "error": { "type": "invalid_request_error", "code": "payment_intent_unexpected_state", "message": "succeeded" } }))).into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({ "error": { "type": "invalid_request_error", "message": "no such payment_intent" } }))).into_response(),
    }
}

async fn customer(State(state): State<Arc<Mutex<Recorded>>>) -> Response {
    let mut s = state.lock().unwrap();
    s.customers += 1;
    Json(json!({ "id": format!("cus_fake_{}", s.customers), "object": "customer" })).into_response()
}
