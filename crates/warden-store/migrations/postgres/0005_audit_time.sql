-- The head remembers its entry's time, so a new entry is never dated before the head: `at`
-- never decreases along the chain, whatever the clocks of the replicas do.
ALTER TABLE audit_head ADD COLUMN at_ms BIGINT NOT NULL DEFAULT 0;
UPDATE audit_head SET at_ms = COALESCE((SELECT MAX(at_ms) FROM audit_log), 0) WHERE id = 1;
