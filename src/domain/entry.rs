//! A code's balance as a ledger of entries. Every credit to a code's minutes or money is an
//! entry here: its purchase (or an operator's issue), each top-up, each operator grant, an
//! import's earlier usage, and the refund or dispute of any one of them, which reverses
//! exactly that entry. The debits are the code's settled calls and its overage money the
//! code's charges, each stored once in its own aggregate; [`Balance`] sums the three.
//!
//! An entry's id says what it stands for (`purchase:<order>`, `top_up:<PaymentIntent>`,
//! `reversal:<entry>`), so recording one twice is a no-op whoever delivers it twice: a replayed
//! webhook, a resumed run, a refund after a dispute of the same payment. The order's two
//! counters are kept with the entries in the same step ([`Entry::moves`]); `ledger check` and
//! the model-based ledger test prove they agree.

use serde::Serialize;

use super::clock::UnixTime;
use super::money::{Cents, Currency, Seconds};
use super::order::{Order, OrderSource};
use super::text_enum;

text_enum!(
    /// What an entry stands for.
    EntryKind {
        /// The code's purchase with Stripe.
        Purchase = "purchase",
        /// A code the operator issued or imported: its allowance when it was made.
        Issued = "issued",
        /// Minutes bought onto the code, on the web or during a call.
        TopUp = "top_up",
        /// Minutes the operator gave.
        Grant = "grant",
        /// Seconds an imported code had used before callgate (not calls callgate settled).
        PriorUse = "prior_use",
        /// Seconds of a call whose agent failed, given back: the whole call when it failed in
        /// its first `FREE_FAILURE_SECS`, else those after the agent was last heard.
        Waived = "waived",
        /// Seconds the caller spent with the operator after `0`, when `TRANSFER_METERED` is on:
        /// used from the included minutes (never overage).
        Transfer = "transfer",
        /// A refund taking back one entry.
        Refund = "refund",
        /// A dispute taking back one entry.
        Dispute = "dispute",
    }
);

/// One entry: the change it made to the code's seconds and the money it stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Entry {
    pub id: String,
    pub order_id: String,
    pub kind: EntryKind,
    /// Change to the code's seconds left (negative for prior use and for reversals).
    #[sqlx(try_from = "i64")]
    pub seconds: Seconds,
    /// Money received (negative for a reversal), in `currency`.
    #[sqlx(rename = "amount_cents", try_from = "i64")]
    pub amount: Cents,
    #[sqlx(try_from = "String")]
    pub currency: Currency,
    /// The entry this one reverses.
    pub reverses: Option<String>,
    /// The PaymentIntent that paid (or, reversed, refunded) it.
    pub stripe_payment_intent: Option<String>,
    pub created_at: UnixTime,
}

/// Which of the order's counters an entry moves when it is recorded, and by how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moves {
    /// The order was stored with it (its purchase or issue).
    Nothing,
    /// `seconds_included` by this much.
    Included(Seconds),
    /// `seconds_used` by this much.
    Used(Seconds),
}

/// Why a reversal cannot be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReversible {
    /// It is a reversal itself, or usage.
    NotACredit,
}

impl Entry {
    /// The entry for the order's own allowance (its purchase, or the operator's issue): what
    /// the order was stored with, less any credit already recorded on it since.
    pub fn opening(order: &Order, recorded: &[Entry], now: UnixTime) -> Entry {
        let kind = match order.source {
            OrderSource::Stripe => EntryKind::Purchase,
            OrderSource::Operator | OrderSource::Import => EntryKind::Issued,
        };
        let later: i64 = recorded
            .iter()
            .filter(|e| !matches!(e.kind, EntryKind::Purchase | EntryKind::Issued))
            .filter_map(|e| match e.moves() {
                Moves::Included(s) => Some(s.0),
                _ => None,
            })
            .sum();
        Entry {
            id: format!("{}:{}", kind.as_str(), order.id),
            order_id: order.id.clone(),
            kind,
            seconds: Seconds(order.seconds_included.0 - later),
            amount: order.amount,
            currency: order.currency.clone(),
            reverses: None,
            stripe_payment_intent: order.stripe_payment_intent.clone(),
            created_at: now,
        }
    }

    /// A top-up paid by `payment_intent`: `seconds` more on the order's code for `amount`.
    pub fn top_up(
        order_id: &str,
        payment_intent: &str,
        seconds: Seconds,
        amount: Cents,
        currency: Currency,
        now: UnixTime,
    ) -> Entry {
        Entry {
            id: format!("{}:{payment_intent}", EntryKind::TopUp.as_str()),
            order_id: order_id.to_string(),
            kind: EntryKind::TopUp,
            seconds,
            amount,
            currency,
            reverses: None,
            stripe_payment_intent: Some(payment_intent.to_string()),
            created_at: now,
        }
    }

    /// An entry of seconds only (no money, no payment).
    fn seconds_only(
        order: &Order,
        id: String,
        kind: EntryKind,
        seconds: Seconds,
        now: UnixTime,
    ) -> Entry {
        Entry {
            id,
            order_id: order.id.clone(),
            kind,
            seconds,
            amount: Cents(0),
            currency: order.currency.clone(),
            reverses: None,
            stripe_payment_intent: None,
            created_at: now,
        }
    }

    /// The operator's grant of `seconds`; `id` makes one grant one entry.
    pub fn grant(order: &Order, id: &str, seconds: Seconds, now: UnixTime) -> Entry {
        Entry::seconds_only(
            order,
            format!("{}:{id}", EntryKind::Grant.as_str()),
            EntryKind::Grant,
            seconds,
            now,
        )
    }

    /// `seconds` of call `call_sid` given back because its agent failed
    /// ([`super::call::waived_after_agent_failure`]); one waiver per call.
    pub fn waiver(order: &Order, call_sid: &str, seconds: Seconds, now: UnixTime) -> Entry {
        Entry::seconds_only(
            order,
            Entry::waiver_id(call_sid),
            EntryKind::Waived,
            seconds,
            now,
        )
    }

    /// `seconds` call `call_sid` spent with the operator, taken from the included minutes.
    pub fn transfer(order: &Order, call_sid: &str, seconds: Seconds, now: UnixTime) -> Entry {
        Entry::seconds_only(
            order,
            format!("{}:{call_sid}", EntryKind::Transfer.as_str()),
            EntryKind::Transfer,
            Seconds(-seconds.0.max(0)),
            now,
        )
    }

    /// The id of call `call_sid`'s waiver, if it has one.
    pub fn waiver_id(call_sid: &str) -> String {
        format!("{}:{call_sid}", EntryKind::Waived.as_str())
    }

    /// An imported code's usage before callgate.
    pub fn prior_use(order: &Order, seconds: Seconds, now: UnixTime) -> Entry {
        let id = format!("{}:{}", EntryKind::PriorUse.as_str(), order.id);
        Entry::seconds_only(
            order,
            id,
            EntryKind::PriorUse,
            Seconds(-seconds.0.max(0)),
            now,
        )
    }

    /// The refund (or, `disputed`, the dispute) of this entry: exactly its seconds and its
    /// money taken back. One reversal per entry, whichever comes first.
    pub fn reversal(&self, disputed: bool, now: UnixTime) -> Result<Entry, NotReversible> {
        if !matches!(
            self.kind,
            EntryKind::Purchase | EntryKind::Issued | EntryKind::TopUp | EntryKind::Grant
        ) {
            return Err(NotReversible::NotACredit);
        }
        let kind = if disputed {
            EntryKind::Dispute
        } else {
            EntryKind::Refund
        };
        Ok(Entry {
            id: format!("reversal:{}", self.id),
            order_id: self.order_id.clone(),
            kind,
            seconds: Seconds(-self.seconds.0),
            amount: Cents(-self.amount.0),
            currency: self.currency.clone(),
            reverses: Some(self.id.clone()),
            stripe_payment_intent: self.stripe_payment_intent.clone(),
            created_at: now,
        })
    }

    /// What recording this entry does to its order's counters, in the same step.
    pub fn moves(&self) -> Moves {
        match self.kind {
            EntryKind::Purchase | EntryKind::Issued => Moves::Nothing,
            EntryKind::TopUp
            | EntryKind::Grant
            | EntryKind::Waived
            | EntryKind::Refund
            | EntryKind::Dispute => Moves::Included(self.seconds),
            EntryKind::PriorUse | EntryKind::Transfer => Moves::Used(Seconds(-self.seconds.0)),
        }
    }
}

/// Entries oldest first; within one second, in the order they can have happened: the opening
/// entry, earlier usage, credits, then reversals.
pub fn chronological(entries: &mut [Entry]) {
    let rank = |e: &Entry| match e.kind {
        EntryKind::Purchase | EntryKind::Issued => 0,
        EntryKind::PriorUse => 1,
        EntryKind::Transfer => 4,
        EntryKind::TopUp | EntryKind::Grant | EntryKind::Waived => 2,
        EntryKind::Refund | EntryKind::Dispute => 3,
    };
    entries.sort_by(|a, b| (a.created_at, rank(a), &a.id).cmp(&(b.created_at, rank(b), &b.id)));
}

/// A code's balance from its entries, its settled calls and its charges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Balance {
    /// Seconds credited (entries), net of reversals.
    pub credited: i64,
    /// Seconds its calls were settled at, plus prior use.
    pub used: i64,
    /// Money received for its minutes (entries), net of reversals.
    pub paid: i64,
}

impl Balance {
    /// `calls`: the settled seconds of each of the code's calls.
    pub fn of(entries: &[Entry], calls: impl IntoIterator<Item = i64>) -> Balance {
        let mut b = Balance::default();
        for e in entries {
            match e.moves() {
                Moves::Used(s) => b.used += s.0,
                Moves::Nothing | Moves::Included(_) => b.credited += e.seconds.0,
            }
            b.paid += e.amount.0;
        }
        b.used += calls.into_iter().sum::<i64>();
        b
    }

    /// Seconds left (negative when calls under overage ran past the credit).
    pub fn left(&self) -> i64 {
        self.credited - self.used
    }

    /// Whether the order's counters are what these entries and calls say.
    pub fn matches(&self, order: &Order) -> bool {
        self.credited == order.seconds_included.0 && self.used == order.seconds_used.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ledger::tests::order;

    fn paid_order() -> Order {
        order(600, 0, false, false)
    }

    #[test]
    fn a_reversal_takes_back_exactly_its_entry_once() {
        let order = paid_order();
        let opening = Entry::opening(&order, &[], 1);
        let top_up = Entry::top_up(
            &order.id,
            "pi_t",
            Seconds(300),
            Cents(500),
            order.currency.clone(),
            2,
        );
        let back = top_up.reversal(false, 3).unwrap();
        assert_eq!(back.seconds, Seconds(-300));
        assert_eq!(back.amount, Cents(-500));
        assert_eq!(
            back.id,
            top_up.reversal(true, 4).unwrap().id,
            "a refund after a dispute is the same reversal"
        );
        assert_eq!(back.reversal(false, 5), Err(NotReversible::NotACredit));
        let b = Balance::of(&[opening.clone(), top_up, back], [60]);
        assert_eq!(b.credited, order.seconds_included.0);
        assert_eq!(b.paid, order.amount.0);
        assert_eq!(b.left(), order.seconds_included.0 - 60);
    }

    #[test]
    fn the_opening_entry_leaves_out_later_credits() {
        let mut order = paid_order();
        let grant = Entry::grant(&order, "g1", Seconds(120), 2);
        order.seconds_included = Seconds(order.seconds_included.0 + 120);
        let opening = Entry::opening(&order, std::slice::from_ref(&grant), 3);
        assert_eq!(opening.seconds.0, order.seconds_included.0 - 120);
        assert!(Balance::of(&[opening, grant], []).matches(&order));
    }
}
