//! Overage charges in MongoDB.

use async_trait::async_trait;
use mongodb::bson::{doc, Bson};
use mongodb::options::ReturnDocument;

use super::docs::*;
use super::*;

#[async_trait]
impl ChargeStore for MongoStore {
    async fn insert_charge(&self, c: &NewCharge) -> Result<(Charge, bool), StoreError> {
        if self.call(&c.call_sid).await?.is_none() {
            return Err(StoreError::Database(format!("no call {}", c.call_sid)));
        }
        let doc = ChargeDoc::from_new(c);
        match self.charges().insert_one(&doc).await.map_err(err) {
            Ok(_) => Ok((doc.into_record()?, true)),
            Err(StoreError::Conflict(_)) => self
                .charge_where(doc! { "call_sid": &c.call_sid })
                .await?
                .map(|charge| (charge, false))
                .ok_or_else(|| StoreError::Conflict(format!("charge id {} already used", c.id))),
            Err(e) => Err(e),
        }
    }

    async fn claim_charge(
        &self,
        owner: &str,
        lease_until: UnixTime,
        now: UnixTime,
    ) -> Result<Option<Charge>, StoreError> {
        self.charges()
            .find_one_and_update(
                doc! { "state": ChargeState::Pending.as_str(), "next_attempt_at": { "$lte": now },
                       "$or": [ { "lease_until": Bson::Null }, { "lease_until": { "$lt": now } } ] },
                doc! { "$set": { "lease_owner": owner, "lease_until": lease_until, "updated_at": now }, "$inc": { "attempts": 1i64 } },
            )
            .sort(doc! { "next_attempt_at": 1, "_id": 1 })
            .return_document(ReturnDocument::After)
            .await
            .map_err(err)?
            .map(ChargeDoc::into_record)
            .transpose()
    }

    async fn finish_charge(
        &self,
        id: &str,
        owner: &str,
        u: &ChargeUpdate,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let mut set = doc! {
            "state": u.state.as_str(), "last_error": opt(u.last_error.clone()),
            "lease_owner": Bson::Null, "lease_until": Bson::Null, "updated_at": now,
        };
        if let Some(pi) = &u.stripe_payment_intent {
            set.insert("stripe_payment_intent", pi);
        }
        if let Some(at) = u.next_attempt_at {
            set.insert("next_attempt_at", at);
        }
        if let Some(t) = &u.pay_token {
            set.insert("pay_token", t);
        }
        Ok(self
            .charges()
            .update_one(
                doc! { "_id": id, "lease_owner": owner, "state": ChargeState::Pending.as_str() },
                doc! { "$set": set },
            )
            .await
            .map_err(err)?
            .modified_count
            == 1)
    }

    async fn charge(&self, id: &str) -> Result<Option<Charge>, StoreError> {
        self.charge_where(doc! { "_id": id }).await
    }

    async fn charge_by_pay_token(&self, token: &str) -> Result<Option<Charge>, StoreError> {
        self.charge_where(doc! { "pay_token": token }).await
    }

    async fn charge_by_payment_intent(&self, pi: &str) -> Result<Option<Charge>, StoreError> {
        self.charge_where(doc! { "stripe_payment_intent": pi })
            .await
    }

    async fn set_charge_state(
        &self,
        id: &str,
        from: &[ChargeState],
        to: ChargeState,
        now: UnixTime,
    ) -> Result<Option<Charge>, StoreError> {
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        self.charges()
            .find_one_and_update(
                doc! { "_id": id, "state": { "$in": from } },
                doc! { "$set": { "state": to.as_str(), "updated_at": now } },
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(err)?
            .map(ChargeDoc::into_record)
            .transpose()
    }

    async fn charge_paid(
        &self,
        id: &str,
        payment_intent: &str,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        Ok(self
            .charges()
            .update_one(
                doc! { "_id": id, "state": { "$in": spellings(ChargeState::PAYABLE_ON_SESSION) } },
                doc! { "$set": { "state": ChargeState::Succeeded.as_str(), "stripe_payment_intent": payment_intent, "last_error": Bson::Null, "updated_at": now } },
            )
            .await
            .map_err(err)?
            .modified_count
            == 1)
    }

    async fn cancel_open_charges(&self, order_id: &str, now: UnixTime) -> Result<u64, StoreError> {
        Ok(self
            .charges()
            .update_many(
                doc! { "order_id": order_id, "$or": [
                    { "state": ChargeState::RequiresAction.as_str() },
                    { "state": ChargeState::Pending.as_str(), "$or": [ { "lease_until": Bson::Null }, { "lease_until": { "$lt": now } } ] } ] },
                doc! { "$set": { "state": ChargeState::Canceled.as_str(), "updated_at": now } },
            )
            .await
            .map_err(err)?
            .modified_count)
    }

    async fn count_charges_by_state(&self) -> Result<Vec<(ChargeState, i64)>, StoreError> {
        let mut out = Vec::with_capacity(ChargeState::ALL.len());
        for state in ChargeState::ALL {
            let n = self
                .raw("charges")
                .count_documents(doc! { "state": state.as_str() })
                .await
                .map_err(err)?;
            out.push((*state, n as i64));
        }
        Ok(out)
    }

    async fn retry_charge(
        &self,
        id: &str,
        new_key: bool,
        now: UnixTime,
    ) -> Result<Option<Charge>, StoreError> {
        self.charges()
            .find_one_and_update(
                doc! { "_id": id, "state": { "$in": spellings(ChargeState::RETRYABLE) } },
                doc! {
                    "$set": { "state": ChargeState::Pending.as_str(), "next_attempt_at": now, "attempts": 0_i64,
                        "last_error": Bson::Null, "lease_owner": Bson::Null,
                        "lease_until": Bson::Null, "updated_at": now },
                    "$inc": { "key_generation": i64::from(new_key) },
                },
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(err)?
            .map(ChargeDoc::into_record)
            .transpose()
    }

    async fn charges_for_order(&self, order_id: &str) -> Result<Vec<Charge>, StoreError> {
        let cursor = self
            .charges()
            .find(doc! { "order_id": order_id })
            .sort(doc! { "created_at": 1, "_id": 1 })
            .await
            .map_err(err)?;
        collect(cursor, ChargeDoc::into_record).await
    }

    async fn succeeded_per_day(&self, since: UnixTime) -> Result<Vec<DayTotal>, StoreError> {
        day_totals(
            self.raw("charges"),
            doc! { "state": ChargeState::Succeeded.as_str(), "updated_at": { "$gte": since } },
            "updated_at",
            "amount_cents",
        )
        .await
    }

    async fn page_charges(&self, l: &Listing<ChargeState>) -> Result<Vec<Charge>, StoreError> {
        page(
            &self.charges(),
            l,
            ("state", l.state.map(|s| s.as_str())),
            "created_at",
        )
        .await?
        .into_iter()
        .map(ChargeDoc::into_record)
        .collect()
    }
}
