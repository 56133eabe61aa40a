-- Routing events (agent.state, offer answers, wrap-up) as they were applied, so
-- `frontdoor replay` can rebuild agent availability, answer times and handle times
-- of a recorded day (patient events are already in `events`).
CREATE TABLE routing_events (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT NOT NULL UNIQUE,
    type           TEXT NOT NULL,
    site           TEXT NOT NULL,
    agent_id       TEXT NOT NULL,
    contact_id     TEXT NULL,
    occurred_at_ms BIGINT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    -- The journey log's last seq when it was recorded: where it sits among the
    -- patient events of the same node (replay order).
    after_seq      BIGINT NOT NULL,
    body           TEXT NOT NULL
);
CREATE INDEX routing_events_occurred ON routing_events (occurred_at_ms);
CREATE INDEX events_occurred ON events (occurred_at_ms);
