//! When a charge is tried again, and under which idempotency key: the worker's backoff after
//! a transient failure, and the operator's retry after Stripe refused or tries ran out.
//!
//! Stripe remembers an `Idempotency-Key` for 24 hours and answers a repeat with its first
//! answer. So a charge Stripe *answered* (declined, or needing authentication) is retried
//! under a new key (a new PaymentIntent: the old one is unpaid), while a charge whose outcome
//! may be unknown (its tries ran out on network errors) keeps its key, and can be retried
//! only once Stripe has forgotten it, so a payment that did go through is never made twice.

use crate::domain::charge::ChargeState;
use crate::domain::clock::UnixTime;
use crate::store::{Charge, StoreError};
use crate::App;

/// Attempts on transient failures (network, Stripe 5xx) before a charge is marked failed.
pub const MAX_ATTEMPTS: i64 = 5;
/// Stripe answers a repeated Idempotency-Key from memory for this long.
pub const KEY_MEMORY_SECS: i64 = 24 * 3600;

/// Waits before the worker's next attempt, by attempts made so far.
pub fn backoff_secs(attempts: i64) -> i64 {
    match attempts {
        ..=1 => 60,
        2 => 300,
        3 => 1800,
        _ => 7200,
    }
}

/// The Idempotency-Key of every attempt of this generation of the charge.
pub fn idempotency_key(charge: &Charge) -> String {
    match charge.key_generation {
        0 => format!("callgate-overage-{}", charge.id),
        n => format!("callgate-overage-{}-retry-{n}", charge.id),
    }
}

/// Why an operator's retry was refused.
#[derive(Debug, thiserror::Error)]
pub enum NoRetry {
    #[error("no such charge")]
    NotFound,
    /// Tries ran out at `failed_at`; Stripe replays that answer until `until`.
    #[error("this charge ran out of tries; Stripe replays that answer for 24 hours")]
    TooSoon {
        failed_at: UnixTime,
        until: UnixTime,
    },
    #[error("a {0} charge is not retried")]
    NotRetried(ChargeState),
    #[error("the charge changed meanwhile; reload")]
    Changed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether `charge` may be queued again at `now`, and whether under a new key.
pub fn new_key_for(charge: &Charge, now: UnixTime) -> Result<bool, NoRetry> {
    match charge.state {
        // Stripe answered: the PaymentIntent it made is unpaid, a new attempt is a new payment.
        ChargeState::Declined | ChargeState::RequiresAction => Ok(true),
        // The outcome may be unknown: the same key, once Stripe no longer replays it.
        ChargeState::Failed if now - charge.updated_at >= KEY_MEMORY_SECS => Ok(false),
        ChargeState::Failed => Err(NoRetry::TooSoon {
            failed_at: charge.updated_at,
            until: charge.updated_at + KEY_MEMORY_SECS,
        }),
        other => Err(NoRetry::NotRetried(other)),
    }
}

/// The operator's retry: queues the charge again and wakes the worker.
pub async fn retry(app: &App, id: &str) -> Result<Charge, NoRetry> {
    let charge = app.store.charge(id).await?.ok_or(NoRetry::NotFound)?;
    let now = app.clock.now();
    let new_key = new_key_for(&charge, now)?;
    let queued = app
        .store
        .retry_charge(id, new_key, now)
        .await?
        .ok_or(NoRetry::Changed)?;
    app.billing_wakeup.notify_one();
    tracing::info!(charge_id = %id, new_key, "charge queued again by the operator");
    Ok(queued)
}
