//! Calls in MongoDB, with their holds, tokens and the settlement's steps.

use async_trait::async_trait;
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::ReturnDocument;

use super::docs::*;
use super::*;
use crate::domain::ledger::{self, Debit};
use crate::domain::settlement;

impl MongoStore {
    pub(super) async fn release_hold(&self, call_sid: &str) -> Result<(), StoreError> {
        self.orders()
            .update_many(
                doc! { "active_call_sid": call_sid },
                doc! { "$unset": { "active_call_sid": "", "active_call_until": "" } },
            )
            .await
            .map(|_| ())
            .map_err(err)
    }

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

    /// Debits a claimed call from its order once, releasing the call's hold in the same
    /// single-document write: the order records each settled call with the usage total right
    /// after it, so a retry after a crash finds the same debit. Returns the order as it stood
    /// before the debit, and the debit.
    pub(super) async fn apply_usage(
        &self,
        order_id: &str,
        call_sid: &str,
        used: Seconds,
        rounding: Rounding,
        now: UnixTime,
    ) -> Result<(Order, Debit), StoreError> {
        for _ in 0..100 {
            let raw = first(&self.raw("orders"), doc! { "_id": order_id })
                .await?
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("call {call_sid} names a missing order"))
                })?;
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
            let order: OrderDoc = mongodb::bson::from_document(raw)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let mut order = order.into_record()?;
            if let Some(after) = recorded {
                // Debited by an earlier, interrupted run: the same figures, and the hold goes.
                self.release_hold(call_sid).await?;
                order.seconds_used = Seconds(after - used.0);
                let debit = ledger::debit(&order, used, rounding);
                return Ok((order, debit));
            }
            let debit = ledger::debit(&order, used, rounding);
            let holder = match order.active_call_sid.as_deref() {
                Some(sid) => Bson::String(sid.to_string()),
                None => Bson::Null,
            };
            let mut update = doc! {
                "$set": { "seconds_used": debit.used_after.0, "updated_at": now },
                "$push": { "settled_calls": { "sid": call_sid, "after": debit.used_after.0 } },
            };
            if order.active_call_sid.as_deref() == Some(call_sid) {
                update.insert(
                    "$unset",
                    doc! { "active_call_sid": "", "active_call_until": "" },
                );
            }
            // Compare-and-set on what the debit read: a racing write retries.
            let swapped = self
                .raw("orders")
                .update_one(
                    doc! { "_id": order_id, "seconds_used": order.seconds_used.0,
                    "status": order.status.as_str(), "active_call_sid": holder,
                    "settled_calls.sid": { "$ne": call_sid } },
                    update,
                )
                .await
                .map_err(err)?
                .modified_count
                == 1;
            if swapped {
                return Ok((order, debit));
            }
        }
        Err(StoreError::Unavailable(
            "order usage kept changing; settlement will be retried".into(),
        ))
    }

    /// The settlement after its claim: usage, then the charge, then the call marked done.
    /// Each step can be repeated without effect, so a claim left by a crash is finished later.
    pub(super) async fn settle_claimed(
        &self,
        call: &Call,
        rounding: Rounding,
        charge_id: &str,
        now: UnixTime,
    ) -> Result<Settlement, StoreError> {
        let used = call.billable_seconds();
        self.calls()
            .update_one(
                doc! { "_id": &call.call_sid },
                doc! { "$set": { "settled_seconds": used.0 } },
            )
            .await
            .map_err(err)?;
        let mut outcome = Settlement::without_order(used);
        if let Some(order_id) = call.order_id.as_deref() {
            let (order, debit) = self
                .apply_usage(order_id, &call.call_sid, used, rounding, now)
                .await?;
            let charge = match debit.charge {
                Some(amount) => {
                    let doc = ChargeDoc {
                        id: charge_id.into(),
                        call_sid: call.call_sid.clone(),
                        order_id: order.id.clone(),
                        amount_cents: amount.0,
                        currency: order.currency.code().to_string(),
                        seconds_billed: debit.overage.0,
                        state: ChargeState::Pending.as_str().into(),
                        attempts: 0,
                        next_attempt_at: now,
                        lease_owner: None,
                        lease_until: None,
                        stripe_payment_intent: None,
                        last_error: None,
                        pay_token: None,
                        created_at: now,
                        updated_at: now,
                        key_generation: 0,
                    };
                    match self.charges().insert_one(&doc).await.map_err(err) {
                        Ok(_) => Some(Box::new(doc.into_record()?)),
                        // Inserted by an earlier, interrupted run of this settlement.
                        Err(StoreError::Conflict(_)) => self
                            .charge_where(doc! { "call_sid": &call.call_sid })
                            .await?
                            .map(Box::new),
                        Err(e) => return Err(e),
                    }
                }
                None => None,
            };
            outcome = Settlement::Settled {
                seconds: used,
                overage: debit.overage,
                charge,
            };
        }
        self.calls()
            .update_one(
                doc! { "_id": &call.call_sid },
                doc! { "$set": { "settle_step": SettleStep::Done.as_str() } },
            )
            .await
            .map_err(err)?;
        Ok(outcome)
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
}

#[async_trait]
impl CallStore for MongoStore {
    async fn hold_order_for_call(
        &self,
        order_id: &str,
        call_sid: &str,
        until: UnixTime,
        now: UnixTime,
    ) -> Result<Hold, StoreError> {
        // Compare-and-set on the order; a lapsed hold is freed only by settling its call.
        let held = self
            .orders()
            .find_one_and_update(
                doc! { "_id": order_id, "$or": [
                    { "active_call_sid": Bson::Null }, { "active_call_sid": call_sid } ] },
                doc! { "$set": { "active_call_sid": call_sid, "active_call_until": until, "updated_at": now } },
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(err)?;
        let Some(held) = held else {
            return Ok(Hold::refused(self.order(order_id).await?, now));
        };
        // Then the call: one that has ended or was settled gives the hold straight back (an
        // end racing this finds either the hold, and releases it, or the link refused).
        let linked = self
            .calls()
            .update_one(
                doc! { "_id": call_sid, "status": { "$ne": CallState::Ended.as_str() }, "settled_at": Bson::Null },
                doc! { "$set": { "order_id": order_id, "updated_at": now } },
            )
            .await
            .map_err(err)?
            .matched_count
            == 1;
        if !linked {
            self.release_hold(call_sid).await?;
            return Ok(Hold::CallOver);
        }
        Ok(Hold::Held(Box::new(held.into_record()?)))
    }

    async fn upsert_call(&self, call: &NewCall) -> Result<Call, StoreError> {
        let insert = doc! {
            "from_number": &call.from_number, "to_number": &call.to_number, "status": CallState::Menu.as_str(),
            "started_at": call.now, "seconds_metered": 0i64, "updated_at": call.now,
        };
        match self
            .calls()
            .update_one(
                doc! { "_id": &call.call_sid },
                doc! { "$setOnInsert": insert },
            )
            .upsert(true)
            .await
            .map_err(err)
        {
            // Two racing upserts: the loser's insert hits the _id index; the call exists.
            Ok(_) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        self.call(&call.call_sid)
            .await?
            .ok_or_else(|| StoreError::Database("call vanished after upsert".into()))
    }

    async fn end_call(&self, end: &EndCall) -> Result<Call, StoreError> {
        self.upsert_call(&end.as_new_call()).await?;
        self.set_once("calls", &end.call_sid, "ended_at", end.now.into())
            .await?;
        self.set_once("calls", &end.call_sid, "twilio_duration", opt(end.duration))
            .await?;
        self.set_once(
            "calls",
            &end.call_sid,
            "end_reason",
            end.reason.as_str().into(),
        )
        .await?;
        self.calls()
            .update_one(
                doc! { "_id": &end.call_sid },
                doc! { "$set": { "status": CallState::Ended.as_str(), "twilio_status": end.twilio_status.as_str(), "updated_at": end.now } },
            )
            .await
            .map_err(err)?;
        let call = self
            .call(&end.call_sid)
            .await?
            .ok_or_else(|| StoreError::Database("call vanished after end".into()))?;
        // A bridged call keeps its hold until settlement debits it in the same step.
        if call.bridged_at.is_none() {
            self.release_hold(&end.call_sid).await?;
        }
        Ok(call)
    }

    async fn bridge_started(
        &self,
        call_sid: &str,
        conversation_id: Option<&str>,
        hold_until: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let started = self
            .calls()
            .update_one(
                doc! { "_id": call_sid, "status": { "$ne": CallState::Ended.as_str() }, "settled_at": Bson::Null },
                doc! { "$set": { "status": CallState::Bridged.as_str(), "updated_at": now } },
            )
            .await
            .map_err(err)?
            .matched_count
            == 1;
        if !started || !self.renew_hold(call_sid, hold_until).await? {
            return Ok(false);
        }
        self.set_once("calls", call_sid, "bridged_at", now.into())
            .await?;
        if let Some(c) = conversation_id {
            self.calls()
                .update_one(
                    doc! { "_id": call_sid },
                    doc! { "$set": { "conversation_id": c } },
                )
                .await
                .map_err(err)?;
        }
        Ok(true)
    }

    async fn record_metering_many(
        &self,
        figures: &[(String, Seconds)],
        hold_until: UnixTime,
        now: UnixTime,
    ) -> Result<Vec<String>, StoreError> {
        let mut stop = Vec::new();
        for (call_sid, seconds) in figures {
            self.record_metering(call_sid, *seconds, now).await?;
            if !self.renew_hold(call_sid, hold_until).await? {
                stop.push(call_sid.clone());
            }
        }
        Ok(stop)
    }

    async fn record_metering(
        &self,
        call_sid: &str,
        seconds: Seconds,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        self.calls()
            .update_one(
                doc! { "_id": call_sid },
                doc! { "$max": { "seconds_metered": seconds.0 }, "$set": { "updated_at": now } },
            )
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn bridge_finished(
        &self,
        call_sid: &str,
        seconds: Seconds,
        reason: EndReason,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        self.record_metering(call_sid, seconds, now).await?;
        self.set_once("calls", call_sid, "end_reason", reason.as_str().into())
            .await?;
        self.set_once("calls", call_sid, "bridge_ended_at", now.into())
            .await
    }

    async fn append_transcript(
        &self,
        call_sid: &str,
        lines: &[TranscriptLine],
    ) -> Result<(), StoreError> {
        for line in lines {
            let d = doc! {
                "_id": format!("{call_sid}:{}", line.seq), "call_sid": call_sid, "seq": line.seq,
                "speaker": line.speaker.as_str(), "text": &line.text, "at": line.at,
            };
            match self.raw("call_transcript").insert_one(d).await.map_err(err) {
                Ok(_) | Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn transcript(&self, call_sid: &str) -> Result<Vec<TranscriptLine>, StoreError> {
        let cursor = self
            .raw("call_transcript")
            .find(doc! { "call_sid": call_sid })
            .sort(doc! { "seq": 1 })
            .await
            .map_err(err)?;
        collect(cursor, |d: Document| {
            Ok(TranscriptLine {
                seq: d
                    .get_i64("seq")
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                speaker: parse(d.get_str("speaker").unwrap_or_default())?,
                text: d.get_str("text").unwrap_or_default().to_string(),
                at: d.get_i64("at").unwrap_or_default(),
            })
        })
        .await
    }

    async fn insert_stream_token(
        &self,
        token_hash: &str,
        grant: &StreamGrant,
        expires_at: UnixTime,
    ) -> Result<(), StoreError> {
        self.raw("stream_tokens")
            .insert_one(doc! {
                "_id": token_hash, "call_sid": &grant.call_sid, "order_id": &grant.order_id,
                "expires_at": expires_at, "used_at": Bson::Null,
            })
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn consume_stream_token(
        &self,
        token_hash: &str,
        call_sid: &str,
        now: UnixTime,
    ) -> Result<Option<StreamOpening>, StoreError> {
        let found = self
            .raw("stream_tokens")
            .find_one_and_update(
                doc! { "_id": token_hash, "call_sid": call_sid, "used_at": Bson::Null, "expires_at": { "$gt": now } },
                doc! { "$set": { "used_at": now } },
            )
            .await
            .map_err(err)?;
        let Some(d) = found else { return Ok(None) };
        let grant = StreamGrant {
            call_sid: d.get_str("call_sid").map_err(corrupt)?.to_string(),
            order_id: d.get_str("order_id").map_err(corrupt)?.to_string(),
        };
        // Read after the token is spent: the call and order as they stand now, no older.
        let (call, order) =
            tokio::try_join!(self.call(&grant.call_sid), self.order(&grant.order_id))?;
        Ok(Some(StreamOpening { grant, call, order }))
    }

    async fn agent_seconds_per_day(&self, since: UnixTime) -> Result<Vec<DayTotal>, StoreError> {
        day_totals(
            self.raw("calls"),
            doc! { "bridged_at": { "$ne": Bson::Null }, "started_at": { "$gte": since } },
            "started_at",
            "seconds_metered",
        )
        .await
    }

    async fn count_live_calls(&self) -> Result<i64, StoreError> {
        self.raw("calls")
            .count_documents(doc! { "ended_at": Bson::Null })
            .await
            .map(|n| n as i64)
            .map_err(err)
    }

    async fn call(&self, call_sid: &str) -> Result<Option<Call>, StoreError> {
        first(&self.calls(), doc! { "_id": call_sid })
            .await?
            .map(CallDoc::into_record)
            .transpose()
    }

    async fn list_calls(&self, limit: i64) -> Result<Vec<Call>, StoreError> {
        query(
            &self.calls(),
            doc! {},
            Some(doc! { "started_at": -1, "_id": -1 }),
            Some(limit),
        )
        .await?
        .into_iter()
        .map(CallDoc::into_record)
        .collect()
    }

    async fn settle_call(
        &self,
        call_sid: &str,
        rounding: Rounding,
        charge_id: &str,
        now: UnixTime,
    ) -> Result<Settlement, StoreError> {
        let Some(stored) = self.call(call_sid).await? else {
            return Ok(Settlement::NotReady);
        };
        // The claim is the gate: one single-document update, so one settlement per call.
        let claimed = if self.settle_ready(&stored, now).await? {
            self.calls()
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
        // A claim left unfinished by a crash is taken over once it is a minute old.
        let claimed = match claimed {
            Some(c) => Some(c),
            None => self
                .calls()
                .find_one_and_update(
                    doc! { "_id": call_sid, "settle_step": SettleStep::Claimed.as_str(), "settled_at": { "$lt": now - 60 } },
                    doc! { "$set": { "settled_at": now, "updated_at": now } },
                )
                .return_document(ReturnDocument::After)
                .await
                .map_err(err)?,
        };
        let Some(call) = claimed else {
            return Ok(Settlement::unclaimed(self.call(call_sid).await?));
        };
        self.settle_claimed(&call.into_record()?, rounding, charge_id, now)
            .await
    }

    async fn calls_to_settle(&self, limit: i64, now: UnixTime) -> Result<Vec<String>, StoreError> {
        let candidates = doc! { "$or": [
        { "settled_at": Bson::Null, "$or": [
            { "status": CallState::Ended.as_str() }, { "bridge_ended_at": { "$ne": Bson::Null } },
            { "order_id": { "$ne": Bson::Null } } ] },
        { "settle_step": SettleStep::Claimed.as_str() } ] };
        let mut ready = Vec::new();
        for doc in query(
            &self.calls(),
            candidates,
            Some(doc! { "updated_at": 1 }),
            None,
        )
        .await?
        {
            let claimed_unfinished = doc.settled_at.is_some();
            let call = doc.into_record()?;
            if claimed_unfinished || self.settle_ready(&call, now).await? {
                ready.push(call.call_sid);
                if ready.len() as i64 >= limit {
                    break;
                }
            }
        }
        Ok(ready)
    }

    async fn caller_has_used_code(
        &self,
        from: &str,
        order_id: Option<&str>,
        except_call: &str,
    ) -> Result<bool, StoreError> {
        let order = match order_id {
            Some(id) => Bson::from(id),
            None => Bson::Document(doc! { "$type": "string" }),
        };
        let filter = doc! {
            "from_number": from,
            "order_id": order,
            "_id": { "$ne": except_call },
        };
        first(&self.raw("calls"), filter).await.map(|d| d.is_some())
    }
}
