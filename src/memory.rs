//! The agent's memory of a caller: what it is told as a conversation opens (the minutes left,
//! whether this number called on this code before, the summary of its last conversation) and
//! where that summary comes from (ElevenLabs' post-call webhook, kept once per conversation).

use serde_json::{json, Value};

use crate::store::{Call, ConversationReport, Order, StoreError};
use crate::telephony::post_call::{PostCall, CALLER_VARIABLE, CALL_VARIABLE};
use crate::App;

/// Longest summary handed to the agent (ElevenLabs' summaries are a few sentences).
const MAX_SUMMARY_CHARS: usize = 1_000;

/// The `dynamic_variables` a conversation opens with. Every variable is always present (an
/// agent's prompt that names a missing one fails to start), empty when there is nothing.
pub async fn opening_variables(app: &App, call: &Call, order: &Order, overage: bool) -> Value {
    // Both read at once: the caller is waiting for the agent.
    let (called_before, last_report) = tokio::join!(
        app.store
            .caller_has_used_code(&call.from_number, Some(&order.id), &call.call_sid),
        app.store.last_report_from(&call.from_number),
    );
    let called_before = called_before.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot tell whether the caller called before");
        false
    });
    let last_summary = match last_report {
        Ok(Some(report)) => report.summary.chars().take(MAX_SUMMARY_CHARS).collect(),
        Ok(None) => String::new(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the caller's last conversation");
            String::new()
        }
    };
    json!({
        CALLER_VARIABLE: call.from_number,
        CALL_VARIABLE: call.call_sid,
        "minutes_remaining": order.seconds_left().0 / 60,
        "overage_enabled": overage,
        "called_before": called_before,
        "last_call_summary": last_summary,
    })
}

/// What became of a post-call report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// Kept for its call.
    New,
    /// Its conversation's report was kept already (a retry or a replay): nothing changed.
    Again,
    /// Not a conversation of a call of callgate's: not kept.
    NotOurs,
}

/// Keeps a post-call report for the call it names, once per conversation. The call must be
/// callgate's, from the number the report says, and have had this conversation.
pub async fn keep(app: &App, report: PostCall) -> Result<Kept, StoreError> {
    let Some(call_sid) = report.call_sid.as_deref() else {
        return Ok(Kept::NotOurs);
    };
    let Some(call) = app.store.call(call_sid).await? else {
        return Ok(Kept::NotOurs);
    };
    let same_conversation = call.conversation_id.as_deref() == Some(&report.conversation_id);
    if !same_conversation || report.caller.as_deref() != Some(call.from_number.as_str()) {
        return Ok(Kept::NotOurs);
    }
    let saved = app
        .store
        .save_report(&ConversationReport {
            conversation_id: report.conversation_id,
            call_sid: call.call_sid,
            caller: call.from_number,
            summary: report.summary,
            outcome: report.outcome,
            analysis: report.analysis,
            received_at: app.clock.now(),
        })
        .await?;
    Ok(if saved { Kept::New } else { Kept::Again })
}
