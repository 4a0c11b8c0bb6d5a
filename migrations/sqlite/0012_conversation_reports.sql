-- What ElevenLabs' post-call webhook said of each conversation: one report per conversation.
CREATE TABLE conversation_reports (
    conversation_id TEXT PRIMARY KEY,
    call_sid TEXT NOT NULL,
    caller TEXT NOT NULL,
    summary TEXT NOT NULL,
    outcome TEXT,
    analysis TEXT NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX conversation_reports_call_sid ON conversation_reports (call_sid);
CREATE INDEX conversation_reports_caller ON conversation_reports (caller, received_at);
