-- Warden store schema, PostgreSQL flavour (keep in step with migrations/sqlite).
-- Timestamps are unix milliseconds; list fields are JSON text; ids are UUID text.

CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,
    email         TEXT NOT NULL UNIQUE,
    groups_json   TEXT NOT NULL,
    admin         BOOLEAN NOT NULL,
    password_hash TEXT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

-- API tokens: only the SHA-256 of the token is stored. Rows survive their user (revoked) so the
-- token list stays complete for auditors.
CREATE TABLE tokens (
    id            TEXT PRIMARY KEY NOT NULL,
    user_id       TEXT NOT NULL,
    user_email    TEXT NOT NULL,
    name          TEXT NOT NULL,
    token_sha256  TEXT NOT NULL UNIQUE,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT,
    revoked_at_ms BIGINT
);
CREATE INDEX tokens_user ON tokens (user_id);
CREATE INDEX tokens_email ON tokens (user_email);

-- `secret` is ciphertext from the gateway's secret box; never interpreted here.
CREATE TABLE connections (
    id                 TEXT PRIMARY KEY NOT NULL,
    name               TEXT NOT NULL UNIQUE,
    kind               TEXT NOT NULL,
    url_redacted       TEXT,
    command_json       TEXT NOT NULL,
    env_keys_json      TEXT NOT NULL,
    access_groups_json TEXT NOT NULL,
    slack_channel      TEXT,
    teams_webhook      TEXT,
    secret             BYTEA NOT NULL,
    created_at_ms      BIGINT NOT NULL,
    updated_at_ms      BIGINT NOT NULL
);

CREATE TABLE rules (
    id                         TEXT PRIMARY KEY NOT NULL,
    name                       TEXT NOT NULL UNIQUE,
    description                TEXT NOT NULL,
    kind                       TEXT NOT NULL,
    connections_json           TEXT NOT NULL,
    required_groups_json       TEXT NOT NULL,
    approval_groups_json       TEXT NOT NULL,
    require_all_groups         BOOLEAN NOT NULL,
    approval_amount            BIGINT NOT NULL,
    force_approval_groups_json TEXT NOT NULL,
    exempt_groups_json         TEXT NOT NULL,
    timeout_sec                BIGINT,
    max_duration_sec           BIGINT,
    require_reason             BOOLEAN NOT NULL,
    created_at_ms              BIGINT NOT NULL,
    updated_at_ms              BIGINT NOT NULL
);

-- A connection has at most one rule of each type, enforced here so two racing admins cannot
-- both bind. Deleting a bound connection is refused (RESTRICT); deleting a rule unbinds it.
CREATE TABLE rule_bindings (
    connection TEXT NOT NULL REFERENCES connections (name) ON DELETE RESTRICT,
    rule_type  TEXT NOT NULL,
    rule_id    TEXT NOT NULL REFERENCES rules (id) ON DELETE CASCADE,
    UNIQUE (connection, rule_type)
);
CREATE INDEX rule_bindings_rule ON rule_bindings (rule_id);

CREATE TABLE reviews (
    id                    TEXT PRIMARY KEY NOT NULL,
    kind                  TEXT NOT NULL,
    status                TEXT NOT NULL,
    connection            TEXT NOT NULL,
    requester             TEXT NOT NULL,
    requester_groups_json TEXT NOT NULL,
    rule_name             TEXT NOT NULL,
    policy_json           TEXT NOT NULL,
    command               TEXT,
    command_sha256        TEXT,
    duration_sec          BIGINT,
    request_reason        TEXT,
    approvals_json        TEXT NOT NULL,
    decided_by            TEXT,
    reason                TEXT,
    forced                BOOLEAN NOT NULL,
    created_at_ms         BIGINT NOT NULL,
    decided_at_ms         BIGINT,
    expires_at_ms         BIGINT NOT NULL,
    window_end_ms         BIGINT,
    version               BIGINT NOT NULL,
    -- Set once by claim_execution: the one executor of an approved command review.
    exec_claimed_at_ms    BIGINT
);
CREATE INDEX reviews_created ON reviews (created_at_ms);
CREATE INDEX reviews_status ON reviews (status, expires_at_ms);
CREATE INDEX reviews_connection ON reviews (connection, created_at_ms);
CREATE INDEX reviews_requester ON reviews (requester, connection, status);

CREATE TABLE sessions (
    id               TEXT PRIMARY KEY NOT NULL,
    kind             TEXT NOT NULL,
    user_email       TEXT NOT NULL,
    connection       TEXT NOT NULL,
    review_id        TEXT,
    command          TEXT,
    started_at_ms    BIGINT NOT NULL,
    ended_at_ms      BIGINT,
    exit_code        BIGINT,
    -- UTF-8 bytes: command output may contain NUL, which PostgreSQL text cannot hold.
    output           BYTEA,
    output_truncated BOOLEAN NOT NULL,
    output_sha256    TEXT,
    duration_ms      BIGINT,
    rows_json        TEXT
);
CREATE INDEX sessions_started ON sessions (started_at_ms);
CREATE INDEX sessions_review ON sessions (review_id, started_at_ms);
CREATE INDEX sessions_user ON sessions (user_email, started_at_ms);
CREATE INDEX sessions_connection ON sessions (connection, started_at_ms);

CREATE TABLE statements (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id TEXT NOT NULL,
    user_email TEXT NOT NULL,
    connection TEXT NOT NULL,
    review_id  TEXT,
    statement  TEXT NOT NULL,
    at_ms      BIGINT NOT NULL,
    tag        TEXT
);
CREATE INDEX statements_session ON statements (session_id, id);

-- The hash-chained audit log (warden_core::audit). `event` is the event's JSON; `review_id` is
-- copied from it so a review's timeline is one indexed lookup.
CREATE TABLE audit_log (
    seq       BIGINT PRIMARY KEY NOT NULL,
    at_ms     BIGINT NOT NULL,
    actor     TEXT NOT NULL,
    event     TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL,
    review_id TEXT
);
CREATE INDEX audit_log_review ON audit_log (review_id, seq);

-- The chain's head: every write transaction locks this row first, so appends are serialised.
CREATE TABLE audit_head (
    id   BIGINT PRIMARY KEY NOT NULL CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- The audit log is append-only: rows can be added, never changed or removed.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
