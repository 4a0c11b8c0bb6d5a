-- The ledger's entries: each credit to a code (purchase or issue, top-up, grant, an import's
-- earlier usage) and each refund or dispute of one, recorded once by its id. The order's
-- seconds_included and seconds_used move with them; debits are the settled calls.
CREATE TABLE ledger_entries (
    id                     TEXT PRIMARY KEY,
    order_id               TEXT NOT NULL REFERENCES orders (id),
    kind                   TEXT NOT NULL,
    seconds                INTEGER NOT NULL,
    amount_cents           INTEGER NOT NULL,
    currency               TEXT NOT NULL,
    reverses               TEXT UNIQUE,
    stripe_payment_intent  TEXT,
    created_at             INTEGER NOT NULL
);
CREATE INDEX ledger_entries_order_id ON ledger_entries (order_id, created_at);
CREATE INDEX ledger_entries_payment_intent ON ledger_entries (stripe_payment_intent);

-- Orders paid before the ledger: their allowance as it stands, as one opening entry.
INSERT INTO ledger_entries (id, order_id, kind, seconds, amount_cents, currency, reverses,
                            stripe_payment_intent, created_at)
SELECT CASE source WHEN 'stripe' THEN 'purchase:' ELSE 'issued:' END || id, id,
       CASE source WHEN 'stripe' THEN 'purchase' ELSE 'issued' END,
       seconds_included, amount_cents, currency, NULL, stripe_payment_intent, paid_at
FROM orders WHERE paid_at IS NOT NULL;

-- What imported codes had used before callgate: their usage beyond their settled calls.
INSERT INTO ledger_entries (id, order_id, kind, seconds, amount_cents, currency, reverses,
                            stripe_payment_intent, created_at)
SELECT 'prior_use:' || o.id, o.id, 'prior_use',
       -(o.seconds_used - COALESCE((SELECT SUM(c.settled_seconds) FROM calls c
                                    WHERE c.order_id = o.id AND c.settled_seconds IS NOT NULL), 0)),
       0, o.currency, NULL, NULL, o.paid_at
FROM orders o
WHERE o.paid_at IS NOT NULL AND o.source = 'import'
  AND o.seconds_used > COALESCE((SELECT SUM(c.settled_seconds) FROM calls c
                                 WHERE c.order_id = o.id AND c.settled_seconds IS NOT NULL), 0);
