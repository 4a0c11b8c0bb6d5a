-- The media bridge: when it ended, the agent conversation, and what was said.
ALTER TABLE calls ADD COLUMN bridge_ended_at BIGINT;
ALTER TABLE calls ADD COLUMN conversation_id TEXT;

CREATE TABLE call_transcript (
    call_sid  TEXT NOT NULL REFERENCES calls (call_sid),
    seq       BIGINT NOT NULL,
    speaker   TEXT NOT NULL,
    text      TEXT NOT NULL,
    at        BIGINT NOT NULL,
    PRIMARY KEY (call_sid, seq)
);
