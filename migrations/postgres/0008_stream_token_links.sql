-- A stream token's call and order, indexed: the foreign keys from stream_tokens are checked
-- from the parent's side whenever a call's or an order's key is written or a row deleted, and
-- without an index each check read every token ever stored.
CREATE INDEX stream_tokens_call_sid ON stream_tokens (call_sid);
CREATE INDEX stream_tokens_order_id ON stream_tokens (order_id);
