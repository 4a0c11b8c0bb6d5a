//! Conversation reports: what ElevenLabs' post-call webhook says of a conversation (its
//! summary and analysis), kept once per conversation, with the call and caller it was for.
//! What a report means for the next call (the agent's memory) is decided above the store.

use async_trait::async_trait;
use serde::Serialize;

use super::{StoreError, UnixTime};

/// One conversation's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ConversationReport {
    /// ElevenLabs' conversation id: one report each.
    pub conversation_id: String,
    pub call_sid: String,
    /// The caller's number, as the call was made.
    pub caller: String,
    /// The agent's summary of the conversation (`transcript_summary`).
    pub summary: String,
    /// Whether the agent judged it successful (`call_successful`: success, failure, unknown).
    pub outcome: Option<String>,
    /// The analysis as ElevenLabs sent it (JSON), for the console.
    pub analysis: String,
    pub received_at: UnixTime,
}

#[async_trait]
pub trait ReportStore: Send + Sync {
    /// Keeps the report unless one for its conversation is kept already; `true` if new.
    async fn save_report(&self, report: &ConversationReport) -> Result<bool, StoreError>;

    /// The report of a call, if one came.
    async fn report_for_call(
        &self,
        call_sid: &str,
    ) -> Result<Option<ConversationReport>, StoreError>;

    /// The latest report of a conversation with `caller`.
    async fn last_report_from(
        &self,
        caller: &str,
    ) -> Result<Option<ConversationReport>, StoreError>;
}
