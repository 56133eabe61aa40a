-- Patient outreach (docs/contract.md, "Outreach"): every notify.send decided for a
-- patient, with its fate. Reminders and messages held by quiet hours wait here as
-- 'planned' until due_at_ms; the reminder tick of the node that owns the patient's
-- partition (partition_no) sends them through the outbox. id is the command id
-- (deterministic per appointment, offset and start for reminders): never twice.
CREATE TABLE outreach (
    id             TEXT PRIMARY KEY,
    patient_id     TEXT NOT NULL,
    partition_no   BIGINT NOT NULL,
    appointment_id TEXT NULL,
    template       TEXT NOT NULL,
    channel        TEXT NOT NULL,
    site           TEXT NOT NULL,
    -- planned | sent | suppressed | failed
    state          TEXT NOT NULL,
    -- why suppressed (opted_out, too_late) or failed (missing field ...)
    reason         TEXT NULL,
    due_at_ms      BIGINT NOT NULL,
    -- pointless from then on (a reminder: the appointment's start)
    not_after_ms   BIGINT NULL,
    -- 1: never held by quiet hours
    urgent         BIGINT NOT NULL,
    -- the notify.send command (JSON)
    command        TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    updated_at_ms  BIGINT NOT NULL
);
CREATE INDEX outreach_due ON outreach (state, due_at_ms);
CREATE INDEX outreach_appointment ON outreach (patient_id, appointment_id);

-- Consent per patient and channel (STOP / START), as the journey folds it.
CREATE TABLE consent (
    patient_id    TEXT NOT NULL,
    channel       TEXT NOT NULL,
    -- 1: opted out
    opted_out     BIGINT NOT NULL,
    changed_at_ms BIGINT NOT NULL,
    PRIMARY KEY (patient_id, channel)
);
