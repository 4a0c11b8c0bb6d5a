//! Pending orders that never pay: a storefront visit creates a PaymentIntent and a pending
//! order before the customer pays. Those never paid are cancelled at Stripe and pruned after
//! `PENDING_ORDER_TTL_HOURS`, so abandoned checkouts (or a card-testing flood) do not pile up.
//!
//! Cancelling first keeps the ledger whole: a PaymentIntent that Stripe can no longer cancel
//! (it succeeded or is processing) keeps its order, for its webhook to fulfil.

use serde::Serialize;

use crate::store::StoreError;
use crate::stripe::client::{is_payment_intent_id, StripeClient, StripeError};
use crate::stripe::intent::IntentStatus;
use crate::App;

/// Orders looked at per pass.
const BATCH: i64 = 100;

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct PruneReport {
    /// Cancelled at Stripe (or never payable) and deleted.
    pub pruned: usize,
    /// Stripe could not cancel them (paid or in progress): kept for their webhook.
    pub kept: usize,
}

/// One pass over the pending orders older than the TTL.
pub async fn prune_stale(app: &App) -> Result<PruneReport, StoreError> {
    let mut report = PruneReport::default();
    let before = app.clock.now() - app.config.pending_order_ttl_hours * 3600;
    for order in app.store.stale_pending_orders(before, BATCH).await? {
        let cancelled = match (&app.stripe, &order.stripe_payment_intent) {
            (Some(stripe), Some(pi)) => match cancel(stripe, pi).await {
                Ok(done) => done,
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, "Stripe unreachable: pending orders wait for the next pass");
                    break;
                }
                Err(e) => {
                    tracing::warn!(order_id = %order.id, error = %e, "pending order's PaymentIntent not cancelled; kept");
                    false
                }
            },
            // No PaymentIntent, or no Stripe to pay it through: it can never be paid.
            _ => true,
        };
        if cancelled && app.store.delete_pending_order(&order.id).await? {
            tracing::info!(order_id = %order.id, "unpaid order expired: PaymentIntent cancelled, order pruned");
            report.pruned += 1;
        } else {
            report.kept += 1;
        }
    }
    Ok(report)
}

/// Cancels a PaymentIntent; `true` when it is cancelled (now or before) or does not exist.
async fn cancel(stripe: &StripeClient, pi: &str) -> Result<bool, StripeError> {
    if !is_payment_intent_id(pi) {
        // Nothing at Stripe can have this id.
        return Ok(true);
    }
    match stripe.cancel_payment_intent(pi).await {
        Ok(_) => Ok(true),
        Err(StripeError::Api { status: 404, .. }) => Ok(true),
        Err(StripeError::Api { status: 400, .. }) => {
            // Not cancellable in its state: cancelled already, or paid.
            Ok(stripe.retrieve_payment_intent(pi).await?.status == IntentStatus::Canceled)
        }
        Err(e) => Err(e),
    }
}
