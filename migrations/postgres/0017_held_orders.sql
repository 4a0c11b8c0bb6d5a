-- The order a call holds, found by the call: the metering flush renews each live call's hold
-- every interval, and liveness caps a gone instance's holds, both by `active_call_sid`. Without
-- this they read every paid order each time. Partial: only held orders are in it.
CREATE INDEX orders_active_call ON orders (active_call_sid) WHERE active_call_sid IS NOT NULL;
