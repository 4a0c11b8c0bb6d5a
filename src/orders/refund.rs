//! Refunds an operator asks for: an order's purchase, or one of its overage charges, through
//! Stripe's Refunds API. Nothing changes here when Stripe accepts: the refund comes back as
//! Stripe's signed `charge.refunded` event, the same path as a refund made in Stripe's
//! dashboard (the code revoked, a live call ended, open overage canceled; or the charge
//! marked refunded). Asking twice is one refund: the request's idempotency key is the
//! PaymentIntent's, and Stripe refuses to refund a payment already refunded.

use crate::store::{Charge, ChargeState, Entry, EntryKind, Order, OrderStatus, StoreError};
use crate::stripe::client::{Refund, StripeError};
use crate::App;

/// Why a refund was not made.
#[derive(Debug, thiserror::Error)]
pub enum NoRefund {
    #[error("not found")]
    NotFound,
    #[error("Stripe is not configured here")]
    NoStripe,
    #[error("this order was not paid through Stripe (an operator's code), so there is nothing to refund")]
    NotPaidThroughStripe,
    #[error("a {0} order has no payment to refund")]
    OrderNotPaid(OrderStatus),
    /// Stripe's word of a refund or dispute of this payment has come already.
    #[error("this payment was {0} already (Stripe said so at {1} UTC)")]
    AlreadyReversed(&'static str, String),
    #[error("a {0} charge has no payment to refund")]
    ChargeNotPaid(ChargeState),
    /// Stripe answered and refused (already refunded, disputed, ...): its words.
    #[error("Stripe refused the refund: {0}")]
    Refused(String),
    /// Stripe could not be asked, or did not answer: nothing is known refunded.
    #[error(
        "Stripe could not be reached ({0}); nothing is known refunded, and asking again is safe"
    )]
    Unreachable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl NoRefund {
    /// Whether the refund was refused (nothing changed), rather than not known.
    pub fn refused(&self) -> bool {
        !matches!(self, NoRefund::Unreachable(_) | NoRefund::Store(_))
    }
}

/// Refunds the purchase of order `order_id`: a paid order, or one revoked without a refund.
pub async fn purchase(app: &App, order_id: &str) -> Result<(Order, Refund), NoRefund> {
    let order = app.store.order(order_id).await?.ok_or(NoRefund::NotFound)?;
    let pi = purchase_payment(&order)?.to_string();
    let entries = app.store.entries_for_order(order_id).await?;
    if let Some(e) = reversal_of(&entries, &pi) {
        let how = if e.kind == EntryKind::Dispute {
            "disputed"
        } else {
            "refunded"
        };
        return Err(NoRefund::AlreadyReversed(
            how,
            crate::domain::clock::iso8601(e.created_at),
        ));
    }
    let refund = ask_stripe(app, &pi).await?;
    tracing::info!(order_id, refund_id = %refund.id, status = %refund.status, "purchase refund asked of Stripe");
    Ok((order, refund))
}

/// Refunds overage charge `charge_id`, once it succeeded.
pub async fn overage(app: &App, charge_id: &str) -> Result<(Charge, Refund), NoRefund> {
    let charge = app
        .store
        .charge(charge_id)
        .await?
        .ok_or(NoRefund::NotFound)?;
    let pi = charge_payment(&charge)?.to_string();
    let refund = ask_stripe(app, &pi).await?;
    tracing::info!(charge_id, refund_id = %refund.id, status = %refund.status, "overage refund asked of Stripe");
    Ok((charge, refund))
}

/// The PaymentIntent of an order's purchase, when it is one to refund: paid through Stripe,
/// and paid or revoked (a revoked order may not have been refunded; the ledger says whether
/// it was, see [`reversal_of`]).
pub fn purchase_payment(order: &Order) -> Result<&str, NoRefund> {
    let pi = order
        .stripe_payment_intent
        .as_deref()
        .ok_or(NoRefund::NotPaidThroughStripe)?;
    match order.status {
        OrderStatus::Paid | OrderStatus::Revoked => Ok(pi),
        other => Err(NoRefund::OrderNotPaid(other)),
    }
}

/// The PaymentIntent of an overage charge, when it is one to refund: Stripe paid it.
pub fn charge_payment(charge: &Charge) -> Result<&str, NoRefund> {
    match (charge.state, charge.stripe_payment_intent.as_deref()) {
        (ChargeState::Succeeded, Some(pi)) => Ok(pi),
        (state, _) => Err(NoRefund::ChargeNotPaid(state)),
    }
}

/// The ledger's refund or dispute of the payment `pi`, among an order's `entries`: once it is
/// there, Stripe has said the payment went back, and the console offers no refund of it.
pub fn reversal_of<'a>(entries: &'a [Entry], pi: &str) -> Option<&'a Entry> {
    entries.iter().find(|e| {
        matches!(e.kind, EntryKind::Refund | EntryKind::Dispute)
            && e.stripe_payment_intent.as_deref() == Some(pi)
    })
}

async fn ask_stripe(app: &App, pi: &str) -> Result<Refund, NoRefund> {
    let stripe = app.stripe.as_ref().ok_or(NoRefund::NoStripe)?;
    match stripe.refund_payment_intent(pi).await {
        Ok(refund) if refund.status.refused() => Err(NoRefund::Refused(format!(
            "the refund {} {}",
            refund.id, refund.status
        ))),
        Ok(refund) => Ok(refund),
        Err(e) if e.is_transient() => Err(NoRefund::Unreachable(e.to_string())),
        Err(StripeError::Api { message, .. }) => Err(NoRefund::Refused(message)),
        Err(e) => Err(NoRefund::Unreachable(e.to_string())),
    }
}
