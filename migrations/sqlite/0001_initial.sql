-- callgate schema, SQLite. Times are unix seconds; money is integer minor units.
CREATE TABLE orders (
    id                     TEXT PRIMARY KEY,
    status                 TEXT NOT NULL,
    source                 TEXT NOT NULL,
    plan                   TEXT NOT NULL,
    amount_cents           INTEGER NOT NULL,
    currency               TEXT NOT NULL,
    seconds_included       INTEGER NOT NULL,
    seconds_used           INTEGER NOT NULL DEFAULT 0,
    overage_consent        BOOLEAN NOT NULL,
    overage_price_cents    INTEGER NOT NULL,
    overage_blocked        TEXT,
    stripe_payment_intent  TEXT UNIQUE,
    stripe_customer        TEXT,
    stripe_payment_method  TEXT,
    code_hash              TEXT UNIQUE,
    code_sealed            TEXT,
    code_last4             TEXT,
    created_at             INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL,
    paid_at                INTEGER,
    revoked_at             INTEGER
);
CREATE INDEX orders_created_at ON orders (created_at);

CREATE TABLE calls (
    call_sid         TEXT PRIMARY KEY,
    order_id         TEXT REFERENCES orders (id),
    from_number      TEXT NOT NULL,
    to_number        TEXT NOT NULL,
    status           TEXT NOT NULL,
    started_at       INTEGER NOT NULL,
    bridged_at       INTEGER,
    ended_at         INTEGER,
    seconds_metered  INTEGER NOT NULL DEFAULT 0,
    twilio_duration  INTEGER,
    end_reason       TEXT,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX calls_order_id ON calls (order_id);
CREATE INDEX calls_started_at ON calls (started_at);

CREATE TABLE charges (
    id                     TEXT PRIMARY KEY,
    call_sid               TEXT NOT NULL UNIQUE REFERENCES calls (call_sid),
    order_id               TEXT NOT NULL REFERENCES orders (id),
    amount_cents           INTEGER NOT NULL CHECK (amount_cents > 0),
    currency               TEXT NOT NULL,
    seconds_billed         INTEGER NOT NULL,
    state                  TEXT NOT NULL,
    attempts               INTEGER NOT NULL DEFAULT 0,
    next_attempt_at        INTEGER NOT NULL,
    lease_owner            TEXT,
    lease_until            INTEGER,
    stripe_payment_intent  TEXT,
    last_error             TEXT,
    pay_token              TEXT UNIQUE,
    created_at             INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL
);
CREATE INDEX charges_due ON charges (state, next_attempt_at);
CREATE INDEX charges_order_id ON charges (order_id);

CREATE TABLE webhook_events (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    received_at  INTEGER NOT NULL
);

CREATE TABLE code_attempts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    caller     TEXT NOT NULL,
    code_hash  TEXT NOT NULL,
    ok         BOOLEAN NOT NULL,
    at         INTEGER NOT NULL
);
CREATE INDEX code_attempts_caller ON code_attempts (caller, at);
CREATE INDEX code_attempts_code ON code_attempts (code_hash, at);
CREATE INDEX code_attempts_at ON code_attempts (at);
