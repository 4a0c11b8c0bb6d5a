//! The ledger's entries: each credit to a code (purchase, top-up, grant, their reversals)
//! recorded once by its id, its order's counters moved in the same step by what
//! [`Entry::moves`] says. The engine stores and compares; `domain::entry` decides.

use async_trait::async_trait;

use super::StoreError;
use crate::domain::entry::Entry;

/// What recording an entry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Recorded now, its order's counters moved with it.
    Now,
    /// An entry with its id stands already: nothing changed.
    Already,
    /// There is no such order: nothing was stored.
    NoOrder,
}

#[async_trait]
pub trait EntryStore: Send + Sync {
    /// Records the entry and moves its order's counters, once per entry id, in one step (an
    /// engine without transactions moves the counters first, marked on the order by entry id,
    /// then stores the entry: a run cut off between the two is finished by the next).
    async fn record_entry(&self, entry: &Entry) -> Result<Recorded, StoreError>;

    async fn entry(&self, id: &str) -> Result<Option<Entry>, StoreError>;

    /// The order's entries, oldest first.
    async fn entries_for_order(&self, order_id: &str) -> Result<Vec<Entry>, StoreError>;

    /// The credit (not a reversal) a PaymentIntent paid for, if one stands.
    async fn entry_paid_by(&self, payment_intent: &str) -> Result<Option<Entry>, StoreError>;

    /// Every entry, oldest first, at most `limit`.
    async fn list_entries(&self, limit: i64) -> Result<Vec<Entry>, StoreError>;
}
