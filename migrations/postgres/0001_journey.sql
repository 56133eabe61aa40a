-- Patients, their identifiers, reversible identity links, and the append-only event log.
CREATE TABLE patients (
    id            TEXT PRIMARY KEY,
    created_at_ms BIGINT NOT NULL,
    merged_into   TEXT NULL
);
CREATE INDEX patients_merged_into ON patients (merged_into);

CREATE TABLE identities (
    kind          TEXT NOT NULL,
    value         TEXT NOT NULL,
    patient_id    TEXT NOT NULL,
    linked_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (kind, value)
);
CREATE INDEX identities_patient ON identities (patient_id);

-- Every claim, merge and move, so any of them can be shown and undone (FHIR Patient.link).
CREATE TABLE identity_links (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id      TEXT NULL,
    action        TEXT NOT NULL,
    kind          TEXT NULL,
    value         TEXT NULL,
    from_patient  TEXT NULL,
    to_patient    TEXT NOT NULL,
    at_ms         BIGINT NOT NULL
);
CREATE INDEX identity_links_to ON identity_links (to_patient);

CREATE TABLE events (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id             TEXT NOT NULL UNIQUE,
    patient_id     TEXT NOT NULL,
    type           TEXT NOT NULL,
    channel        TEXT NOT NULL,
    site           TEXT NOT NULL,
    contact_id     TEXT NULL,
    occurred_at_ms BIGINT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    body           TEXT NOT NULL
);
CREATE INDEX events_patient_seq ON events (patient_id, seq);
