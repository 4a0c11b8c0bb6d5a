//! The money path, written once: holding an order for a call (with its stream token), ending a
//! call, and settling it. Each is one sequence over a few primitives that an engine gives
//! inside one transaction ([`MoneyTx`]: compare-and-set a call, an order, insert a charge); the
//! decisions on the way are `domain`'s (`ledger::debit`, `Call::releases_hold`,
//! `Call::billable_seconds`, `Hold::refused`, `Settlement::unclaimed`). PostgreSQL runs the
//! sequences through sqlx, SQLite on its writer thread through rusqlite (whose primitives
//! never wait, so a sequence there completes in one poll). MongoDB, without the transaction,
//! keeps its own resumable steps (`store::mongo::calls`).

use super::{
    Call, Charge, EndCall, Hold, NewCall, NewCharge, Order, Settlement, TokenIssue, UnixTime,
};
use crate::domain::ledger;
use crate::domain::money::{Rounding, Seconds};

/// How a sequence ends its transaction.
#[derive(Debug)]
pub(crate) enum Step<T> {
    Commit(T),
    Rollback(T),
}

/// What an engine gives the money path, inside one transaction. Each is one statement of
/// `store::sql::calls` (the same text on both SQL engines).
pub(crate) trait MoneyTx {
    type Error;
    /// `CALL_UPSERT`: the call's row, stored if missing.
    async fn upsert_call(&mut self, call: &NewCall) -> Result<(), Self::Error>;
    /// `CALL_LINK_ORDER`: links a live, unsettled call to the order; `false` if the call is over.
    async fn link_call(
        &mut self,
        call_sid: &str,
        order_id: &str,
        now: UnixTime,
    ) -> Result<bool, Self::Error>;
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
    /// `CALL_END`: the call marked ended, its first facts kept.
    async fn mark_ended(&mut self, end: &EndCall) -> Result<Call, Self::Error>;
    /// `ORDER_RELEASE`: the order's hold, if this call has it.
    async fn release_hold(&mut self, order_id: &str, call_sid: &str) -> Result<(), Self::Error>;
    /// `CALL_CLAIM_SETTLEMENT`: the call, if it was ready and this claim took it.
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
    /// `ORDER_FOR_DEBIT`: the order, locked until the debit commits.
    async fn order_for_debit(&mut self, order_id: &str) -> Result<Order, Self::Error>;
    /// `ORDER_DEBIT`: seconds used after, and this call's hold released, in one write.
    async fn debit_order(
        &mut self,
        order_id: &str,
        used_after: Seconds,
        call_sid: &str,
        now: UnixTime,
    ) -> Result<(), Self::Error>;
    /// `CHARGE_INSERT`: the charge, unless the call has one already.
    async fn insert_charge(&mut self, charge: &NewCharge) -> Result<Option<Charge>, Self::Error>;
}

/// Holds the order for the call: linked first (an ended or settled call links nothing), then
/// the order's compare-and-set; with `token`, the stream token is stored in the same step.
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
    match tx.take_hold(order_id, call_sid, until, now).await? {
        Some(order) => {
            if let Some(token) = token {
                tx.insert_token(token, call_sid, order_id).await?;
            }
            Ok(Step::Commit(Hold::Held(Box::new(order))))
        }
        None => Ok(Step::Rollback(Hold::refused(
            tx.order(order_id).await?,
            now,
        ))),
    }
}

/// Ends the call (storing it if its start was never seen); a call that never reached the
/// agent gives its hold back at once.
pub(crate) async fn end<T: MoneyTx>(tx: &mut T, end: &EndCall) -> Result<Step<Call>, T::Error> {
    tx.upsert_call(&end.as_new_call()).await?;
    let call = tx.mark_ended(end).await?;
    if let Some(order_id) = call.releases_hold() {
        tx.release_hold(order_id, &call.call_sid).await?;
    }
    Ok(Step::Commit(call))
}

/// Settles the call once: claimed first, its billable seconds debited from its order in the
/// step that frees the code, and the charge the ledger says is due recorded.
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
        return Ok(Step::Commit(Settlement::without_order(used)));
    };
    let order = tx.order_for_debit(order_id).await?;
    let debit = ledger::debit(&order, used, rounding);
    tx.debit_order(order_id, debit.used_after, call_sid, now)
        .await?;
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
    Ok(Step::Commit(Settlement::Settled {
        seconds: used,
        overage: debit.overage,
        charge,
    }))
}
