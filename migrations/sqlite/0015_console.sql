-- The operator's actions: who (the admin device), when, what, on which row, and the result.
CREATE TABLE audit_log (
    id       TEXT PRIMARY KEY,
    at       BIGINT NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    order_id TEXT,
    subject  TEXT NOT NULL,
    detail   TEXT NOT NULL,
    result   TEXT NOT NULL,
    outcome  TEXT NOT NULL
);
CREATE INDEX audit_log_order ON audit_log (order_id, at);
CREATE INDEX audit_log_subject ON audit_log (subject, at);
CREATE INDEX audit_log_at ON audit_log (at, id);
-- The console pages charges and orders newest first, a page at a time.
CREATE INDEX charges_created_at ON charges (created_at, id);
-- They replace the indexes on the time alone, which every insert (each call's first row among
-- them) would otherwise keep up beside them.
CREATE INDEX orders_created_at_id ON orders (created_at, id);
DROP INDEX orders_created_at;
CREATE INDEX calls_started_at_sid ON calls (started_at, call_sid);
DROP INDEX calls_started_at;
