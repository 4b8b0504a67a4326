//! The JSON API against a real gateway on SQLite and PostgreSQL: authentication, authorization
//! denials, identities, connections (secrets never returned), rules, and bad input that changes
//! nothing.

use serde_json::{Value, json};
use warden_gateway::on_both_stores;
use warden_gateway::testing::{Backend, TestGateway};

on_both_stores!(
    authentication_and_admin_only_endpoints,
    tokens_expire_and_revoke,
    connections_keep_secrets_secret,
    rules_are_validated_and_nothing_is_written_on_error,
    bad_input_gets_clear_errors,
    admin_changes_are_audited_and_chain_verifies,
    passwords_in_url_query_strings_are_redacted,
);

async fn authentication_and_admin_only_endpoints(b: Backend) {
    let gw = TestGateway::spawn(b).await;
    let (s, body) = gw.call("GET", "/api/health", None, None).await;
    assert_eq!(s, 200, "{body}");
    let (s, doc) = gw.call("GET", "/api/openapi.json", None, None).await;
    assert_eq!((s, doc["openapi"].as_str()), (200, Some("3.1.0")));
    assert!(doc["paths"]["/api/reviews/{id}/approve"]["put"].is_object());
    // no token, garbage token, unknown token
    assert_eq!(gw.call("GET", "/api/me", None, None).await.0, 401);
    assert_eq!(gw.call("GET", "/api/me", Some("nope"), None).await.0, 401);
    let (s, body) = gw
        .call(
            "GET",
            "/api/me",
            Some("wdn_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            None,
        )
        .await;
    assert_eq!(s, 401);
    assert_eq!(body["code"], "unauthorized");
    // wrong password
    let (s, _) = gw
        .call(
            "POST",
            "/api/login",
            None,
            Some(json!({"email": "admin@warden.test", "password": "wrong"})),
        )
        .await;
    assert_eq!(s, 401);
    // a plain user is refused admin endpoints with 403
    let dev = gw.user("dev@example.com", &["dev"]).await;
    for (m, p, body) in [
        ("GET", "/api/users", None),
        ("POST", "/api/users", Some(json!({"email": "x@y.z"}))),
        ("DELETE", "/api/users/admin@warden.test", None),
        ("GET", "/api/groups", None),
        (
            "POST",
            "/api/connections",
            Some(json!({"name": "c", "type": "command", "command": ["true"]})),
        ),
        ("DELETE", "/api/connections/c", None),
        (
            "POST",
            "/api/rules",
            Some(
                json!({"name": "r", "type": "command", "connections": ["c"], "approval_groups": ["g"]}),
            ),
        ),
        ("GET", "/api/audit", None),
        ("GET", "/api/audit/verify", None),
        ("GET", "/metrics", None),
    ] {
        let (s, body) = gw.call(m, p, Some(&dev), body).await;
        assert_eq!(s, 403, "{m} {p} as non-admin: {body}");
        assert_eq!(body["code"], "forbidden");
    }
    // a user may create a token for themselves but not for others
    let (s, _) = gw
        .call(
            "POST",
            "/api/tokens",
            Some(&dev),
            Some(json!({"name": "mine"})),
        )
        .await;
    assert_eq!(s, 201);
    let (s, _) = gw
        .call(
            "POST",
            "/api/tokens",
            Some(&dev),
            Some(json!({"user": "admin@warden.test"})),
        )
        .await;
    assert_eq!(s, 403);
    // the admin sees users and groups
    let (s, users) = gw.admin("GET", "/api/users", None).await;
    assert_eq!(s, 200);
    assert_eq!(users.as_array().map(Vec::len), Some(2));
    let (_, groups) = gw.admin("GET", "/api/groups", None).await;
    assert!(
        groups
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "dev" && g["members"][0] == "dev@example.com"),
        "{groups}"
    );
    // login with password for a created user
    let (s, _) = gw
        .admin(
            "POST",
            "/api/users",
            Some(json!({"email": "pw@example.com", "password": "longenough1"})),
        )
        .await;
    assert_eq!(s, 201);
    let (s, body) = gw
        .call(
            "POST",
            "/api/login",
            None,
            Some(json!({"email": "pw@example.com", "password": "longenough1"})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let t = body["token"].as_str().unwrap();
    assert_eq!(
        gw.call("GET", "/api/me", Some(t), None).await.1["email"],
        "pw@example.com"
    );
    gw.stop().await;
}

async fn tokens_expire_and_revoke(b: Backend) {
    let gw = TestGateway::spawn(b).await;
    gw.user("dev@example.com", &["dev"]).await;
    let (_, t) = gw
        .admin(
            "POST",
            "/api/tokens",
            Some(json!({"user": "dev@example.com", "expires_in": 1})),
        )
        .await;
    let short = t["token"].as_str().unwrap().to_string();
    assert_eq!(gw.call("GET", "/api/me", Some(&short), None).await.0, 200);
    gw.clock().advance(2);
    assert_eq!(
        gw.call("GET", "/api/me", Some(&short), None).await.0,
        401,
        "expired token refused"
    );
    let (_, t) = gw
        .admin(
            "POST",
            "/api/tokens",
            Some(json!({"user": "dev@example.com", "name": "long"})),
        )
        .await;
    let long = t["token"].as_str().unwrap().to_string();
    let (_, list) = gw
        .admin("GET", "/api/tokens?user=dev@example.com", None)
        .await;
    assert!(
        list.to_string().find(&long).is_none(),
        "token plaintext never listed"
    );
    let id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "long")
        .unwrap_or_else(|| panic!("{list}"))["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        gw.admin("DELETE", &format!("/api/tokens/{id}"), None)
            .await
            .0,
        204
    );
    assert_eq!(
        gw.call("GET", "/api/me", Some(&long), None).await.0,
        401,
        "revoked token refused"
    );
    // deleting a user kills their tokens
    let dev2 = gw.user("dev2@example.com", &[]).await;
    assert_eq!(
        gw.admin("DELETE", "/api/users/dev2@example.com", None)
            .await
            .0,
        204
    );
    assert_eq!(gw.call("GET", "/api/me", Some(&dev2), None).await.0, 401);
    gw.stop().await;
}

async fn connections_keep_secrets_secret(b: Backend) {
    let gw = TestGateway::spawn(b).await;
    let (s, body) = gw
        .admin("POST", "/api/connections", Some(json!({
            "name": "pg", "type": "postgres", "url": "postgres://app:hunter2-secret@127.0.0.1:5432/test",
            "access_groups": ["dev"], "reviewers": ["dba", "security"]
        })))
        .await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(
        body["url_redacted"],
        "postgres://app:***@127.0.0.1:5432/test"
    );
    let (s, body) = gw
        .admin("POST", "/api/connections", Some(json!({
            "name": "sh", "type": "command", "command": ["sh", "-c", "echo $API_KEY"], "env": ["API_KEY=top-secret-value"]
        })))
        .await;
    assert_eq!(s, 201, "{body}");
    // duplicate without overwrite → 409, nothing changed
    let (s, body) = gw
        .admin(
            "POST",
            "/api/connections",
            Some(json!({"name": "sh", "type": "command", "command": ["true"]})),
        )
        .await;
    assert_eq!(s, 409, "{body}");
    assert_eq!(body["code"], "duplicate");
    // overwrite keeps secrets when not re-given
    let (s, _) = gw.admin("POST", "/api/connections", Some(json!({"name": "sh", "type": "command", "command": ["sh", "-c", "echo $API_KEY"], "overwrite": true}))).await;
    assert_eq!(s, 201);
    // the --reviewers shorthand made a command rule requiring both groups
    let (_, rule) = gw.admin("GET", "/api/rules/pg", None).await;
    assert_eq!(rule["approval_groups"], json!(["dba", "security"]));
    assert_eq!(rule["require_all_groups"], true);
    // secrets never come back: list, get, audit
    let (_, list) = gw.admin("GET", "/api/connections", None).await;
    let (_, one) = gw.admin("GET", "/api/connections/sh", None).await;
    let (_, audit) = gw.admin("GET", "/api/audit?limit=1000", None).await;
    for text in [list.to_string(), one.to_string(), audit.to_string()] {
        assert!(
            !text.contains("hunter2-secret") && !text.contains("top-secret-value"),
            "secret leaked: {text}"
        );
    }
    assert_eq!(one["env_keys"], json!(["API_KEY"]));
    // the secret still works: exec as admin (auto-approved under no rule)
    let (s, r) = gw
        .admin(
            "POST",
            "/api/exec",
            Some(json!({"connection": "sh", "command": ""})),
        )
        .await;
    assert_eq!(s, 400, "empty command refused: {r}");
    let (s, r) = gw
        .admin(
            "POST",
            "/api/exec",
            Some(json!({"connection": "sh", "command": "x"})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    // ... and its value never surfaces: masked in the output, so nowhere downstream either.
    assert_eq!(r["session"]["output"], "[redacted]\n");
    let (_, export) = gw.admin("GET", "/api/audit/export?since=1d", None).await;
    let (_, sessions) = gw.admin("GET", "/api/sessions", None).await;
    for text in [export.to_string(), sessions.to_string(), r.to_string()] {
        assert!(!text.contains("top-secret-value"), "secret leaked: {text}");
    }
    // the raw store holds ciphertext only
    if b == Backend::Sqlite {
        let raw = std::fs::read(gw.dir.path().join("warden.db")).unwrap();
        let hay = String::from_utf8_lossy(&raw);
        assert!(
            !hay.contains("hunter2-secret") && !hay.contains("top-secret-value"),
            "secret stored in clear"
        );
    }
    // a non-member of the access groups does not see the connection
    let other = gw.user("other@example.com", &["sales"]).await;
    assert_eq!(
        gw.call("GET", "/api/connections/pg", Some(&other), None)
            .await
            .0,
        404
    );
    let (s, body) = gw
        .call(
            "POST",
            "/api/exec",
            Some(&other),
            Some(json!({"connection": "pg", "command": "select 1"})),
        )
        .await;
    assert_eq!(s, 403, "{body}");
    // deleting a connection bound by a rule is refused, then allowed after the rule goes
    let (s, body) = gw.admin("DELETE", "/api/connections/pg", None).await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(gw.admin("DELETE", "/api/rules/pg", None).await.0, 204);
    assert_eq!(gw.admin("DELETE", "/api/connections/pg", None).await.0, 204);
    assert_eq!(gw.admin("GET", "/api/connections/pg", None).await.0, 404);
    gw.stop().await;
}

async fn rules_are_validated_and_nothing_is_written_on_error(b: Backend) {
    let gw = TestGateway::spawn(b).await;
    gw.command_connection("c1", &["cat"], &[]).await;
    gw.command_connection("c2", &["cat"], &[]).await;
    let good = json!({"name": "prod", "type": "command", "connections": ["c1"], "approval_groups": ["dba"], "approval_amount": 2, "timeout_sec": 600});
    let (s, body) = gw.admin("POST", "/api/rules", Some(good.clone())).await;
    assert_eq!(s, 201, "{body}");
    // Nobody is in dba yet: accepted, and said.
    let warnings = body["warnings"].to_string();
    assert!(
        warnings.contains("approval group dba of rule prod has no members"),
        "{body}"
    );
    gw.user("dana@example.com", &["dba"]).await;
    let (s, body) = gw.admin("PUT", "/api/rules/prod", Some(good.clone())).await;
    assert_eq!(s, 200, "{body}");
    assert!(body.get("warnings").is_none(), "{body}");
    let cases = [
        (
            json!({"name": "x", "type": "command", "connections": ["nope"], "approval_groups": ["dba"]}),
            "unknown connection",
        ),
        (
            json!({"name": "x", "type": "command", "connections": ["c2"], "approval_groups": []}),
            "approval group",
        ),
        (
            json!({"name": "x", "type": "command", "connections": ["c2"], "approval_groups": ["a"], "approval_amount": 0}),
            "at least 1",
        ),
        (
            json!({"name": "x", "type": "command", "connections": ["c1"], "approval_groups": ["a"]}),
            "already has a command rule",
        ),
        (
            json!({"name": "prod", "type": "jit", "connections": ["c2"], "approval_groups": ["a"]}),
            "already exists",
        ),
        (
            json!({"name": "x", "type": "command", "connections": ["c2"], "approval_groups": ["a"], "bogus": 1}),
            "unknown field",
        ),
        (
            json!({"name": "x".repeat(300), "type": "command", "connections": ["c2"], "approval_groups": ["a"]}),
            "name",
        ),
    ];
    for (body, expect) in cases {
        let (s, resp) = gw.admin("POST", "/api/rules", Some(body.clone())).await;
        assert_eq!(s, 400, "{body} → {resp}");
        assert!(
            resp["error"].as_str().unwrap().contains(expect),
            "{resp} should mention {expect}"
        );
        assert!(resp["code"].is_string());
    }
    let (_, rules) = gw.admin("GET", "/api/rules", None).await;
    assert_eq!(
        rules.as_array().unwrap().len(),
        1,
        "nothing written: {rules}"
    );
    // a jit rule on the same connection is fine; update and delete work
    let (s, _) = gw.admin("POST", "/api/rules", Some(json!({"name": "win", "type": "jit", "connections": ["c1"], "approval_groups": ["dba"], "max_duration_sec": 3600}))).await;
    assert_eq!(s, 201);
    let mut upd = good.clone();
    upd["approval_amount"] = json!(1);
    upd["connections"] = json!(["c1", "c2"]);
    let (s, body) = gw.admin("PUT", "/api/rules/prod", Some(upd)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["approval_amount"], 1);
    assert_eq!(
        gw.admin("PUT", "/api/rules/missing", Some(good)).await.0,
        404
    );
    assert_eq!(gw.admin("DELETE", "/api/rules/win", None).await.0, 204);
    assert_eq!(gw.admin("DELETE", "/api/rules/win", None).await.0, 404);
    gw.stop().await;
}

async fn bad_input_gets_clear_errors(b: Backend) {
    let gw = TestGateway::spawn(b).await;
    let raw = reqwest::Client::new();
    // malformed JSON
    let resp = raw
        .post(format!("{}/api/users", gw.base))
        .bearer_auth(&gw.admin_token)
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "bad_json");
    // unknown fields, wrong types
    let (s, body) = gw
        .admin(
            "POST",
            "/api/users",
            Some(json!({"email": "a@b.c", "role": "root"})),
        )
        .await;
    assert_eq!(
        (s, body["code"].as_str()),
        (400, Some("invalid_fields")),
        "{body}"
    );
    let (s, _) = gw
        .admin("POST", "/api/users", Some(json!({"email": 5})))
        .await;
    assert_eq!(s, 400);
    // invalid values
    for email in [
        "not-an-email",
        "<script>@x.y",
        &format!("{}@x.y", "a".repeat(300)),
    ] {
        let (s, body) = gw
            .admin("POST", "/api/users", Some(json!({"email": email})))
            .await;
        assert_eq!(s, 400, "{email}: {body}");
    }
    let (s, _) = gw
        .admin(
            "POST",
            "/api/users",
            Some(json!({"email": "g@x.y", "groups": ["bad group"]})),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = gw
        .admin(
            "POST",
            "/api/users",
            Some(json!({"email": "p@x.y", "password": "short"})),
        )
        .await;
    assert_eq!(s, 400);
    // duplicates
    assert_eq!(
        gw.admin("POST", "/api/users", Some(json!({"email": "d@x.y"})))
            .await
            .0,
        201
    );
    let (s, body) = gw
        .admin("POST", "/api/users", Some(json!({"email": "D@x.y"})))
        .await;
    assert_eq!(
        (s, body["code"].as_str()),
        (409, Some("duplicate")),
        "{body}"
    );
    // unknown ids and malformed ids
    assert_eq!(
        gw.admin(
            "GET",
            "/api/reviews/00000000-0000-0000-0000-000000000000",
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(
        gw.admin("GET", "/api/reviews/not-a-uuid", None).await.0,
        400
    );
    assert_eq!(
        gw.admin(
            "PUT",
            "/api/reviews/00000000-0000-0000-0000-000000000000/approve",
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(
        gw.admin("DELETE", "/api/users/ghost@x.y", None).await.0,
        404
    );
    assert_eq!(gw.admin("GET", "/api/nope", None).await.0, 404);
    // connection validation
    for bad in [
        json!({"name": "a b", "type": "command", "command": ["true"]}),
        json!({"name": "x", "type": "oracle", "url": "oracle://h"}),
        json!({"name": "x", "type": "postgres"}),
        json!({"name": "x", "type": "postgres", "url": "mysql://h/db"}),
        json!({"name": "x", "type": "sqlite", "url": "sqlite://relative.db"}),
        json!({"name": "x", "type": "command"}),
        json!({"name": "x", "type": "command", "command": ["true"], "env": ["NOEQUALS"]}),
        json!({"name": "x", "type": "command", "command": ["true"], "env": ["1BAD=x"]}),
    ] {
        let (s, body) = gw
            .admin("POST", "/api/connections", Some(bad.clone()))
            .await;
        assert_eq!(s, 400, "{bad} → {body}");
    }
    let (_, list) = gw.admin("GET", "/api/connections", None).await;
    assert_eq!(list, json!([]), "nothing partially written");
    // oversized command
    gw.command_connection("cat", &["cat"], &[]).await;
    let (s, body) = gw
        .admin(
            "POST",
            "/api/exec",
            Some(json!({"connection": "cat", "command": "x".repeat(300 * 1024)})),
        )
        .await;
    assert_eq!(s, 400, "{body}");
    let (s, _) = gw
        .admin(
            "POST",
            "/api/exec",
            Some(json!({"connection": "ghost", "command": "x"})),
        )
        .await;
    assert_eq!(s, 404);
    gw.stop().await;
}

async fn admin_changes_are_audited_and_chain_verifies(b: Backend) {
    let gw = TestGateway::spawn(b).await;
    gw.user("dev@example.com", &["dev"]).await;
    gw.command_connection("c", &["cat"], &["dba"]).await;
    let (s, _) = gw
        .admin(
            "POST",
            "/api/login",
            Some(json!({"email": "admin@warden.test", "password": "bad"})),
        )
        .await;
    assert_eq!(s, 401);
    let (_, entries) = gw.admin("GET", "/api/audit?limit=1000", None).await;
    let kinds: Vec<String> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["event"]["kind"].as_str().unwrap_or(""),
                e["event"]["entity"].as_str().unwrap_or("")
            )
        })
        .collect();
    for expected in [
        "admin_change:user",
        "token_created:",
        "admin_change:connection",
        "admin_change:rule",
        "login_failed:",
        "login_succeeded:",
    ] {
        assert!(
            kinds.iter().any(|k| k == expected),
            "missing {expected} in {kinds:?}"
        );
    }
    let (s, report) = gw.admin("GET", "/api/audit/verify", None).await;
    assert_eq!(s, 200, "{report}");
    assert_eq!(report["ok"], true);
    gw.stop().await;
}

/// Issue 15: a password in the URL's query string is secret like one in its userinfo.
async fn passwords_in_url_query_strings_are_redacted(b: Backend) {
    let gw = TestGateway::spawn(b).await;
    let url = "postgres://app@127.0.0.1:5432/test?sslmode=prefer&password=hunter2-q&sslpassword=k3y-pass&application_name=warden";
    let (s, body) = gw
        .admin(
            "POST",
            "/api/connections",
            Some(json!({"name": "pgq", "type": "postgres", "url": url})),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(
        body["url_redacted"],
        "postgres://app@127.0.0.1:5432/test?sslmode=prefer&password=***&sslpassword=***&application_name=warden"
    );
    let (_, list) = gw.admin("GET", "/api/connections", None).await;
    let (_, one) = gw.admin("GET", "/api/connections/pgq", None).await;
    let (_, audit) = gw.admin("GET", "/api/audit?limit=1000", None).await;
    for text in [
        body.to_string(),
        list.to_string(),
        one.to_string(),
        audit.to_string(),
    ] {
        assert!(!text.contains("hunter2-q"), "password leaked: {text}");
        assert!(!text.contains("k3y-pass"), "sslpassword leaked: {text}");
    }
    gw.stop().await;
}

/// `POST /api/login` from a given local address (the loopback network is all of 127/8).
async fn login_from(gw: &TestGateway, from: [u8; 4], email: &str, password: &str) -> u16 {
    let http = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(from))
        .build()
        .expect("http client");
    http.post(format!("{}/api/login", gw.base))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("login request")
        .status()
        .as_u16()
}

/// Password logins are limited per user at an address, per user and per address (as the
/// proxy's are): an attacker at one address guessing the admin's password cannot lock the
/// admin out everywhere (the limiter once keyed on the email alone), nor everyone behind a
/// shared address; spraying many accounts from one address is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_limits_key_on_user_and_address() {
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    let admin = warden_gateway::testing::ADMIN_EMAIL;
    let good = warden_gateway::testing::ADMIN_PASSWORD;
    let (s, b) = gw
        .admin(
            "POST",
            "/api/users",
            Some(json!({"email": "dev@example.com", "groups": ["dev"], "password": "dev-password-1"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let attacker = [127, 0, 0, 2];
    for _ in 0..5 {
        assert_eq!(login_from(&gw, attacker, admin, "guess").await, 401);
    }
    // That user at that address: refused even with the right password.
    assert_eq!(login_from(&gw, attacker, admin, good).await, 429);
    // The same user elsewhere, and another user at the same address, log in.
    assert_eq!(login_from(&gw, [127, 0, 0, 1], admin, good).await, 200);
    assert_eq!(
        login_from(&gw, attacker, "dev@example.com", "dev-password-1").await,
        200
    );
    // Spraying: 100 failures over many accounts from one address stop that address.
    let sprayer = [127, 0, 0, 3];
    for i in 0..100 {
        let s = login_from(&gw, sprayer, &format!("u{i}@example.com"), "guess").await;
        assert_eq!(s, 401, "attempt {i}");
    }
    assert_eq!(
        login_from(&gw, sprayer, "dev@example.com", "dev-password-1").await,
        429
    );
    assert_eq!(
        login_from(&gw, [127, 0, 0, 4], "dev@example.com", "dev-password-1").await,
        200
    );
    gw.stop().await;
}

/// `dev` holds one command on a command connection `box` that `dba` reviews: one pending review.
async fn hold_a_command(gw: &TestGateway, dev: &str) {
    gw.user("dba@example.com", &["dba"]).await;
    gw.command_connection("box", &["cat"], &["dba"]).await;
    let (s, b) = gw
        .call(
            "POST",
            "/api/exec",
            Some(dev),
            Some(json!({"connection": "box", "command": "hello"})),
        )
        .await;
    assert_eq!(s, 202, "{b}");
}

/// The API reads a review filter exactly as the web list does (one parser): values trimmed,
/// status case-insensitive, the requester's email in any case. The API once matched the
/// requester byte for byte, so `--requester Dev@Example.com` listed nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_filters_read_the_same_everywhere() {
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    let dev = gw.user("dev@example.com", &["dev"]).await;
    hold_a_command(&gw, &dev).await;
    for query in [
        "requester=Dev@Example.com",
        "requester=%20dev@example.com%20&status=%20Pending%20",
        "status=PENDING&type=Command&connection=%20box",
    ] {
        let (s, list) = gw
            .admin("GET", &format!("/api/reviews?{query}"), None)
            .await;
        assert_eq!(s, 200, "{query}: {list}");
        assert_eq!(list.as_array().map(Vec::len), Some(1), "{query}: {list}");
    }
    let (s, body) = gw.admin("GET", "/api/reviews?status=pendng", None).await;
    assert_eq!(s, 400, "{body}");
    assert!(body.to_string().contains("use pending"), "{body}");
    gw.stop().await;
}

/// `/metrics` is for admins: the store's group commit (writes ≥ commits), the pending reviews
/// (counted by the store, as the lists are), HELP and TYPE lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_store_group_commit() {
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    let dev = gw.user("dev@example.com", &["dev"]).await;
    assert_eq!(gw.call("GET", "/metrics", Some(&dev), None).await.0, 403);
    // One held command: one pending review; one more, decided.
    hold_a_command(&gw, &dev).await;
    let decided = gw.held(&dev, "box", "bye").await;
    let dba = gw.user("dba2@example.com", &["dba"]).await;
    gw.reject(&dba, &decided, "not today").await;
    let body = reqwest::Client::new()
        .get(format!("{}/metrics", gw.base))
        .bearer_auth(&gw.admin_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing from:\n{body}"))
            .trim()
            .parse()
            .unwrap()
    };
    let (writes, commits) = (value("warden_store_writes"), value("warden_store_commits"));
    assert!(body.contains("# HELP warden_store_commits "), "{body}");
    assert_eq!(value("warden_reviews_pending"), 1.0, "{body}");
    assert!(body.contains("# TYPE warden_store_commits gauge"), "{body}");
    // The time to decision is a histogram by outcome (other tests in this process add theirs).
    assert!(
        body.contains("# TYPE warden_review_decision_seconds histogram"),
        "{body}"
    );
    assert!(
        body.contains("warden_review_decision_seconds_bucket{outcome=\"rejected\",le=\"1\"}"),
        "{body}"
    );
    assert!(
        commits >= 1.0 && writes >= commits,
        "{writes} writes, {commits} commits"
    );
    gw.stop().await;
}

/// `POST /api/connections/{name}/test`: a reachable database answers, an unreachable one says
/// why without its password, a command's program is looked up and never run, an engineer is
/// refused, and every test is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_tests_say_what_to_fix() {
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    let dev = gw.user("dev@example.com", &["dev"]).await;
    let secret = "Sup3rS3cretPw";
    for (name, body) in [
        (
            "pg",
            json!({"name": "pg", "type": "postgres", "url": "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"}),
        ),
        (
            "down",
            json!({"name": "down", "type": "postgres", "url": format!("postgres://postgres:{secret}@127.0.0.1:1/test")}),
        ),
        (
            "tool",
            json!({"name": "tool", "type": "command", "command": ["sh", "-c", "touch /tmp/warden-never-run"]}),
        ),
        (
            "nope",
            json!({"name": "nope", "type": "command", "command": ["no-such-program-wx"]}),
        ),
    ] {
        let (s, b) = gw.admin("POST", "/api/connections", Some(body)).await;
        assert_eq!(s, 201, "{name}: {b}");
    }
    let gw_ = &gw;
    let test = move |name: &'static str| async move {
        gw_.admin("POST", &format!("/api/connections/{name}/test"), None)
            .await
    };
    let (s, t) = test("pg").await;
    assert_eq!((s, t["ok"].as_bool()), (200, Some(true)), "{t}");
    let (s, t) = test("down").await;
    assert_eq!((s, t["ok"].as_bool()), (200, Some(false)), "{t}");
    let msg = t["message"].as_str().unwrap();
    assert!(msg.to_lowercase().contains("refused"), "says why: {msg}");
    assert!(
        !msg.contains(secret) && !msg.contains("postgres://"),
        "no secret: {msg}"
    );
    let _ = std::fs::remove_file("/tmp/warden-never-run");
    let (_, t) = test("tool").await;
    assert_eq!(t["ok"], true, "{t}");
    assert!(
        !std::path::Path::new("/tmp/warden-never-run").exists(),
        "the command ran"
    );
    let (_, t) = test("nope").await;
    assert_eq!(t["ok"], false, "{t}");
    assert!(
        t["message"]
            .as_str()
            .unwrap()
            .contains("no-such-program-wx"),
        "{t}"
    );
    let (s, _) = gw
        .call("POST", "/api/connections/pg/test", Some(&dev), None)
        .await;
    assert_eq!(s, 403, "engineers cannot probe targets");
    let (s, _) = test("missing").await;
    assert_eq!(s, 404);
    let (_, audit) = gw.admin("GET", "/api/audit?limit=1000", None).await;
    let tests = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"]["kind"] == "admin_change" && e["event"]["action"] == "test")
        .count();
    assert_eq!(tests, 4, "each test is audited");
    gw.stop().await;
}

/// A mistyped connection name gets the closest name the caller may use, and never the name
/// of one they may not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_connections_suggest_only_what_the_caller_may_use() {
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    let dev = gw.user("dev@example.com", &["dev"]).await;
    for (name, group) in [("prod-db", "dev"), ("payroll-db", "hr")] {
        let (s, b) = gw
            .admin(
                "POST",
                "/api/connections",
                Some(json!({"name": name, "type": "command", "command": ["cat"], "access_groups": [group]})),
            )
            .await;
        assert_eq!(s, 201, "{b}");
    }
    let (s, b) = gw.exec(&dev, "prod-bd", "hi").await;
    assert_eq!(s, 404, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("did you mean \"prod-db\"?"),
        "{b}"
    );
    let (s, b) = gw.exec(&dev, "payroll-bd", "hi").await;
    assert_eq!(s, 404, "{b}");
    assert!(
        !b["error"].as_str().unwrap().contains("payroll-db"),
        "leaks a name: {b}"
    );
    let (s, b) = gw
        .call(
            "POST",
            "/api/access-requests",
            Some(&dev),
            Some(json!({"connection": "Prod-DB", "duration": "1h"})),
        )
        .await;
    assert_eq!(s, 404, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("did you mean \"prod-db\"?"),
        "{b}"
    );
    gw.stop().await;
}
