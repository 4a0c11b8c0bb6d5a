-- The phone menu: one live call per code, one-time stream tokens, and settlement of ended calls.
ALTER TABLE orders ADD COLUMN active_call_sid TEXT;
ALTER TABLE orders ADD COLUMN active_call_until INTEGER;
ALTER TABLE calls ADD COLUMN twilio_status TEXT;
-- NULL until billing has accounted for the ended call: the durable hand-over to billing.
ALTER TABLE calls ADD COLUMN settled_at INTEGER;
CREATE INDEX calls_unsettled ON calls (status, settled_at);

CREATE TABLE stream_tokens (
    token_hash  TEXT PRIMARY KEY,
    call_sid    TEXT NOT NULL REFERENCES calls (call_sid),
    order_id    TEXT NOT NULL REFERENCES orders (id),
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);
