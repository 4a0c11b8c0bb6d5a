//! A small Stripe client for the few calls callgate makes.
//!
//! Hand-written over reqwest rather than a generated SDK: callgate needs three endpoints, and
//! the SDK crates compile hundreds of thousands of lines for them. Every POST carries an
//! `Idempotency-Key`, so the retries on network errors, 429 and 5xx are safe: Stripe answers
//! a repeated key with the first result.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use url::Url;

use super::intent::IntentStatus;
use crate::config::{Secret, StripeConfig};

/// Attempts per call (the first and two retries).
const ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    /// No answer (connection refused, timeout) after every retry.
    #[error("Stripe unreachable: {0}")]
    Network(String),
    /// Stripe answered with an error object.
    #[error("Stripe error {status}: {message}")]
    Api {
        status: u16,
        /// `error.type`: card_error, invalid_request_error, api_error, ...
        kind: Option<String>,
        /// `error.code`: card_declined, authentication_required, ...
        code: Option<String>,
        decline_code: Option<String>,
        message: String,
        /// The PaymentIntent Stripe attaches to a card error, if any.
        payment_intent: Option<Box<PaymentIntent>>,
    },
    #[error("unexpected answer from Stripe: {0}")]
    Decode(String),
}

impl StripeError {
    /// Worth another try later: the network, Stripe's own trouble, or rate limiting.
    pub fn is_transient(&self) -> bool {
        match self {
            StripeError::Network(_) => true,
            StripeError::Api { status, .. } => *status == 429 || *status >= 500,
            StripeError::Decode(_) => false,
        }
    }

    /// The kind counted in `/metrics`.
    pub fn metric_kind(&self) -> &'static str {
        match self {
            StripeError::Network(_) => "network",
            StripeError::Api { status: 429, .. } => "rate_limited",
            StripeError::Api { status, .. } if *status >= 500 => "server",
            StripeError::Api { kind, .. } if kind.as_deref() == Some("card_error") => "card",
            StripeError::Api { .. } => "request",
            StripeError::Decode(_) => "decode",
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            StripeError::Api { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentIntent {
    pub id: String,
    pub status: IntentStatus,
    pub amount: i64,
    pub currency: String,
    pub client_secret: Option<String>,
    pub customer: Option<String>,
    pub payment_method: Option<String>,
    pub metadata: HashMap<String, String>,
}

/// An id field that may be a string or an expanded object.
pub(crate) fn id_of(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(String::from),
        _ => None,
    }
}

impl PaymentIntent {
    /// What callgate created it for (its metadata), if callgate created it.
    pub fn kind(&self) -> Option<PaymentKind> {
        self.metadata.get(KIND_KEY)?.parse().ok()
    }

    pub fn from_json(v: &Value) -> Result<PaymentIntent, StripeError> {
        let id = id_of(v, "id")
            .ok_or_else(|| StripeError::Decode("payment intent without id".into()))?;
        let metadata = v
            .get("metadata")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        Ok(PaymentIntent {
            id,
            status: IntentStatus::parse(
                v.get("status").and_then(Value::as_str).unwrap_or_default(),
            ),
            amount: v.get("amount").and_then(Value::as_i64).unwrap_or_default(),
            currency: v
                .get("currency")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            client_secret: v
                .get("client_secret")
                .and_then(Value::as_str)
                .map(String::from),
            customer: id_of(v, "customer"),
            payment_method: id_of(v, "payment_method"),
            metadata,
        })
    }
}

#[derive(Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    base: Url,
    key: Secret,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeClient")
            .field("base", &self.base.as_str())
            .finish()
    }
}

/// Form parameters, in Stripe's bracket notation (`metadata[plan]`).
pub type Form = Vec<(String, String)>;

pub fn param(name: &str, value: impl ToString) -> (String, String) {
    (name.to_string(), value.to_string())
}

/// The metadata key on every PaymentIntent callgate creates: its [`PaymentKind`].
pub const KIND_KEY: &str = "callgate_kind";

crate::domain::text_enum!(
    /// What a PaymentIntent callgate creates pays for.
    PaymentKind {
        /// A plan: a new order and its code.
        Purchase = "purchase",
        /// Overage minutes, charged off-session after a call.
        Overage = "overage",
        /// Minutes added to a code the customer holds.
        TopUp = "top_up",
    }
);

/// The form parameter that marks a PaymentIntent callgate creates as `kind`.
pub fn kind_param(kind: PaymentKind) -> (String, String) {
    (format!("metadata[{KIND_KEY}]"), kind.as_str().to_string())
}

/// The kind a PaymentIntent (as Stripe sends it) was created as, if callgate created it.
pub fn kind_of(pi: &Value) -> Option<PaymentKind> {
    pi.get("metadata")?.get(KIND_KEY)?.as_str()?.parse().ok()
}

/// A metadata value of a PaymentIntent (as Stripe sends it).
pub fn metadata_of(pi: &Value, key: &str) -> Option<String> {
    Some(pi.get("metadata")?.get(key)?.as_str()?.to_string())
}

impl StripeClient {
    pub fn new(config: &StripeConfig) -> StripeClient {
        StripeClient::with_timeouts(config, Duration::from_secs(5), Duration::from_secs(20))
    }

    /// A client whose every request gives up after `total` (connecting after `connect`).
    pub fn with_timeouts(
        config: &StripeConfig,
        connect: Duration,
        total: Duration,
    ) -> StripeClient {
        let http = reqwest::Client::builder()
            .connect_timeout(connect)
            .timeout(total)
            .user_agent(concat!("callgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        StripeClient {
            http,
            base: config.api_base.clone(),
            key: config.secret_key.clone(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.as_str().trim_end_matches('/'))
    }

    /// POSTs a form, retrying transient failures with the same idempotency key.
    /// Sends the request `build` makes, retrying transient failures (the same request, so a
    /// POST keeps its idempotency key) with backoff.
    async fn send(
        &self,
        path: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Value, StripeError> {
        let mut delay = Duration::from_millis(250);
        let mut attempt = 1;
        loop {
            let result = match build().bearer_auth(self.key.expose()).send().await {
                Ok(resp) => Self::read(resp).await,
                Err(e) => Err(StripeError::Network(e.to_string())),
            };
            if let Err(e) = &result {
                crate::metrics::STRIPE_ERRORS.add(e.metric_kind());
            }
            match result {
                Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                    tracing::warn!(path, attempt, error = %e, "Stripe call failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// POSTs a form under an idempotency key.
    pub async fn post(
        &self,
        path: &str,
        form: &Form,
        idempotency_key: &str,
    ) -> Result<Value, StripeError> {
        let url = self.url(path);
        self.send(path, || {
            self.http
                .post(&url)
                .header("Idempotency-Key", idempotency_key)
                .form(form)
        })
        .await
    }

    pub async fn get(&self, path: &str) -> Result<Value, StripeError> {
        let url = self.url(path);
        self.send(path, || self.http.get(&url)).await
    }

    async fn read(resp: reqwest::Response) -> Result<Value, StripeError> {
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.map_err(|e| {
            if status >= 500 {
                StripeError::Api {
                    status,
                    kind: None,
                    code: None,
                    decline_code: None,
                    message: e.to_string(),
                    payment_intent: None,
                }
            } else {
                StripeError::Decode(e.to_string())
            }
        })?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let err = body.get("error").cloned().unwrap_or(Value::Null);
        let text = |k: &str| err.get(k).and_then(Value::as_str).map(String::from);
        Err(StripeError::Api {
            status,
            kind: text("type"),
            code: text("code"),
            decline_code: text("decline_code"),
            message: text("message").unwrap_or_else(|| format!("HTTP {status}")),
            payment_intent: err
                .get("payment_intent")
                .and_then(|pi| PaymentIntent::from_json(pi).ok())
                .map(Box::new),
        })
    }

    pub async fn create_customer(
        &self,
        form: &Form,
        idempotency_key: &str,
    ) -> Result<String, StripeError> {
        let v = self.post("/v1/customers", form, idempotency_key).await?;
        id_of(&v, "id").ok_or_else(|| StripeError::Decode("customer without id".into()))
    }

    pub async fn create_payment_intent(
        &self,
        form: &Form,
        idempotency_key: &str,
    ) -> Result<PaymentIntent, StripeError> {
        PaymentIntent::from_json(
            &self
                .post("/v1/payment_intents", form, idempotency_key)
                .await?,
        )
    }

    pub async fn retrieve_payment_intent(&self, id: &str) -> Result<PaymentIntent, StripeError> {
        PaymentIntent::from_json(&self.get(&payment_intent_path(id)?).await?)
    }

    /// Cancels a PaymentIntent that has not been paid (Stripe answers 400 if it cannot).
    pub async fn cancel_payment_intent(&self, id: &str) -> Result<PaymentIntent, StripeError> {
        let path = format!("{}/cancel", payment_intent_path(id)?);
        let key = format!("callgate-cancel-{id}");
        PaymentIntent::from_json(&self.post(&path, &Form::new(), &key).await?)
    }

    /// Refunds what is left of a PaymentIntent's payment. The key is the PaymentIntent's own,
    /// so asking twice (a second click, a retry after a timeout) is one refund: Stripe answers
    /// a repeated key with its first answer, and refuses a refund of a payment already
    /// refunded (`charge_already_refunded`). The refund then arrives as `charge.refunded`,
    /// like one made in the dashboard.
    pub async fn refund_payment_intent(&self, id: &str) -> Result<Refund, StripeError> {
        payment_intent_path(id)?;
        let key = format!("callgate-refund-{id}");
        let body = self
            .post("/v1/refunds", &vec![param("payment_intent", id)], &key)
            .await?;
        let text = |k: &str| body.get(k).and_then(Value::as_str).map(String::from);
        Ok(Refund {
            id: text("id").ok_or_else(|| StripeError::Decode("a refund without an id".into()))?,
            status: crate::stripe::intent::RefundStatus::parse(&text("status").unwrap_or_default()),
            amount: body.get("amount").and_then(Value::as_i64).unwrap_or(0),
        })
    }
}

/// A refund as Stripe answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    pub id: String,
    pub status: crate::stripe::intent::RefundStatus,
    /// In the payment's smallest unit.
    pub amount: i64,
}

/// `/v1/payment_intents/{id}`, for an id that can be one (it goes into the URL's path).
fn payment_intent_path(id: &str) -> Result<String, StripeError> {
    if is_payment_intent_id(id) {
        Ok(format!("/v1/payment_intents/{id}"))
    } else {
        Err(StripeError::Decode("not a PaymentIntent id".into()))
    }
}

/// Whether `id` has the characters of a Stripe id (never a path or a query).
pub fn is_payment_intent_id(id: &str) -> bool {
    !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
