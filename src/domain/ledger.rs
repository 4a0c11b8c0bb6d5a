//! The ledger's rules, written once: whether overage may run on an order, and what a call
//! owes when it is settled. Pure functions of an order and a call's metered seconds; every
//! storage engine applies their result atomically (a compare-and-set on the order and the
//! call) and decides nothing itself.
//!
//! The bridge is the meter: a call's debit is the seconds its bridge metered, never a figure
//! from Twilio. The hold on an order (one live call per code) is released in the same atomic
//! step that debits the call, so a redial never sees an allowance the last call has used.

use crate::domain::money::{overage_amount, overage_seconds, Cents, Rounding, Seconds};
use crate::domain::order::{Order, OrderStatus};

/// Why overage cannot run (or be charged) on an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoOverage {
    /// The buyer did not accept overage.
    NoConsent,
    /// Consent without a saved customer and card (operator-issued or imported codes).
    NoCard,
    /// Suspended after a declined, unpaid or disputed charge.
    Suspended,
    /// The order is not paid (revoked after a refund or a dispute, or never paid).
    NotPaid,
}

/// Whether the order may run past its allowance and be charged for it off-session.
pub fn overage_allowed(order: &Order) -> Result<(), NoOverage> {
    if order.status != OrderStatus::Paid {
        return Err(NoOverage::NotPaid);
    }
    if !order.overage_consent {
        return Err(NoOverage::NoConsent);
    }
    if order.stripe_customer.is_none() || order.stripe_payment_method.is_none() {
        return Err(NoOverage::NoCard);
    }
    if order.overage_blocked.is_some() {
        return Err(NoOverage::Suspended);
    }
    Ok(())
}

/// Whether a charge already due on the order may still be attempted: the order is paid and
/// has a card. A suspension does not cancel minutes already used under consent.
pub fn may_charge(order: &Order) -> Result<(), NoOverage> {
    match overage_allowed(order) {
        Ok(()) | Err(NoOverage::Suspended) => Ok(()),
        Err(e) => Err(e),
    }
}

/// What settling one call does to its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Debit {
    /// Seconds taken from the order: all the call metered.
    pub seconds: Seconds,
    /// The order's seconds used once the call is debited.
    pub used_after: Seconds,
    /// The part of `seconds` beyond the allowance left before the call.
    pub overage: Seconds,
    /// The off-session charge to record, when one is due.
    pub charge: Option<Cents>,
}

/// Debits `metered` seconds from `order` (as it stands before this call is debited).
pub fn debit(order: &Order, metered: Seconds, rounding: Rounding) -> Debit {
    let seconds = Seconds(metered.0.max(0));
    let used_after = Seconds(order.seconds_used.0.saturating_add(seconds.0));
    let overage = overage_seconds(seconds, used_after, order.seconds_included);
    let amount = overage_amount(overage, order.overage_price, rounding);
    let charge = (amount.0 > 0 && may_charge(order).is_ok()).then_some(amount);
    Debit {
        seconds,
        used_after,
        overage,
        charge,
    }
}

/// Why a successful PaymentIntent does not fulfil an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotOurs {
    /// No order callgate created names it (another product on the same Stripe account).
    NoOrder,
    /// The order was paid already, revoked, or is otherwise past payment.
    NotPending,
    /// It paid another amount or currency than the order asked.
    AmountMismatch,
}

/// Whether a succeeded PaymentIntent for `amount` in `currency` may pay `order`: only one
/// callgate created for that pending order, for exactly what it asked.
pub fn may_fulfil(
    order: Option<&Order>,
    amount: Option<i64>,
    currency: Option<&str>,
) -> Result<(), NotOurs> {
    let order = order.ok_or(NotOurs::NoOrder)?;
    if !matches!(order.status, OrderStatus::Pending | OrderStatus::Failed) {
        return Err(NotOurs::NotPending);
    }
    let same_currency = currency.is_some_and(|c| c.eq_ignore_ascii_case(order.currency.code()));
    if amount != Some(order.amount.0) || !same_currency {
        return Err(NotOurs::AmountMismatch);
    }
    Ok(())
}

/// How long a live call's hold on its order lasts without news from its bridge. The bridge
/// renews it with every metering write, so a dead instance's call frees its code this long
/// after its last write, and its metered seconds are then debited by whoever comes next.
pub const HOLD_LEASE_SECS: i64 = 30;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::order::OrderSource;
    use proptest::prelude::*;

    /// A paid order for the domain's unit tests.
    pub(crate) fn order(included: i64, used: i64, consent: bool, card: bool) -> Order {
        Order {
            id: "ord_1".into(),
            status: OrderStatus::Paid,
            source: OrderSource::Stripe,
            plan: "p".into(),
            amount: Cents(1000),
            currency: Default::default(),
            seconds_included: Seconds(included),
            seconds_used: Seconds(used),
            overage_consent: consent,
            overage_price: Cents(50),
            overage_blocked: None,
            stripe_payment_intent: None,
            stripe_customer: card.then(|| "cus_1".into()),
            stripe_payment_method: card.then(|| "pm_1".into()),
            code_hash: None,
            code_sealed: None,
            code_last4: None,
            created_at: 0,
            updated_at: 0,
            paid_at: Some(0),
            revoked_at: None,
            active_call_sid: None,
            active_call_until: None,
            client_secret_hash: None,
        }
    }

    #[test]
    fn overage_needs_consent_a_card_a_paid_order_and_no_suspension() {
        assert_eq!(overage_allowed(&order(60, 0, true, true)), Ok(()));
        assert_eq!(
            overage_allowed(&order(60, 0, false, true)),
            Err(NoOverage::NoConsent)
        );
        assert_eq!(
            overage_allowed(&order(60, 0, true, false)),
            Err(NoOverage::NoCard)
        );
        let mut blocked = order(60, 0, true, true);
        blocked.overage_blocked = Some(crate::domain::charge::OverageBlock::Declined);
        assert_eq!(overage_allowed(&blocked), Err(NoOverage::Suspended));
        assert_eq!(may_charge(&blocked), Ok(()), "minutes used stay owed");
        let mut revoked = order(60, 0, true, true);
        revoked.status = OrderStatus::Revoked;
        assert_eq!(overage_allowed(&revoked), Err(NoOverage::NotPaid));
        assert_eq!(may_charge(&revoked), Err(NoOverage::NotPaid));
    }

    #[test]
    fn a_revoked_order_is_debited_but_never_charged() {
        let mut o = order(60, 0, true, true);
        o.status = OrderStatus::Revoked;
        let d = debit(&o, Seconds(130), Rounding::PerStartedMinute);
        assert_eq!(d.used_after, Seconds(130));
        assert_eq!(d.overage, Seconds(70));
        assert_eq!(d.charge, None);
    }

    #[test]
    fn consent_without_a_card_is_never_charged() {
        let d = debit(
            &order(60, 0, true, false),
            Seconds(90),
            Rounding::PerStartedMinute,
        );
        assert_eq!(d.charge, None);
    }

    #[test]
    fn only_the_pending_order_s_own_amount_and_currency_fulfil_it() {
        let mut o = order(60, 0, false, false);
        o.status = OrderStatus::Pending;
        assert_eq!(may_fulfil(Some(&o), Some(1000), Some("usd")), Ok(()));
        assert_eq!(may_fulfil(Some(&o), Some(1000), Some("USD")), Ok(()));
        assert_eq!(
            may_fulfil(None, Some(1000), Some("usd")),
            Err(NotOurs::NoOrder)
        );
        assert_eq!(
            may_fulfil(Some(&o), Some(50), Some("usd")),
            Err(NotOurs::AmountMismatch)
        );
        assert_eq!(
            may_fulfil(Some(&o), Some(1000), Some("eur")),
            Err(NotOurs::AmountMismatch)
        );
        assert_eq!(
            may_fulfil(Some(&o), None, None),
            Err(NotOurs::AmountMismatch)
        );
        o.status = OrderStatus::Revoked;
        assert_eq!(
            may_fulfil(Some(&o), Some(1000), Some("usd")),
            Err(NotOurs::NotPending)
        );
    }

    proptest! {
        /// Any sequence of calls on one order, settled one after another: the allowance is
        /// handed out once, the overage billed adds up to the seconds beyond it, and only a
        /// chargeable order is ever charged.
        #[test]
        fn calls_in_sequence_spend_the_allowance_once(
            calls in proptest::collection::vec(0i64..400, 1..12),
            included in 0i64..900,
            consent: bool,
            card: bool,
        ) {
            let mut o = order(included, 0, consent, card);
            let mut charged = Cents(0);
            let mut over = 0;
            for c in &calls {
                let d = debit(&o, Seconds(*c), Rounding::PerSecond);
                prop_assert_eq!(d.seconds, Seconds(*c));
                prop_assert!(d.overage.0 <= *c);
                over += d.overage.0;
                if let Some(a) = d.charge { charged.0 += a.0; }
                o.seconds_used = d.used_after;
            }
            let total: i64 = calls.iter().sum();
            prop_assert_eq!(o.seconds_used, Seconds(total));
            prop_assert_eq!(over, (total - included).max(0));
            if !(consent && card) {
                prop_assert_eq!(charged, Cents(0));
            } else {
                // Per second, each call rounded up to the cent: at most one cent per call over.
                let exact = over * 50;
                prop_assert!(charged.0 * 60 >= exact);
                prop_assert!(charged.0 * 60 <= exact + 60 * calls.len() as i64);
            }
        }
    }
}
