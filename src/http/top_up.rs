//! Top-ups on the web (`orders::top_up`): the page at `/top-up/{order}/{token}` (the account
//! link's token), its JSON call that starts the PaymentIntent for a pack, and the status it
//! polls until the webhook has credited the minutes. A wrong link gets the 404 page; the JSON
//! calls go through the API's rate limit.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::checkout::{no_store, ApiError};
use super::pages::{
    minutes_phrase, not_found, plan_choices, private_page, publishable_key, render, unavailable,
};
use super::AppState;
use crate::orders::top_up::{self, TopUpError};

const TOP_UP: &str = include_str!("../../web/top-up.html");

/// The page, outside the API's rate limit (as the account page).
pub fn page_router() -> Router<AppState> {
    Router::new().route("/top-up/{order}/{token}", get(top_up_page))
}

/// The JSON calls, inside it.
pub fn api_router() -> Router<AppState> {
    Router::new()
        .route("/api/top-up", post(start))
        .route("/api/top-up/status", get(status))
}

impl From<TopUpError> for ApiError {
    fn from(e: TopUpError) -> Self {
        match e {
            TopUpError::NotConfigured => ApiError::NotConfigured,
            TopUpError::UnknownPack | TopUpError::Revoked => ApiError::BadRequest(e.to_string()),
            TopUpError::NoSuchCode => ApiError::NotFound,
            TopUpError::Stripe(e) => ApiError::Stripe(e),
            TopUpError::Store(e) => ApiError::Store(e),
        }
    }
}

async fn top_up_page(
    State(app): State<AppState>,
    Path((order_id, token)): Path<(String, String)>,
) -> Response {
    let (order, revoked) = match top_up::order_for_link(&app, &order_id, &token).await {
        Ok(order) => (Some(order), false),
        Err(TopUpError::Revoked) => (None, true),
        Err(TopUpError::Store(e)) => return unavailable("top-up page", &e).await,
        Err(_) => return not_found().await,
    };
    let open = app.config.stripe.is_some() && !revoked;
    let hidden = |hide: bool| if hide { "hidden" } else { "" }.to_string();
    let packs = &app.config.top_ups;
    let first = packs.first();
    let html = render(
        TOP_UP,
        &[
            ("order", order_id.clone()),
            ("token", token.clone()),
            (
                "left",
                order
                    .as_ref()
                    .map(|o| super::account::duration(o.seconds_left().0))
                    .unwrap_or_default(),
            ),
            (
                "last4",
                order
                    .as_ref()
                    .and_then(|o| o.code_last4.clone())
                    .unwrap_or_default(),
            ),
            ("account", crate::orders::account::path(&app, &order_id)),
            ("price", first.currency.format(first.price)),
            ("minutes_phrase", minutes_phrase(first.minutes_included)),
            ("publishable_key", publishable_key(&app)),
            (
                "stripe_js_url",
                if open {
                    app.config.stripe_js_url.to_string()
                } else {
                    String::new()
                },
            ),
            ("revoked_hidden", hidden(!revoked)),
            ("closed_hidden", hidden(open || revoked)),
            ("open_hidden", hidden(!open)),
            ("version", env!("CARGO_PKG_VERSION").to_string()),
        ],
    );
    private_page(html.replacen("<!--pack-choices-->", &plan_choices(packs, "pack"), 1))
}

/// A string field of at most `max` bytes, or a clear 400.
fn field<'a>(body: &'a Value, name: &str, max: usize) -> Result<&'a str, ApiError> {
    body.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= max)
        .ok_or_else(|| ApiError::BadRequest(format!("{name} is missing or too long")))
}

/// `POST /api/top-up` `{ "order", "token", "pack" }`: the PaymentIntent for the pack. Its
/// amount and minutes come from configuration; a price or minutes in the body are not read.
async fn start(State(app): State<AppState>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let body: Value = serde_json::from_slice(&body)
        .map_err(|_| ApiError::BadRequest("the body must be a JSON object".into()))?;
    let (order, token, pack) = (
        field(&body, "order", 100)?,
        field(&body, "token", 200)?,
        field(&body, "pack", 80)?,
    );
    let started = top_up::start(&app, order, token, pack).await?;
    let publishable = publishable_key(&app);
    Ok(no_store(
        Json(json!({
            "clientSecret": started.client_secret,
            "paymentIntent": started.payment_intent,
            "publishableKey": publishable,
            "pack": started.pack.name,
            "minutes": started.pack.minutes_included,
            "amountDisplay": started.pack.currency.format(started.pack.price),
        }))
        .into_response(),
    ))
}

#[derive(Debug, Deserialize)]
struct StatusQuery {
    order: String,
    token: String,
    payment_intent: String,
}

/// `GET /api/top-up/status?order=..&token=..&payment_intent=..`: whether the top-up is
/// credited, and the code's time left.
async fn status(
    State(app): State<AppState>,
    Query(q): Query<StatusQuery>,
) -> Result<Response, ApiError> {
    if q.payment_intent.len() > 200 {
        return Err(ApiError::NotFound);
    }
    // The credit is read before the order: an entry and the minutes it adds are written in
    // one step, so a credited answer always comes with those minutes (read the other way
    // round, a credit landing between the two reads said "credited" with the old time left).
    // Nothing is answered unless the link is the order's.
    let credited = top_up::credited(&app, &q.order, &q.payment_intent).await?;
    let order = top_up::order_for_link(&app, &q.order, &q.token).await?;
    Ok(no_store(
        Json(json!({
            "credited": credited,
            "left": super::account::duration(order.seconds_left().0),
            "minutesLeft": order.seconds_left().0 / 60,
        }))
        .into_response(),
    ))
}
