//! The allowance, second by second: a pure state machine the bridge ticks once per metered
//! second. It says when to warn the caller and when time is up; the socket loop only acts.

use crate::domain::ledger;
use crate::store::Order;

/// The limits a call runs under, in metered seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The allowance, when the call must end with it (no chargeable overage).
    pub allowance: Option<i64>,
    /// The longest call, allowance or not.
    pub max: i64,
}

impl Limits {
    /// An order's limits: its seconds left, unless overage may run; never past `max`.
    pub fn for_order(order: &Order, max_call_minutes: i64) -> Limits {
        let max = max_call_minutes * 60;
        let overage = ledger::overage_allowed(order).is_ok();
        Limits {
            allowance: (!overage).then(|| order.seconds_left().0.min(max)),
            max,
        }
    }
}

/// What one more metered second means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    Continue,
    /// Warn the caller (once): `left` seconds of the allowance remain.
    Warn {
        left: i64,
    },
    /// The allowance or the longest call is used up: end the call.
    TimeUp,
}

/// A call's metered seconds against its limits.
#[derive(Debug, Clone)]
pub struct Allowance {
    limits: Limits,
    warn_before: i64,
    elapsed: i64,
    warned: bool,
}

impl Allowance {
    /// `warn_before`: seconds before the allowance ends that the caller is warned (only when
    /// the allowance is longer than that: a shorter one would warn at once).
    pub fn new(limits: Limits, warn_before: i64) -> Allowance {
        Allowance {
            limits,
            warn_before,
            elapsed: 0,
            warned: false,
        }
    }

    /// Metered seconds so far.
    pub fn elapsed(&self) -> i64 {
        self.elapsed
    }

    /// One more metered second.
    pub fn tick(&mut self) -> Tick {
        self.elapsed += 1;
        let ends_at = match self.limits.allowance {
            Some(allowance) => allowance.min(self.limits.max),
            None => self.limits.max,
        };
        if self.elapsed >= ends_at {
            return Tick::TimeUp;
        }
        if let Some(allowance) = self.limits.allowance {
            let left = allowance - self.elapsed;
            if !self.warned && left <= self.warn_before && allowance > self.warn_before {
                self.warned = true;
                return Tick::Warn { left };
            }
        }
        Tick::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    #[test]
    fn two_minutes_warn_once_at_one_minute_left_and_end_at_two() {
        let ticks = run(
            Limits {
                allowance: Some(120),
                max: 3600,
            },
            60,
            10_000,
        );
        assert_eq!(ticks.len(), 120);
        assert_eq!(ticks[59], Tick::Warn { left: 60 });
        assert_eq!(ticks[119], Tick::TimeUp);
        let warnings = ticks
            .iter()
            .filter(|t| matches!(t, Tick::Warn { .. }))
            .count();
        assert_eq!(warnings, 1);
    }

    #[test]
    fn an_allowance_shorter_than_the_warning_is_not_warned() {
        let ticks = run(
            Limits {
                allowance: Some(30),
                max: 3600,
            },
            60,
            10_000,
        );
        assert_eq!(ticks.len(), 30);
        assert!(!ticks.iter().any(|t| matches!(t, Tick::Warn { .. })));
    }

    #[test]
    fn overage_runs_to_the_longest_call_unwarned() {
        let ticks = run(
            Limits {
                allowance: None,
                max: 600,
            },
            60,
            10_000,
        );
        assert_eq!(ticks.len(), 600);
        assert_eq!(ticks.last(), Some(&Tick::TimeUp));
        assert!(!ticks.iter().any(|t| matches!(t, Tick::Warn { .. })));
    }

    proptest! {
        /// Whatever the limits: time is up exactly at the smaller of the allowance and the
        /// longest call, never earlier; a warning comes at most once, before the end, with
        /// the seconds truly left.
        #[test]
        fn time_is_up_exactly_at_the_limit(
            allowance in proptest::option::of(0i64..400),
            max in 1i64..400,
            warn_before in 0i64..120,
        ) {
            let limits = Limits { allowance, max };
            let ticks = run(limits, warn_before, 1_000);
            let end = allowance.map_or(max, |a| a.min(max)).max(1);
            prop_assert_eq!(ticks.len() as i64, end);
            prop_assert_eq!(ticks.last(), Some(&Tick::TimeUp));
            let warns: Vec<(usize, i64)> = ticks.iter().enumerate().filter_map(|(i, t)| match t {
                Tick::Warn { left } => Some((i, *left)),
                _ => None,
            }).collect();
            prop_assert!(warns.len() <= 1);
            for (i, left) in warns {
                let a = allowance.expect("only an allowance warns");
                prop_assert_eq!(left, a - (i as i64 + 1));
                prop_assert!(left > 0 && left <= warn_before);
            }
        }
    }
}
