//! An order: what a customer bought (or an operator issued), its allowance and its code.

use serde::Serialize;

use super::charge::OverageBlock;
use super::clock::UnixTime;
use super::money::{Cents, Currency, Seconds};
use super::text_enum;

text_enum!(
    /// Where an order stands.
    OrderStatus {
        Pending = "pending",
        Paid = "paid",
        Failed = "failed",
        Revoked = "revoked",
    }
);

text_enum!(
    /// How an order came to be.
    OrderSource {
        Stripe = "stripe",
        Operator = "operator",
        Import = "import",
    }
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Order {
    pub id: String,
    pub status: OrderStatus,
    pub source: OrderSource,
    pub plan: String,
    #[sqlx(rename = "amount_cents", try_from = "i64")]
    pub amount: Cents,
    #[sqlx(try_from = "String")]
    pub currency: Currency,
    #[sqlx(try_from = "i64")]
    pub seconds_included: Seconds,
    #[sqlx(try_from = "i64")]
    pub seconds_used: Seconds,
    pub overage_consent: bool,
    #[sqlx(rename = "overage_price_cents", try_from = "i64")]
    pub overage_price: Cents,
    /// Why overage is suspended for this code (a declined, unpaid or disputed charge), if it is.
    pub overage_blocked: Option<OverageBlock>,
    pub stripe_payment_intent: Option<String>,
    pub stripe_customer: Option<String>,
    pub stripe_payment_method: Option<String>,
    #[serde(skip)]
    pub code_hash: Option<String>,
    #[serde(skip)]
    pub code_sealed: Option<String>,
    pub code_last4: Option<String>,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
    pub paid_at: Option<UnixTime>,
    pub revoked_at: Option<UnixTime>,
    /// The call holding this code right now (one live call per code).
    pub active_call_sid: Option<String>,
    /// When that hold lapses if the call's end is never reported.
    pub active_call_until: Option<UnixTime>,
    /// SHA-256 of the PaymentIntent's client secret, hex.
    #[serde(skip)]
    pub client_secret_hash: Option<String>,
}

impl OrderStatus {
    /// Whether an order in this state may move to `next`: paid once (a failed payment may
    /// still succeed), revoked from anything but revoked, never back to pending. The stores
    /// apply exactly these moves (from [`OrderStatus::sources`]).
    pub fn may_become(self, next: OrderStatus) -> bool {
        use OrderStatus::*;
        matches!(
            (self, next),
            (Pending, Paid | Failed | Revoked) | (Failed, Paid | Revoked) | (Paid, Revoked)
        )
    }

    /// The states an order may move to `next` from.
    pub fn sources(next: OrderStatus) -> impl Iterator<Item = OrderStatus> {
        OrderStatus::ALL
            .iter()
            .copied()
            .filter(move |s| s.may_become(next))
    }
}

impl Order {
    /// Allowance left, never negative.
    pub fn seconds_left(&self) -> Seconds {
        Seconds((self.seconds_included.0 - self.seconds_used.0).max(0))
    }
}

#[cfg(test)]
mod tests {
    use super::OrderStatus::{self, *};

    #[test]
    fn an_order_is_paid_once_and_revoked_for_good() {
        for &from in OrderStatus::ALL {
            assert!(!Revoked.may_become(from), "revoked to {from}");
            assert!(!from.may_become(Pending), "{from} back to pending");
            assert!(!from.may_become(from), "{from} to itself is not a move");
        }
        assert_eq!(
            OrderStatus::sources(Paid).collect::<Vec<_>>(),
            [Pending, Failed],
            "paid from an unpaid order only"
        );
        assert_eq!(
            OrderStatus::sources(Revoked).collect::<Vec<_>>(),
            [Pending, Paid, Failed]
        );
        assert_eq!(OrderStatus::sources(Failed).collect::<Vec<_>>(), [Pending]);
    }
}
