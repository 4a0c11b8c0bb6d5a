-- Numbers a caller asked to have remembered for a code: one code per number (the latest).
CREATE TABLE remembered_callers (
    caller TEXT PRIMARY KEY,
    order_id TEXT NOT NULL REFERENCES orders (id),
    remembered_at INTEGER NOT NULL
);
CREATE INDEX remembered_callers_order_id ON remembered_callers (order_id);
