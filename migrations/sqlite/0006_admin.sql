-- Admin actions: an operator's retry of a refused charge runs under a new idempotency key.
ALTER TABLE charges ADD COLUMN key_generation INTEGER NOT NULL DEFAULT 0;
