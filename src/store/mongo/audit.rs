//! The audit log in MongoDB: one document per action (`_id` the entry's id).

use async_trait::async_trait;
use mongodb::bson::{doc, Document};

use super::*;

const AUDIT: &str = "audit_log";

fn entry(d: Document) -> Result<AuditEntry, StoreError> {
    let text = |field: &str| d.get_str(field).map(String::from).map_err(corrupt);
    Ok(AuditEntry {
        id: text("_id")?,
        at: whole(&d, "at")?,
        actor: text("actor")?,
        action: parse(&text("action")?)?,
        order_id: d.get_str("order_id").ok().map(String::from),
        subject: text("subject")?,
        detail: text("detail")?,
        result: parse(&text("result")?)?,
        outcome: text("outcome")?,
    })
}

#[async_trait]
impl AuditStore for MongoStore {
    async fn record_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        let d = doc! {
            "_id": &e.id, "at": e.at, "actor": &e.actor, "action": e.action.as_str(),
            "order_id": opt(e.order_id.clone()), "subject": &e.subject, "detail": &e.detail,
            "result": e.result.as_str(), "outcome": &e.outcome,
        };
        self.raw(AUDIT).insert_one(d).await.map(|_| ()).map_err(err)
    }

    async fn audit_about(&self, id: &str, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        query(
            &self.raw(AUDIT),
            doc! { "$or": [{ "order_id": id }, { "subject": id }] },
            Some(doc! { "at": -1, "_id": -1 }),
            Some(limit),
        )
        .await?
        .into_iter()
        .map(entry)
        .collect()
    }

    async fn page_audit(&self, l: &Listing<AuditResult>) -> Result<Vec<AuditEntry>, StoreError> {
        page(
            &self.raw(AUDIT),
            l,
            ("result", l.state.map(|s| s.as_str())),
            "at",
        )
        .await?
        .into_iter()
        .map(entry)
        .collect()
    }
}
