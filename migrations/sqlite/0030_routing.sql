-- Routing state, written by the router with the commands it decides (one transaction
-- per step) so that the next router (after a restart, or a new leader) rebuilds
-- exactly what was promised: open contacts with their place, agents with their load,
-- outstanding offers with their deadline.
CREATE TABLE routing_contacts (
    contact_id    TEXT PRIMARY KEY,
    patient_id    TEXT NOT NULL,
    state         TEXT NOT NULL,
    site          TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    body          TEXT NOT NULL
);
CREATE INDEX routing_contacts_state ON routing_contacts (state, updated_at_ms);

CREATE TABLE routing_agents (
    agent_id      TEXT PRIMARY KEY,
    site          TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    body          TEXT NOT NULL
);

-- Which agent holds (offered, assigned, wrapping up) which patient's contact: the
-- minimum-necessary check behind an agent's patient reads, on any node.
CREATE TABLE routing_holds (
    agent_id   TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    PRIMARY KEY (agent_id, contact_id)
);
CREATE INDEX routing_holds_patient ON routing_holds (patient_id, agent_id);

-- Routing inputs already applied (by event or command id): a redelivery after a
-- leader change is recognised and applied once.
CREATE TABLE routing_inputs (
    id            TEXT PRIMARY KEY,
    applied_at_ms BIGINT NOT NULL
);
CREATE INDEX routing_inputs_applied ON routing_inputs (applied_at_ms);

-- Which patient partition an outbox row belongs to (NULL: routing's own commands):
-- in a cluster each node relays the rows of the partitions it owns.
ALTER TABLE outbox ADD COLUMN partition_no BIGINT NULL;
