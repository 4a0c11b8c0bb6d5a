//! The ledger's entries in MongoDB. Without a transaction, an entry moves its order's counters
//! first, marked on the order by entry id (`entries`), and is stored after: a run cut off
//! between the two leaves the order moved and marked, and the next run stores the entry.

use async_trait::async_trait;
use mongodb::bson::{doc, Document};
use serde::{Deserialize, Serialize};

use super::*;
use crate::domain::entry::Moves;

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct EntryDoc {
    #[serde(rename = "_id")]
    id: String,
    order_id: String,
    kind: String,
    seconds: i64,
    amount_cents: i64,
    currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reverses: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stripe_payment_intent: Option<String>,
    created_at: i64,
}

impl EntryDoc {
    pub(super) fn from_entry(e: &Entry) -> EntryDoc {
        EntryDoc {
            id: e.id.clone(),
            order_id: e.order_id.clone(),
            kind: e.kind.as_str().into(),
            seconds: e.seconds.0,
            amount_cents: e.amount.0,
            currency: e.currency.code().into(),
            reverses: e.reverses.clone(),
            stripe_payment_intent: e.stripe_payment_intent.clone(),
            created_at: e.created_at,
        }
    }

    fn into_record(self) -> Result<Entry, StoreError> {
        Ok(Entry {
            id: self.id,
            order_id: self.order_id,
            kind: parse(&self.kind)?,
            seconds: Seconds(self.seconds),
            amount: Cents(self.amount_cents),
            currency: parse(&self.currency)?,
            reverses: self.reverses,
            stripe_payment_intent: self.stripe_payment_intent,
            created_at: self.created_at,
        })
    }
}

impl MongoStore {
    fn entries(&self) -> mongodb::Collection<EntryDoc> {
        self.db.collection(&collection_name("ledger_entries"))
    }

    /// Stores an entry; `false` if one with its id stands.
    pub(super) async fn insert_entry(&self, e: &Entry) -> Result<bool, StoreError> {
        match self
            .entries()
            .insert_one(EntryDoc::from_entry(e))
            .await
            .map_err(err)
        {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(other) => Err(other),
        }
    }

    async fn entries_where(
        &self,
        filter: Document,
        limit: Option<i64>,
    ) -> Result<Vec<Entry>, StoreError> {
        let sort = doc! { "created_at": 1, "_id": 1 };
        let mut entries = query(&self.entries(), filter, Some(sort), limit)
            .await?
            .into_iter()
            .map(EntryDoc::into_record)
            .collect::<Result<Vec<_>, _>>()?;
        crate::domain::entry::chronological(&mut entries);
        Ok(entries)
    }
}

#[async_trait]
impl EntryStore for MongoStore {
    async fn record_entry(&self, e: &Entry) -> Result<Recorded, StoreError> {
        let field = match e.moves() {
            Moves::Nothing => None,
            Moves::Included(s) => Some(("seconds_included", s.0)),
            Moves::Used(s) => Some(("seconds_used", s.0)),
        };
        let update = match field {
            Some((name, by)) => doc! {
                "$inc": { name: by },
                "$set": { "updated_at": e.created_at },
                "$push": { "entries": &e.id },
            },
            None => doc! { "$push": { "entries": &e.id } },
        };
        let moved = self
            .raw("orders")
            .update_one(
                doc! { "_id": &e.order_id, "entries": { "$ne": &e.id } },
                update,
            )
            .await
            .map_err(err)?
            .matched_count;
        if moved == 0 && self.order(&e.order_id).await?.is_none() {
            return Ok(Recorded::NoOrder);
        }
        Ok(if self.insert_entry(e).await? {
            Recorded::Now
        } else {
            Recorded::Already
        })
    }

    async fn entry(&self, id: &str) -> Result<Option<Entry>, StoreError> {
        Ok(self.entries_where(doc! { "_id": id }, Some(1)).await?.pop())
    }

    async fn entries_for_order(&self, order_id: &str) -> Result<Vec<Entry>, StoreError> {
        self.entries_where(doc! { "order_id": order_id }, None)
            .await
    }

    async fn entry_paid_by(&self, pi: &str) -> Result<Option<Entry>, StoreError> {
        let filter = doc! { "stripe_payment_intent": pi, "reverses": { "$exists": false } };
        Ok(self.entries_where(filter, Some(1)).await?.pop())
    }

    async fn list_entries(&self, limit: i64) -> Result<Vec<Entry>, StoreError> {
        self.entries_where(doc! {}, Some(limit)).await
    }
}
