//! `GET /account/{order}/{token}`: the customer's account page (`orders::account`), rendered
//! on the server. An unknown order, a wrong token and an unpaid order get the same 404 page.

use std::fmt::Write;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::pages::{minutes_phrase, not_found, render};
use super::AppState;
use crate::domain::clock::utc_date;
use crate::domain::money::Cents;
use crate::orders::account::{self, Account};
use crate::store::{ChargeState, EntryKind, OrderStatus};
use crate::telephony::twilio::twiml::escape;
use crate::App;

const ACCOUNT: &str = include_str!("../../web/account.html");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/account/{order}/{token}", get(page))
        .route("/account", get(find_page))
}

/// `POST /api/account/find`, inside the API's rate limit.
pub fn api_router() -> Router<AppState> {
    Router::new().route("/api/account/find", axum::routing::post(find))
}

const FIND: &str = include_str!("../../web/find.html");

/// The page where a customer types their code to reach their account.
async fn find_page() -> Response {
    super::pages::page(render(
        FIND,
        &[("version", env!("CARGO_PKG_VERSION").to_string())],
    ))
}

/// `POST /api/account/find` `{ "code" }`: the account's links for a paid code; one 404 for
/// anything else; 429 once this client (or everyone) has typed too many wrong codes.
async fn find(
    State(app): State<AppState>,
    request: axum::extract::Request,
) -> Result<Response, super::checkout::ApiError> {
    use super::checkout::ApiError;
    use crate::orders::account::Found;
    let client = super::client_ip::ClientIp::of(request.extensions()).to_string();
    let body = axum::body::to_bytes(request.into_body(), 4096)
        .await
        .map_err(|_| ApiError::BadRequest("the body is too large".into()))?;
    let body: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|_| ApiError::BadRequest("the body must be a JSON object".into()))?;
    let typed = body
        .get("code")
        .and_then(serde_json::Value::as_str)
        .filter(|c| c.len() <= 64)
        .ok_or_else(|| ApiError::BadRequest("code is missing".into()))?;
    let answer = match account::find_by_code(&app, typed, &client).await? {
        Found::Account { account, top_up } => {
            axum::Json(serde_json::json!({ "account": account, "topUp": top_up })).into_response()
        }
        Found::Nothing => return Err(ApiError::NotFound),
        Found::Throttled => (
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            axum::Json(
                serde_json::json!({ "error": "too many wrong codes; please try again later" }),
            ),
        )
            .into_response(),
    };
    Ok(super::checkout::no_store(answer))
}

async fn page(
    State(app): State<AppState>,
    Path((order, token)): Path<(String, String)>,
) -> Response {
    match account::open(&app, &order, &token).await {
        Ok(Some(account)) => super::pages::private_page(render_account(&app, &account)),
        Ok(None) => not_found().await,
        Err(e) => super::pages::unavailable("account page", &e).await,
    }
}

/// `3 min 05 s`, from seconds.
pub(super) fn duration(seconds: i64) -> String {
    let s = seconds.max(0);
    format!("{} min {:02} s", s / 60, s % 60)
}

fn day_and_time(at: i64) -> String {
    let (date, secs) = utc_date(at);
    format!("{date} {:02}:{:02}", secs / 3600, secs % 3600 / 60)
}

fn render_account(app: &App, account: &Account) -> String {
    let order = &account.order;
    let currency = &order.currency;
    let revoked = order.status == OrderStatus::Revoked;
    let number = app.config.twilio.as_ref().map(|t| t.phone_number.clone());
    let hidden = |hide: bool| if hide { "hidden" } else { "" }.to_string();
    let mut plan_line = format!("Plan: {}", order.plan);
    if order.overage_consent {
        let _ = write!(
            plan_line,
            "; extra minutes at {} each, charged to your card after the call",
            currency.format(order.overage_price)
        );
    }
    plan_line.push('.');

    let mut calls = String::new();
    for call in &account.calls {
        let cost = account
            .charges
            .iter()
            .find(|c| c.call_sid == call.call_sid)
            .map(|c| currency.format(c.amount))
            .unwrap_or_else(|| "included".into());
        let used = call
            .settled_seconds
            .unwrap_or_else(|| call.billable_seconds().0);
        let _ = write!(
            calls,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            day_and_time(call.started_at),
            duration(used),
            escape(&cost),
        );
    }
    let calls = if calls.is_empty() {
        "<p class=\"hint\" id=\"no-calls\">No calls yet.</p>".to_string()
    } else {
        format!(
            "<table id=\"calls\"><thead><tr><th>Started</th><th>Talk time</th><th>Cost</th></tr></thead><tbody>{calls}</tbody></table>"
        )
    };

    let mut payments = String::new();
    for e in &account.entries {
        let minutes = minutes_phrase(e.seconds.0.abs() / 60);
        let what = match e.kind {
            EntryKind::Purchase => order.plan.clone(),
            EntryKind::TopUp => format!("Top-up: {minutes}"),
            EntryKind::Grant => format!("{minutes} from us"),
            EntryKind::Waived => "A call cut short by the assistant: not charged".to_string(),
            EntryKind::Refund => format!("Refunded: {minutes}"),
            EntryKind::Dispute => format!("Disputed: {minutes}"),
            EntryKind::Issued | EntryKind::PriorUse | EntryKind::Transfer => continue,
        };
        let amount = if e.amount.0 < 0 {
            format!("−{}", currency.format(Cents(-e.amount.0)))
        } else {
            currency.format(e.amount)
        };
        let _ = write!(
            payments,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td></tr>",
            e.kind,
            day_and_time(e.created_at),
            escape(&what),
            escape(&amount),
        );
    }
    for c in &account.charges {
        let state = match c.state {
            ChargeState::Succeeded => "paid",
            ChargeState::Pending => "being charged",
            ChargeState::RequiresAction => "waiting for you to confirm",
            ChargeState::Declined | ChargeState::Failed => "not paid",
            ChargeState::Refunded => "refunded",
            ChargeState::Disputed => "disputed",
            ChargeState::Canceled => "canceled",
        };
        let _ = write!(
            payments,
            "<tr><td>{}</td><td>Extra minutes ({})</td><td>{}</td></tr>",
            day_and_time(c.created_at),
            state,
            currency.format(c.amount),
        );
    }
    let payments = if payments.is_empty() {
        "<p class=\"hint\">No payments.</p>".to_string()
    } else {
        format!(
            "<table id=\"payments\"><thead><tr><th>Date</th><th>What</th><th>Amount</th></tr></thead><tbody>{payments}</tbody></table>"
        )
    };

    let html = render(
        ACCOUNT,
        &[
            ("status", order.status.to_string()),
            ("left", duration(order.seconds_left().0)),
            ("included", minutes_phrase(order.seconds_included.0 / 60)),
            ("last4", order.code_last4.clone().unwrap_or_default()),
            ("revoked_hidden", hidden(!revoked)),
            ("call_hidden", hidden(revoked)),
            ("top_up", account::top_up_path(app, &order.id)),
            ("plan_line", plan_line),
            ("version", env!("CARGO_PKG_VERSION").to_string()),
        ],
    );
    html.replacen("<!--calls-->", &calls, 1)
        .replacen(
            "<!--call-link-->",
            &super::pages::call_link(number.as_deref()),
            1,
        )
        .replacen("<!--payments-->", &payments, 1)
}
