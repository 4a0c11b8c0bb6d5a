//! Conversation reports in MongoDB: one document per conversation (`_id`).

use async_trait::async_trait;
use mongodb::bson::{doc, Document};

use super::*;

fn report(d: Document) -> Result<ConversationReport, StoreError> {
    let text = |field: &str| d.get_str(field).map(String::from).map_err(corrupt);
    Ok(ConversationReport {
        conversation_id: text("_id")?,
        call_sid: text("call_sid")?,
        caller: text("caller")?,
        summary: text("summary")?,
        outcome: d.get_str("outcome").ok().map(String::from),
        analysis: text("analysis")?,
        received_at: whole(&d, "received_at")?,
    })
}

#[async_trait]
impl ReportStore for MongoStore {
    async fn save_report(&self, r: &ConversationReport) -> Result<bool, StoreError> {
        let d = doc! {
            "_id": &r.conversation_id, "call_sid": &r.call_sid, "caller": &r.caller,
            "summary": &r.summary, "outcome": opt(r.outcome.clone()), "analysis": &r.analysis,
            "received_at": r.received_at,
        };
        match self
            .raw("conversation_reports")
            .insert_one(d)
            .await
            .map_err(err)
        {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn report_for_call(
        &self,
        call_sid: &str,
    ) -> Result<Option<ConversationReport>, StoreError> {
        let found = query(
            &self.raw("conversation_reports"),
            doc! { "call_sid": call_sid },
            Some(doc! { "received_at": -1 }),
            Some(1),
        )
        .await?;
        found.into_iter().next().map(report).transpose()
    }

    async fn last_report_from(
        &self,
        caller: &str,
    ) -> Result<Option<ConversationReport>, StoreError> {
        let found = query(
            &self.raw("conversation_reports"),
            doc! { "caller": caller },
            Some(doc! { "received_at": -1, "_id": -1 }),
            Some(1),
        )
        .await?;
        found.into_iter().next().map(report).transpose()
    }
}
