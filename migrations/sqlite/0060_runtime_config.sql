-- Live configuration: every change made through the API (PUT /v1/runtime/config, a
-- revert), kept so that every node applies the same values, a restart keeps them,
-- and an admin can read who changed what, when and why. Version 1 is the files alone
-- (no row); each row is the next version. `overlay` is the merge of every change in
-- force at that version (what a node merges over its own files); `patch` is what the
-- caller sent. Append-only: the runtime never updates or deletes a row.
CREATE TABLE runtime_config_changes (
    version        BIGINT PRIMARY KEY,
    changed_at_ms  BIGINT NOT NULL,
    changed_by     TEXT NOT NULL,
    kind           TEXT NOT NULL,
    reason         TEXT NULL,
    patch          TEXT NOT NULL,
    overlay        TEXT NOT NULL
);
