//! Overage billing: settle ended calls, then charge what is due, off-session, exactly once.
//!
//! The charge queue is the `charges` table (an outbox). A worker leases one due charge at a
//! time; the Stripe call carries `Idempotency-Key: callgate-overage-<charge id>`, the same on
//! every attempt, so a retry, a crash between Stripe's answer and our write, or two workers
//! cannot charge twice: Stripe answers a repeated key with the first PaymentIntent. A lease
//! that is not finished (a crashed worker) expires and the charge is taken again.

pub mod events;
pub mod pending;
pub mod reconcile;
pub mod retry;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::store::{
    new_id, Charge, ChargeState, ChargeUpdate, OverageBlock, Settlement, StoreError,
};
use crate::stripe::client::{param, Form, PaymentIntent, StripeError};
use crate::stripe::intent::IntentStatus;
use crate::App;

/// How long a worker holds a charge: longer than a Stripe call with its retries.
pub const LEASE_SECS: i64 = 120;

/// What one pass of the worker did.
#[derive(Debug, Default, Serialize)]
pub struct RunReport {
    pub settled: usize,
    pub charged: Vec<(String, ChargeState)>,
    /// Unpaid orders past `PENDING_ORDER_TTL_HOURS`, cancelled and pruned.
    pub pruned_pending: usize,
    /// Receipts and lost codes sent (or put off) by this pass.
    pub messages: crate::notify::SendReport,
}

/// One pass: settle every ready call, work through every due charge, prune expired checkouts,
/// send the messages due.
pub async fn run_once(app: &App, owner: &str) -> Result<RunReport, StoreError> {
    run_once_with(app, owner, &crate::app::Progress::default()).await
}

/// [`run_once`], telling `progress` of each call settled and each charge attempted.
pub async fn run_once_with(
    app: &App,
    owner: &str,
    progress: &crate::app::Progress,
) -> Result<RunReport, StoreError> {
    let mut report = RunReport::default();
    for sid in app.store.calls_to_settle(500, app.clock.now()).await? {
        progress.advance(1);
        if matches!(
            crate::settlement::settle(app, &sid).await?,
            Settlement::Settled { .. }
        ) {
            report.settled += 1;
        }
    }
    while let Some(charge) = app
        .store
        .claim_charge(owner, app.clock.now() + LEASE_SECS, app.clock.now())
        .await?
    {
        let span = tracing::info_span!(
            "charge",
            charge_id = %charge.id,
            order_id = %charge.order_id,
            call_sid = %charge.call_sid
        );
        let state = tracing::Instrument::instrument(attempt(app, &charge, owner), span).await?;
        progress.advance(1);
        report.charged.push((charge.id.clone(), state));
    }
    report.pruned_pending = pending::prune_stale(app).await?.pruned;
    report.messages = crate::notify::send_due(app).await?;
    Ok(report)
}

/// The worker inside the server: a pass every interval, or at once when a charge is due.
pub fn spawn_worker(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    let owner = new_id("worker");
    tokio::spawn(async move {
        let every = Duration::from_secs(app.config.billing.interval_secs);
        loop {
            if let Err(e) = run_once(&app, &owner).await {
                tracing::warn!(error = %e, "billing pass failed; charges stay queued");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = app.billing_wakeup.notified() => {}
            }
        }
    })
}

fn pay_token() -> String {
    crate::crypto::random_hex(24)
}

/// One Stripe attempt for a leased charge; records the outcome and returns the new state.
async fn attempt(app: &App, charge: &Charge, owner: &str) -> Result<ChargeState, StoreError> {
    let now = app.clock.now();
    let order = app.store.order(&charge.order_id).await?;
    let card = order
        .as_ref()
        .and_then(|o| Some((o.stripe_customer.clone()?, o.stripe_payment_method.clone()?)));
    let update = |state, pi: Option<String>, error: Option<String>| ChargeUpdate {
        state,
        stripe_payment_intent: pi,
        last_error: error,
        next_attempt_at: None,
        pay_token: None,
    };
    // Never charge a revoked order (refunded or disputed purchase), however the charge got here.
    if let Some(Err(crate::domain::ledger::NoOverage::NotPaid)) =
        order.as_ref().map(crate::domain::ledger::may_charge)
    {
        tracing::warn!(charge_id = %charge.id, "overage due on a revoked order: canceled, not charged");
        app.store
            .finish_charge(
                &charge.id,
                owner,
                &update(ChargeState::Canceled, None, Some("order revoked".into())),
                now,
            )
            .await?;
        return Ok(ChargeState::Canceled);
    }
    let Some((customer, payment_method)) = card else {
        tracing::error!(charge_id = %charge.id, "overage due but no saved card on the order");
        app.store
            .set_overage_blocked(&charge.order_id, Some(OverageBlock::NoSavedCard), now)
            .await?;
        app.store
            .finish_charge(
                &charge.id,
                owner,
                &update(ChargeState::Failed, None, Some("no saved card".into())),
                now,
            )
            .await?;
        return Ok(ChargeState::Failed);
    };
    let Some(stripe) = app.stripe.as_ref() else {
        let mut u = update(
            ChargeState::Pending,
            None,
            Some("payments not configured".into()),
        );
        u.next_attempt_at = Some(now + retry::backoff_secs(charge.attempts));
        app.store.finish_charge(&charge.id, owner, &u, now).await?;
        return Ok(ChargeState::Pending);
    };
    let currency = &charge.currency;
    let form: Form = vec![
        param("amount", charge.amount.0),
        param("currency", charge.currency.code()),
        param("customer", &customer),
        param("payment_method", &payment_method),
        param("off_session", "true"),
        param("confirm", "true"),
        param(
            "description",
            format!(
                "Extra talk time: {} min",
                (charge.seconds_billed.0 + 59) / 60
            ),
        ),
        crate::stripe::client::kind_param(crate::stripe::client::PaymentKind::Overage),
        param("metadata[charge_id]", &charge.id),
        param("metadata[call_sid]", &charge.call_sid),
        param("metadata[order_id]", &charge.order_id),
    ];
    let key = retry::idempotency_key(charge);
    let result = stripe.create_payment_intent(&form, &key).await;
    let (u, block): (ChargeUpdate, Option<OverageBlock>) = match result {
        Ok(pi) => outcome_of_intent(&pi),
        Err(StripeError::Api {
            status: 402,
            code,
            decline_code,
            message,
            payment_intent,
            ..
        }) => {
            let pi_id = payment_intent.map(|p| p.id);
            if code.as_deref() == Some("authentication_required") {
                let mut u = update(
                    ChargeState::RequiresAction,
                    pi_id,
                    Some("authentication_required".into()),
                );
                u.pay_token = Some(pay_token());
                (u, Some(OverageBlock::Unpaid))
            } else {
                let why = format!(
                    "{}{}: {message}",
                    code.as_deref().unwrap_or("card_error"),
                    decline_code.map(|d| format!(" ({d})")).unwrap_or_default()
                );
                (
                    update(ChargeState::Declined, pi_id, Some(why)),
                    Some(OverageBlock::Declined),
                )
            }
        }
        Err(e) if e.is_transient() && charge.attempts < retry::MAX_ATTEMPTS => {
            let mut u = update(ChargeState::Pending, None, Some(e.to_string()));
            u.next_attempt_at = Some(now + retry::backoff_secs(charge.attempts));
            (u, None)
        }
        Err(e) => (
            update(ChargeState::Failed, None, Some(e.to_string())),
            Some(OverageBlock::Failed),
        ),
    };
    if let Some(reason) = block {
        app.store
            .set_overage_blocked(&charge.order_id, Some(reason), now)
            .await?;
    }
    let recorded = app.store.finish_charge(&charge.id, owner, &u, now).await?;
    if !recorded {
        // Our lease lapsed and another worker took the charge; its attempt used the same
        // idempotency key, so Stripe holds one PaymentIntent either way.
        tracing::warn!(charge_id = %charge.id, "lease lost before recording; the other worker records it");
    }
    tracing::info!(
        charge_id = %charge.id,
        order_id = %charge.order_id,
        amount = %currency.format(charge.amount),
        state = %u.state,
        attempt = charge.attempts,
        "overage charge attempted"
    );
    Ok(u.state)
}

/// Maps a PaymentIntent Stripe returned (2xx) onto the charge's state.
fn outcome_of_intent(pi: &PaymentIntent) -> (ChargeUpdate, Option<OverageBlock>) {
    let mut u = ChargeUpdate {
        state: ChargeState::Succeeded,
        stripe_payment_intent: Some(pi.id.clone()),
        last_error: None,
        next_attempt_at: None,
        pay_token: None,
    };
    match &pi.status {
        IntentStatus::Succeeded | IntentStatus::Processing => (u, None),
        // Stripe answers 402 for this off-session; some Stripe-compatible servers return
        // the intent instead. Either way the customer must authenticate on-session.
        IntentStatus::RequiresAction | IntentStatus::RequiresConfirmation => {
            u.state = ChargeState::RequiresAction;
            u.last_error = Some("authentication_required".into());
            u.pay_token = Some(pay_token());
            (u, Some(OverageBlock::Unpaid))
        }
        other => {
            u.state = ChargeState::Declined;
            u.last_error = Some(format!("payment intent {other}"));
            (u, Some(OverageBlock::Declined))
        }
    }
}

/// A customer completed an overage payment on-session (webhook or pay page): record it and
/// lift the suspension if nothing else is owed.
pub async fn overage_paid(
    app: &App,
    charge_id: &str,
    payment_intent: &str,
) -> Result<bool, StoreError> {
    let now = app.clock.now();
    let Some(charge) = app.store.charge(charge_id).await? else {
        return Ok(false);
    };
    let changed = app
        .store
        .charge_paid(charge_id, payment_intent, now)
        .await?;
    let still_owed = app
        .store
        .charges_for_order(&charge.order_id)
        .await?
        .into_iter()
        .any(|c| matches!(c.state, ChargeState::RequiresAction | ChargeState::Declined));
    if !still_owed {
        app.store
            .set_overage_blocked(&charge.order_id, None, now)
            .await?;
    }
    if changed {
        tracing::info!(charge_id, order_id = %charge.order_id, "overage paid on-session");
    }
    Ok(changed)
}
