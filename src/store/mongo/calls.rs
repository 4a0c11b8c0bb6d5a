//! Calls in MongoDB. Holding, ending and settling them are `store::money`'s sequences over
//! this engine's steps (`money.rs`).

use async_trait::async_trait;
use mongodb::bson::{doc, Bson, Document};

use super::docs::*;
use super::money::MongoSteps;
use super::*;
use crate::store::money::{self, MoneyTx};

impl MongoStore {
    /// The calls `filter` finds, newest first, at most `limit`.
    async fn calls_where(&self, filter: Document, limit: i64) -> Result<Vec<Call>, StoreError> {
        query(
            &self.calls(),
            filter,
            Some(doc! { "started_at": -1, "_id": -1 }),
            Some(limit),
        )
        .await?
        .into_iter()
        .map(CallDoc::into_record)
        .collect()
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
        money::hold(&mut MongoSteps(self), order_id, call_sid, until, now, None)
            .await
            .map(money::Step::into_inner)
    }

    async fn hold_and_grant(
        &self,
        order_id: &str,
        call_sid: &str,
        until: UnixTime,
        now: UnixTime,
        token: &TokenIssue,
    ) -> Result<Hold, StoreError> {
        money::hold(
            &mut MongoSteps(self),
            order_id,
            call_sid,
            until,
            now,
            Some(token),
        )
        .await
        .map(money::Step::into_inner)
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
        money::end(&mut MongoSteps(self), end)
            .await
            .map(money::Step::into_inner)
    }

    async fn bridge_started(
        &self,
        call_sid: &str,
        conversation_id: Option<&str>,
        hold_until: UnixTime,
        now: UnixTime,
        carrier: &str,
    ) -> Result<bool, StoreError> {
        let started = self
            .calls()
            .update_one(
                doc! { "_id": call_sid, "status": { "$ne": CallState::Ended.as_str() }, "settled_at": Bson::Null },
                doc! { "$set": { "status": CallState::Bridged.as_str(), "instance_id": carrier, "updated_at": now } },
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
        let token = TokenIssue {
            token_hash: token_hash.to_owned(),
            expires_at,
        };
        MongoSteps(self)
            .insert_token(&token, &grant.call_sid, &grant.order_id)
            .await
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

    async fn page_calls(&self, l: &Listing<CallState>) -> Result<Vec<Call>, StoreError> {
        page(
            &self.calls(),
            l,
            ("status", l.state.map(|s| s.as_str())),
            "started_at",
        )
        .await?
        .into_iter()
        .map(CallDoc::into_record)
        .collect()
    }

    async fn calls_for_order(&self, order_id: &str, limit: i64) -> Result<Vec<Call>, StoreError> {
        self.calls_where(doc! { "order_id": order_id }, limit).await
    }

    async fn calls_from(&self, from: &str, limit: i64) -> Result<Vec<Call>, StoreError> {
        self.calls_where(doc! { "from_number": from }, limit).await
    }

    async fn settle_call(
        &self,
        call_sid: &str,
        rounding: Rounding,
        charge_id: &str,
        now: UnixTime,
    ) -> Result<Settlement, StoreError> {
        money::settle(&mut MongoSteps(self), call_sid, rounding, charge_id, now)
            .await
            .map(money::Step::into_inner)
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

    async fn record_refusal(
        &self,
        call_sid: &str,
        order_id: &str,
        why: Refusal,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        self.raw("calls")
            .update_one(
                doc! { "_id": call_sid },
                doc! { "$set": {
                    "refused": why.as_str(), "refused_order_id": order_id, "updated_at": now,
                } },
            )
            .await
            .map(|_| ())
            .map_err(err)
    }
}
