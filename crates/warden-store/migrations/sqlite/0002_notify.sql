-- Notifications (SPEC §5), SQLite flavour (keep in step with migrations/postgres).
--
-- The audit log is the outbox: every review/session event is already appended in the same
-- transaction as the change. The notifier tails it by `seq` from `notify_cursor` and turns each
-- relevant event into one `deliveries` row per destination, advancing the cursor in the same
-- transaction (compare-and-set), so a restart or a second replica never loses nor repeats a
-- fan-out. UNIQUE (event_seq, endpoint_key) is the idempotency key of a delivery.

-- Starts at the current head: an existing install does not replay its history.
CREATE TABLE notify_cursor (
    id  BIGINT PRIMARY KEY NOT NULL CHECK (id = 1),
    seq BIGINT NOT NULL
);
INSERT INTO notify_cursor (id, seq) SELECT 1, seq FROM audit_head WHERE id = 1;

-- Outgoing webhook endpoints. `secret` is ciphertext from the gateway's secret box.
CREATE TABLE webhooks (
    id            TEXT PRIMARY KEY NOT NULL,
    url           TEXT NOT NULL,
    events_json   TEXT NOT NULL,
    secret        BLOB NOT NULL,
    created_by    TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- One row per (event, destination). `kind`: slack_post | slack_update | slack_dm | teams |
-- webhook. `status`: pending | failing | sent | dropped. `payload` is what to send (JSON).
CREATE TABLE deliveries (
    id                 TEXT PRIMARY KEY NOT NULL,
    event_seq          BIGINT NOT NULL,
    endpoint_key       TEXT NOT NULL,
    kind               TEXT NOT NULL,
    target             TEXT NOT NULL,
    event_type         TEXT NOT NULL,
    review_id          TEXT,
    payload            TEXT NOT NULL,
    status             TEXT NOT NULL,
    attempts           BIGINT NOT NULL,
    next_attempt_at_ms BIGINT NOT NULL,
    claimed_until_ms   BIGINT,
    claim_token        TEXT,
    last_error         TEXT,
    created_at_ms      BIGINT NOT NULL,
    sent_at_ms         BIGINT,
    UNIQUE (event_seq, endpoint_key)
);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at_ms);
CREATE INDEX deliveries_created ON deliveries (created_at_ms);
CREATE INDEX deliveries_review ON deliveries (review_id, event_seq);

-- The Slack message posted for a review, updated in place (chat.update) on every decision.
CREATE TABLE slack_messages (
    review_id     TEXT PRIMARY KEY NOT NULL,
    channel       TEXT NOT NULL,
    ts            TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

-- Slack users linked to Warden users (`/warden subscribe`, or a verified email match).
CREATE TABLE slack_links (
    slack_user_id TEXT PRIMARY KEY NOT NULL,
    team_id       TEXT NOT NULL,
    user_email    TEXT NOT NULL,
    linked_at_ms  BIGINT NOT NULL
);
CREATE INDEX slack_links_email ON slack_links (user_email);
