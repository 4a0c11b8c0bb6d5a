//! Overage charges: the outbox a billing worker leases, and their states.

use async_trait::async_trait;
use serde::Serialize;

use super::{ChargeState, DayTotal, Listing, StoreError, UnixTime};
use crate::domain::money::{Cents, Currency, Seconds};

/// How a charge attempt ended, for [`ChargeStore::finish_charge`].
#[derive(Debug, Clone)]
pub struct ChargeUpdate {
    pub state: ChargeState,
    pub stripe_payment_intent: Option<String>,
    pub last_error: Option<String>,
    /// For a charge left pending: when to try again.
    pub next_attempt_at: Option<UnixTime>,
    pub pay_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Charge {
    pub id: String,
    pub call_sid: String,
    pub order_id: String,
    #[sqlx(rename = "amount_cents", try_from = "i64")]
    pub amount: Cents,
    #[sqlx(try_from = "String")]
    pub currency: Currency,
    #[sqlx(try_from = "i64")]
    pub seconds_billed: Seconds,
    pub state: ChargeState,
    pub attempts: i64,
    pub next_attempt_at: UnixTime,
    pub lease_owner: Option<String>,
    pub lease_until: Option<UnixTime>,
    pub stripe_payment_intent: Option<String>,
    pub last_error: Option<String>,
    #[serde(skip)]
    pub pay_token: Option<String>,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
    /// Bumped by an operator's retry after Stripe refused: the idempotency key's suffix.
    pub key_generation: i64,
}

#[derive(Debug, Clone)]
pub struct NewCharge {
    pub id: String,
    pub call_sid: String,
    pub order_id: String,
    pub amount: Cents,
    pub currency: Currency,
    pub seconds_billed: Seconds,
    pub now: UnixTime,
}

/// Overage charges: one per call, leased to one worker at a time, moved only as
/// [`ChargeState::may_become`] allows.
#[async_trait]
pub trait ChargeStore: Send + Sync {
    /// Records a charge for a call; one per call. Returns the stored charge and whether this
    /// call created it.
    async fn insert_charge(&self, charge: &NewCharge) -> Result<(Charge, bool), StoreError>;

    /// Leases the next due pending charge to `owner` until `lease_until`, counting an attempt.
    async fn claim_charge(
        &self,
        owner: &str,
        lease_until: UnixTime,
        now: UnixTime,
    ) -> Result<Option<Charge>, StoreError>;

    /// Records an attempt's outcome if `owner` still holds the lease; `false` if it does not.
    async fn finish_charge(
        &self,
        id: &str,
        owner: &str,
        update: &ChargeUpdate,
        now: UnixTime,
    ) -> Result<bool, StoreError>;

    async fn charge(&self, id: &str) -> Result<Option<Charge>, StoreError>;

    async fn charge_by_pay_token(&self, token: &str) -> Result<Option<Charge>, StoreError>;

    /// The charge Stripe's PaymentIntent `pi` paid, if it is one of callgate's overage charges.
    async fn charge_by_payment_intent(&self, pi: &str) -> Result<Option<Charge>, StoreError>;

    /// Moves a charge to `to` if it is in one of `from`; the updated charge if it moved.
    async fn set_charge_state(
        &self,
        id: &str,
        from: &[ChargeState],
        to: ChargeState,
        now: UnixTime,
    ) -> Result<Option<Charge>, StoreError>;

    /// Marks a charge paid after the customer completed it on-session (from `from` states).
    async fn charge_paid(
        &self,
        id: &str,
        payment_intent: &str,
        now: UnixTime,
    ) -> Result<bool, StoreError>;

    /// Cancels an order's charges not yet paid (refund or dispute); returns how many.
    async fn cancel_open_charges(&self, order_id: &str, now: UnixTime) -> Result<u64, StoreError>;

    /// How many charges are in each state (every state listed, zeros included).
    async fn count_charges_by_state(&self) -> Result<Vec<(ChargeState, i64)>, StoreError>;

    /// Queues a declined, requires_action or failed charge again, due now with its attempts
    /// reset; `new_key` moves it to the next idempotency key generation. `None` if the charge
    /// is in no such state (already paid, pending, canceled) or does not exist.
    async fn retry_charge(
        &self,
        id: &str,
        new_key: bool,
        now: UnixTime,
    ) -> Result<Option<Charge>, StoreError>;

    /// An order's charges, oldest first.
    async fn charges_for_order(&self, order_id: &str) -> Result<Vec<Charge>, StoreError>;

    /// What succeeded overage charges brought in, per day they succeeded, from `since` on.
    async fn succeeded_per_day(&self, since: UnixTime) -> Result<Vec<DayTotal>, StoreError>;
    /// A page of charges, newest first by creation (see [`Listing`]).
    async fn page_charges(&self, listing: &Listing<ChargeState>)
        -> Result<Vec<Charge>, StoreError>;
    /// The newest `limit` charges, optionally only those in one state.
    async fn list_charges(
        &self,
        state: Option<ChargeState>,
        limit: i64,
    ) -> Result<Vec<Charge>, StoreError> {
        self.page_charges(&Listing {
            state,
            ..Listing::newest(limit)
        })
        .await
    }
}
