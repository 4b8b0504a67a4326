-- Read-only auditor accounts (compliance review): they read everything and change nothing.
-- A user is an admin or an auditor, never both.
ALTER TABLE users ADD COLUMN auditor BOOLEAN NOT NULL DEFAULT FALSE;
