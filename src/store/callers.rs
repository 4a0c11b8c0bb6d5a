//! Remembered callers: a number a caller asked, after typing their code, to have remembered
//! for it. Whether a later call from that number may skip the code is the menu's decision
//! (`domain::caller`), never the store's.

use async_trait::async_trait;
use serde::Serialize;

use super::{Order, StoreError, UnixTime};

/// A number remembered for an order's code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct RememberedCaller {
    pub caller: String,
    pub order_id: String,
    pub remembered_at: UnixTime,
}

/// Remembered callers: one code per number (remembering another replaces it).
#[async_trait]
pub trait CallerStore: Send + Sync {
    /// Remembers `caller` for the order's code, in place of any code it was remembered for.
    async fn remember_caller(
        &self,
        caller: &str,
        order_id: &str,
        now: UnixTime,
    ) -> Result<(), StoreError>;

    /// The order `caller` is remembered for, as it stands.
    async fn remembered_order(&self, caller: &str) -> Result<Option<Order>, StoreError>;

    /// Forgets `caller` (only for `order_id`, when given); `true` if it was remembered.
    async fn forget_caller(&self, caller: &str, order_id: Option<&str>)
        -> Result<bool, StoreError>;

    /// The numbers remembered for an order (for every order with `None`), oldest first.
    async fn remembered_callers(
        &self,
        order_id: Option<&str>,
    ) -> Result<Vec<RememberedCaller>, StoreError>;
}
