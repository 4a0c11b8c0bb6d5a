//! Orders and their access codes: a storefront checkout (`checkout`), issuing, finding and
//! revoking, shared by the webhook fulfilment, the operator CLI and the admin view.

pub mod account;
pub mod checkout;
pub mod ledger;
pub mod refund;
pub mod top_up;

pub use checkout::{CheckoutError, Purchase};

use crate::domain::codes::{AccessCode, StoredCode};
use crate::domain::money::{Cents, Seconds};
use crate::store::{new_id, NewOrder, Order, OrderSource, OrderStatus, StoreError};
use crate::App;

/// How many times to draw a new code when one collides with a stored code. With 10^12
/// codes a single collision is already unlikely; several in a row mean something is wrong.
const CODE_DRAWS: usize = 5;

/// A fresh code and what the store keeps of it.
pub fn fresh_code(app: &App) -> (AccessCode, StoredCode) {
    let code = AccessCode::generate(app.config.access_code_digits);
    let stored = app.vault.store(&code);
    (code, stored)
}

/// What an operator asks for with `callgate codes issue`.
#[derive(Debug, Clone)]
pub struct OperatorGrant {
    pub minutes: i64,
    pub overage: bool,
    pub customer: Option<String>,
    pub payment_method: Option<String>,
}

/// Issues a paid order with a new code, outside Stripe (gifts, support, tests).
pub async fn issue_operator_code(
    app: &App,
    grant: &OperatorGrant,
) -> Result<(Order, AccessCode), StoreError> {
    let plan = app.config.plans.first();
    for _ in 0..CODE_DRAWS {
        let (code, stored) = fresh_code(app);
        let order = NewOrder {
            id: new_id("ord"),
            source: OrderSource::Operator,
            plan: format!("{} (operator)", plan.name),
            amount: Cents(0),
            currency: plan.currency.clone(),
            seconds_included: Seconds::from_minutes(grant.minutes),
            overage_consent: grant.overage,
            overage_price: plan.overage_per_minute,
            stripe_payment_intent: None,
            stripe_customer: grant.customer.clone(),
            stripe_payment_method: grant.payment_method.clone(),
            client_secret_hash: None,
            code: Some(stored),
            now: app.clock.now(),
        };
        match app.store.insert_order(&order).await {
            Ok(order) => {
                ledger::open(app, &order).await?;
                return Ok((order, code));
            }
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict(
        "could not draw an unused access code".into(),
    ))
}

/// The order a code belongs to, whatever its status.
pub async fn find_by_code(app: &App, code: &AccessCode) -> Result<Option<Order>, StoreError> {
    app.store.order_by_code(&app.vault.fingerprint(code)).await
}

/// The code of an order, unsealed for its owner's eyes.
pub fn code_of(app: &App, order: &Order) -> Option<AccessCode> {
    order.code_sealed.as_deref().and_then(|s| app.vault.open(s))
}

/// Refuses code entry (at the phone menu or on the web) when this caller (`mine` wrong codes
/// in the last hour), or everyone together, has failed too often.
pub async fn code_entry_refused(app: &App, mine: i64) -> Result<bool, StoreError> {
    Ok(caller_over_limit(app, mine) || code_entry_paused(app).await?)
}

/// Whether a caller with `mine` wrong codes in the last hour is over their limit.
pub fn caller_over_limit(app: &App, mine: i64) -> bool {
    let over = mine >= app.config.voice.failures_per_caller_per_hour;
    if over {
        tracing::warn!("caller over the wrong-code limit: refused");
    }
    over
}

/// Whether code entry is paused for everyone: too many wrong codes in the last hour, all
/// callers together.
pub async fn code_entry_paused(app: &App) -> Result<bool, StoreError> {
    let since = app.clock.now() - 3600;
    let voice = &app.config.voice;
    let all = app
        .attempts
        .global_failures(&app.store, since, voice.failures_per_hour)
        .await?;
    if all >= voice.failures_per_hour {
        tracing::warn!(
            failures = all,
            "global wrong-code limit reached: code entry paused"
        );
        return Ok(true);
    }
    Ok(false)
}

/// Revokes an order so its code stops working; an order already revoked is returned as it is.
pub async fn revoke(app: &App, order: &Order) -> Result<Order, StoreError> {
    let moved = app
        .store
        .move_order(&order.id, OrderStatus::Revoked, app.clock.now())
        .await?;
    if moved.is_some() {
        changed(app, &order.id).await;
    }
    Ok(moved.unwrap_or_else(|| order.clone()))
}

/// `order_id` changed (its balance or its status): its live call reads it again, at once on
/// this instance and, through the store's signals, on any other (PostgreSQL's `NOTIFY`;
/// elsewhere the call's periodic re-check).
pub async fn changed(app: &App, order_id: &str) {
    app.metering.order_changed(order_id);
    if let Err(e) = app.store.publish_order_changed(order_id).await {
        tracing::warn!(error = %e, "other instances not told of the order's change; they re-check");
    }
}
