//! What callgate does with each Stripe event. Every handler is idempotent: Stripe delivers at
//! least once and in any order, and two deliveries may race.

use serde::Deserialize;

use super::stripe::id_of;

use crate::money::{Cents, Seconds};
use crate::orders;
use crate::store::{new_id, Fulfilled, Fulfilment, NewOrder, OrderSource, OrderStatus, StoreError};
use crate::App;

/// The parts of a Stripe event callgate reads.
#[derive(Debug, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: EventData,
}

#[derive(Debug, Deserialize)]
pub struct EventData {
    pub object: serde_json::Value,
}

/// What handling an event did, for the response and the logs.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Fulfilled { order_id: String },
    AlreadyFulfilled { order_id: String },
    MarkedFailed,
    Revoked { order_id: String },
    OveragePaid { charge_id: String },
    Ignored(&'static str),
}

/// How many draws of a fresh code to try should one collide with a stored code.
const CODE_DRAWS: usize = 5;

pub async fn handle(app: &App, event: &Event) -> Result<Outcome, StoreError> {
    let obj = &event.data.object;
    // Overage PaymentIntents are callgate's own charges, not purchases.
    let overage_charge = obj
        .get("metadata")
        .filter(|m| m.get("callgate_kind").and_then(|k| k.as_str()) == Some("overage"))
        .and_then(|m| m.get("charge_id"))
        .and_then(|c| c.as_str())
        .map(String::from);
    match event.kind.as_str() {
        "payment_intent.succeeded" if overage_charge.is_some() => {
            let charge_id = overage_charge.unwrap_or_default();
            let pi = id_of(obj, "id").unwrap_or_default();
            crate::payments::billing::overage_paid(app, &charge_id, &pi).await?;
            Ok(Outcome::OveragePaid { charge_id })
        }
        "payment_intent.payment_failed" if overage_charge.is_some() => {
            // The billing worker records the outcome of its own attempts.
            Ok(Outcome::Ignored(
                "overage attempt failure, recorded by the worker",
            ))
        }
        "payment_intent.succeeded" => fulfil(app, obj).await,
        "payment_intent.payment_failed" => {
            let Some(pi) = id_of(obj, "id") else {
                return Ok(Outcome::Ignored("no payment intent id"));
            };
            let Some(order) = app.store.order_by_payment_intent(&pi).await? else {
                return Ok(Outcome::Ignored("no order for this payment"));
            };
            app.store
                .set_order_status(
                    &order.id,
                    &[OrderStatus::Pending],
                    OrderStatus::Failed,
                    app.clock.now(),
                )
                .await?;
            Ok(Outcome::MarkedFailed)
        }
        "charge.refunded" => {
            if obj.get("refunded").and_then(|r| r.as_bool()) != Some(true) {
                // A partial refund is a goodwill gesture: the code stays valid.
                return Ok(Outcome::Ignored("partial refund"));
            }
            revoke_for(app, id_of(obj, "payment_intent")).await
        }
        "charge.dispute.created" => revoke_for(app, id_of(obj, "payment_intent")).await,
        _ => Ok(Outcome::Ignored("event type not used")),
    }
}

async fn revoke_for(app: &App, pi: Option<String>) -> Result<Outcome, StoreError> {
    let Some(pi) = pi else {
        return Ok(Outcome::Ignored("no payment intent"));
    };
    let Some(order) = app.store.order_by_payment_intent(&pi).await? else {
        return Ok(Outcome::Ignored("no order for this payment"));
    };
    let order = orders::revoke(app, &order).await?;
    let canceled = app
        .store
        .cancel_open_charges(&order.id, app.clock.now())
        .await?;
    tracing::warn!(order_id = %order.id, canceled, "payment refunded or disputed: code revoked, open overage canceled");
    Ok(Outcome::Revoked { order_id: order.id })
}

async fn fulfil(app: &App, pi: &serde_json::Value) -> Result<Outcome, StoreError> {
    let Some(pi_id) = id_of(pi, "id") else {
        return Ok(Outcome::Ignored("no payment intent id"));
    };
    let plan = &app.config.plan;
    let metadata = pi.get("metadata");
    let meta = |k: &str| metadata.and_then(|m| m.get(k)).and_then(|v| v.as_str());
    let minutes = meta("minutes")
        .and_then(|m| m.parse::<i64>().ok())
        .filter(|m| *m > 0)
        .unwrap_or(plan.minutes_included);
    let fallback = NewOrder {
        id: new_id("ord"),
        source: OrderSource::Stripe,
        plan: meta("plan").unwrap_or(&plan.name).to_string(),
        amount: Cents(
            pi.get("amount")
                .and_then(|a| a.as_i64())
                .unwrap_or(plan.price.0),
        ),
        currency: id_of(pi, "currency").unwrap_or_else(|| plan.currency.code().to_string()),
        seconds_included: Seconds::from_minutes(minutes),
        overage_consent: meta("overage_consent") == Some("true"),
        overage_price: plan.overage_per_minute,
        stripe_payment_intent: Some(pi_id.clone()),
        stripe_customer: id_of(pi, "customer"),
        stripe_payment_method: id_of(pi, "payment_method"),
        client_secret_hash: None,
        code: None,
        now: app.clock.now(),
    };
    for _ in 0..CODE_DRAWS {
        let (_, code) = orders::fresh_code(app);
        let f = Fulfilment {
            payment_intent: pi_id.clone(),
            code,
            customer: id_of(pi, "customer"),
            payment_method: id_of(pi, "payment_method"),
            fallback: fallback.clone(),
            now: app.clock.now(),
        };
        match app.store.fulfil_order(&f).await {
            Ok(Fulfilled::Now(order)) => {
                tracing::info!(order_id = %order.id, "payment succeeded: order paid, code issued");
                return Ok(Outcome::Fulfilled { order_id: order.id });
            }
            Ok(Fulfilled::Already(order)) => {
                return Ok(Outcome::AlreadyFulfilled { order_id: order.id })
            }
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict(
        "could not draw an unused access code".into(),
    ))
}
