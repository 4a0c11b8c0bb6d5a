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

impl ChargeState {
    /// Refused by Stripe or the bank, or out of tries: the operator may queue it again
    /// (`billing::retry` says under which idempotency key, and when).
    pub const RETRYABLE: &'static [ChargeState] = &[
        ChargeState::Declined,
        ChargeState::RequiresAction,
        ChargeState::Failed,
    ];
    /// Not paid yet: the customer may still pay it on-session through its pay link.
    pub const PAYABLE_ON_SESSION: &'static [ChargeState] = &[
        ChargeState::RequiresAction,
        ChargeState::Declined,
        ChargeState::Pending,
        ChargeState::Failed,
    ];
    /// Cancelled when its order is refunded or disputed: waiting on the customer, or queued and
    /// not leased by a worker right now (a leased one finishes and sees the order revoked).
    pub const CANCELED_WITH_ORDER: &'static [ChargeState] =
        &[ChargeState::RequiresAction, ChargeState::Pending];

    /// Whether a charge in this state may move to `next`. The stores apply exactly these moves
    /// (in their `WHERE` and filters, from the lists above); `store_conformance` checks them.
    pub fn may_become(self, next: ChargeState) -> bool {
        use ChargeState::*;
        match (self, next) {
            // A worker's attempt: paid, refused, waiting on the customer, given up, or again.
            (Pending, Succeeded | Declined | RequiresAction | Failed | Pending) => true,
            // Paid on-session through the pay link.
            (RequiresAction | Declined | Failed, Succeeded) => true,
            // The operator's retry.
            (from, Pending) if ChargeState::RETRYABLE.contains(&from) => true,
            (from, Canceled) => ChargeState::CANCELED_WITH_ORDER.contains(&from),
            (Succeeded, Refunded | Disputed) | (Refunded, Disputed) => true,
            _ => false,
        }
    }

    /// Whether the operator may queue it again.
    pub fn retryable(self) -> bool {
        ChargeState::RETRYABLE.contains(&self)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_taken_is_final_but_for_its_reversal() {
        use ChargeState::*;
        for &next in ChargeState::ALL {
            assert!(!Canceled.may_become(next), "canceled to {next}");
            assert!(!Disputed.may_become(next), "disputed to {next}");
            assert_eq!(
                Succeeded.may_become(next),
                matches!(next, Refunded | Disputed),
                "succeeded to {next}"
            );
        }
        // Every list the stores use is a set of allowed moves.
        for &s in ChargeState::RETRYABLE {
            assert!(s.may_become(Pending) && s.retryable());
        }
        for &s in ChargeState::PAYABLE_ON_SESSION {
            assert!(s.may_become(Succeeded));
        }
        for &s in ChargeState::CANCELED_WITH_ORDER {
            assert!(s.may_become(Canceled));
        }
        assert!(!Succeeded.retryable() && !Pending.retryable());
    }
}
