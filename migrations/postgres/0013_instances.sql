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
