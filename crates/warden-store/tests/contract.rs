//! The store's contract suite: one set of tests, run against SQLite (a temp file) and against
//! PostgreSQL (a fresh database per test), so both backends keep the same behaviour.
//!
//! PostgreSQL is required: the tests connect to `postgres://postgres@127.0.0.1:5432/postgres`
//! (override with `WARDEN_TEST_PG_URL`), create `warden_t_<uuid>` and drop it afterwards. If
//! the server is unreachable the PostgreSQL tests fail with a message; they never skip.

use std::collections::BTreeSet;
use std::sync::Arc;

use sqlx::Connection as _;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use warden_core::audit::{AuditEntry, AuditEvent, truncate_ms, verify_chain};
use warden_core::{
    Approval, Connection, ConnectionType, Policy, Review, ReviewStatus, Rule, RuleType, Session,
    SessionKind, User,
};
use warden_store::{
    AuditCtx, ConnectionRecord, GroupInfo, ReviewFilter, SessionFilter, StatementRecord, Store,
    StoreError, TokenInfo,
};

// ---- harness ---------------------------------------------------------------------------------

const DEFAULT_PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

struct Harness {
    store: Store,
    url: String,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<PgDatabase>,
}

impl Harness {
    async fn sqlite() -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        // A directory that does not exist yet: connect must create it.
        let path = dir.path().join("nested").join("warden.db");
        let url = format!("sqlite://{}", path.display());
        let store = Store::connect(&url).await.expect("open SQLite store");
        assert_eq!(store.backend_name(), "sqlite");
        Harness {
            store,
            url,
            _dir: Some(dir),
            _pg: None,
        }
    }

    async fn postgres() -> Harness {
        let admin =
            std::env::var("WARDEN_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_ADMIN_URL.into());
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is required by the store contract tests, but {admin} is unreachable: {e}\n\
                 Start PostgreSQL (trust auth for user postgres) or point WARDEN_TEST_PG_URL at an \
                 admin connection URL."
            )
        });
        let name = format!("warden_t_{}", Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("creating test database {name} via {admin}: {e}"));
        conn.close().await.ok();
        let pg = PgDatabase {
            admin: admin.clone(),
            name: name.clone(),
        };
        let url = with_database(&admin, &name);
        let store = Store::connect(&url).await.expect("open PostgreSQL store");
        assert_eq!(store.backend_name(), "postgres");
        Harness {
            store,
            url,
            _dir: None,
            _pg: Some(pg),
        }
    }
}

/// `admin` with its database replaced by `db` (query string kept).
fn with_database(admin: &str, db: &str) -> String {
    let scheme_end = admin.find("://").map_or(0, |i| i + 3);
    let (base, query) = match admin.find('?') {
        Some(i) => (&admin[..i], &admin[i..]),
        None => (admin, ""),
    };
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    format!("{}/{db}{query}", &base[..host_end])
}

/// Drops the test database when the test ends (also when it panics).
struct PgDatabase {
    admin: String,
    name: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Our own runtime on our own thread: Drop may run inside (or outside) the test's runtime.
        let res = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .map_err(std::io::Error::other)?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .map_err(std::io::Error::other)?;
                conn.close().await.ok();
                Ok::<_, std::io::Error>(())
            })
        })
        .join();
        if !matches!(res, Ok(Ok(()))) {
            eprintln!(
                "warning: could not drop test database {}: {res:?}",
                self.name
            );
        }
    }
}

/// Generates each contract test twice: `sqlite::NAME` and `postgres::NAME`.
macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let h = super::Harness::sqlite().await;
                    super::$name(&h).await;
                    h.store.close().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let h = super::Harness::postgres().await;
                    super::$name(&h).await;
                    h.store.close().await;
                }
            )*
        }
    };
}

contract_tests!(
    ping_and_reconnect,
    users_and_tokens,
    groups_are_the_union_of_users_rules_and_connections,
    connections,
    connection_shorthand_rule,
    rules_and_bindings,
    racing_rule_bindings_one_wins,
    reviews_insert_get_list,
    listings_filter_visibility_in_the_query,
    review_update_and_version_conflict,
    concurrent_review_updates_one_wins,
    expiry_windows_and_claims,
    claim_execution_exactly_once,
    execution_start_and_end_are_one_write_each,
    sessions,
    statements_batch,
    audit_chain_under_concurrency,
    audit_time_never_goes_back,
    failed_writes_leave_no_audit_entry,
    grouped_writes_fail_and_vanish_alone,
    audit_timeline_of_a_review,
    timestamps_are_truncated_to_milliseconds,
);

// ---- fixtures --------------------------------------------------------------------------------

/// A fixed, millisecond-aligned instant.
fn t0() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_750_000_000).expect("valid time")
}

fn ctx(actor: &str, now: OffsetDateTime, events: Vec<AuditEvent>) -> AuditCtx {
    AuditCtx::new(actor, now, events)
}

fn admin_change(entity: &str, action: &str, name: &str) -> AuditEvent {
    AuditEvent::AdminChange {
        entity: entity.into(),
        action: action.into(),
        name: name.into(),
        before: None,
        after: Some(serde_json::json!({ "name": name })),
    }
}

fn actx(entity: &str, action: &str, name: &str) -> AuditCtx {
    ctx("admin@x.io", t0(), vec![admin_change(entity, action, name)])
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn user(email: &str, groups: &[&str]) -> User {
    User {
        id: Uuid::new_v4(),
        email: email.into(),
        groups: strings(groups),
        admin: false,
        auditor: false,
        created_at: t0(),
    }
}

fn connection(name: &str) -> ConnectionRecord {
    ConnectionRecord {
        connection: Connection {
            id: Uuid::new_v4(),
            name: name.into(),
            kind: ConnectionType::Postgres,
            url_redacted: Some(format!("postgres://app:***@db/{name}")),
            command: vec![],
            env_keys: strings(&["PGPASSWORD"]),
            access_groups: vec![],
            slack_channel: Some("#db".into()),
            teams_webhook: None,
            created_at: t0(),
            updated_at: t0(),
        },
        secret: vec![0, 1, 2, 255, 0, 42],
    }
}

fn rule(name: &str, kind: RuleType, connections: &[&str]) -> Rule {
    Rule {
        id: Uuid::new_v4(),
        name: name.into(),
        description: format!("rule {name}"),
        kind,
        connections: strings(connections),
        required_groups: vec![],
        approval_groups: strings(&["dba"]),
        require_all_groups: false,
        approval_amount: 1,
        force_approval_groups: vec![],
        exempt_groups: vec![],
        timeout_sec: Some(600),
        max_duration_sec: (kind == RuleType::Jit).then_some(7200),
        require_reason: false,
        created_at: t0(),
        updated_at: t0(),
    }
}

fn review(connection: &str, requester: &str, kind: RuleType, created_at: OffsetDateTime) -> Review {
    let command = (kind == RuleType::Command).then(|| format!("UPDATE t SET x = 1 -- {requester}"));
    Review {
        id: Uuid::new_v4(),
        kind,
        status: ReviewStatus::Pending,
        connection: connection.into(),
        requester: requester.into(),
        requester_groups: strings(&["eng"]),
        rule: format!("{connection}-rule"),
        policy: Policy {
            approval_groups: strings(&["dba", "sec"]),
            require_all_groups: true,
            approval_amount: 2,
            force_approval_groups: strings(&["sre"]),
        },
        command_sha256: command.as_deref().map(warden_core::command_sha256),
        command,
        duration_sec: (kind == RuleType::Jit).then_some(3600),
        request_reason: Some("incident 42".into()),
        approvals: vec![],
        decided_by: None,
        reason: None,
        forced: false,
        created_at,
        decided_at: None,
        expires_at: created_at + Duration::hours(1),
        window_end: None,
        version: 0,
    }
}

fn requested(r: &Review) -> AuditCtx {
    ctx(
        &r.requester,
        r.created_at,
        vec![AuditEvent::ReviewRequested {
            review_id: r.id,
            review_type: r.kind.as_str().into(),
            connection: r.connection.clone(),
            rule: r.rule.clone(),
            command_sha256: r.command_sha256.clone(),
            duration_sec: r.duration_sec,
            reason: r.request_reason.clone(),
        }],
    )
}

/// `r` approved by `approver` at `at` (as the core would compute it, version unchanged).
fn approved(r: &Review, approver: &str, at: OffsetDateTime) -> Review {
    let mut next = r.clone();
    next.status = ReviewStatus::Approved;
    next.approvals.push(Approval {
        approver: approver.into(),
        group: "dba".into(),
        eligible_groups: strings(&["dba"]),
        forced: false,
        auto: false,
        reason: Some("looks fine".into()),
        at,
    });
    next.decided_at = Some(at);
    if let Some(d) = r.duration_sec {
        next.window_end = Some(at + Duration::seconds(d));
    }
    next
}

fn approved_ctx(r: &Review, approver: &str, at: OffsetDateTime) -> AuditCtx {
    ctx(
        approver,
        at,
        vec![AuditEvent::ReviewApproved {
            review_id: r.id,
            approver: approver.into(),
            group: "dba".into(),
            forced: false,
            auto: false,
            reason: None,
            approved: true,
        }],
    )
}

async fn insert(store: &Store, r: &Review) -> Review {
    store
        .insert_review(r, requested(r))
        .await
        .expect("insert review")
}

async fn all_audit(store: &Store) -> Vec<AuditEntry> {
    store
        .audit_entries(0, i64::MAX)
        .await
        .expect("read audit log")
}

/// Verifies the whole chain and that it reaches the recorded head; returns the entry count.
async fn verified_audit_len(store: &Store) -> usize {
    let entries = all_audit(store).await;
    let head = verify_chain(&entries, None).unwrap_or_else(|e| panic!("audit chain broken: {e}"));
    assert_eq!(
        head,
        store.audit_head().await.expect("audit head"),
        "chain does not reach the head"
    );
    entries.len()
}

#[track_caller]
fn assert_duplicate<T: std::fmt::Debug>(res: Result<T, StoreError>, needles: &[&str]) {
    match res {
        Err(StoreError::Duplicate(msg)) => {
            for n in needles {
                assert!(
                    msg.contains(n),
                    "Duplicate message {msg:?} should mention {n:?}"
                );
            }
        }
        other => panic!("expected Duplicate, got {other:?}"),
    }
}

#[track_caller]
fn assert_not_found<T: std::fmt::Debug>(res: Result<T, StoreError>) {
    assert!(
        matches!(res, Err(StoreError::NotFound(_))),
        "expected NotFound, got {res:?}"
    );
}

// ---- tests -----------------------------------------------------------------------------------

async fn ping_and_reconnect(h: &Harness) {
    let s = &h.store;
    s.ping().await.expect("ping");
    let alice = user("alice@x.io", &["eng"]);
    s.upsert_user(&alice, None, false, actx("user", "create", "alice@x.io"))
        .await
        .expect("create");
    // Opening the same database again re-runs the (already applied) migrations and sees the data.
    let again = Store::connect(&h.url).await.expect("reopen");
    assert_eq!(
        again.get_user("alice@x.io").await.expect("get"),
        Some(alice)
    );
    assert_eq!(again.count_users().await.expect("count"), 1);
    assert_eq!(verified_audit_len(&again).await, 1);
    again.close().await;
}

async fn users_and_tokens(h: &Harness) {
    let s = &h.store;
    assert_eq!(s.count_users().await.unwrap(), 0);
    let alice = user("alice@x.io", &["dba", "eng"]);
    let stored = s
        .upsert_user(
            &alice,
            Some("$argon2id$v=19$old"),
            false,
            actx("user", "create", "alice@x.io"),
        )
        .await
        .unwrap();
    assert_eq!(stored, alice);

    let again = user("alice@x.io", &["other"]);
    assert_duplicate(
        s.upsert_user(&again, None, false, actx("user", "create", "alice@x.io"))
            .await,
        &["alice@x.io", "already exists", "overwrite"],
    );

    // Overwrite: groups/admin replaced, id/creation kept, password kept when None.
    let mut changed = user("alice@x.io", &["eng"]);
    changed.admin = true;
    let stored = s
        .upsert_user(&changed, None, true, actx("user", "update", "alice@x.io"))
        .await
        .unwrap();
    assert_eq!(stored.id, alice.id);
    assert_eq!(stored.groups, strings(&["eng"]));
    assert!(stored.admin);
    assert_eq!(
        s.password_hash("alice@x.io").await.unwrap().as_deref(),
        Some("$argon2id$v=19$old")
    );

    let bob = user("bob@x.io", &["eng"]);
    s.upsert_user(&bob, None, false, actx("user", "create", "bob@x.io"))
        .await
        .unwrap();
    assert_eq!(s.count_users().await.unwrap(), 2);
    assert_eq!(s.get_user("bob@x.io").await.unwrap(), Some(bob.clone()));
    assert_eq!(
        s.get_user_by_id(alice.id).await.unwrap().map(|u| u.email),
        Some("alice@x.io".into())
    );
    assert_eq!(s.get_user("nobody@x.io").await.unwrap(), None);
    assert_eq!(s.get_user_by_id(Uuid::new_v4()).await.unwrap(), None);
    let emails: Vec<String> = s
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.email)
        .collect();
    assert_eq!(emails, strings(&["alice@x.io", "bob@x.io"]));
    assert_eq!(s.password_hash("bob@x.io").await.unwrap(), None);
    assert_eq!(s.password_hash("nobody@x.io").await.unwrap(), None);

    s.set_password_hash(
        "alice@x.io",
        "$argon2id$v=19$new",
        actx("user", "password", "alice@x.io"),
    )
    .await
    .unwrap();
    assert_eq!(
        s.password_hash("alice@x.io").await.unwrap().as_deref(),
        Some("$argon2id$v=19$new")
    );
    assert_not_found(
        s.set_password_hash("nobody@x.io", "h", actx("user", "password", "nobody"))
            .await,
    );

    // Tokens.
    let token = |u: &User, name: &str, expires_at: Option<OffsetDateTime>| TokenInfo {
        id: Uuid::new_v4(),
        user_id: u.id,
        user_email: u.email.clone(),
        name: name.into(),
        created_at: t0(),
        expires_at,
        revoked_at: None,
    };
    let forever = token(&alice, "laptop", None);
    let hourly = token(&alice, "ci", Some(t0() + Duration::hours(1)));
    let bobs = token(&bob, "bob", None);
    for (t, hash) in [
        (&forever, "h-forever"),
        (&hourly, "h-hourly"),
        (&bobs, "h-bob"),
    ] {
        s.insert_token(t, hash, actx("token", "create", &t.name))
            .await
            .unwrap();
    }
    assert_duplicate(
        s.insert_token(
            &token(&alice, "dup", None),
            "h-forever",
            actx("token", "create", "dup"),
        )
        .await,
        &["already exists"],
    );
    let ghost = User {
        id: Uuid::new_v4(),
        ..user("ghost@x.io", &[])
    };
    assert_not_found(
        s.insert_token(
            &token(&ghost, "g", None),
            "h-ghost",
            actx("token", "create", "g"),
        )
        .await,
    );

    let (info, owner) = s
        .user_by_token("h-forever", t0())
        .await
        .unwrap()
        .expect("valid token");
    assert_eq!(info, forever);
    assert_eq!(owner.email, "alice@x.io");
    assert!(owner.admin);
    assert!(
        s.user_by_token("h-hourly", t0() + Duration::minutes(59))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        s.user_by_token("h-hourly", t0() + Duration::hours(1))
            .await
            .unwrap()
            .is_none(),
        "expired"
    );
    assert!(s.user_by_token("h-unknown", t0()).await.unwrap().is_none());

    s.revoke_token(
        forever.id,
        ctx("alice@x.io", t0() + Duration::minutes(5), vec![]),
    )
    .await
    .unwrap();
    assert!(
        s.user_by_token("h-forever", t0()).await.unwrap().is_none(),
        "revoked"
    );
    assert_not_found(
        s.revoke_token(Uuid::new_v4(), actx("token", "revoke", "?"))
            .await,
    );
    let alices = s.list_tokens(Some("alice@x.io")).await.unwrap();
    assert_eq!(alices.len(), 2);
    let revoked = alices.iter().find(|t| t.id == forever.id).unwrap();
    assert_eq!(revoked.revoked_at, Some(t0() + Duration::minutes(5)));
    assert_eq!(s.list_tokens(None).await.unwrap().len(), 3);

    // Deleting a user revokes their tokens.
    assert!(s.user_by_token("h-bob", t0()).await.unwrap().is_some());
    s.delete_user("bob@x.io", actx("user", "delete", "bob@x.io"))
        .await
        .unwrap();
    assert!(s.user_by_token("h-bob", t0()).await.unwrap().is_none());
    let bobs_tokens = s.list_tokens(Some("bob@x.io")).await.unwrap();
    assert_eq!(bobs_tokens.len(), 1);
    assert!(
        bobs_tokens[0].revoked_at.is_some(),
        "token of a deleted user is revoked"
    );
    assert_eq!(s.get_user("bob@x.io").await.unwrap(), None);
    assert_not_found(
        s.delete_user("bob@x.io", actx("user", "delete", "bob@x.io"))
            .await,
    );
    assert_eq!(s.count_users().await.unwrap(), 1);

    // create alice, overwrite alice, create bob, password, 3 tokens, revoke (no events), delete bob
    assert_eq!(verified_audit_len(s).await, 8);
}

async fn groups_are_the_union_of_users_rules_and_connections(h: &Harness) {
    let s = &h.store;
    s.upsert_user(
        &user("alice@x.io", &["dba", "eng"]),
        None,
        false,
        actx("u", "c", "a"),
    )
    .await
    .unwrap();
    s.upsert_user(
        &user("bob@x.io", &["eng"]),
        None,
        false,
        actx("u", "c", "b"),
    )
    .await
    .unwrap();
    let mut c = connection("db1");
    c.connection.access_groups = strings(&["ops"]);
    s.upsert_connection(&c, false, None, actx("c", "c", "db1"))
        .await
        .unwrap();
    let mut r = rule("r1", RuleType::Command, &["db1"]);
    r.approval_groups = strings(&["dba", "sec"]);
    r.exempt_groups = strings(&["bots"]);
    r.force_approval_groups = strings(&["sre"]);
    r.required_groups = strings(&["contractors"]);
    s.upsert_rule(&r, actx("r", "c", "r1")).await.unwrap();

    let g = |name: &str, members: &[&str]| GroupInfo {
        name: name.into(),
        members: strings(members),
    };
    assert_eq!(
        s.list_groups().await.unwrap(),
        vec![
            g("bots", &[]),
            g("contractors", &[]),
            g("dba", &["alice@x.io"]),
            g("eng", &["alice@x.io", "bob@x.io"]),
            g("ops", &[]),
            g("sec", &[]),
            g("sre", &[]),
        ]
    );
}

async fn connections(h: &Harness) {
    let s = &h.store;
    let db1 = connection("db1");
    s.upsert_connection(&db1, false, None, actx("connection", "create", "db1"))
        .await
        .unwrap();
    let got = s.get_connection("db1").await.unwrap().expect("stored");
    assert_eq!(got.connection, db1.connection);
    assert_eq!(got.secret, db1.secret);
    assert!(s.get_connection("nope").await.unwrap().is_none());

    assert_duplicate(
        s.upsert_connection(
            &connection("db1"),
            false,
            None,
            actx("connection", "create", "db1"),
        )
        .await,
        &["db1", "already exists", "--overwrite"],
    );

    // Overwrite replaces every field (id and secret too) but keeps the creation time.
    let mut db1b = connection("db1");
    db1b.connection.kind = ConnectionType::Command;
    db1b.connection.command = strings(&["bash", "-c"]);
    db1b.connection.access_groups = strings(&["ops"]);
    db1b.connection.slack_channel = None;
    db1b.connection.teams_webhook = Some("https://teams/hook".into());
    db1b.connection.created_at = t0() + Duration::days(1);
    db1b.connection.updated_at = t0() + Duration::days(1);
    db1b.secret = b"new ciphertext".to_vec();
    s.upsert_connection(&db1b, true, None, actx("connection", "update", "db1"))
        .await
        .unwrap();
    let got = s.get_connection("db1").await.unwrap().unwrap();
    let mut expected = db1b.connection.clone();
    expected.created_at = db1.connection.created_at;
    assert_eq!(got.connection, expected);
    assert_eq!(got.secret, b"new ciphertext");

    s.upsert_connection(
        &connection("alpha"),
        false,
        None,
        actx("connection", "create", "alpha"),
    )
    .await
    .unwrap();
    let names: Vec<String> = s
        .list_connections()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, strings(&["alpha", "db1"]));

    assert_not_found(
        s.delete_connection("nope", actx("connection", "delete", "nope"))
            .await,
    );

    // Refused while a rule binds it; the message names the rules.
    s.upsert_rule(
        &rule("guard", RuleType::Command, &["db1"]),
        actx("rule", "create", "guard"),
    )
    .await
    .unwrap();
    s.upsert_rule(
        &rule("window", RuleType::Jit, &["db1", "alpha"]),
        actx("rule", "create", "window"),
    )
    .await
    .unwrap();
    let before = verified_audit_len(s).await;
    match s
        .delete_connection("db1", actx("connection", "delete", "db1"))
        .await
    {
        Err(StoreError::Invalid(msg)) => {
            assert!(
                msg.contains("guard") && msg.contains("window"),
                "message names the rules: {msg}"
            )
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(s.get_connection("db1").await.unwrap().is_some());
    assert_eq!(verified_audit_len(s).await, before);

    s.delete_rule("guard", actx("rule", "delete", "guard"))
        .await
        .unwrap();
    s.delete_rule("window", actx("rule", "delete", "window"))
        .await
        .unwrap();
    s.delete_connection("db1", actx("connection", "delete", "db1"))
        .await
        .unwrap();
    assert!(s.get_connection("db1").await.unwrap().is_none());
    assert_eq!(verified_audit_len(s).await, before + 3);
}

async fn connection_shorthand_rule(h: &Harness) {
    let s = &h.store;
    let mut shorthand = rule("prod", RuleType::Command, &["prod"]);
    shorthand.approval_groups = strings(&["dba", "sec"]);
    shorthand.require_all_groups = true;
    s.upsert_connection(
        &connection("prod"),
        false,
        Some(&shorthand),
        actx("connection", "create", "prod"),
    )
    .await
    .unwrap();
    assert_eq!(s.get_rule("prod").await.unwrap(), Some(shorthand.clone()));
    assert_eq!(
        s.rules_for_connection("prod").await.unwrap(),
        vec![shorthand.clone()]
    );

    // Re-running the shorthand with --overwrite and a fresh rule id updates the same rule.
    let mut again = rule("prod", RuleType::Command, &["prod"]);
    again.approval_groups = strings(&["sre"]);
    s.upsert_connection(
        &connection("prod"),
        true,
        Some(&again),
        actx("connection", "update", "prod"),
    )
    .await
    .unwrap();
    let stored = s.get_rule("prod").await.unwrap().unwrap();
    assert_eq!(stored.id, shorthand.id, "the existing rule keeps its id");
    assert_eq!(stored.approval_groups, strings(&["sre"]));
    assert_eq!(s.list_rules().await.unwrap().len(), 1);

    // A new connection whose shorthand rule name is taken (without overwrite) is refused whole.
    let taken = rule("prod", RuleType::Command, &["staging"]);
    let before = verified_audit_len(s).await;
    assert_duplicate(
        s.upsert_connection(
            &connection("staging"),
            false,
            Some(&taken),
            actx("connection", "create", "staging"),
        )
        .await,
        &["prod", "already exists"],
    );
    assert!(
        s.get_connection("staging").await.unwrap().is_none(),
        "connection rolled back too"
    );
    assert_eq!(verified_audit_len(s).await, before);
}

async fn rules_and_bindings(h: &Harness) {
    let s = &h.store;
    for c in ["a", "b"] {
        s.upsert_connection(&connection(c), false, None, actx("connection", "create", c))
            .await
            .unwrap();
    }
    let mut r1 = rule("r1", RuleType::Command, &["a", "b"]);
    r1.required_groups = strings(&["eng"]);
    r1.force_approval_groups = strings(&["sre"]);
    r1.exempt_groups = strings(&["bots"]);
    r1.approval_amount = 2;
    r1.require_reason = true;
    r1.timeout_sec = None;
    s.upsert_rule(&r1, actx("rule", "create", "r1"))
        .await
        .unwrap();
    assert_eq!(s.get_rule("r1").await.unwrap(), Some(r1.clone()));
    assert_eq!(s.get_rule("nope").await.unwrap(), None);

    // A second command rule on b is refused, naming the connection and the rule holding it.
    assert_duplicate(
        s.upsert_rule(
            &rule("r2", RuleType::Command, &["b"]),
            actx("rule", "create", "r2"),
        )
        .await,
        &["b", "r1", "command"],
    );
    assert_eq!(s.get_rule("r2").await.unwrap(), None);
    // A jit rule on a is fine: one rule per type.
    let r3 = rule("r3", RuleType::Jit, &["a"]);
    s.upsert_rule(&r3, actx("rule", "create", "r3"))
        .await
        .unwrap();
    assert_eq!(
        s.rules_for_connection("a").await.unwrap(),
        vec![r1.clone(), r3.clone()]
    );
    assert_eq!(s.rules_for_connection("b").await.unwrap(), vec![r1.clone()]);
    assert_eq!(s.rules_for_connection("zzz").await.unwrap(), vec![]);

    // Unknown connection.
    match s
        .upsert_rule(
            &rule("r4", RuleType::Command, &["ghost"]),
            actx("rule", "create", "r4"),
        )
        .await
    {
        Err(StoreError::Invalid(msg)) => assert!(msg.contains("ghost"), "{msg}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    // Same name, different id.
    assert_duplicate(
        s.upsert_rule(
            &rule("r1", RuleType::Jit, &["b"]),
            actx("rule", "create", "r1"),
        )
        .await,
        &["r1", "already exists"],
    );

    // Replacing r1 by id: unbind b, keep created_at, then r2 may bind b.
    let mut r1b = r1.clone();
    r1b.connections = strings(&["a"]);
    r1b.description = "narrower".into();
    r1b.created_at = t0() + Duration::days(9);
    r1b.updated_at = t0() + Duration::days(1);
    s.upsert_rule(&r1b, actx("rule", "update", "r1"))
        .await
        .unwrap();
    let stored = s.get_rule("r1").await.unwrap().unwrap();
    assert_eq!(stored.created_at, r1.created_at);
    assert_eq!(stored.updated_at, r1b.updated_at);
    assert_eq!(stored.connections, strings(&["a"]));
    let r2 = rule("r2", RuleType::Command, &["b"]);
    s.upsert_rule(&r2, actx("rule", "create", "r2"))
        .await
        .unwrap();

    // Changing r1's type to jit collides with r3 on a.
    let mut r1c = r1b.clone();
    r1c.kind = RuleType::Jit;
    assert_duplicate(
        s.upsert_rule(&r1c, actx("rule", "update", "r1")).await,
        &["a", "r3", "jit"],
    );

    let names: Vec<String> = s
        .list_rules()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, strings(&["r1", "r2", "r3"]));
    s.delete_rule("r3", actx("rule", "delete", "r3"))
        .await
        .unwrap();
    assert_not_found(s.delete_rule("r3", actx("rule", "delete", "r3")).await);
    assert_eq!(s.rules_for_connection("a").await.unwrap().len(), 1);
    // Now the type change goes through.
    s.upsert_rule(&r1c, actx("rule", "update", "r1"))
        .await
        .unwrap();
    assert_eq!(
        s.rules_for_connection("a").await.unwrap()[0].kind,
        RuleType::Jit
    );
}

async fn racing_rule_bindings_one_wins(h: &Harness) {
    let s = &h.store;
    for round in 0..8 {
        let conn = format!("c{round}");
        s.upsert_connection(
            &connection(&conn),
            false,
            None,
            actx("connection", "create", &conn),
        )
        .await
        .unwrap();
        let before = verified_audit_len(s).await;
        let ra = rule(&format!("a{round}"), RuleType::Command, &[&conn]);
        let rb = rule(&format!("b{round}"), RuleType::Command, &[&conn]);
        let (sa, sb) = (s.clone(), s.clone());
        let (ca, cb) = (ra.clone(), rb.clone());
        let ta =
            tokio::spawn(
                async move { sa.upsert_rule(&ca, actx("rule", "create", &ca.name)).await },
            );
        let tb =
            tokio::spawn(
                async move { sb.upsert_rule(&cb, actx("rule", "create", &cb.name)).await },
            );
        let (a, b) = (ta.await.unwrap(), tb.await.unwrap());
        let (winner, loser, lost) = match (a, b) {
            (Ok(()), Err(e)) => (&ra, &rb, e),
            (Err(e), Ok(())) => (&rb, &ra, e),
            other => panic!("round {round}: exactly one upsert must win, got {other:?}"),
        };
        assert!(
            matches!(lost, StoreError::Duplicate(_)),
            "loser gets Duplicate, got {lost:?}"
        );
        assert_eq!(
            s.rules_for_connection(&conn).await.unwrap(),
            vec![winner.clone()]
        );
        assert_eq!(s.get_rule(&loser.name).await.unwrap(), None);
        assert_eq!(
            verified_audit_len(s).await,
            before + 1,
            "only the winner is audited"
        );
    }
}

async fn reviews_insert_get_list(h: &Harness) {
    let s = &h.store;
    let mut all = Vec::new();
    for i in 0..30i64 {
        let conn = if i % 3 == 0 { "db-a" } else { "db-b" };
        let requester = if i % 2 == 0 { "alice@x.io" } else { "bob@x.io" };
        let kind = if i % 5 == 0 {
            RuleType::Jit
        } else {
            RuleType::Command
        };
        let mut r = review(conn, requester, kind, t0() + Duration::minutes(i));
        if i % 4 == 0 {
            r.status = ReviewStatus::Rejected;
            r.decided_by = Some("carol@x.io".into());
            r.reason = Some("no".into());
            r.decided_at = Some(r.created_at + Duration::seconds(5));
        }
        let stored = insert(s, &r).await;
        assert_eq!(stored, r);
        all.push(r);
    }
    assert_eq!(s.get_review(all[7].id).await.unwrap(), Some(all[7].clone()));
    assert_eq!(s.get_review(Uuid::new_v4()).await.unwrap(), None);
    assert_duplicate(
        s.insert_review(&all[3], requested(&all[3])).await,
        &["already exists"],
    );

    let ids = |v: &[Review]| v.iter().map(|r| r.id).collect::<Vec<_>>();
    let newest_first = |pred: &dyn Fn(&Review) -> bool| {
        let mut v: Vec<Review> = all.iter().filter(|r| pred(r)).cloned().collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.created_at));
        v
    };
    let list = |f: ReviewFilter| {
        let s = s.clone();
        async move { s.list_reviews(&f).await.unwrap() }
    };

    // Pagination over everything.
    let (page1, total) = list(ReviewFilter {
        page: 1,
        per_page: 10,
        ..Default::default()
    })
    .await;
    assert_eq!(total, 30);
    assert_eq!(ids(&page1), ids(&newest_first(&|_| true)[..10]));
    let (page3, _) = list(ReviewFilter {
        page: 3,
        per_page: 10,
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&page3), ids(&newest_first(&|_| true)[20..30]));
    let (page4, total) = list(ReviewFilter {
        page: 4,
        per_page: 10,
        ..Default::default()
    })
    .await;
    assert!(page4.is_empty());
    assert_eq!(total, 30);
    // Defaults: page 0 = first page, per_page 0 = 50.
    let (default_page, _) = list(ReviewFilter::default()).await;
    assert_eq!(default_page.len(), 30);

    // Each filter, and a combination.
    let check = |f: ReviewFilter, pred: Box<dyn Fn(&Review) -> bool>| {
        let expected = newest_first(&*pred);
        async move {
            let (got, total) = list(ReviewFilter {
                per_page: 100,
                ..f.clone()
            })
            .await;
            assert_eq!(total as usize, expected.len(), "total for {f:?}");
            assert_eq!(ids(&got), ids(&expected), "page for {f:?}");
        }
    };
    check(
        ReviewFilter {
            status: Some(ReviewStatus::Rejected),
            ..Default::default()
        },
        Box::new(|r| r.status == ReviewStatus::Rejected),
    )
    .await;
    check(
        ReviewFilter {
            connection: Some("db-a".into()),
            ..Default::default()
        },
        Box::new(|r| r.connection == "db-a"),
    )
    .await;
    check(
        ReviewFilter {
            requester: Some("bob@x.io".into()),
            ..Default::default()
        },
        Box::new(|r| r.requester == "bob@x.io"),
    )
    .await;
    check(
        ReviewFilter {
            kind: Some(RuleType::Jit),
            ..Default::default()
        },
        Box::new(|r| r.kind == RuleType::Jit),
    )
    .await;
    let (since, until) = (t0() + Duration::minutes(10), t0() + Duration::minutes(20));
    check(
        ReviewFilter {
            since: Some(since),
            until: Some(until),
            ..Default::default()
        },
        Box::new(move |r| r.created_at >= since && r.created_at < until),
    )
    .await;
    check(
        ReviewFilter {
            status: Some(ReviewStatus::Pending),
            connection: Some("db-b".into()),
            requester: Some("alice@x.io".into()),
            kind: Some(RuleType::Command),
            since: Some(since),
            ..Default::default()
        },
        Box::new(move |r| {
            r.status == ReviewStatus::Pending
                && r.connection == "db-b"
                && r.requester == "alice@x.io"
                && r.kind == RuleType::Command
                && r.created_at >= since
        }),
    )
    .await;
    let (page, total) = list(ReviewFilter {
        connection: Some("db-b".into()),
        page: 2,
        per_page: 5,
        ..Default::default()
    })
    .await;
    assert_eq!(total, 20);
    assert_eq!(
        ids(&page),
        ids(&newest_first(&|r| r.connection == "db-b")[5..10])
    );
}

/// A non-admin's listing is filtered by the store, uncapped: with more than 5,000 newer reviews
/// on a connection bob does not decide, bob still sees the one waiting for him (and the reviews
/// he asked for), and the total counts exactly those.
async fn listings_filter_visibility_in_the_query(h: &Harness) {
    let s = &h.store;
    let mine = {
        let mut r = review("pg", "dev@x", RuleType::Command, t0());
        r.policy.approval_groups = strings(&["dba"]);
        r.policy.force_approval_groups = vec![];
        insert(s, &r).await
    };
    let own = insert(s, &review("other", "bob@x", RuleType::Command, t0())).await;
    for i in 0..5_100 {
        let mut r = review(
            "other",
            "eng@x",
            RuleType::Command,
            t0() + Duration::seconds(i + 1),
        );
        r.policy.approval_groups = strings(&["finance"]);
        r.policy.force_approval_groups = strings(&["cfo"]);
        insert(s, &r).await;
    }
    let bob = warden_store::Visibility {
        email: "bob@x".into(),
        groups: strings(&["dba", "sre"]),
    };
    let (page, total) = s
        .list_reviews(&ReviewFilter {
            status: Some(ReviewStatus::Pending),
            visible_to: Some(bob.clone()),
            page: 1,
            per_page: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut got: Vec<Uuid> = page.iter().map(|r| r.id).collect();
    got.sort();
    let mut want = vec![mine.id, own.id];
    want.sort();
    assert_eq!(got, want, "his own request and the one his group decides");
    assert_eq!(total, 2);
    // Force-approval groups count too; someone in no group sees only their own.
    let (_, cfo) = s
        .list_reviews(&ReviewFilter {
            visible_to: Some(warden_store::Visibility {
                email: "x@x".into(),
                groups: strings(&["cfo"]),
            }),
            per_page: 1,
            page: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(cfo, 5_100);
    let (none, total) = s
        .list_reviews(&ReviewFilter {
            visible_to: Some(warden_store::Visibility {
                email: "nobody@x".into(),
                groups: vec![],
            }),
            page: 1,
            per_page: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty() && total == 0);

    // The listing follows each review's status: once approved, the review leaves bob's pending
    // list and joins his approved one. A review he asked for on a connection his own group
    // decides is listed (and counted) once.
    let at = t0() + Duration::days(1);
    s.update_review(
        &approved(&mine, "dana@x", at),
        approved_ctx(&mine, "dana@x", at),
    )
    .await
    .unwrap();
    let both = {
        let mut r = review("pg", "bob@x", RuleType::Command, t0() + Duration::days(2));
        r.policy.approval_groups = strings(&["dba"]);
        insert(s, &r).await
    };
    let bob_list = |status: ReviewStatus, connection: Option<&str>| ReviewFilter {
        status: Some(status),
        connection: connection.map(str::to_string),
        visible_to: Some(bob.clone()),
        page: 1,
        per_page: 50,
        ..Default::default()
    };
    let (page, total) = s
        .list_reviews(&bob_list(ReviewStatus::Pending, None))
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![both.id, own.id],
        "newest first, each once"
    );
    assert_eq!(total, 2);
    let (page, total) = s
        .list_reviews(&bob_list(ReviewStatus::Approved, None))
        .await
        .unwrap();
    assert_eq!(
        (page.iter().map(|r| r.id).collect::<Vec<_>>(), total),
        (vec![mine.id], 1)
    );
    // Other filters apply to both halves (his own and his groups').
    let (page, total) = s
        .list_reviews(&bob_list(ReviewStatus::Pending, Some("other")))
        .await
        .unwrap();
    assert_eq!(
        (page.iter().map(|r| r.id).collect::<Vec<_>>(), total),
        (vec![own.id], 1)
    );
    // Pages of a visible listing do not overlap and cover it.
    let cfo_page = |page: u32| ReviewFilter {
        visible_to: Some(warden_store::Visibility {
            email: "x@x".into(),
            groups: strings(&["cfo"]),
        }),
        page,
        per_page: 1_000,
        ..Default::default()
    };
    let mut seen = std::collections::HashSet::new();
    for p in 1..=6 {
        let (page, total) = s.list_reviews(&cfo_page(p)).await.unwrap();
        assert_eq!(total, 5_100);
        assert_eq!(page.len(), if p < 6 { 1_000 } else { 100 });
        assert!(page.windows(2).all(|w| w[0].created_at >= w[1].created_at));
        for r in page {
            assert!(seen.insert(r.id), "review {} listed twice", r.id);
        }
    }
}

async fn review_update_and_version_conflict(h: &Harness) {
    let s = &h.store;
    let r = insert(s, &review("db", "alice@x.io", RuleType::Jit, t0())).await;
    let at = t0() + Duration::minutes(3);
    let next = approved(&r, "dana@x.io", at);
    let stored = s
        .update_review(&next, approved_ctx(&r, "dana@x.io", at))
        .await
        .unwrap();
    assert_eq!(
        stored,
        Review {
            version: 1,
            ..next.clone()
        }
    );
    assert_eq!(s.get_review(r.id).await.unwrap(), Some(stored.clone()));

    // A transition computed from the old version loses, writes nothing, audits nothing.
    let before = verified_audit_len(s).await;
    let mut stale = r.clone();
    stale.status = ReviewStatus::Rejected;
    stale.decided_by = Some("eve@x.io".into());
    stale.reason = Some("no".into());
    let res = s
        .update_review(
            &stale,
            ctx("eve@x.io", at, vec![rejected_event(&r, "eve@x.io")]),
        )
        .await;
    assert!(
        matches!(res, Err(StoreError::Conflict)),
        "expected Conflict, got {res:?}"
    );
    assert_eq!(s.get_review(r.id).await.unwrap(), Some(stored.clone()));
    assert_eq!(verified_audit_len(s).await, before);

    // Unknown id.
    let ghost = review("db", "alice@x.io", RuleType::Command, t0());
    assert_not_found(s.update_review(&ghost, requested(&ghost)).await);
    assert_eq!(verified_audit_len(s).await, before);

    // The request-time facts never change, whatever the caller passes.
    let mut sneaky = stored.clone();
    sneaky.status = ReviewStatus::Executed;
    sneaky.command = Some("DROP TABLE users".into());
    sneaky.connection = "other".into();
    sneaky.requester = "mallory@x.io".into();
    let after = s
        .update_review(&sneaky, ctx("system", at, vec![]))
        .await
        .unwrap();
    assert_eq!(after.status, ReviewStatus::Executed);
    assert_eq!(after.version, 2);
    assert_eq!(after.command, r.command);
    assert_eq!(after.connection, r.connection);
    assert_eq!(after.requester, r.requester);
}

fn rejected_event(r: &Review, by: &str) -> AuditEvent {
    AuditEvent::ReviewRejected {
        review_id: r.id,
        by: by.into(),
        reason: "no".into(),
        withdrawn: false,
        by_admin: false,
    }
}

async fn concurrent_review_updates_one_wins(h: &Harness) {
    let s = &h.store;
    for round in 0..10 {
        let r = insert(
            s,
            &review(
                "db",
                "alice@x.io",
                RuleType::Command,
                t0() + Duration::seconds(round),
            ),
        )
        .await;
        let mut tasks = Vec::new();
        for who in ["dana@x.io", "erin@x.io"] {
            let s = s.clone();
            let next = approved(&r, who, t0() + Duration::minutes(1));
            let audit = approved_ctx(&r, who, t0() + Duration::minutes(1));
            tasks.push(tokio::spawn(
                async move { s.update_review(&next, audit).await },
            ));
        }
        let mut winners = Vec::new();
        for (t, who) in tasks.into_iter().zip(["dana@x.io", "erin@x.io"]) {
            match t.await.unwrap() {
                Ok(stored) => winners.push((who, stored)),
                Err(StoreError::Conflict) => {}
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one concurrent update wins"
        );
        let (who, stored) = &winners[0];
        assert_eq!(stored.version, 1);
        assert_eq!(stored.approvals[0].approver, *who);
        assert_eq!(s.get_review(r.id).await.unwrap().as_ref(), Some(stored));
        let timeline = s.audit_for_review(r.id).await.unwrap();
        assert_eq!(timeline.len(), 2, "request + the one winning approval");
    }
    verified_audit_len(s).await;
}

async fn expiry_windows_and_claims(h: &Harness) {
    let s = &h.store;
    let now = t0() + Duration::hours(2);
    // PENDING, expired (expires_at = t0 + 1h <= now) and PENDING, not yet expired.
    let expired = insert(s, &review("db", "alice@x.io", RuleType::Command, t0())).await;
    let fresh = insert(s, &review("db", "alice@x.io", RuleType::Command, now)).await;
    // Exactly at the boundary counts as expired.
    let boundary = insert(
        s,
        &review(
            "db",
            "alice@x.io",
            RuleType::Command,
            now - Duration::hours(1),
        ),
    )
    .await;
    // APPROVED jit windows: one over, one running, one for someone else.
    let over = insert(s, &review("db", "alice@x.io", RuleType::Jit, t0())).await;
    let over = s
        .update_review(
            &approved(&over, "dana@x.io", t0()),
            approved_ctx(&over, "dana@x.io", t0()),
        )
        .await
        .unwrap();
    let running = insert(
        s,
        &review(
            "db",
            "alice@x.io",
            RuleType::Jit,
            now - Duration::minutes(30),
        ),
    )
    .await;
    let running = s
        .update_review(
            &approved(&running, "dana@x.io", now - Duration::minutes(20)),
            ctx("dana@x.io", now, vec![]),
        )
        .await
        .unwrap();
    let bobs = insert(s, &review("db", "bob@x.io", RuleType::Jit, now)).await;
    let bobs = s
        .update_review(
            &approved(&bobs, "dana@x.io", now),
            ctx("dana@x.io", now, vec![]),
        )
        .await
        .unwrap();
    // APPROVED command review.
    let cmd = insert(s, &review("db", "alice@x.io", RuleType::Command, now)).await;
    let cmd = s
        .update_review(
            &approved(&cmd, "dana@x.io", now),
            ctx("dana@x.io", now, vec![]),
        )
        .await
        .unwrap();

    let ids = |v: Vec<Review>| v.into_iter().map(|r| r.id).collect::<BTreeSet<_>>();
    let set = |v: &[&Review]| v.iter().map(|r| r.id).collect::<BTreeSet<_>>();
    assert_eq!(
        ids(s.reviews_to_expire(now).await.unwrap()),
        set(&[&expired, &boundary])
    );
    assert_eq!(ids(s.reviews_to_expire(t0()).await.unwrap()), set(&[]));
    assert!(!ids(s.reviews_to_expire(now).await.unwrap()).contains(&fresh.id));
    assert_eq!(ids(s.windows_to_finish(now).await.unwrap()), set(&[&over]));
    assert_eq!(
        ids(s.windows_to_finish(now + Duration::hours(2)).await.unwrap()),
        set(&[&over, &running, &bobs])
    );
    assert_eq!(
        ids(s.approved_windows("alice@x.io", "db").await.unwrap()),
        set(&[&over, &running])
    );
    assert_eq!(
        ids(s.approved_windows("alice@x.io", "other").await.unwrap()),
        set(&[])
    );

    // Claims: only APPROVED reviews, once.
    assert_eq!(
        ids(s
            .unclaimed_approved(t0() + Duration::days(365))
            .await
            .unwrap()),
        set(&[&cmd])
    );
    assert_eq!(
        ids(s
            .unclaimed_approved(t0() - Duration::days(1))
            .await
            .unwrap()),
        set(&[]),
        "an approval younger than the grace is left to the request that made it"
    );
    assert!(
        !s.claim_execution(fresh.id, now).await.unwrap(),
        "a PENDING review cannot be claimed"
    );
    assert!(!s.claim_execution(Uuid::new_v4(), now).await.unwrap());
    let claimed_at = now + Duration::seconds(1);
    assert!(s.claim_execution(cmd.id, claimed_at).await.unwrap());
    assert!(!s.claim_execution(cmd.id, claimed_at).await.unwrap());
    assert_eq!(
        ids(s
            .unclaimed_approved(t0() + Duration::days(365))
            .await
            .unwrap()),
        set(&[])
    );
    assert_eq!(
        ids(s.stale_claims(claimed_at).await.unwrap()),
        set(&[]),
        "claimed at, not before"
    );
    assert_eq!(
        ids(s
            .stale_claims(claimed_at + Duration::milliseconds(1))
            .await
            .unwrap()),
        set(&[&cmd])
    );
    // A renewed claim is a fresh lease; unclaimed or finished reviews are left alone.
    s.renew_claims(&[cmd.id, fresh.id], claimed_at + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(
        ids(s
            .stale_claims(claimed_at + Duration::minutes(59))
            .await
            .unwrap()),
        set(&[]),
        "a renewed claim is not stale"
    );
    assert_eq!(
        ids(s
            .stale_claims(claimed_at + Duration::hours(1) + Duration::milliseconds(1))
            .await
            .unwrap()),
        set(&[&cmd])
    );
    assert!(
        !s.claim_execution(fresh.id, now).await.unwrap(),
        "renewing never claims"
    );
    // The claim does not bump the version: the executor's EXECUTED transition goes through.
    let mut done = cmd.clone();
    done.status = ReviewStatus::Executed;
    let done = s
        .update_review(&done, ctx("system", now, vec![]))
        .await
        .unwrap();
    assert_eq!(done.version, cmd.version + 1);
    assert_eq!(
        ids(s.stale_claims(now + Duration::hours(9)).await.unwrap()),
        set(&[])
    );
}

async fn claim_execution_exactly_once(h: &Harness) {
    let s = &h.store;
    for round in 0..3 {
        let r = insert(
            s,
            &review(
                "db",
                "alice@x.io",
                RuleType::Command,
                t0() + Duration::seconds(round),
            ),
        )
        .await;
        let r = s
            .update_review(
                &approved(&r, "dana@x.io", t0()),
                ctx("dana@x.io", t0(), vec![]),
            )
            .await
            .unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(20));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (s, b) = (s.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                b.wait().await;
                s.claim_execution(r.id, t0() + Duration::minutes(1)).await
            }));
        }
        let mut wins = 0;
        for t in tasks {
            if t.await.unwrap().expect("claim") {
                wins += 1;
            }
        }
        assert_eq!(wins, 1, "round {round}: exactly one claimer executes");
    }
}

/// The claim and the session's start are one write (a lost claim records nothing); the
/// session's end and EXECUTED are one write (a stale review version records neither).
async fn execution_start_and_end_are_one_write_each(h: &Harness) {
    let s = &h.store;
    let r = insert(s, &review("db", "alice@x.io", RuleType::Command, t0())).await;
    let r = s
        .update_review(
            &approved(&r, "dana@x.io", t0()),
            approved_ctx(&r, "dana@x.io", t0()),
        )
        .await
        .unwrap();
    let before = verified_audit_len(s).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (s, b, id) = (s.clone(), barrier.clone(), r.id);
        tasks.push(tokio::spawn(async move {
            let mut started = session(SessionKind::Exec, "alice@x.io", "db", t0());
            started.review_id = Some(id);
            b.wait().await;
            let won = s
                .claim_execution_and_start(id, t0(), &started, session_started(&started))
                .await
                .expect("claim");
            (won, started)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (won, started) = t.await.unwrap();
        let stored = s.get_session(started.id).await.unwrap();
        assert_eq!(
            stored.is_some(),
            won,
            "a session is recorded exactly when its claim won"
        );
        if won {
            winners.push(started);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one claimer executes");
    assert_eq!(
        verified_audit_len(s).await,
        before + 1,
        "one SessionStarted"
    );
    assert_eq!(
        s.session_for_review(r.id).await.unwrap().map(|x| x.id),
        Some(winners[0].id)
    );
    // Claimed: neither path claims it again.
    assert!(!s.claim_execution(r.id, t0()).await.unwrap());
    let mut again = session(SessionKind::Exec, "alice@x.io", "db", t0());
    again.review_id = Some(r.id);
    assert!(
        !s.claim_execution_and_start(r.id, t0(), &again, session_started(&again))
            .await
            .unwrap()
    );
    assert!(s.get_session(again.id).await.unwrap().is_none());

    let mut ended = winners.remove(0);
    ended.ended_at = Some(t0() + Duration::seconds(1));
    ended.exit_code = Some(0);
    ended.output = Some("1\n".into());
    ended.output_sha256 = Some("ab".repeat(32));
    ended.duration_ms = Some(3);
    let end_ctx = || {
        ctx(
            "alice@x.io",
            t0(),
            vec![AuditEvent::SessionEnded {
                session_id: ended.id,
                exit_code: Some(0),
                output_sha256: ended.output_sha256.clone(),
            }],
        )
    };
    let executed_ctx = || {
        ctx(
            "system",
            t0(),
            vec![AuditEvent::ReviewExecuted {
                review_id: r.id,
                session_id: ended.id,
                exit_code: 0,
                output_sha256: "ab".repeat(32),
                duration_ms: 3,
            }],
        )
    };
    // A stale version (the review changed since it was read): nothing is recorded.
    let mut stale = r.clone().mark_executed().unwrap();
    stale.version -= 1;
    let res = s
        .finish_review_execution(&ended, end_ctx(), &stale, executed_ctx())
        .await;
    assert!(matches!(res, Err(StoreError::Conflict)), "{res:?}");
    assert_eq!(
        s.get_session(ended.id).await.unwrap().unwrap().ended_at,
        None
    );
    assert_eq!(verified_audit_len(s).await, before + 1);
    // Current: both, in one write.
    let next = r.clone().mark_executed().unwrap();
    let stored = s
        .finish_review_execution(&ended, end_ctx(), &next, executed_ctx())
        .await
        .unwrap();
    assert_eq!(stored.status, ReviewStatus::Executed);
    let got = s.get_session(ended.id).await.unwrap().unwrap();
    assert_eq!((got.exit_code, got.ended_at), (Some(0), ended.ended_at));
    assert_eq!(verified_audit_len(s).await, before + 3);
}

fn session(kind: SessionKind, user: &str, connection: &str, started_at: OffsetDateTime) -> Session {
    Session::starting(
        Uuid::new_v4(),
        kind,
        user,
        connection,
        None,
        Some("SELECT 1".into()),
        started_at,
    )
}

fn session_started(s: &Session) -> AuditCtx {
    ctx(
        &s.user,
        s.started_at,
        vec![AuditEvent::SessionStarted {
            session_id: s.id,
            session_kind: s.kind.as_str().into(),
            connection: s.connection.clone(),
            review_id: s.review_id,
            command_sha256: None,
        }],
    )
}

async fn sessions(h: &Harness) {
    let s = &h.store;
    let review_id = Uuid::new_v4();
    let mut first = session(SessionKind::Exec, "alice@x.io", "db", t0());
    first.review_id = Some(review_id);
    s.insert_session(&first, session_started(&first))
        .await
        .unwrap();
    assert_eq!(s.get_session(first.id).await.unwrap(), Some(first.clone()));
    assert_duplicate(
        s.insert_session(&first, session_started(&first)).await,
        &["already exists"],
    );

    // Output with NUL bytes and non-ASCII text, a result set, a negative exit code.
    let mut done = first.clone();
    done.ended_at = Some(t0() + Duration::seconds(3));
    done.exit_code = Some(-9);
    done.output = Some("row\0with nul — ünïcödé\n".into());
    done.output_truncated = true;
    done.output_sha256 = Some("ab".repeat(32));
    done.duration_ms = Some(3000);
    done.rows_json = Some(serde_json::json!([{"id": 1, "name": "x"}, {"id": 2, "name": null}]));
    s.finish_session(
        &done,
        ctx(
            "alice@x.io",
            t0(),
            vec![AuditEvent::SessionEnded {
                session_id: done.id,
                exit_code: done.exit_code,
                output_sha256: None,
            }],
        ),
    )
    .await
    .unwrap();
    assert_eq!(s.get_session(first.id).await.unwrap(), Some(done.clone()));
    assert_not_found(
        s.finish_session(
            &session(SessionKind::Exec, "a", "b", t0()),
            ctx("a", t0(), vec![]),
        )
        .await,
    );
    assert_eq!(s.get_session(Uuid::new_v4()).await.unwrap(), None);

    // A later run of the same review is "the" session of the review.
    let mut second = session(
        SessionKind::Web,
        "alice@x.io",
        "db",
        t0() + Duration::minutes(1),
    );
    second.review_id = Some(review_id);
    s.insert_session(&second, session_started(&second))
        .await
        .unwrap();
    assert_eq!(
        s.session_for_review(review_id).await.unwrap().map(|x| x.id),
        Some(second.id)
    );
    assert_eq!(s.session_for_review(Uuid::new_v4()).await.unwrap(), None);

    let mut all = vec![done, second];
    for i in 0..10 {
        let user = if i % 2 == 0 { "bob@x.io" } else { "carol@x.io" };
        let x = session(
            SessionKind::Proxy,
            user,
            if i < 5 { "db" } else { "cache" },
            t0() + Duration::minutes(2 + i),
        );
        s.insert_session(&x, session_started(&x)).await.unwrap();
        all.push(x);
    }
    all.sort_by_key(|x| std::cmp::Reverse(x.started_at));
    let ids = |v: &[Session]| v.iter().map(|x| x.id).collect::<Vec<_>>();
    let list = |f: SessionFilter| {
        let s = s.clone();
        async move { s.list_sessions(&f).await.unwrap() }
    };
    let (page, total) = list(SessionFilter {
        page: 2,
        per_page: 5,
        ..Default::default()
    })
    .await;
    assert_eq!(total, 12);
    assert_eq!(ids(&page), ids(&all[5..10]));
    let expect = |pred: &dyn Fn(&Session) -> bool| {
        all.iter().filter(|x| pred(x)).cloned().collect::<Vec<_>>()
    };
    let (got, total) = list(SessionFilter {
        user: Some("bob@x.io".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(
        (ids(&got), total),
        (ids(&expect(&|x| x.user == "bob@x.io")), 5)
    );
    let (got, _) = list(SessionFilter {
        connection: Some("cache".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&got), ids(&expect(&|x| x.connection == "cache")));
    let (got, _) = list(SessionFilter {
        kind: Some(SessionKind::Proxy),
        ..Default::default()
    })
    .await;
    assert_eq!(got.len(), 10);
    let (got, _) = list(SessionFilter {
        review_id: Some(review_id),
        ..Default::default()
    })
    .await;
    assert_eq!(got.len(), 2);
    let since = t0() + Duration::minutes(8);
    let (got, total) = list(SessionFilter {
        since: Some(since),
        kind: Some(SessionKind::Proxy),
        ..Default::default()
    })
    .await;
    assert_eq!(
        (ids(&got), total),
        (
            ids(&expect(
                &|x| x.started_at >= since && x.kind == SessionKind::Proxy
            )),
            4
        )
    );
}

async fn statements_batch(h: &Harness) {
    let s = &h.store;
    let alice = session(SessionKind::Proxy, "alice@x.io", "db", t0());
    let bob = session(SessionKind::Proxy, "bob@x.io", "db2", t0());
    for sess in [&alice, &bob] {
        s.insert_session(sess, session_started(sess)).await.unwrap();
    }
    let review_id = Uuid::new_v4();
    let record = |sess: &Session, i: i64| StatementRecord {
        session_id: sess.id,
        user: sess.user.clone(),
        connection: sess.connection.clone(),
        review_id: (sess.id == alice.id && i % 10 == 0).then_some(review_id),
        statement: format!("SELECT {i} -- 'quoted' \"ident\" é \0"),
        at: t0() + Duration::milliseconds(i),
        tag: if i % 7 == 0 {
            Some("42P01".into())
        } else {
            Some("SELECT 1".into())
        },
    };
    // The two sessions interleaved, as the proxy's writer receives them.
    let mut batch = Vec::new();
    for i in 0..250 {
        batch.push(record(&alice, i));
        if i < 30 {
            batch.push(record(&bob, i));
        }
    }
    let only = |sess: &Session| -> Vec<StatementRecord> {
        batch
            .iter()
            .filter(|r| r.session_id == sess.id)
            .cloned()
            .collect()
    };
    let before = verified_audit_len(s).await;
    s.record_statements(batch[..200].to_vec()).await.unwrap();
    s.record_statements(batch[200..].to_vec()).await.unwrap();
    s.record_statements(Vec::new()).await.unwrap();
    assert_eq!(
        s.statements_for_session(alice.id).await.unwrap(),
        only(&alice)
    );
    assert_eq!(s.statements_for_session(bob.id).await.unwrap(), only(&bob));
    assert_eq!(
        s.statements_for_session(Uuid::new_v4()).await.unwrap(),
        vec![]
    );

    // One entry per run of a session's statements under one review (or none), per call: alice
    // alternates 1 statement under review and 9 not (50 runs; the calls split her between 169
    // and 170, a run boundary anyway), bob's 30 statements all fall in the first call (1 run).
    let entries = all_audit(s).await;
    let new = &entries[before..];
    assert_eq!(new.len(), 50 + 1);
    assert_eq!(verified_audit_len(s).await, before + new.len());
    let mut seen = 0;
    for e in new {
        let ev: AuditEvent = serde_json::from_value(e.event.clone()).expect("typed event");
        let AuditEvent::Statements {
            session_id,
            connection,
            review_id: rid,
            statements,
        } = &ev
        else {
            panic!("not a statements entry: {ev:?}");
        };
        let sess = if *session_id == alice.id {
            &alice
        } else {
            &bob
        };
        assert_eq!(e.actor, sess.user);
        assert_eq!(connection, &sess.connection);
        assert!(!statements.is_empty());
        assert_eq!(
            e.at,
            OffsetDateTime::from_unix_timestamp_nanos(statements[0].at_ms as i128 * 1_000_000)
                .unwrap()
        );
        if rid.is_some() {
            assert_eq!(
                statements.len(),
                1,
                "a reviewed statement is alone between unreviewed ones"
            );
        }
        seen += statements.len();
    }
    assert_eq!(seen, batch.len());
    assert_eq!(s.audit_for_review(review_id).await.unwrap().len(), 25);

    // A long batch of one session is cut into entries of at most STATEMENTS_PER_ENTRY.
    let carol = session(SessionKind::Proxy, "carol@x.io", "db", t0());
    s.insert_session(&carol, session_started(&carol))
        .await
        .unwrap();
    let long: Vec<StatementRecord> = (0..(2 * warden_store::STATEMENTS_PER_ENTRY as i64 + 7))
        .map(|i| record(&carol, i))
        .collect();
    let before = verified_audit_len(s).await;
    s.record_statements(long.clone()).await.unwrap();
    assert_eq!(verified_audit_len(s).await, before + 3);
    assert_eq!(s.statements_for_session(carol.id).await.unwrap(), long);

    // What the notifier reads: every entry but the statements, in order.
    let all = all_audit(s).await;
    let rest = s
        .audit_entries_except_statements(0, 1_000_000)
        .await
        .unwrap();
    let expected: Vec<&AuditEntry> = all
        .iter()
        .filter(|e| e.event["kind"] != "statements")
        .collect();
    assert_eq!(rest.iter().collect::<Vec<_>>(), expected);
    assert!(rest.len() < all.len());
    let after = rest[0].seq;
    assert_eq!(
        s.audit_entries_except_statements(after, 1).await.unwrap()[..],
        expected[1..2]
            .iter()
            .map(|e| (*e).clone())
            .collect::<Vec<_>>()[..]
    );
}

/// A clock that steps back (or a replica whose clock is behind) never dates an entry before
/// the one it follows: the store dates it at the head's time instead.
async fn audit_time_never_goes_back(h: &Harness) {
    let s = &h.store;
    let late = t0() + Duration::seconds(10);
    let ev = |via: &str| AuditEvent::LoginSucceeded { via: via.into() };
    s.append_audit(ctx("a@x.io", late, vec![ev("late")]))
        .await
        .unwrap();
    s.append_audit(ctx("a@x.io", t0(), vec![ev("early"), ev("early2")]))
        .await
        .unwrap();
    let later = late + Duration::milliseconds(5);
    s.append_audit(ctx("a@x.io", later, vec![ev("later")]))
        .await
        .unwrap();
    let all = s.audit_entries(0, 10).await.unwrap();
    let ats: Vec<_> = all.iter().map(|e| e.at).collect();
    assert_eq!(ats, vec![late, late, late, later]);
    assert!(verify_chain(&all, None).is_ok());
}

async fn audit_chain_under_concurrency(h: &Harness) {
    let s = &h.store;
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let mut tasks = Vec::new();
    for t in 0..20 {
        let (s, b) = (s.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            for i in 0..5 {
                let at = t0() + Duration::milliseconds(t * 100 + i);
                let events = vec![
                    AuditEvent::LoginSucceeded {
                        via: format!("task{t}-{i}"),
                    },
                    AuditEvent::AccessDenied {
                        connection: "db".into(),
                        reason: format!("{t}/{i}"),
                    },
                ];
                s.append_audit(ctx(&format!("user{t}@x.io"), at, events))
                    .await?;
                if i == 2 {
                    // Mixed with other audited writes.
                    let u = user(&format!("user{t}@x.io"), &["eng"]);
                    s.upsert_user(&u, None, false, actx("user", "create", &u.email))
                        .await?;
                }
            }
            Ok::<_, StoreError>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().expect("concurrent writer");
    }
    s.append_audit(ctx("nobody", t0(), vec![])).await.unwrap();
    assert_eq!(verified_audit_len(s).await, 20 * 5 * 2 + 20);
    let page = s.audit_entries(50, 10).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (51..=60).collect::<Vec<_>>()
    );
    assert!(verify_chain(&page[1..], Some((page[0].seq, &page[0].hash))).is_ok());
    assert!(s.audit_entries(220, 10).await.unwrap().is_empty());
    assert!(s.audit_entries(0, 0).await.unwrap().is_empty());
}

async fn failed_writes_leave_no_audit_entry(h: &Harness) {
    let s = &h.store;
    let alice = user("alice@x.io", &["eng"]);
    s.upsert_user(&alice, None, false, actx("user", "create", "alice@x.io"))
        .await
        .unwrap();
    s.upsert_connection(
        &connection("db"),
        false,
        None,
        actx("connection", "create", "db"),
    )
    .await
    .unwrap();
    s.upsert_rule(
        &rule("guard", RuleType::Command, &["db"]),
        actx("rule", "create", "guard"),
    )
    .await
    .unwrap();
    let r = insert(s, &review("db", "alice@x.io", RuleType::Command, t0())).await;
    s.update_review(
        &approved(&r, "dana@x.io", t0()),
        approved_ctx(&r, "dana@x.io", t0()),
    )
    .await
    .unwrap();
    let before = verified_audit_len(s).await;

    let failures: Vec<(&str, Result<(), StoreError>)> = vec![
        (
            "duplicate user",
            s.upsert_user(&alice, None, false, actx("user", "create", "alice@x.io"))
                .await
                .map(drop),
        ),
        (
            "delete unknown user",
            s.delete_user("ghost@x.io", actx("user", "delete", "ghost"))
                .await,
        ),
        (
            "password of unknown user",
            s.set_password_hash("ghost@x.io", "h", actx("user", "pw", "ghost"))
                .await,
        ),
        (
            "revoke unknown token",
            s.revoke_token(Uuid::new_v4(), actx("token", "revoke", "?"))
                .await,
        ),
        (
            "duplicate connection",
            s.upsert_connection(&connection("db"), false, None, actx("c", "c", "db"))
                .await,
        ),
        (
            "delete bound connection",
            s.delete_connection("db", actx("connection", "delete", "db"))
                .await,
        ),
        (
            "delete unknown rule",
            s.delete_rule("ghost", actx("rule", "delete", "ghost"))
                .await,
        ),
        (
            "second binding",
            s.upsert_rule(
                &rule("other", RuleType::Command, &["db"]),
                actx("rule", "c", "other"),
            )
            .await,
        ),
        (
            "stale review update",
            s.update_review(
                &approved(&r, "erin@x.io", t0()),
                approved_ctx(&r, "erin@x.io", t0()),
            )
            .await
            .map(drop),
        ),
        (
            "duplicate review",
            s.insert_review(&r, requested(&r)).await.map(drop),
        ),
        (
            "unknown session",
            s.finish_session(
                &session(SessionKind::Exec, "a", "db", t0()),
                ctx("a", t0(), vec![admin_change("s", "s", "s")]),
            )
            .await,
        ),
        ("NUL in command", {
            let mut bad = review("db", "alice@x.io", RuleType::Command, t0());
            bad.command = Some("rm -rf /\0".into());
            s.insert_review(&bad, requested(&bad)).await.map(drop)
        }),
    ];
    for (what, res) in failures {
        assert!(res.is_err(), "{what}: expected an error");
        assert_eq!(
            verified_audit_len(s).await,
            before,
            "{what}: a failed write must not be audited"
        );
    }
}

/// Writes that arrive together share one commit (group commit): one of them failing, or being
/// dropped halfway by a caller that gave up, must take back only its own rows and audit entries.
async fn grouped_writes_fail_and_vanish_alone(h: &Harness) {
    let s = &h.store;
    s.upsert_connection(
        &connection("db"),
        false,
        None,
        actx("connection", "create", "db"),
    )
    .await
    .unwrap();
    s.upsert_rule(
        &rule("guard", RuleType::Command, &["db"]),
        actx("rule", "create", "guard"),
    )
    .await
    .unwrap();
    let alice = user("alice@x.io", &["eng"]);
    s.upsert_user(&alice, None, false, actx("user", "create", "alice@x.io"))
        .await
        .unwrap();
    let first = insert(s, &review("db", "alice@x.io", RuleType::Command, t0())).await;
    let before = verified_audit_len(s).await;
    let (writes_before, commits_before) = s.write_stats();
    let barrier = Arc::new(tokio::sync::Barrier::new(40));
    let mut tasks = Vec::new();
    for t in 0..40 {
        let (s, b, first) = (s.clone(), barrier.clone(), first.clone());
        tasks.push(tokio::spawn(async move {
            let mut half_ids = Vec::new();
            b.wait().await;
            for i in 0..3 {
                let email = format!("u{t}-{i}@x.io");
                // Rotated per task, so failing writes land among others' writes (in
                // lockstep, every failing write would start a group of its own).
                for step in 0..5 {
                    match (step + t) % 5 {
                        0 => {
                            let u = user(&email, &["eng"]);
                            s.upsert_user(&u, None, false, actx("user", "create", &email))
                                .await
                                .expect("a new user is saved");
                        }
                        1 => {
                            // alice exists: refused.
                            let dup = user("alice@x.io", &["eng"]);
                            let res = s
                                .upsert_user(
                                    &dup,
                                    None,
                                    false,
                                    actx("user", "create", "alice@x.io"),
                                )
                                .await;
                            assert!(matches!(res, Err(StoreError::Duplicate(_))), "{res:?}");
                        }
                        2 => {
                            // Fails after writing rows: the review row and its first decider
                            // are in, then a decider group with a NUL byte is refused.
                            let mut half = review("db", &email, RuleType::Command, t0());
                            half.policy.approval_groups = strings(&["dba", "s\0c"]);
                            assert!(s.insert_review(&half, requested(&half)).await.is_err());
                            half_ids.push(half.id);
                        }
                        3 => {
                            // Fails in the database (a duplicate key: on PostgreSQL this
                            // aborts the transaction until its savepoint is rolled back).
                            let res = s.insert_review(&first, requested(&first)).await;
                            assert!(matches!(res, Err(StoreError::Duplicate(_))), "{res:?}");
                        }
                        _ => {
                            let r = review("db", &email, RuleType::Command, t0());
                            s.insert_review(&r, requested(&r))
                                .await
                                .expect("a new review");
                        }
                    }
                }
            }
            half_ids
        }));
    }
    // Writers dropped at arbitrary points (a closed HTTP request drops its future).
    let mut dropped = Vec::new();
    for t in 0..40 {
        let s = s.clone();
        let email = format!("gone{t}@x.io");
        dropped.push(email.clone());
        let task = tokio::spawn(async move {
            let u = user(&email, &["eng"]);
            s.upsert_user(&u, None, false, actx("user", "create", &email))
                .await
        });
        for _ in 0..(t % 7) {
            tokio::task::yield_now().await;
        }
        task.abort();
    }
    let mut half_ids = Vec::new();
    for t in tasks {
        half_ids.extend(t.await.expect("writer task"));
    }
    // Writes still run after all that (a stuck group would hang here).
    s.append_audit(ctx("nobody", t0(), vec![admin_change("x", "y", "z")]))
        .await
        .expect("a write after the groups");
    let entries = all_audit(s).await;
    let created: BTreeSet<String> = entries
        .iter()
        .filter(|e| e.event["kind"] == "admin_change" && e.event["action"] == "create")
        .filter_map(|e| e.event["name"].as_str().map(str::to_string))
        .collect();
    // A dropped write is all or nothing: its user exists exactly when its entry does.
    let mut dropped_kept = 0;
    for email in &dropped {
        let exists = s.get_user(email).await.expect("read user").is_some();
        assert_eq!(
            exists,
            created.contains(email),
            "{email}: row and audit entry disagree"
        );
        dropped_kept += usize::from(exists);
    }
    for t in 0..40 {
        for i in 0..3 {
            let email = format!("u{t}-{i}@x.io");
            assert!(
                s.get_user(&email).await.expect("read user").is_some(),
                "{email}"
            );
            assert!(created.contains(&email), "{email} has no audit entry");
        }
    }
    for id in half_ids {
        assert!(
            s.get_review(id).await.expect("read review").is_none(),
            "half-written review {id} was kept"
        );
    }
    let (_, pending) = s
        .list_reviews(&ReviewFilter::default())
        .await
        .expect("list reviews");
    assert_eq!(pending, 1 + 40 * 3, "the first review and one per step 4");
    assert_eq!(
        verified_audit_len(s).await,
        before + 40 * 3 * 2 + dropped_kept + 1,
        "exactly the successful writes are in the chain"
    );
    let (writes, commits) = s.write_stats();
    let (writes, commits) = (writes - writes_before, commits - commits_before);
    assert!(writes > 40 * 3 * 2, "{writes} writes counted");
    assert!(
        commits < writes,
        "40 concurrent writers never shared a commit ({writes} writes, {commits} commits)"
    );
}

async fn audit_timeline_of_a_review(h: &Harness) {
    let s = &h.store;
    let r1 = insert(s, &review("db", "alice@x.io", RuleType::Command, t0())).await;
    let r2 = insert(s, &review("db", "bob@x.io", RuleType::Command, t0())).await;
    s.append_audit(ctx(
        "alice@x.io",
        t0(),
        vec![AuditEvent::LoginSucceeded { via: "web".into() }],
    ))
    .await
    .unwrap();
    let r1 = s
        .update_review(
            &approved(&r1, "dana@x.io", t0()),
            approved_ctx(&r1, "dana@x.io", t0()),
        )
        .await
        .unwrap();
    let session_id = Uuid::new_v4();
    let executed = AuditEvent::ReviewExecuted {
        review_id: r1.id,
        session_id,
        exit_code: 0,
        output_sha256: "00".repeat(32),
        duration_ms: 12,
    };
    let started = AuditEvent::SessionStarted {
        session_id,
        session_kind: "exec".into(),
        connection: "db".into(),
        review_id: Some(r1.id),
        command_sha256: None,
    };
    s.append_audit(ctx("system", t0(), vec![started.clone(), executed.clone()]))
        .await
        .unwrap();
    s.update_review(
        &Review {
            status: ReviewStatus::Rejected,
            ..r2.clone()
        },
        ctx("carol@x.io", t0(), vec![rejected_event(&r2, "carol@x.io")]),
    )
    .await
    .unwrap();

    let timeline = s.audit_for_review(r1.id).await.unwrap();
    let kinds: Vec<String> = timeline
        .iter()
        .map(|e| {
            serde_json::from_value::<AuditEvent>(e.event.clone())
                .expect("typed")
                .kind()
        })
        .collect();
    assert_eq!(
        kinds,
        strings(&[
            "review_requested",
            "review_approved",
            "session_started",
            "review_executed"
        ])
    );
    assert!(timeline.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(s.audit_for_review(r2.id).await.unwrap().len(), 2);
    assert!(s.audit_for_review(Uuid::new_v4()).await.unwrap().is_empty());
}

async fn timestamps_are_truncated_to_milliseconds(h: &Harness) {
    let s = &h.store;
    let precise = OffsetDateTime::from_unix_timestamp_nanos(1_750_000_000_123_456_789).unwrap();
    let r = review("db", "alice@x.io", RuleType::Jit, precise);
    let stored = s
        .insert_review(&r, ctx("alice@x.io", precise, vec![]))
        .await
        .unwrap();
    let expected = Review {
        created_at: truncate_ms(r.created_at),
        expires_at: truncate_ms(r.expires_at),
        ..r.clone()
    };
    assert_eq!(stored, expected);
    assert_eq!(stored.created_at.nanosecond(), 123_000_000);
    assert_eq!(s.get_review(r.id).await.unwrap(), Some(expected));

    s.append_audit(ctx(
        "alice@x.io",
        precise,
        vec![AuditEvent::LoginSucceeded { via: "api".into() }],
    ))
    .await
    .unwrap();
    let entries = all_audit(s).await;
    assert_eq!(entries.last().unwrap().at, truncate_ms(precise));
    verified_audit_len(s).await;
}

// ---- backend-specific ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_in_memory_works_with_one_connection() {
    let s = Store::connect("sqlite::memory:")
        .await
        .expect("in-memory store");
    assert_eq!(s.backend_name(), "sqlite");
    let mut tasks = Vec::new();
    for t in 0..10 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let u = user(&format!("u{t}@x.io"), &["eng"]);
            s.upsert_user(&u, None, false, actx("user", "create", &u.email))
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().expect("write");
    }
    assert_eq!(s.count_users().await.unwrap(), 10);
    assert_eq!(verified_audit_len(&s).await, 10);
}

#[tokio::test]
async fn unsupported_url_is_refused() {
    let res = Store::connect("mysql://root@localhost/warden").await;
    assert!(
        matches!(res, Err(StoreError::Invalid(ref m)) if m.contains("sqlite://")),
        "got {res:?}"
    );
}

#[tokio::test]
async fn unreachable_postgres_fails_with_context_and_no_password() {
    let res = Store::connect("postgres://u:hunter2@127.0.0.1:1/warden?connect_timeout=2").await;
    let msg = res.expect_err("nothing listens on port 1").to_string();
    assert!(msg.contains("127.0.0.1:1"), "{msg}");
    assert!(
        !msg.contains("hunter2"),
        "the password must never appear: {msg}"
    );
}

#[test]
fn test_database_url_is_derived_from_the_admin_url() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h/postgres?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(
        with_database("postgres://h:5432", "x"),
        "postgres://h:5432/x"
    );
}
