-- Timer runs and microseconds in the router's order (migration 0130 keeps the
-- order itself). kind 'tick': a run of the router's timers that decided something,
-- replayed by `frontdoor replay` where it ran live (docs/whatif.md, "Fidelity");
-- NULL: an applied input. applied_at_us: the router's time in microseconds, so
-- agents freed in the same millisecond keep their order as "idle since" in the
-- replay. NULL on rows from before.
ALTER TABLE routing_inputs ADD COLUMN kind TEXT NULL;
ALTER TABLE routing_inputs ADD COLUMN applied_at_us BIGINT NULL;
