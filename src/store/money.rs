//! The money path, written once: holding an order for a call (with its stream token), ending a
//! call, and settling it. Each is one sequence over a few primitives an engine gives
//! ([`MoneyTx`]: compare-and-set a call, an order, insert a charge); the decisions on the way
//! are `domain`'s (`ledger::debit`, `Call::releases_hold`, `Call::is_over`,
//! `Call::billable_seconds`, `Hold::refused`, `Settlement::unclaimed`).
//!
//! Each sequence is correct without a transaction too: every step is a single-row
//! compare-and-set that can be repeated, a settlement is resumable (claimed, debited once by
//! call, its charge unique per call, marked done), and where another writer could come between
//! two steps the sequence looks again and gives back what it took. PostgreSQL runs the
//! sequences in one sqlx transaction and SQLite on its writer thread through rusqlite (whose
//! primitives never wait, so a sequence completes in one poll): both are
//! [`MoneyTx::ISOLATED`], and the looking again is skipped. MongoDB runs them as they are,
//! one single-document write per step (`store::mongo::money`).

use super::{Call, Charge, EndCall, Hold, NewCharge, Order, Settlement, TokenIssue, UnixTime};
use crate::domain::ledger;
use crate::domain::money::{Rounding, Seconds};

/// How many times a settlement reads its order again when another write changed it between
/// the read and the debit (only an engine without isolation ever sees that).
const DEBIT_TRIES: usize = 16;

/// How a sequence ends its transaction. An engine without transactions has nothing to roll
/// back: the sequence has given back what it took before it says `Rollback`.
#[derive(Debug)]
pub(crate) enum Step<T> {
    Commit(T),
    Rollback(T),
}

impl<T> Step<T> {
    /// The outcome, for an engine that has no transaction to end.
    #[cfg(feature = "mongodb")]
    pub(crate) fn into_inner(self) -> T {
        match self {
            Step::Commit(value) | Step::Rollback(value) => value,
        }
    }
}

/// What an engine gives the money path. The SQL engines run each as one statement of
/// `store::sql::calls` (the same text on both) inside one transaction; MongoDB as one
/// single-document write.
pub(crate) trait MoneyTx {
    type Error;

    /// Whether the primitives run inside one transaction that keeps what they wrote from other
    /// writers until it ends. Without it, the sequences look again where another writer could
    /// have come between two steps, and give back what they took.
    const ISOLATED: bool;

    /// A settlement's debit kept losing its compare-and-set to other writes on the order.
    fn contended(order_id: &str) -> Self::Error;

    /// `CALL_LINK_ORDER`: links a live, unsettled call to the order; `false` if the call is over.
    async fn link_call(
        &mut self,
        call_sid: &str,
        order_id: &str,
        now: UnixTime,
    ) -> Result<bool, Self::Error>;
    /// Undoes [`MoneyTx::link_call`] when the hold was refused, if the call is still linked to
    /// that order. Only an engine without isolation is asked (a rollback undoes it otherwise).
    async fn unlink_call(&mut self, _call_sid: &str, _order_id: &str) -> Result<(), Self::Error> {
        Ok(())
    }
    /// `ORDER_HOLD`: the order's one live call, compare-and-set; the order if taken.
    async fn take_hold(
        &mut self,
        order_id: &str,
        call_sid: &str,
        until: UnixTime,
        now: UnixTime,
    ) -> Result<Option<Order>, Self::Error>;
    /// `STREAM_TOKEN_INSERT`.
    async fn insert_token(
        &mut self,
        token: &TokenIssue,
        call_sid: &str,
        order_id: &str,
    ) -> Result<(), Self::Error>;
    async fn order(&mut self, id: &str) -> Result<Option<Order>, Self::Error>;
    async fn call(&mut self, call_sid: &str) -> Result<Option<Call>, Self::Error>;
    /// `CALL_END`: the call marked ended, its first facts kept; stored ended if its start was
    /// never seen.
    async fn mark_ended(&mut self, end: &EndCall) -> Result<Call, Self::Error>;
    /// `ORDER_RELEASE`: the order's hold, if this call has it.
    async fn release_hold(&mut self, order_id: &str, call_sid: &str) -> Result<(), Self::Error>;
    /// `CALL_CLAIM_SETTLEMENT`: the call, if it was ready and this claim took it. An engine
    /// whose settlement can be interrupted half-way also hands over a claim left unfinished
    /// long enough ago, so that its settlement is completed with the same figures.
    async fn claim_settlement(
        &mut self,
        call_sid: &str,
        now: UnixTime,
    ) -> Result<Option<Call>, Self::Error>;
    /// `CALL_SETTLED_SECONDS`.
    async fn set_settled_seconds(
        &mut self,
        call_sid: &str,
        seconds: Seconds,
    ) -> Result<(), Self::Error>;
    /// `ORDER_FOR_DEBIT`: the order as it stood before `call_sid`'s debit of `seconds` (locked
    /// until the debit commits, where the engine locks; as before an earlier, interrupted run's
    /// debit, where the engine records debits by call).
    async fn order_for_debit(
        &mut self,
        order_id: &str,
        call_sid: &str,
        seconds: Seconds,
    ) -> Result<Order, Self::Error>;
    /// `ORDER_DEBIT`: seconds used after, and this call's hold released, in one write, if the
    /// order is as `before` read it and this call's debit is not recorded yet; `true` once the
    /// call's debit stands (written now, or by an earlier run), `false` if the order changed.
    async fn debit_order(
        &mut self,
        before: &Order,
        used_after: Seconds,
        call_sid: &str,
        now: UnixTime,
    ) -> Result<bool, Self::Error>;
    /// `CHARGE_INSERT`: the charge; where a resumed settlement finds the call's charge stored
    /// already, that one (an isolated engine's settlement never resumes: `None` there).
    async fn insert_charge(&mut self, charge: &NewCharge) -> Result<Option<Charge>, Self::Error>;
    /// Marks a claimed settlement complete. An isolated engine's claim commits with its steps,
    /// and there is nothing to mark.
    async fn finish_settlement(&mut self, _call_sid: &str) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Holds the order for the call: linked first (an ended or settled call links nothing; on
/// PostgreSQL the call's row lock makes a racing end wait), then the order's compare-and-set;
/// with `token`, the stream token is stored in the same step. Without isolation, an end may
/// come between the link and the hold and find nothing to give back: the call is read again
/// and the hold given back if it is over.
pub(crate) async fn hold<T: MoneyTx>(
    tx: &mut T,
    order_id: &str,
    call_sid: &str,
    until: UnixTime,
    now: UnixTime,
    token: Option<&TokenIssue>,
) -> Result<Step<Hold>, T::Error> {
    if !tx.link_call(call_sid, order_id, now).await? {
        return Ok(Step::Rollback(Hold::CallOver));
    }
    let Some(order) = tx.take_hold(order_id, call_sid, until, now).await? else {
        let order = tx.order(order_id).await?;
        let still_holds = order
            .as_ref()
            .is_some_and(|o| o.active_call_sid.as_deref() == Some(call_sid));
        if !T::ISOLATED && !still_holds {
            tx.unlink_call(call_sid, order_id).await?;
        }
        return Ok(Step::Rollback(Hold::refused(order, now)));
    };
    if !T::ISOLATED && tx.call(call_sid).await?.is_none_or(|c| c.is_over()) {
        tx.release_hold(order_id, call_sid).await?;
        return Ok(Step::Rollback(Hold::CallOver));
    }
    if let Some(token) = token {
        tx.insert_token(token, call_sid, order_id).await?;
    }
    Ok(Step::Commit(Hold::Held(Box::new(order))))
}

/// Ends the call (storing it if its start was never seen); a call that never reached the
/// agent gives its hold back at once. Each step can be repeated: an end interrupted half-way
/// is finished by the next report, or its hold by the call's settlement.
pub(crate) async fn end<T: MoneyTx>(tx: &mut T, end: &EndCall) -> Result<Step<Call>, T::Error> {
    let call = tx.mark_ended(end).await?;
    if let Some(order_id) = call.releases_hold() {
        tx.release_hold(order_id, &call.call_sid).await?;
    }
    Ok(Step::Commit(call))
}

/// Settles the call once: claimed first, its billable seconds debited from its order in the
/// step that frees the code, the charge the ledger says is due recorded, and the settlement
/// marked done. Resumable: a claim an interrupted run left is handed over with the same
/// call, the debit is recorded by call and the charge is unique per call, so a second run
/// finds the same figures and writes nothing twice.
pub(crate) async fn settle<T: MoneyTx>(
    tx: &mut T,
    call_sid: &str,
    rounding: Rounding,
    charge_id: &str,
    now: UnixTime,
) -> Result<Step<Settlement>, T::Error> {
    let Some(call) = tx.claim_settlement(call_sid, now).await? else {
        return Ok(Step::Rollback(Settlement::unclaimed(
            tx.call(call_sid).await?,
        )));
    };
    let used = call.billable_seconds();
    tx.set_settled_seconds(call_sid, used).await?;
    let Some(order_id) = call.order_id.as_deref() else {
        tx.finish_settlement(call_sid).await?;
        return Ok(Step::Commit(Settlement::without_order(used)));
    };
    let (order, debit) = debit_once(tx, order_id, call_sid, used, rounding, now).await?;
    let charge = match debit.charge {
        Some(amount) => tx
            .insert_charge(&NewCharge {
                id: charge_id.to_string(),
                call_sid: call_sid.to_string(),
                order_id: order_id.to_string(),
                amount,
                currency: order.currency.clone(),
                seconds_billed: debit.overage,
                now,
            })
            .await?
            .map(Box::new),
        None => None,
    };
    tx.finish_settlement(call_sid).await?;
    Ok(Step::Commit(Settlement::Settled {
        seconds: used,
        overage: debit.overage,
        charge,
    }))
}

/// The call's debit on its order, written once: the order read, the ledger's debit, and the
/// compare-and-set on what was read, again if another write came between.
async fn debit_once<T: MoneyTx>(
    tx: &mut T,
    order_id: &str,
    call_sid: &str,
    used: Seconds,
    rounding: Rounding,
    now: UnixTime,
) -> Result<(Order, ledger::Debit), T::Error> {
    for _ in 0..DEBIT_TRIES {
        let order = tx.order_for_debit(order_id, call_sid, used).await?;
        let debit = ledger::debit(&order, used, rounding);
        if tx
            .debit_order(&order, debit.used_after, call_sid, now)
            .await?
        {
            return Ok((order, debit));
        }
    }
    Err(T::contended(order_id))
}
