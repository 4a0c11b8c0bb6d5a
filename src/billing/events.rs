//! What callgate does with each Stripe event. Every handler is idempotent: Stripe delivers at
//! least once and in any order, and two deliveries may race.

use crate::domain::ledger::{self, NotOurs};
use crate::domain::message::Address;
use crate::orders;
use crate::orders::top_up::Credited;
use crate::store::{ChargeState, Fulfilled, Fulfilment, OrderStatus, OverageBlock, StoreError};
use crate::stripe::client::{id_of, kind_of, metadata_of, PaymentIntent, PaymentKind, StripeError};
pub use crate::stripe::events::Event;
use crate::App;

/// What handling an event did, for the response and the logs.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Fulfilled {
        order_id: String,
    },
    AlreadyFulfilled {
        order_id: String,
    },
    MarkedFailed,
    Revoked {
        order_id: String,
    },
    OveragePaid {
        charge_id: String,
    },
    /// An overage charge was refunded or disputed (disputed: overage suspended on its order).
    OverageReversed {
        charge_id: String,
    },
    /// A top-up's minutes added to its code.
    ToppedUp {
        order_id: String,
    },
    /// A top-up refunded or disputed: its minutes taken back.
    TopUpReversed {
        order_id: String,
    },
    Ignored(&'static str),
}

/// Why an event could not be handled now (Stripe is told to deliver it again).
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Stripe was asked about the event's payment and did not answer.
    #[error("Stripe: {0}")]
    Stripe(#[from] StripeError),
}

/// How many draws of a fresh code to try should one collide with a stored code.
const CODE_DRAWS: usize = 5;

pub async fn handle(app: &App, event: &Event) -> Result<Outcome, EventError> {
    let obj = &event.data.object;
    // Overage PaymentIntents are callgate's own charges, not purchases.
    let overage_charge = (kind_of(obj) == Some(PaymentKind::Overage))
        .then(|| metadata_of(obj, "charge_id"))
        .flatten();
    let top_up = kind_of(obj) == Some(PaymentKind::TopUp);
    match event.kind.as_str() {
        "payment_intent.succeeded" if overage_charge.is_some() => {
            let charge_id = overage_charge.unwrap_or_default();
            let pi = id_of(obj, "id").unwrap_or_default();
            crate::billing::overage_paid(app, &charge_id, &pi).await?;
            Ok(Outcome::OveragePaid { charge_id })
        }
        "payment_intent.payment_failed" if overage_charge.is_some() => {
            // The billing worker records the outcome of its own attempts.
            Ok(Outcome::Ignored(
                "overage attempt failure, recorded by the worker",
            ))
        }
        "payment_intent.succeeded" if top_up => {
            let Ok(pi) = PaymentIntent::from_json(obj) else {
                return Ok(Outcome::Ignored("no payment intent id"));
            };
            Ok(credit_top_up(app, &pi).await?)
        }
        "payment_intent.payment_failed" if top_up => {
            Ok(Outcome::Ignored("a top-up not paid: nothing was credited"))
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
                .move_order(&order.id, OrderStatus::Failed, app.clock.now())
                .await?;
            Ok(Outcome::MarkedFailed)
        }
        "charge.refunded" => {
            if obj.get("refunded").and_then(|r| r.as_bool()) != Some(true) {
                // A partial refund is a goodwill gesture: the code stays valid.
                return Ok(Outcome::Ignored("partial refund"));
            }
            reverse(app, id_of(obj, "payment_intent"), Reversal::Refund).await
        }
        "charge.dispute.created" => {
            reverse(app, id_of(obj, "payment_intent"), Reversal::Dispute).await
        }
        _ => Ok(Outcome::Ignored("event type not used")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reversal {
    Refund,
    Dispute,
}

/// A full refund or a dispute of a payment: of a purchase, the code is revoked (its live call
/// ends, open overage is canceled) and its purchase entry reversed; of an overage charge, the
/// charge is marked, and a dispute suspends overage on its order; of a top-up, its minutes
/// are taken back.
async fn reverse(app: &App, pi: Option<String>, how: Reversal) -> Result<Outcome, EventError> {
    let Some(pi) = pi else {
        return Ok(Outcome::Ignored("no payment intent"));
    };
    let now = app.clock.now();
    let disputed = how == Reversal::Dispute;
    if let Some(order) = app.store.order_by_payment_intent(&pi).await? {
        let order = orders::revoke(app, &order).await?;
        let canceled = app.store.cancel_open_charges(&order.id, now).await?;
        // A purchase reversed before its own webhook came: nothing was credited to take back.
        if order.paid_at.is_some() {
            orders::ledger::open(app, &order).await?;
            orders::ledger::reverse_payment(app, &pi, disputed).await?;
        }
        tracing::warn!(order_id = %order.id, canceled, "payment refunded or disputed: code revoked, open overage canceled");
        return Ok(Outcome::Revoked { order_id: order.id });
    }
    let Some(charge) = app.store.charge_by_payment_intent(&pi).await? else {
        return reverse_top_up(app, &pi, disputed).await;
    };
    let to = match how {
        Reversal::Refund => ChargeState::Refunded,
        Reversal::Dispute => ChargeState::Disputed,
    };
    // A refund may follow a dispute (lost, then refunded): the dispute stays what is shown.
    let from: &[ChargeState] = match how {
        Reversal::Refund => &[ChargeState::Succeeded],
        Reversal::Dispute => &[ChargeState::Succeeded, ChargeState::Refunded],
    };
    app.store
        .set_charge_state(&charge.id, from, to, now)
        .await?;
    if how == Reversal::Dispute {
        app.store
            .set_overage_blocked(&charge.order_id, Some(OverageBlock::Disputed), now)
            .await?;
    }
    tracing::warn!(charge_id = %charge.id, order_id = %charge.order_id, state = %to, "overage charge reversed");
    Ok(Outcome::OverageReversed {
        charge_id: charge.id,
    })
}

/// A full refund or a dispute of a top-up: exactly its minutes taken back. One whose refund
/// overtook its own webhook is credited first, from Stripe's record of it.
async fn reverse_top_up(app: &App, pi: &str, disputed: bool) -> Result<Outcome, EventError> {
    if app.store.entry_paid_by(pi).await?.is_none() {
        if let Some(stripe) = &app.stripe {
            match stripe.retrieve_payment_intent(pi).await {
                Ok(intent) if intent.kind() == Some(PaymentKind::TopUp) => {
                    credit_top_up(app, &intent).await?;
                }
                Ok(_) | Err(StripeError::Api { status: 404, .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let Some(reversal) = orders::ledger::reverse_payment(app, pi, disputed).await? else {
        return Ok(Outcome::Ignored(
            "no order, charge or top-up for this payment",
        ));
    };
    tracing::warn!(order_id = %reversal.order_id, "top-up refunded or disputed: its minutes taken back");
    Ok(Outcome::TopUpReversed {
        order_id: reversal.order_id,
    })
}

async fn credit_top_up(app: &App, pi: &PaymentIntent) -> Result<Outcome, StoreError> {
    Ok(match orders::top_up::credit(app, pi).await? {
        Credited::Now { order_id } | Credited::Already { order_id } => {
            Outcome::ToppedUp { order_id }
        }
        Credited::NoOrder => Outcome::Ignored("a top-up for no order callgate has"),
    })
}

/// Where the customer asked for receipts at checkout (the PaymentIntent's metadata, written
/// by the server from checked input).
fn receipt_addresses(pi: &serde_json::Value) -> Vec<Address> {
    let email = metadata_of(pi, "receipt_email").and_then(|e| Address::email(&e));
    let phone = metadata_of(pi, "receipt_phone").and_then(|p| Address::sms(&p));
    email.into_iter().chain(phone).collect()
}

async fn fulfil(app: &App, pi: &serde_json::Value) -> Result<Outcome, EventError> {
    let Some(pi_id) = id_of(pi, "id") else {
        return Ok(Outcome::Ignored("no payment intent id"));
    };
    let order = app.store.order_by_payment_intent(&pi_id).await?;
    let amount = pi.get("amount").and_then(|a| a.as_i64());
    let currency = pi.get("currency").and_then(|c| c.as_str());
    match ledger::may_fulfil(order.as_ref(), amount, currency) {
        Ok(()) => {}
        Err(NotOurs::NotPending) => {
            let Some(order) = order else {
                return Ok(Outcome::Ignored("no order for this payment"));
            };
            // A run cut off between the payment and its entry is finished here.
            orders::ledger::open(app, &order).await?;
            return Ok(Outcome::AlreadyFulfilled { order_id: order.id });
        }
        Err(refused) => {
            let reason = match refused {
                NotOurs::NoOrder => "foreign_payment",
                _ => "amount_mismatch",
            };
            crate::metrics::IGNORED_PAYMENTS.add(reason);
            tracing::warn!(
                payment_intent = %pi_id,
                reason,
                "a succeeded PaymentIntent callgate did not create for this order: ignored"
            );
            return Ok(Outcome::Ignored(match refused {
                NotOurs::NoOrder => "no order callgate created for this payment",
                _ => "amount or currency differs from the order",
            }));
        }
    }
    for _ in 0..CODE_DRAWS {
        let (_, code) = orders::fresh_code(app);
        let f = Fulfilment {
            payment_intent: pi_id.clone(),
            code,
            customer: id_of(pi, "customer"),
            payment_method: id_of(pi, "payment_method"),
            now: app.clock.now(),
        };
        match app.store.fulfil_order(&f).await {
            Ok(Fulfilled::Now(order)) => {
                orders::ledger::open(app, &order).await?;
                crate::notify::queue_receipts(app, &order, &receipt_addresses(pi)).await?;
                tracing::info!(order_id = %order.id, "payment succeeded: order paid, code issued");
                return Ok(Outcome::Fulfilled { order_id: order.id });
            }
            Ok(Fulfilled::Already(order)) => {
                // A run cut off between the payment and its entry is finished here.
                orders::ledger::open(app, &order).await?;
                crate::notify::queue_receipts(app, &order, &receipt_addresses(pi)).await?;
                return Ok(Outcome::AlreadyFulfilled { order_id: order.id });
            }
            Ok(Fulfilled::NoOrder) => return Ok(Outcome::Ignored("no order for this payment")),
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Conflict("could not draw an unused access code".into()).into())
}
