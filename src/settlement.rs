//! Settling a call: the one place a call's metered seconds are taken from its order. The
//! store applies [`crate::domain::ledger::debit`] atomically, exactly once per call; a charge
//! for consented overage is queued with it, and the billing worker woken to send it.
//!
//! Called when Twilio reports the end (the status callback), by the billing worker's sweep
//! (a callback lost, a bridge still closing), and by the menu before it reuses a code whose
//! holding call died with its instance.

use crate::store::{new_id, Call, EndCall, Settlement, StoreError};
use crate::App;

/// Settles one call if it is ready; wakes the worker when a charge became due.
pub async fn settle(app: &App, call_sid: &str) -> Result<Settlement, StoreError> {
    let outcome = app
        .store
        .settle_call(
            call_sid,
            app.config.billing.rounding,
            &new_id("chg"),
            app.clock.now(),
        )
        .await?;
    settled(app, call_sid, &outcome);
    Ok(outcome)
}

/// Ends a call as Twilio reported it, then settles it if it is ready (the store takes both
/// together where it can). A settlement that fails is left to the billing worker's next pass.
pub async fn end_and_settle(app: &App, end: &EndCall) -> Result<Call, StoreError> {
    let (call, outcome) = app
        .store
        .end_and_settle(end, app.config.billing.rounding, &new_id("chg"))
        .await?;
    match outcome {
        Ok(outcome) => settled(app, &end.call_sid, &outcome),
        Err(e) => tracing::warn!(error = %e, "settlement deferred to the billing worker"),
    }
    Ok(call)
}

/// What a settlement did, logged; the worker woken when a charge became due.
fn settled(app: &App, call_sid: &str, outcome: &Settlement) {
    if let Settlement::Settled {
        seconds,
        overage,
        charge,
    } = outcome
    {
        tracing::info!(
            call_sid,
            seconds = seconds.0,
            overage = overage.0,
            charge = charge.is_some(),
            "call settled"
        );
        if charge.is_some() {
            app.billing_wakeup.notify_one();
        }
    }
}
