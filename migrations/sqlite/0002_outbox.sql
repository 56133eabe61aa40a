-- Commands waiting to be relayed to the broker, written in the same transaction as
-- the state change that caused them. Relayed rows get published_at_ms; a command the
-- broker cannot route is parked (parked_at_ms, last_error) for an operator.
CREATE TABLE outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    command_type    TEXT NOT NULL,
    routing_key     TEXT NOT NULL,
    body            TEXT NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    published_at_ms INTEGER NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    parked_at_ms    INTEGER NULL,
    last_error      TEXT NULL
);
CREATE INDEX outbox_pending ON outbox (published_at_ms, seq);
