-- Known callers (admitted during a guessing pause) and stale pending orders, found by index.
CREATE INDEX calls_from_number ON calls (from_number, order_id);
CREATE INDEX orders_pending ON orders (status, created_at);
