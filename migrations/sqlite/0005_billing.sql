-- Settlement: the agent seconds a call used from its order's allowance.
ALTER TABLE calls ADD COLUMN settled_seconds INTEGER;
CREATE INDEX charges_payment_intent ON charges (stripe_payment_intent);
