//! Properties of the overage amount: never negative, never more than the minutes beyond the
//! allowance (rounded up per call) times the price, and the allowance never spent twice.

use callgate::domain::money::{overage_amount, overage_seconds, Cents, Rounding, Seconds};
use proptest::prelude::*;

proptest! {
    #[test]
    fn amount_is_bounded(used in 0i64..100_000, before in 0i64..100_000, included in 0i64..100_000, price in 0i64..10_000) {
        let after = before + used;
        let over = overage_seconds(Seconds(used), Seconds(after), Seconds(included));
        prop_assert!(over.0 >= 0);
        prop_assert!(over.0 <= used);
        prop_assert!(over.0 <= (after - included).max(0));
        for rounding in [Rounding::PerStartedMinute, Rounding::PerSecond] {
            let amount = overage_amount(over, Cents(price), rounding);
            prop_assert!(amount.0 >= 0);
            let started_minutes = (over.0 + 59) / 60;
            prop_assert!(amount.0 <= started_minutes * price);
            if over.0 == 0 { prop_assert_eq!(amount.0, 0); }
        }
    }

    /// Calls in any sequence on one order: the seconds billed add up to exactly the seconds
    /// used beyond the allowance, so no second of allowance is given or charged twice.
    #[test]
    fn allowance_is_never_double_spent(calls in proptest::collection::vec(0i64..2_000, 1..20), included in 0i64..5_000) {
        let mut used_total = 0;
        let mut billed = 0;
        for used in &calls {
            used_total += used;
            billed += overage_seconds(Seconds(*used), Seconds(used_total), Seconds(included)).0;
        }
        prop_assert_eq!(billed, (used_total - included).max(0));
    }
}
