//! Keys pressed during the call (Twilio's `dtmf` events), read by callgate and never passed
//! to the agent: a pure state machine the socket loop asks what a key means.
//!
//! `#` buys one top-up pack on the saved card: the first press asks, a second within
//! [`CONFIRM_WITHIN_SECS`] confirms. One purchase runs at a time; a key the call does not use
//! is ignored.

/// Seconds a first `#` waits for its confirming press.
pub const CONFIRM_WITHIN_SECS: u64 = 10;

/// The key that buys a top-up.
pub const TOP_UP_KEY: char = '#';

/// The key that tells the time left.
pub const TIME_KEY: char = '*';

/// The key that transfers the caller to a person.
pub const OPERATOR_KEY: char = '0';

/// What a key means now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAction {
    /// Nothing: a key this call does not use, or one pressed while a purchase runs.
    Ignore,
    /// `*`: tell the caller the time left (or the price of paid time).
    TellTime,
    /// `0`, with an operator's number set: end the conversation and dial the operator.
    Transfer,
    /// The first `#`: ask the caller to press it again.
    AskToConfirm,
    /// The confirming `#`: buy one pack (the `nth` of this call, from 1).
    Buy { nth: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for a first press.
    Idle,
    /// Asked to confirm at this second of the call.
    Asked { at: u64 },
    /// A purchase runs; keys wait for its outcome.
    Buying,
}

/// The in-call keys of one call.
#[derive(Debug, Clone)]
pub struct Keys {
    /// Whether this call may buy a top-up (a saved card, a pack, payments configured).
    can_top_up: bool,
    /// Whether `0` transfers (an operator's number is set).
    can_transfer: bool,
    state: State,
    bought: u32,
}

impl Keys {
    pub fn new(can_top_up: bool, can_transfer: bool) -> Keys {
        Keys {
            can_top_up,
            can_transfer,
            state: State::Idle,
            bought: 0,
        }
    }

    /// Whether `#` buys a top-up on this call.
    pub fn can_top_up(&self) -> bool {
        self.can_top_up
    }

    /// `digit` pressed at `now` (seconds since the call began, any monotonic clock).
    pub fn press(&mut self, digit: char, now: u64) -> KeyAction {
        if digit == TIME_KEY {
            return KeyAction::TellTime;
        }
        if digit == OPERATOR_KEY {
            return if self.can_transfer {
                KeyAction::Transfer
            } else {
                KeyAction::Ignore
            };
        }
        if digit != TOP_UP_KEY || !self.can_top_up {
            return KeyAction::Ignore;
        }
        match self.state {
            State::Buying => KeyAction::Ignore,
            State::Asked { at } if now.saturating_sub(at) <= CONFIRM_WITHIN_SECS => {
                self.state = State::Buying;
                self.bought += 1;
                KeyAction::Buy { nth: self.bought }
            }
            State::Idle | State::Asked { .. } => {
                self.state = State::Asked { at: now };
                KeyAction::AskToConfirm
            }
        }
    }

    /// The purchase ended. `card_works`: false once the card was refused, which ends the
    /// offer for the rest of the call.
    pub fn bought(&mut self, card_works: bool) {
        self.state = State::Idle;
        if !card_works {
            self.can_top_up = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn two_presses_buy_once_and_other_keys_do_nothing() {
        let mut k = Keys::new(true, false);
        assert_eq!(k.press('5', 0), KeyAction::Ignore);
        assert_eq!(k.press('#', 1), KeyAction::AskToConfirm);
        assert_eq!(k.press('*', 2), KeyAction::TellTime);
        assert_eq!(k.press('#', 3), KeyAction::Buy { nth: 1 });
        assert_eq!(k.press('#', 4), KeyAction::Ignore);
        k.bought(true);
        assert_eq!(k.press('#', 5), KeyAction::AskToConfirm);
        assert_eq!(k.press('#', 6), KeyAction::Buy { nth: 2 });
    }

    #[test]
    fn zero_transfers_only_with_an_operator() {
        assert_eq!(Keys::new(true, false).press('0', 0), KeyAction::Ignore);
        assert_eq!(Keys::new(false, true).press('0', 0), KeyAction::Transfer);
    }

    #[test]
    fn a_late_second_press_asks_again() {
        let mut k = Keys::new(true, false);
        assert_eq!(k.press('#', 0), KeyAction::AskToConfirm);
        assert_eq!(
            k.press('#', CONFIRM_WITHIN_SECS + 1),
            KeyAction::AskToConfirm
        );
    }

    #[test]
    fn without_a_card_or_after_a_refusal_nothing_is_bought() {
        let mut k = Keys::new(false, false);
        assert_eq!(k.press('#', 0), KeyAction::Ignore);
        assert_eq!(k.press('#', 1), KeyAction::Ignore);
        let mut k = Keys::new(true, false);
        k.press('#', 0);
        k.press('#', 1);
        k.bought(false);
        assert_eq!(k.press('#', 2), KeyAction::Ignore);
        assert!(!k.can_top_up());
    }

    proptest! {
        /// Any keys at any times: a purchase starts only on a `#` that follows another `#`
        /// within the window with no purchase running, and each has its own number.
        #[test]
        fn a_purchase_needs_two_presses_and_never_overlaps(
            presses in proptest::collection::vec((prop_oneof![Just('#'), Just('*'), Just('1')], 0u64..15, any::<bool>()), 0..40)
        ) {
            let mut k = Keys::new(true, false);
            let mut now = 0;
            let mut running = false;
            let mut last_hash: Option<u64> = None;
            let mut numbers = Vec::new();
            for (digit, gap, finish) in presses {
                now += gap;
                if finish && running {
                    k.bought(true);
                    running = false;
                    last_hash = None;
                }
                let action = k.press(digit, now);
                if let KeyAction::Buy { nth } = action {
                    prop_assert!(!running);
                    prop_assert_eq!(digit, '#');
                    let asked = last_hash.expect("a first press");
                    prop_assert!(now - asked <= CONFIRM_WITHIN_SECS);
                    numbers.push(nth);
                    running = true;
                    last_hash = None;
                } else if digit == '#' && !running {
                    prop_assert_eq!(action, KeyAction::AskToConfirm);
                    last_hash = Some(now);
                }
            }
            let expected: Vec<u32> = (1..=numbers.len() as u32).collect();
            prop_assert_eq!(numbers, expected);
        }
    }
}
