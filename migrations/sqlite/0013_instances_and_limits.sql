-- Each running callgate's heartbeat, and which instance carries each bridged call: when an
-- instance goes silent (or restarts under the same name), another settles what it carried.
CREATE TABLE instances (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    beat_at BIGINT NOT NULL
);
ALTER TABLE calls ADD COLUMN instance_id TEXT;
CREATE INDEX calls_carried ON calls (instance_id)
    WHERE bridged_at IS NOT NULL AND bridge_ended_at IS NULL AND settled_at IS NULL;

-- The wrong-code limits, exact across instances: one row per failure a key (a caller, a
-- code) may have in the window; a row is free again once its failure ages out of it.
CREATE TABLE attempt_slots (
    key TEXT NOT NULL,
    slot BIGINT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (key, slot)
);
