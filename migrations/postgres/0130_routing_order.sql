-- The order in which the router applied each input (agent events, offer answers,
-- wrap-ups, and the route requests of patient events, by event id): `frontdoor
-- replay` feeds a recorded window to routing in this order, so concurrent inputs
-- are replayed as the router saw them (docs/whatif.md, "Fidelity"). Kept as long as
-- the applied-input ids (routing.record_retention_secs); NULL on rows from before.
ALTER TABLE routing_inputs ADD COLUMN applied_seq BIGINT NULL;
CREATE INDEX routing_inputs_applied_seq ON routing_inputs (applied_seq);
