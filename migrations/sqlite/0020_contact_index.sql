-- Routing recovery at start finds contacts still open: by type and time, then by contact.
CREATE INDEX events_type_time ON events (type, occurred_at_ms);
CREATE INDEX events_contact ON events (contact_id, type);
