//! The operator's actions as the audit log keeps them: who (the admin device), when, what,
//! on which order, call or charge, and how it ended.

use serde::Serialize;

use super::text_enum;
use crate::domain::clock::UnixTime;

text_enum!(
    /// What an operator did.
    AuditAction {
        Revoke = "revoke",
        AddMinutes = "add_minutes",
        ForgetCaller = "forget_caller",
        RetryCharge = "retry_charge",
        Refund = "refund",
        EndCall = "end_call",
    }
);

text_enum!(
    /// How an action ended.
    AuditResult {
        /// It did what was asked.
        Done = "done",
        /// callgate or Stripe refused it (nothing changed).
        Refused = "refused",
        /// It could not be carried out (the store or Stripe failed); nothing is known changed.
        Failed = "failed",
    }
);

/// One operator action, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: String,
    pub at: UnixTime,
    /// The admin device that acted: the id inside its signed device cookie (`password` for a
    /// client that sent the password without one, such as a script).
    pub actor: String,
    pub action: AuditAction,
    /// The order acted on, or the order of the charge or call acted on.
    pub order_id: Option<String>,
    /// The row acted on: an order id, a charge id or a call sid.
    pub subject: String,
    /// What was asked, in words ("5 minutes", "the purchase, pi_…").
    pub detail: String,
    pub result: AuditResult,
    /// What came of it, in words (a refund's id, a refusal's reason).
    pub outcome: String,
}
