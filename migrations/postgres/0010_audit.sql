-- The audit log: who read or changed which patient's data, when, why, and with what
-- outcome. Append-only: UPDATE, TRUNCATE and DELETE are refused by triggers, except
-- DELETE of rows older than the purge gate's cutoff, which only the retention purge
-- raises (and lowers again) inside its own transaction.
CREATE TABLE audit_log (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    recorded_at_ms  BIGINT NOT NULL,
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
    cutoff_ms  BIGINT NOT NULL
);
INSERT INTO audit_purge_gate (id, cutoff_ms) VALUES (1, 0);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE'
       AND OLD.recorded_at_ms < (SELECT cutoff_ms FROM audit_purge_gate WHERE id = 1) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$;

CREATE TRIGGER audit_log_no_update_or_delete
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
