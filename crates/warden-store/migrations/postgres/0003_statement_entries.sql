-- Proxied statements live in the audit chain only (keep in step with the other backend's file).
--
-- The proxy's audit writer appends one `statements` entry per session per batch (every
-- statement's text, time and result inside the hashed event) instead of one `statements` row
-- plus one chain entry per statement. `session_id` is copied from such an entry so a session's
-- statements are one indexed lookup; it is NULL on every other entry, which lets the notifier
-- read the log through a partial index that leaves statement entries out.
ALTER TABLE audit_log ADD COLUMN session_id TEXT;
CREATE INDEX audit_log_session ON audit_log (session_id, seq) WHERE session_id IS NOT NULL;
CREATE INDEX audit_log_not_statements ON audit_log (seq) WHERE session_id IS NULL;
DROP TABLE statements;
