//! Orders: what a customer bought (or an operator issued), its allowance and its code.

use async_trait::async_trait;

use super::{
    DayTotal, Listing, Order, OrderSource, OrderStatus, OverageBlock, StoreError, UnixTime,
};
use crate::domain::codes::StoredCode;
use crate::domain::money::{Cents, Currency, Seconds};

/// An order to store. With `code` it is stored paid; without, pending payment.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub id: String,
    pub source: OrderSource,
    pub plan: String,
    pub amount: Cents,
    pub currency: Currency,
    pub seconds_included: Seconds,
    pub overage_consent: bool,
    pub overage_price: Cents,
    pub stripe_payment_intent: Option<String>,
    pub stripe_customer: Option<String>,
    pub stripe_payment_method: Option<String>,
    pub client_secret_hash: Option<String>,
    pub code: Option<StoredCode>,
    pub now: UnixTime,
}

/// A successful payment to turn into a paid order with a code.
#[derive(Debug, Clone)]
pub struct Fulfilment {
    pub payment_intent: String,
    /// The fresh code; used only if this call is the one that fulfils the order.
    pub code: StoredCode,
    pub customer: Option<String>,
    pub payment_method: Option<String>,
    pub now: UnixTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fulfilled {
    /// This call paid the order and set the code.
    Now(Order),
    /// The order had already been fulfilled (a duplicate or racing event); nothing changed.
    Already(Order),
    /// No order callgate created names this PaymentIntent: nothing was stored.
    NoOrder,
}

/// Orders of one plan in one state: how many, and what they cost together.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PlanTotal {
    pub plan: String,
    pub status: OrderStatus,
    pub orders: i64,
    #[sqlx(rename = "amount_cents")]
    pub amount: i64,
}

/// Orders: stored, fulfilled once, found by id, PaymentIntent or code, moved between states.
#[async_trait]
pub trait OrderStore: Send + Sync {
    /// Stores a new order; `Conflict` if its id, PaymentIntent or code exists.
    async fn insert_order(&self, order: &NewOrder) -> Result<Order, StoreError>;

    /// Turns the pending (or failed) order of a PaymentIntent into a paid order with a code,
    /// exactly once. Never creates an order. One sequence over [`OrderStore::mark_paid`].
    async fn fulfil_order(&self, f: &Fulfilment) -> Result<Fulfilled, StoreError> {
        if let Some(order) = self.mark_paid(f).await? {
            return Ok(Fulfilled::Now(order));
        }
        Ok(
            match self.order_by_payment_intent(&f.payment_intent).await? {
                Some(order) => Fulfilled::Already(order),
                None => Fulfilled::NoOrder,
            },
        )
    }

    /// The compare-and-set under [`OrderStore::fulfil_order`]: the PaymentIntent's order paid,
    /// with the fulfilment's code, if [`OrderStatus::may_become`] allows it; the order if so.
    async fn mark_paid(&self, f: &Fulfilment) -> Result<Option<Order>, StoreError>;

    async fn order(&self, id: &str) -> Result<Option<Order>, StoreError>;

    async fn order_by_payment_intent(&self, pi: &str) -> Result<Option<Order>, StoreError>;

    async fn order_by_code(&self, code_hash: &str) -> Result<Option<Order>, StoreError>;

    /// What paid orders (still paid: not refunded, disputed or revoked) brought in, per day of
    /// their payment, from `since` on.
    async fn paid_per_day(&self, since: UnixTime) -> Result<Vec<DayTotal>, StoreError>;
    /// Every order counted by the plan it recorded and its state, with the sum of its prices.
    async fn orders_by_plan(&self) -> Result<Vec<PlanTotal>, StoreError>;
    /// A page of orders, newest first by creation (see [`Listing`]).
    async fn page_orders(&self, listing: &Listing<OrderStatus>) -> Result<Vec<Order>, StoreError>;
    /// The newest `limit` orders.
    async fn list_orders(&self, limit: i64) -> Result<Vec<Order>, StoreError> {
        self.page_orders(&Listing::newest(limit)).await
    }

    /// Remembers the client secret's hash for an order that lacked it.
    async fn set_client_secret_hash(&self, id: &str, hash: &str) -> Result<(), StoreError>;

    /// Moves an order to `to` if [`OrderStatus::may_become`] allows it from where it stands
    /// (compare-and-set); returns the updated order if it moved.
    async fn move_order(
        &self,
        id: &str,
        to: OrderStatus,
        now: UnixTime,
    ) -> Result<Option<Order>, StoreError>;

    /// Suspends (`Some(reason)`) or resumes (`None`) overage on an order.
    async fn set_overage_blocked(
        &self,
        order_id: &str,
        reason: Option<OverageBlock>,
        now: UnixTime,
    ) -> Result<(), StoreError>;

    /// Pending orders (PaymentIntents never paid) created before `before`, oldest first.
    async fn stale_pending_orders(
        &self,
        before: UnixTime,
        limit: i64,
    ) -> Result<Vec<Order>, StoreError>;

    /// Deletes an order if it is still pending; `false` if it was paid (or gone) meanwhile.
    async fn delete_pending_order(&self, id: &str) -> Result<bool, StoreError>;
}
