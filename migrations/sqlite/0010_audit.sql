-- The audit log: who read or changed which patient's data, when, why, and with what
-- outcome. Append-only: UPDATE and DELETE are refused by triggers, except DELETE of
-- rows older than the purge gate's cutoff, which only the retention purge raises (and
-- lowers again) inside its own transaction.
CREATE TABLE audit_log (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    recorded_at_ms  INTEGER NOT NULL,
    principal_id    TEXT NULL,
    principal_role  TEXT NULL,
    action          TEXT NOT NULL,
    resource        TEXT NOT NULL,
    patient_id      TEXT NULL,
    purpose         TEXT NOT NULL,
    reason          TEXT NULL,
    outcome         TEXT NOT NULL,
    detail          TEXT NULL,
    event_id        TEXT NULL
);
CREATE INDEX audit_log_recorded ON audit_log (recorded_at_ms);
CREATE INDEX audit_log_patient ON audit_log (patient_id, seq);
CREATE INDEX audit_log_principal ON audit_log (principal_id, seq);

CREATE TABLE audit_purge_gate (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    cutoff_ms  INTEGER NOT NULL
);
INSERT INTO audit_purge_gate (id, cutoff_ms) VALUES (1, 0);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE refused');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
WHEN OLD.recorded_at_ms >= (SELECT cutoff_ms FROM audit_purge_gate WHERE id = 1)
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: DELETE refused');
END;
