//! An overage charge's states, and why overage on an order is suspended.

use super::text_enum;

text_enum!(
    /// Where an overage charge stands. `refunded` and `disputed` follow `succeeded`: the
    /// operator refunded it, or the cardholder disputed it (overage on the order is then
    /// suspended).
    ChargeState {
        Pending = "pending",
        Succeeded = "succeeded",
        Declined = "declined",
        RequiresAction = "requires_action",
        Failed = "failed",
        Canceled = "canceled",
        Refunded = "refunded",
        Disputed = "disputed",
    }
);

text_enum!(
    /// Why overage is suspended on an order (stored in `orders.overage_blocked`; the
    /// spellings are the sentences the admin view has always shown).
    OverageBlock {
        /// Consent was given but no card was saved.
        NoSavedCard = "no saved card",
        /// A charge needs the customer's authentication (the pay link is out).
        Unpaid = "unpaid overage",
        /// The bank declined a charge.
        Declined = "declined overage",
        /// A charge failed for good (Stripe kept refusing it).
        Failed = "failed overage",
        /// The cardholder disputed an overage charge.
        Disputed = "an overage charge was disputed",
    }
);
