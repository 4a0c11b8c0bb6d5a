//! The allowance, second by second: a pure state machine the bridge ticks once per metered
//! second. It says when to warn the caller and when time is up; the socket loop only acts.

use crate::domain::ledger;
use crate::store::Order;

/// The limits a call runs under, in metered seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The code's seconds left when the call began (its included time).
    pub included: i64,
    /// Whether the call may run past them into paid overage (a saved card, consent).
    pub overage: bool,
    /// The longest call, allowance or not.
    pub max: i64,
}

impl Limits {
    /// An order's limits: its seconds left, and whether overage may run past them; never
    /// past `max`.
    pub fn for_order(order: &Order, max_call_minutes: i64) -> Limits {
        Limits {
            included: order.seconds_left().0.max(0),
            overage: ledger::overage_allowed(order).is_ok(),
            max: max_call_minutes * 60,
        }
    }
}

/// What one more metered second means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    Continue,
    /// Warn the caller: `left` seconds of the included time remain (once per stretch of
    /// included time: again after a top-up moves its end). `then_paid`: the call would go
    /// on in paid overage rather than end.
    Warn {
        left: i64,
        then_paid: bool,
    },
    /// The included time is used up and the call goes on in paid overage: tell the caller.
    PaidTime,
    /// The allowance or the longest call is used up: end the call.
    TimeUp,
}

/// A call's metered seconds against its limits, which a top-up during the call extends and
/// a failed one pins to the included time.
#[derive(Debug, Clone)]
pub struct Allowance {
    limits: Limits,
    warn_before: i64,
    elapsed: i64,
    warned: bool,
    told_paid: bool,
}

impl Allowance {
    /// `warn_before`: seconds before the included time ends that the caller is warned (only
    /// when the included time is longer than that: a shorter one would warn at once).
    pub fn new(limits: Limits, warn_before: i64) -> Allowance {
        Allowance {
            limits,
            warn_before,
            elapsed: 0,
            warned: false,
            told_paid: false,
        }
    }

    /// Metered seconds so far.
    pub fn elapsed(&self) -> i64 {
        self.elapsed
    }

    /// Included seconds left (never below zero).
    pub fn included_left(&self) -> i64 {
        (self.limits.included - self.elapsed).max(0)
    }

    /// Whether the call now runs in paid overage.
    pub fn in_paid_time(&self) -> bool {
        self.limits.overage && self.included_left() == 0
    }

    /// The second the call ends at, as things stand.
    fn ends_at(&self) -> i64 {
        if self.limits.overage {
            self.limits.max
        } else {
            self.limits.included.min(self.limits.max)
        }
    }

    /// The order's included time as it stands now (a top-up credited, one reversed, a
    /// grant): the end moves to it. The caller is warned again before a later end, and told
    /// again if paid time starts after it; an earlier end may be now ([`Allowance::is_over`]).
    pub fn set_included(&mut self, seconds: i64) {
        self.limits.included = seconds.max(0);
        if self.included_left() > self.warn_before {
            self.warned = false;
        }
        if self.included_left() > 0 {
            self.told_paid = false;
        }
    }

    /// The card failed during the call: no paid overage from here; the call ends when the
    /// included time does (at once, if it already has).
    pub fn end_at_included(&mut self) {
        self.limits.overage = false;
    }

    /// Whether the call must end now without another second (the card failed after the
    /// included time ran out, or the included time shrank below what was used).
    pub fn is_over(&self) -> bool {
        self.elapsed >= self.ends_at()
    }

    /// One more metered second.
    pub fn tick(&mut self) -> Tick {
        self.elapsed += 1;
        if self.elapsed >= self.ends_at() {
            return Tick::TimeUp;
        }
        let Limits {
            included, overage, ..
        } = self.limits;
        if included >= self.limits.max {
            // The longest call comes first: nothing to warn of.
            return Tick::Continue;
        }
        let left = included - self.elapsed;
        if !self.warned && left > 0 && left <= self.warn_before && included > self.warn_before {
            self.warned = true;
            return Tick::Warn {
                left,
                then_paid: overage,
            };
        }
        if overage && left <= 0 && !self.told_paid {
            self.told_paid = true;
            return Tick::PaidTime;
        }
        Tick::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits(included: i64, overage: bool, max: i64) -> Limits {
        Limits {
            included,
            overage,
            max,
        }
    }

    /// Ticks until time is up (or `limit` seconds): each second's answer.
    fn run(limits: Limits, warn_before: i64, limit: i64) -> Vec<Tick> {
        let mut a = Allowance::new(limits, warn_before);
        let mut out = Vec::new();
        for _ in 0..limit {
            let t = a.tick();
            out.push(t);
            if t == Tick::TimeUp {
                break;
            }
        }
        out
    }

    fn warnings(ticks: &[Tick]) -> usize {
        ticks
            .iter()
            .filter(|t| matches!(t, Tick::Warn { .. }))
            .count()
    }

    #[test]
    fn two_minutes_warn_once_at_one_minute_left_and_end_at_two() {
        let ticks = run(limits(120, false, 3600), 60, 10_000);
        assert_eq!(ticks.len(), 120);
        assert_eq!(
            ticks[59],
            Tick::Warn {
                left: 60,
                then_paid: false
            }
        );
        assert_eq!(ticks[119], Tick::TimeUp);
        assert_eq!(warnings(&ticks), 1);
    }

    #[test]
    fn an_allowance_shorter_than_the_warning_is_not_warned() {
        let ticks = run(limits(30, false, 3600), 60, 10_000);
        assert_eq!(ticks.len(), 30);
        assert_eq!(warnings(&ticks), 0);
    }

    #[test]
    fn overage_is_warned_of_then_announced_and_runs_to_the_longest_call() {
        let ticks = run(limits(120, true, 600), 60, 10_000);
        assert_eq!(ticks.len(), 600);
        assert_eq!(
            ticks[59],
            Tick::Warn {
                left: 60,
                then_paid: true
            }
        );
        assert_eq!(ticks[119], Tick::PaidTime);
        assert_eq!(ticks.last(), Some(&Tick::TimeUp));
        assert_eq!(warnings(&ticks), 1);
    }

    #[test]
    fn a_top_up_moves_the_end_and_warns_again_before_it() {
        let mut a = Allowance::new(limits(120, false, 3600), 60);
        let mut ticks: Vec<Tick> = (0..100).map(|_| a.tick()).collect();
        a.set_included(420);
        while ticks.last() != Some(&Tick::TimeUp) {
            ticks.push(a.tick());
        }
        assert_eq!(ticks.len(), 420);
        assert_eq!(warnings(&ticks), 2);
        assert!(matches!(ticks[359], Tick::Warn { left: 60, .. }));
    }

    #[test]
    fn a_reversal_below_what_was_used_ends_the_call_now() {
        let mut a = Allowance::new(limits(420, false, 3600), 60);
        for _ in 0..200 {
            a.tick();
        }
        a.set_included(120);
        assert!(a.is_over());
        let mut paid = Allowance::new(limits(420, true, 3600), 60);
        for _ in 0..200 {
            paid.tick();
        }
        paid.set_included(120);
        assert!(
            !paid.is_over(),
            "with overage the call goes on, in paid time"
        );
        assert_eq!(paid.tick(), Tick::PaidTime);
    }

    #[test]
    fn a_failed_card_past_the_included_time_ends_the_call_at_once() {
        let mut a = Allowance::new(limits(60, true, 3600), 30);
        for _ in 0..90 {
            assert_ne!(a.tick(), Tick::TimeUp);
        }
        assert!(!a.is_over());
        a.end_at_included();
        assert!(a.is_over());
        assert_eq!(a.tick(), Tick::TimeUp);
    }

    proptest! {
        /// Whatever the limits and whenever the included time changes (top-ups, reversals):
        /// the call ends the first moment its metered seconds reach the included time as it
        /// then stands (or the longest call; only the longest call with overage), never
        /// earlier; each warning comes with the seconds truly left, at most once per change.
        #[test]
        fn time_is_up_exactly_at_the_limit(
            included in 0i64..400,
            overage in any::<bool>(),
            max in 1i64..400,
            warn_before in 0i64..120,
            changes in proptest::collection::vec((0i64..400, -300i64..300), 0..3),
        ) {
            let mut a = Allowance::new(limits(included, overage, max), warn_before);
            let mut total = included;
            let bound = |total: i64| if overage { max } else { total.min(max) };
            let mut warned = 0;
            let mut ended = None;
            'call: for second in 1..=1_000i64 {
                for (at, delta) in &changes {
                    if *at == second - 1 {
                        total = (total + delta).max(0);
                        a.set_included(total);
                        if a.is_over() {
                            prop_assert!(second > bound(total), "ended early");
                            ended = Some(second - 1);
                            break 'call;
                        }
                    }
                }
                prop_assert!(second - 1 < bound(total).max(1), "ran past the limit");
                match a.tick() {
                    Tick::TimeUp => {
                        prop_assert!(second >= bound(total).max(1), "ended early");
                        ended = Some(second);
                        break;
                    }
                    Tick::Warn { left, then_paid } => {
                        prop_assert_eq!(left, total - second);
                        prop_assert!(left > 0 && left <= warn_before);
                        prop_assert_eq!(then_paid, overage);
                        warned += 1;
                    }
                    Tick::PaidTime => prop_assert!(overage && second >= total),
                    Tick::Continue => {}
                }
            }
            prop_assert!(ended.is_some());
            prop_assert!(warned <= 1 + changes.len());
        }
    }
}
