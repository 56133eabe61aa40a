-- Cross-site overflow's hysteresis flags (which sites are overflowing, per skill),
-- written by the router with the step that flips one, so a new leader keeps
-- shedding where the last one did instead of starting with no site overflowing.
-- One row; body is the flags as JSON.
CREATE TABLE routing_overflow (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    updated_at_ms BIGINT NOT NULL,
    body          TEXT NOT NULL
);
