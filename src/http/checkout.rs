//! The storefront's two JSON calls: create a PaymentIntent for the plan, and show a paid
//! order to whoever holds its PaymentIntent's client secret.

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::domain::message::Address;
use crate::http::AppState;
use crate::orders::{self, checkout, CheckoutError, Purchase};
use crate::store::{OrderStatus, StoreError};
use crate::stripe::client::StripeError;

pub const CREATE_PATH: &str = "/api/create-payment-intent";
pub const OLD_CREATE_PATH: &str = "/.netlify/functions/create-payment-intent";
pub const DETAILS_PATH: &str = "/api/order-details";
pub const OLD_DETAILS_PATH: &str = "/.netlify/functions/get-order-details";

pub fn router() -> axum::Router<AppState> {
    Router::new()
        .route(CREATE_PATH, post(create_payment_intent))
        .route(OLD_CREATE_PATH, post(create_payment_intent))
        .route(DETAILS_PATH, get(order_details))
        .route(OLD_DETAILS_PATH, get(order_details))
}

/// What goes wrong at this boundary, with the short message the browser sees.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("not found")]
    NotFound,
    #[error("payments are not configured")]
    NotConfigured,
    #[error("the payment provider could not be reached; please try again")]
    Stripe(#[from] StripeError),
    #[error("temporarily unavailable; please try again")]
    Store(#[from] StoreError),
}

impl From<CheckoutError> for ApiError {
    fn from(e: CheckoutError) -> Self {
        match e {
            CheckoutError::NotConfigured => ApiError::NotConfigured,
            CheckoutError::UnknownPlan => ApiError::BadRequest(e.to_string()),
            CheckoutError::Stripe(e) => ApiError::Stripe(e),
            CheckoutError::Store(e) => ApiError::Store(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::NotConfigured => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Stripe(e) => {
                tracing::error!(error = %e, "Stripe call failed");
                StatusCode::BAD_GATEWAY
            }
            ApiError::Store(e) => {
                tracing::error!(error = %e, "store failed");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        no_store((status, Json(json!({ "error": self.to_string() }))).into_response())
    }
}

/// A JSON answer that must not be cached (it names an order, a code or a secret).
pub(super) fn no_store(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

/// Reads the JSON body by hand so that every malformed input gets a clear 400.
fn parse_request(body: &[u8]) -> Result<Purchase, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Purchase {
            plan: None,
            overage_accepted: false,
            email: None,
            phone: None,
        });
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::BadRequest("the body must be a JSON object".into()))?;
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::BadRequest("the body must be a JSON object".into()))?;
    // The old storefront sent `acceptOverage`; accept both spellings.
    let overage = match obj
        .get("overage_accepted")
        .or_else(|| obj.get("acceptOverage"))
    {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "overage_accepted must be true or false".into(),
            ))
        }
    };
    let email = match obj.get("email") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(
            Address::email(s)
                .ok_or_else(|| ApiError::BadRequest("email is not a valid address".into()))?
                .to,
        ),
        Some(_) => return Err(ApiError::BadRequest("email must be a string".into())),
    };
    let phone = match obj.get("phone") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(
            Address::sms(s)
                .ok_or_else(|| {
                    ApiError::BadRequest(
                        "phone must be a mobile number with its country code, like +1 555 010 0200"
                            .into(),
                    )
                })?
                .to,
        ),
        Some(_) => return Err(ApiError::BadRequest("phone must be a string".into())),
    };
    // The plan by its id only: a price or minutes in the body are not read.
    let plan = match obj.get("plan") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= 80 => Some(s.trim().to_string()),
        Some(_) => return Err(ApiError::BadRequest("plan must be a plan's id".into())),
    };
    Ok(Purchase {
        plan,
        overage_accepted: overage,
        email,
        phone,
    })
}

/// `POST /api/create-payment-intent` `{ "plan"?: id, "overage_accepted": bool, "email"?: string,
/// "phone"?: string }`.
/// The amount and minutes come from the configured plan, never from the browser.
async fn create_payment_intent(
    State(app): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let Some(config) = app.config.stripe.as_ref() else {
        return Err(ApiError::NotConfigured);
    };
    let started = checkout::start(&app, &parse_request(&body)?).await?;
    let order = &started.order;
    Ok(no_store(
        Json(json!({
            "clientSecret": started.client_secret,
            "paymentIntent": started.payment_intent,
            "publishableKey": config.publishable_key,
            "plan": order.plan,
            "amount": order.amount.0,
            "currency": order.currency.code(),
            "amountDisplay": order.currency.format(order.amount),
        }))
        .into_response(),
    ))
}

#[derive(Debug, Deserialize)]
pub struct DetailsQuery {
    payment_intent: Option<String>,
    client_secret: Option<String>,
    /// The name Stripe's redirect gives the client secret.
    payment_intent_client_secret: Option<String>,
}

/// Formats an E.164 number for reading: `+1 555 010 0200`.
pub fn display_phone(e164: &str) -> String {
    let digits = e164.trim_start_matches('+');
    if digits.len() == 11 && digits.starts_with('1') {
        format!("+1 {} {} {}", &digits[1..4], &digits[4..7], &digits[7..])
    } else {
        e164.to_string()
    }
}

/// `GET /api/order-details?payment_intent=..&client_secret=..`: an unknown id and a wrong
/// secret get the same 404, so an id alone reveals nothing.
async fn order_details(
    State(app): State<AppState>,
    Query(q): Query<DetailsQuery>,
) -> Result<Response, ApiError> {
    let pi = q.payment_intent.unwrap_or_default();
    let secret = q
        .client_secret
        .or(q.payment_intent_client_secret)
        .unwrap_or_default();
    if pi.is_empty() || secret.is_empty() || pi.len() > 200 || secret.len() > 300 {
        return Err(ApiError::NotFound);
    }
    let Some(order) = checkout::proven_order(&app, &pi, &secret).await? else {
        return Err(ApiError::NotFound);
    };
    let phone = app.config.twilio.as_ref().map(|t| t.phone_number.clone());
    let currency = &order.currency;
    let mut body = json!({
        "status": order.status.as_str(),
        "plan": order.plan,
        "amountDisplay": currency.format(order.amount),
        "paidAt": order.paid_at.map(crate::domain::clock::iso8601),
        "reference": order.id,
        "browserPhone": app.config.demo.then_some("/demo/phone"),
        "minutes": order.seconds_included.0 / 60,
        "minutesLeft": order.seconds_left().0 / 60,
        "overage": order.overage_consent,
        "overagePrice": currency.format(order.overage_price),
        "phone": phone,
        "phoneDisplay": phone.as_deref().map(display_phone),
    });
    if order.status == OrderStatus::Paid {
        if let Some(code) = orders::code_of(&app, &order) {
            body["code"] = json!(code.expose());
            body["codeDisplay"] = json!(code.grouped());
            body["account"] = json!(orders::account::path(&app, &order.id));
            let receipts = app.store.messages_for_order(&order.id).await?;
            let sent_to: Vec<String> = receipts
                .iter()
                .filter(|m| m.kind == crate::domain::message::MessageKind::Receipt)
                .map(|m| crate::domain::message::masked(m.channel, &m.to))
                .collect();
            body["sentTo"] = json!(sent_to);
        }
    }
    Ok(no_store(Json(body).into_response()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purchase(plan: Option<&str>, overage_accepted: bool, email: Option<&str>) -> Purchase {
        Purchase {
            plan: plan.map(String::from),
            overage_accepted,
            email: email.map(String::from),
            phone: None,
        }
    }

    #[test]
    fn request_bodies() {
        assert_eq!(parse_request(b"").unwrap(), purchase(None, false, None));
        assert_eq!(
            parse_request(br#"{"overage_accepted":true}"#).unwrap(),
            purchase(None, true, None)
        );
        assert_eq!(
            parse_request(br#"{"acceptOverage":true,"email":" a@b.co "}"#).unwrap(),
            purchase(None, true, Some("a@b.co"))
        );
        // The plan by id; a price or minutes beside it are not read.
        assert_eq!(
            parse_request(br#"{"plan":"half-hour","amount":1,"minutes":999}"#).unwrap(),
            purchase(Some("half-hour"), false, None)
        );
        for bad in [
            &br#"{"plan":15}"#[..],
            br#"{"plan":["a"]}"#,
            &b"[1]"[..],
            b"{",
            br#"{"overage_accepted":"yes"}"#,
            br#"{"email":"nope"}"#,
            br#"{"email":5}"#,
        ] {
            assert!(
                matches!(parse_request(bad), Err(ApiError::BadRequest(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn phone_display() {
        assert_eq!(display_phone("+15550100200"), "+1 555 010 0200");
        assert_eq!(display_phone("+442071838750"), "+442071838750");
    }
}
