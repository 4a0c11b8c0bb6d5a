-- The media bridge: when it ended, the agent conversation, and what was said.
ALTER TABLE calls ADD COLUMN bridge_ended_at INTEGER;
ALTER TABLE calls ADD COLUMN conversation_id TEXT;

CREATE TABLE call_transcript (
    call_sid  TEXT NOT NULL REFERENCES calls (call_sid),
    seq       INTEGER NOT NULL,
    speaker   TEXT NOT NULL,
    text      TEXT NOT NULL,
    at        INTEGER NOT NULL,
    PRIMARY KEY (call_sid, seq)
);
