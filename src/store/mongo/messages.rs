//! The outbox in MongoDB: each lease, outcome and report one single-document write.

use async_trait::async_trait;
use mongodb::bson::{doc, Document};
use mongodb::options::ReturnDocument;
use serde::{Deserialize, Serialize};

use super::*;

#[derive(Debug, Serialize, Deserialize)]
struct MessageDoc {
    #[serde(rename = "_id")]
    id: String,
    order_id: String,
    kind: String,
    channel: String,
    to_address: String,
    state: String,
    tries: i64,
    #[serde(default)]
    next_attempt_at: Option<i64>,
    #[serde(default)]
    last_error: Option<String>,
    #[serde(default)]
    provider_id: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl MessageDoc {
    fn into_record(self) -> Result<Message, StoreError> {
        Ok(Message {
            id: self.id,
            order_id: self.order_id,
            kind: parse(&self.kind)?,
            channel: parse(&self.channel)?,
            to: self.to_address,
            state: parse(&self.state)?,
            tries: self.tries,
            next_attempt_at: self.next_attempt_at,
            last_error: self.last_error,
            provider_id: self.provider_id,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

impl MongoStore {
    fn messages(&self) -> mongodb::Collection<MessageDoc> {
        self.db.collection(&collection_name("messages"))
    }
}

#[async_trait]
impl MessageStore for MongoStore {
    async fn queue_message(&self, m: &NewMessage) -> Result<bool, StoreError> {
        let doc = MessageDoc {
            id: m.id.clone(),
            order_id: m.order_id.clone(),
            kind: m.kind.as_str().into(),
            channel: m.channel.as_str().into(),
            to_address: m.to.clone(),
            state: MessageState::Pending.as_str().into(),
            tries: 0,
            next_attempt_at: Some(m.now),
            last_error: None,
            provider_id: None,
            created_at: m.now,
            updated_at: m.now,
        };
        match self.messages().insert_one(&doc).await.map_err(err) {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn lease_messages(
        &self,
        now: UnixTime,
        lease_until: UnixTime,
        limit: i64,
    ) -> Result<Vec<Message>, StoreError> {
        let mut leased = Vec::new();
        for _ in 0..limit.max(0) {
            let taken = self
                .messages()
                .find_one_and_update(
                    doc! { "state": MessageState::Pending.as_str(), "next_attempt_at": { "$lte": now } },
                    doc! { "$inc": { "tries": 1 }, "$set": { "next_attempt_at": lease_until, "updated_at": now } },
                )
                .sort(doc! { "next_attempt_at": 1, "_id": 1 })
                .return_document(ReturnDocument::After)
                .await
                .map_err(err)?;
            match taken {
                Some(d) => leased.push(d.into_record()?),
                None => break,
            }
        }
        Ok(leased)
    }

    async fn message_outcome(&self, id: &str, o: &SendOutcome<'_>) -> Result<(), StoreError> {
        let mut set = doc! {
            "state": o.state.as_str(), "last_error": opt(o.error), "next_attempt_at": opt(o.next_attempt_at),
            "updated_at": o.now,
        };
        if let Some(p) = o.provider_id {
            set.insert("provider_id", p);
        }
        self.messages()
            .update_one(doc! { "_id": id }, doc! { "$set": set })
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn message_delivery(
        &self,
        provider_id: &str,
        state: MessageState,
        error: Option<&str>,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let sources: Vec<&str> = MessageState::sources(state).map(|s| s.as_str()).collect();
        let mut set = doc! { "state": state.as_str(), "updated_at": now };
        if let Some(e) = error {
            set.insert("last_error", e);
        }
        self.messages()
            .update_many(
                doc! { "provider_id": provider_id, "state": { "$in": sources } },
                doc! { "$set": set },
            )
            .await
            .map(|r| r.matched_count > 0)
            .map_err(err)
    }

    async fn messages_for_order(&self, order_id: &str) -> Result<Vec<Message>, StoreError> {
        query(
            &self.messages(),
            doc! { "order_id": order_id },
            Some(doc! { "created_at": 1, "_id": 1 }),
            None,
        )
        .await?
        .into_iter()
        .map(MessageDoc::into_record)
        .collect()
    }

    async fn list_messages(&self, limit: i64) -> Result<Vec<Message>, StoreError> {
        query(
            &self.messages(),
            doc! {},
            Some(doc! { "created_at": -1, "_id": -1 }),
            Some(limit),
        )
        .await?
        .into_iter()
        .map(MessageDoc::into_record)
        .collect()
    }

    async fn orders_receipted(
        &self,
        channel: Channel,
        to: &str,
    ) -> Result<Vec<String>, StoreError> {
        let filter: Document = doc! {
            "to_address": to, "channel": channel.as_str(), "kind": MessageKind::Receipt.as_str(),
        };
        let mut ids: Vec<String> = Vec::new();
        for m in query(
            &self.messages(),
            filter,
            Some(doc! { "created_at": 1, "_id": 1 }),
            None,
        )
        .await?
        {
            if !ids.contains(&m.order_id) {
                ids.push(m.order_id);
            }
        }
        Ok(ids)
    }

    async fn count_messages_to(
        &self,
        to: &str,
        kind: MessageKind,
        since: UnixTime,
    ) -> Result<i64, StoreError> {
        self.messages()
            .count_documents(
                doc! { "to_address": to, "kind": kind.as_str(), "created_at": { "$gte": since } },
            )
            .await
            .map(|n| n as i64)
            .map_err(err)
    }
}
