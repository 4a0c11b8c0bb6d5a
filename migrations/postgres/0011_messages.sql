-- The outbox of messages to customers: receipts and lost codes, by SMS or email. A message's
-- text is made when it is sent, so no code is stored here.
CREATE TABLE messages (
    id               TEXT PRIMARY KEY,
    order_id         TEXT NOT NULL REFERENCES orders (id),
    kind             TEXT NOT NULL,
    channel          TEXT NOT NULL,
    to_address       TEXT NOT NULL,
    state            TEXT NOT NULL,
    tries            BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT,
    last_error       TEXT,
    provider_id      TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX messages_due ON messages (state, next_attempt_at);
CREATE INDEX messages_to ON messages (to_address, kind, created_at);
CREATE INDEX messages_provider ON messages (provider_id);
