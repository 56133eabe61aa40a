-- Cluster coordination (PostgreSQL only: the embedded SQLite runtime is one node).
-- Times are the database's clock (clock_timestamp()) in epoch milliseconds, so
-- nodes with skewed clocks still agree on who holds what.

-- The settings every member must share (partition count, topology names); the
-- first node writes them, a node that disagrees refuses to join.
CREATE TABLE cluster_config (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    fingerprint   TEXT NOT NULL,
    description   TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- Live nodes: a node is a member while its heartbeat is fresh.
CREATE TABLE cluster_members (
    node_id         TEXT PRIMARY KEY,
    started_at_ms   BIGINT NOT NULL,
    heartbeat_at_ms BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL,
    eligible        BOOLEAN NOT NULL,
    info            TEXT NOT NULL
);

-- Leases: `router` and `partition:<n>`. `token` grows with every new holder and is
-- checked by every write that depends on the lease (fencing).
CREATE TABLE cluster_leases (
    name           TEXT PRIMARY KEY,
    holder         TEXT NULL,
    token          BIGINT NOT NULL DEFAULT 0,
    acquired_at_ms BIGINT NULL,
    expires_at_ms  BIGINT NOT NULL DEFAULT 0
);
