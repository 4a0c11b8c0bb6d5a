//! The pay link for an overage charge that needs the customer on-session (their bank asked
//! for authentication): `/pay/{token}` and its JSON calls.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::checkout::ApiError;
use crate::http::AppState;
use crate::store::{Charge, ChargeState};
use crate::stripe::intent::IntentStatus;

pub fn page_router() -> Router<AppState> {
    Router::new().route("/pay/{token}", get(page))
}

pub fn api_router() -> Router<AppState> {
    Router::new()
        .route("/api/pay/{token}", get(details))
        .route("/api/pay/{token}/refresh", post(refresh))
}

/// The public link for a charge's pay token.
pub fn pay_url(app: &crate::App, token: &str) -> String {
    app.public_url(&format!("/pay/{token}"))
}

async fn charge_for(app: &AppState, token: &str) -> Result<Charge, ApiError> {
    if token.len() != 48 || !token.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::NotFound);
    }
    app.store
        .charge_by_pay_token(token)
        .await?
        .ok_or(ApiError::NotFound)
}

async fn page(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    crate::http::pay_page(&app, &token)
}

/// Checks Stripe for the intent's state, records a payment made, and answers the page.
async fn status(app: &AppState, charge: &Charge) -> Result<serde_json::Value, ApiError> {
    if charge.state == ChargeState::Succeeded {
        return Ok(json!({ "status": "paid" }));
    }
    if charge.state != ChargeState::RequiresAction {
        return Ok(json!({ "status": "closed" }));
    }
    let (Some(stripe), Some(pi)) = (app.stripe.as_ref(), charge.stripe_payment_intent.as_deref())
    else {
        return Err(ApiError::NotConfigured);
    };
    let intent = stripe.retrieve_payment_intent(pi).await?;
    if intent.status == IntentStatus::Succeeded {
        crate::billing::overage_paid(app, &charge.id, &intent.id).await?;
        return Ok(json!({ "status": "paid" }));
    }
    let currency = &charge.currency;
    Ok(json!({
        "status": "due",
        "amountDisplay": currency.format(charge.amount),
        "clientSecret": intent.client_secret,
    }))
}

async fn details(
    State(app): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let charge = charge_for(&app, &token).await?;
    Ok(Json(status(&app, &charge).await?).into_response())
}

async fn refresh(
    State(app): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let charge = charge_for(&app, &token).await?;
    Ok(Json(status(&app, &charge).await?).into_response())
}
