//! The money path's primitives in MongoDB ([`crate::store::money::MoneyTx`]), each one
//! single-document write or read: the sequences themselves are `store::money`'s. Without a
//! multi-document transaction they are not isolated, so the sequences look again where another
//! writer could come between two steps; a settlement is resumable: its claim is marked on the
//! call (`settle_step`), the debit is recorded on the order by call, the charge is unique per
//! call, and a claim a crash left is handed over a minute later.

use mongodb::bson::{doc, Bson};
use mongodb::options::ReturnDocument;

use super::docs::*;
use super::*;
use crate::domain::settlement;
use crate::store::money::MoneyTx;

/// A claim left unfinished this long (its settlement was interrupted) is handed over.
const CLAIM_TAKEOVER_SECONDS: i64 = 60;

/// The money path's steps on a MongoDB store.
pub(super) struct MongoSteps<'a>(pub(super) &'a MongoStore);

impl MongoStore {
    /// Renews the hold of a call that still has it on a paid order; `false` if it has not.
    pub(super) async fn renew_hold(
        &self,
        call_sid: &str,
        until: UnixTime,
    ) -> Result<bool, StoreError> {
        self.orders()
            .update_one(
                doc! { "active_call_sid": call_sid, "status": OrderStatus::Paid.as_str() },
                doc! { "$set": { "active_call_until": until } },
            )
            .await
            .map(|r| r.matched_count == 1)
            .map_err(err)
    }

    /// Sets `field` only where it is still unset (SQL's `COALESCE(field, value)`).
    pub(super) async fn set_once(
        &self,
        collection: &str,
        id: &str,
        field: &str,
        value: Bson,
    ) -> Result<(), StoreError> {
        if value == Bson::Null {
            return Ok(());
        }
        self.raw(collection)
            .update_one(
                doc! { "_id": id, field: Bson::Null },
                doc! { "$set": { field: value } },
            )
            .await
            .map(|_| ())
            .map_err(err)
    }

    /// Whether a stored call is ready for settlement at `now` (the SQL `SETTLE_READY`).
    pub(super) async fn settle_ready(
        &self,
        call: &Call,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        // The hold matters only for a call with an order that the other rules leave open.
        let hold_until = match call.order_id.as_deref() {
            Some(order_id) if !settlement::ready(call, Some(UnixTime::MAX), now) => query(
                &self.orders(),
                doc! { "_id": order_id, "active_call_sid": &call.call_sid },
                None,
                Some(1),
            )
            .await?
            .into_iter()
            .next()
            .and_then(|o| o.active_call_until),
            _ => None,
        };
        Ok(settlement::ready(call, hold_until, now))
    }

    /// The order, and the seconds it had used right after `call_sid`'s debit if that debit is
    /// recorded on it: one read.
    async fn order_with_debit(
        &self,
        order_id: &str,
        call_sid: &str,
    ) -> Result<Option<(Order, Option<i64>)>, StoreError> {
        let Some(raw) = first(&self.raw("orders"), doc! { "_id": order_id }).await? else {
            return Ok(None);
        };
        let recorded = raw
            .get_array("settled_calls")
            .ok()
            .and_then(|calls| {
                calls
                    .iter()
                    .filter_map(Bson::as_document)
                    .find(|c| c.get_str("sid") == Ok(call_sid))
            })
            .and_then(|c| c.get_i64("after").ok());
        let order: OrderDoc =
            mongodb::bson::from_document(raw).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Some((order.into_record()?, recorded)))
    }
}

impl MoneyTx for MongoSteps<'_> {
    type Error = StoreError;
    const ISOLATED: bool = false;

    fn contended(order_id: &str) -> StoreError {
        StoreError::Unavailable(format!(
            "order {order_id} kept changing under its debit; settlement will be retried"
        ))
    }

    async fn link_call(
        &mut self,
        call_sid: &str,
        order_id: &str,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        self.0
            .calls()
            .update_one(
                doc! { "_id": call_sid, "status": { "$ne": CallState::Ended.as_str() }, "settled_at": Bson::Null },
                doc! { "$set": { "order_id": order_id, "updated_at": now } },
            )
            .await
            .map(|r| r.matched_count == 1)
            .map_err(err)
    }

    async fn unlink_call(&mut self, call_sid: &str, order_id: &str) -> Result<(), StoreError> {
        self.0
            .calls()
            .update_one(
                doc! { "_id": call_sid, "order_id": order_id },
                doc! { "$set": { "order_id": Bson::Null } },
            )
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn take_hold(
        &mut self,
        order_id: &str,
        call_sid: &str,
        until: UnixTime,
        now: UnixTime,
    ) -> Result<Option<Order>, StoreError> {
        self.0
            .orders()
            .find_one_and_update(
                doc! { "_id": order_id, "$or": [
                    { "active_call_sid": Bson::Null }, { "active_call_sid": call_sid } ] },
                doc! { "$set": { "active_call_sid": call_sid, "active_call_until": until, "updated_at": now } },
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(err)?
            .map(OrderDoc::into_record)
            .transpose()
    }

    async fn insert_token(
        &mut self,
        token: &TokenIssue,
        call_sid: &str,
        order_id: &str,
    ) -> Result<(), StoreError> {
        self.0
            .raw("stream_tokens")
            .insert_one(doc! {
                "_id": &token.token_hash, "call_sid": call_sid, "order_id": order_id,
                "expires_at": token.expires_at, "used_at": Bson::Null,
            })
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn order(&mut self, id: &str) -> Result<Option<Order>, StoreError> {
        self.0.order(id).await
    }

    async fn call(&mut self, call_sid: &str) -> Result<Option<Call>, StoreError> {
        self.0.call(call_sid).await
    }

    async fn mark_ended(&mut self, end: &EndCall) -> Result<Call, StoreError> {
        let store = self.0;
        let sid = end.call_sid.as_str();
        // Stored first if its start was never seen; each step below keeps the first facts.
        store.upsert_call(&end.as_new_call()).await?;
        store
            .set_once("calls", sid, "ended_at", end.now.into())
            .await?;
        store
            .set_once("calls", sid, "twilio_duration", opt(end.duration))
            .await?;
        store
            .set_once("calls", sid, "end_reason", end.reason.as_str().into())
            .await?;
        store
            .calls()
            .find_one_and_update(
                doc! { "_id": sid },
                doc! { "$set": { "status": CallState::Ended.as_str(), "twilio_status": end.twilio_status.as_str(), "updated_at": end.now } },
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(err)?
            .ok_or_else(|| StoreError::Database("call vanished after end".into()))?
            .into_record()
    }

    async fn release_hold(&mut self, order_id: &str, call_sid: &str) -> Result<(), StoreError> {
        self.0
            .orders()
            .update_one(
                doc! { "_id": order_id, "active_call_sid": call_sid },
                doc! { "$unset": { "active_call_sid": "", "active_call_until": "" } },
            )
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn claim_settlement(
        &mut self,
        call_sid: &str,
        now: UnixTime,
    ) -> Result<Option<Call>, StoreError> {
        let store = self.0;
        let Some(stored) = store.call(call_sid).await? else {
            return Ok(None);
        };
        // The claim is the gate: one single-document update, so one settlement per call.
        let fresh = if store.settle_ready(&stored, now).await? {
            store
                .calls()
                .find_one_and_update(
                    doc! { "_id": call_sid, "settled_at": Bson::Null },
                    doc! { "$set": { "settled_at": now, "settle_step": SettleStep::Claimed.as_str(), "updated_at": now } },
                )
                .return_document(ReturnDocument::After)
                .await
                .map_err(err)?
        } else {
            None
        };
        let claimed = match fresh {
            Some(c) => Some(c),
            // A claim left unfinished by a crash is handed over once it is old enough.
            None => store
                .calls()
                .find_one_and_update(
                    doc! { "_id": call_sid, "settle_step": SettleStep::Claimed.as_str(),
                    "settled_at": { "$lt": now - CLAIM_TAKEOVER_SECONDS } },
                    doc! { "$set": { "settled_at": now, "updated_at": now } },
                )
                .return_document(ReturnDocument::After)
                .await
                .map_err(err)?,
        };
        claimed.map(CallDoc::into_record).transpose()
    }

    async fn set_settled_seconds(
        &mut self,
        call_sid: &str,
        seconds: Seconds,
    ) -> Result<(), StoreError> {
        self.0
            .calls()
            .update_one(
                doc! { "_id": call_sid },
                doc! { "$set": { "settled_seconds": seconds.0 } },
            )
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn order_for_debit(
        &mut self,
        order_id: &str,
        call_sid: &str,
        seconds: Seconds,
    ) -> Result<Order, StoreError> {
        let (mut order, recorded) = self
            .0
            .order_with_debit(order_id, call_sid)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("call {call_sid} names a missing order")))?;
        // Debited by an earlier, interrupted run: the order as that run read it.
        if let Some(after) = recorded {
            order.seconds_used = Seconds(after - seconds.0);
        }
        Ok(order)
    }

    async fn debit_order(
        &mut self,
        before: &Order,
        used_after: Seconds,
        call_sid: &str,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let store = self.0;
        let holder = match before.active_call_sid.as_deref() {
            Some(sid) => Bson::String(sid.to_string()),
            None => Bson::Null,
        };
        let mut update = doc! {
            "$set": { "seconds_used": used_after.0, "updated_at": now },
            "$push": { "settled_calls": { "sid": call_sid, "after": used_after.0 } },
        };
        if before.active_call_sid.as_deref() == Some(call_sid) {
            update.insert(
                "$unset",
                doc! { "active_call_sid": "", "active_call_until": "" },
            );
        }
        // Compare-and-set on what the debit read, and only once per call.
        let swapped = store
            .raw("orders")
            .update_one(
                doc! { "_id": &before.id, "seconds_used": before.seconds_used.0,
                "status": before.status.as_str(), "active_call_sid": holder,
                "settled_calls.sid": { "$ne": call_sid } },
                update,
            )
            .await
            .map_err(err)?
            .modified_count
            == 1;
        if swapped {
            return Ok(true);
        }
        let recorded = store.order_with_debit(&before.id, call_sid).await?;
        if recorded.is_some_and(|(_, after)| after.is_some()) {
            // Debited by an earlier, interrupted run: only the hold may be left to give back.
            self.release_hold(&before.id, call_sid).await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn insert_charge(&mut self, c: &NewCharge) -> Result<Option<Charge>, StoreError> {
        let doc = ChargeDoc::from_new(c);
        match self.0.charges().insert_one(&doc).await.map_err(err) {
            Ok(_) => Ok(Some(doc.into_record()?)),
            // Inserted by an earlier, interrupted run of this settlement.
            Err(StoreError::Conflict(_)) => {
                self.0.charge_where(doc! { "call_sid": &c.call_sid }).await
            }
            Err(e) => Err(e),
        }
    }

    async fn finish_settlement(&mut self, call_sid: &str) -> Result<(), StoreError> {
        self.0
            .calls()
            .update_one(
                doc! { "_id": call_sid },
                doc! { "$set": { "settle_step": SettleStep::Done.as_str() } },
            )
            .await
            .map(|_| ())
            .map_err(err)
    }
}
