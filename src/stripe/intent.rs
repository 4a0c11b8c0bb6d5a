//! A PaymentIntent's `status`, as Stripe spells it: the one table of those spellings.
//! A status Stripe adds later is kept as [`IntentStatus::Other`], never an error.

/// Where a PaymentIntent stands at Stripe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntentStatus {
    RequiresPaymentMethod,
    RequiresConfirmation,
    RequiresAction,
    Processing,
    RequiresCapture,
    Canceled,
    Succeeded,
    /// A spelling this table does not know.
    Other(String),
}

const SPELLINGS: &[(IntentStatus, &str)] = &[
    (
        IntentStatus::RequiresPaymentMethod,
        "requires_payment_method",
    ),
    (IntentStatus::RequiresConfirmation, "requires_confirmation"),
    (IntentStatus::RequiresAction, "requires_action"),
    (IntentStatus::Processing, "processing"),
    (IntentStatus::RequiresCapture, "requires_capture"),
    (IntentStatus::Canceled, "canceled"),
    (IntentStatus::Succeeded, "succeeded"),
];

impl IntentStatus {
    pub fn parse(text: &str) -> IntentStatus {
        SPELLINGS
            .iter()
            .find(|(_, s)| *s == text)
            .map(|(status, _)| status.clone())
            .unwrap_or_else(|| IntentStatus::Other(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        match self {
            IntentStatus::Other(text) => text,
            known => SPELLINGS
                .iter()
                .find(|(status, _)| status == known)
                .map(|(_, s)| *s)
                .unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for IntentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a refund stands at Stripe (`status`); a spelling Stripe adds later is kept as
/// [`RefundStatus::Other`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundStatus {
    Succeeded,
    Pending,
    RequiresAction,
    Failed,
    Canceled,
    Other(String),
}

const REFUND_SPELLINGS: &[(RefundStatus, &str)] = &[
    (RefundStatus::Succeeded, "succeeded"),
    (RefundStatus::Pending, "pending"),
    (RefundStatus::RequiresAction, "requires_action"),
    (RefundStatus::Failed, "failed"),
    (RefundStatus::Canceled, "canceled"),
];

impl RefundStatus {
    pub fn parse(text: &str) -> RefundStatus {
        REFUND_SPELLINGS
            .iter()
            .find(|(_, s)| *s == text)
            .map(|(status, _)| status.clone())
            .unwrap_or_else(|| RefundStatus::Other(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        match self {
            RefundStatus::Other(text) => text,
            known => REFUND_SPELLINGS
                .iter()
                .find(|(status, _)| status == known)
                .map(|(_, s)| *s)
                .unwrap_or_default(),
        }
    }

    /// Whether Stripe gave up on the refund (nothing goes back to the card).
    pub fn refused(&self) -> bool {
        matches!(self, RefundStatus::Failed | RefundStatus::Canceled)
    }
}

impl std::fmt::Display for RefundStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip_and_new_ones_are_kept() {
        for (status, text) in SPELLINGS {
            assert_eq!(&IntentStatus::parse(text), status);
            assert_eq!(status.as_str(), *text);
        }
        assert_eq!(
            IntentStatus::parse("requires_reauth").as_str(),
            "requires_reauth"
        );
    }
}
