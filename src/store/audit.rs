//! The audit log: every operator action, appended once, read by order or row and as a whole.

use async_trait::async_trait;

use super::{Listing, StoreError};
pub use crate::domain::audit::{AuditAction, AuditEntry, AuditResult};

#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends an entry.
    async fn record_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;

    /// The entries about `id` (an order: its own and its charges' and calls'; or a call or
    /// charge itself), newest first.
    async fn audit_about(&self, id: &str, limit: i64) -> Result<Vec<AuditEntry>, StoreError>;

    /// A page of the whole log, newest first (see [`Listing`]).
    async fn page_audit(
        &self,
        listing: &Listing<AuditResult>,
    ) -> Result<Vec<AuditEntry>, StoreError>;
}
