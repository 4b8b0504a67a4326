//! Audit evidence on SQLite and PostgreSQL: tampering (altered, deleted, reordered, truncated)
//! is caught and the first bad entry named; two gateway replicas on one PostgreSQL share one
//! chain; exports re-verify offline; signed checkpoints expose a consistently rewritten chain;
//! retention prunes outputs without breaking the chain; one review exported alone verifies with
//! Merkle inclusion proofs and the public key; a witness holding the checkpoints catches the
//! store and the local checkpoint file rewritten together.

mod notify_support;

use serde_json::{Value, json};
use sqlx::Connection;
use warden_gateway::on_both_stores;
use warden_gateway::testing::{Backend, TestGateway};

on_both_stores!(
    tampering_is_caught,
    edited_rows_are_named,
    exports_reverify_offline,
    checkpoints_expose_a_rewritten_chain,
    retention_keeps_the_chain,
    one_review_verifies_alone,
    the_witness_catches_store_and_file_rewritten_together,
    the_siem_stream_is_ocsf_resumable_and_follows,
);

/// Runs raw SQL against the gateway's store, bypassing the append-only triggers (an attacker
/// with database access).
async fn tamper(gw: &TestGateway, b: Backend, statements: &[&str]) {
    let url = gw.config.database_url.expose().clone();
    match b {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
            for s in [
                "DROP TRIGGER IF EXISTS audit_log_no_update",
                "DROP TRIGGER IF EXISTS audit_log_no_delete",
            ]
            .iter()
            .chain(statements)
            {
                sqlx::query(s)
                    .execute(&mut c)
                    .await
                    .unwrap_or_else(|e| panic!("{s}: {e}"));
            }
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            for s in ["DROP TRIGGER IF EXISTS audit_log_no_update_delete ON audit_log"]
                .iter()
                .chain(statements)
            {
                sqlx::query(s)
                    .execute(&mut c)
                    .await
                    .unwrap_or_else(|e| panic!("{s}: {e}"));
            }
        }
    }
}

async fn activity(gw: &TestGateway) -> (String, String) {
    let dev = gw.user("dev@example.com", &["dev"]).await;
    let dba = gw.user("dba@example.com", &["dba"]).await;
    gw.command_connection("c", &["cat"], &["dba"]).await;
    for (i, approve) in [(1, true), (2, false), (3, true)] {
        let (_, r) = gw
            .call(
                "POST",
                "/api/exec",
                Some(&dev),
                Some(json!({"connection": "c", "command": format!("=cmd {i}, \"quoted\"")})),
            )
            .await;
        let id = r["review"]["id"].as_str().unwrap().to_string();
        if approve {
            gw.decide(&dba, &id, "approve", Some(json!({"reason": "ok"})))
                .await;
        } else {
            gw.decide(&dba, &id, "reject", Some(json!({"reason": "no"})))
                .await;
        }
        gw.call(
            "GET",
            &format!("/api/reviews/{id}/wait?timeout=10"),
            Some(&dev),
            None,
        )
        .await;
    }
    (dev, dba)
}

async fn verify(gw: &TestGateway) -> (u16, Value) {
    gw.admin("GET", "/api/audit/verify", None).await
}

async fn tampering_is_caught(b: Backend) {
    // altered content
    let gw = TestGateway::spawn(b).await;
    activity(&gw).await;
    assert_eq!(verify(&gw).await.1["ok"], true);
    tamper(
        &gw,
        b,
        &["UPDATE audit_log SET actor = 'someone-else@example.com' WHERE seq = 5"],
    )
    .await;
    let (s, r) = verify(&gw).await;
    assert_eq!((s, r["first_bad_seq"].as_i64()), (409, Some(5)), "{r}");
    assert!(r["error"].as_str().unwrap().contains("altered"), "{r}");
    gw.stop().await;
    // deleted entry
    let gw = TestGateway::spawn(b).await;
    activity(&gw).await;
    tamper(&gw, b, &["DELETE FROM audit_log WHERE seq = 7"]).await;
    let (s, r) = verify(&gw).await;
    assert_eq!((s, r["first_bad_seq"].as_i64()), (409, Some(8)), "{r}");
    gw.stop().await;
    // reordered entries
    let gw = TestGateway::spawn(b).await;
    activity(&gw).await;
    tamper(
        &gw,
        b,
        &[
            "UPDATE audit_log SET seq = -1 WHERE seq = 9",
            "UPDATE audit_log SET seq = 9 WHERE seq = 10",
            "UPDATE audit_log SET seq = 10 WHERE seq = -1",
        ],
    )
    .await;
    let (s, r) = verify(&gw).await;
    assert_eq!((s, r["first_bad_seq"].as_i64()), (409, Some(9)), "{r}");
    gw.stop().await;
    // entries cut from the end
    let gw = TestGateway::spawn(b).await;
    activity(&gw).await;
    let head = verify(&gw).await.1["head_seq"].as_i64().unwrap();
    let stmt = format!("DELETE FROM audit_log WHERE seq >= {}", head - 1);
    tamper(&gw, b, &[&stmt]).await;
    let (s, r) = verify(&gw).await;
    assert_eq!(s, 409, "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("deleted from the end"),
        "{r}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_one_chain_and_decisions() {
    let a = TestGateway::spawn(Backend::Postgres).await;
    let url = a.config.database_url.expose().clone();
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let mut cfg = TestGateway::config(dir.path().to_path_buf(), Some(url));
    cfg.sweep_ms = 100;
    let b = TestGateway::start(cfg, dir, None).await;
    let dev = a.user("dev@example.com", &["dev"]).await;
    let dba = a.user("dba@example.com", &["dba"]).await;
    a.command_connection("c", &["cat"], &["dba"]).await;
    // concurrent writers on both replicas
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (base, tok) = if i % 2 == 0 {
            (a.base.clone(), dev.clone())
        } else {
            (b.base.clone(), dev.clone())
        };
        tasks.push(tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{base}/api/exec"))
                .bearer_auth(tok)
                .json(&json!({"connection": "c", "command": format!("r{i}")}))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(
            t.await.unwrap()["review"]["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // a waiter on replica A sees a decision taken on replica B
    let id = ids[0].clone();
    let waiter = {
        let (base, dev, id) = (a.base.clone(), dev.clone(), id.clone());
        tokio::spawn(async move {
            reqwest::Client::new()
                .get(format!("{base}/api/reviews/{id}/wait?timeout=20"))
                .bearer_auth(dev)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    let (s, _) = b.decide(&dba, &id, "approve", None).await;
    assert_eq!(s, 200);
    let done = tokio::time::timeout(std::time::Duration::from_secs(20), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done["status"], "EXECUTED", "{done}");
    assert_eq!(done["result"]["output"], "r0");
    for g in [&a, &b] {
        let (s, r) = verify(g).await;
        assert_eq!(s, 200, "{r}");
        assert!(r["entries"].as_i64().unwrap() > 30, "{r}");
    }
    let (_, sessions) = a
        .admin("GET", &format!("/api/sessions?review={id}"), None)
        .await;
    assert_eq!(
        sessions.as_array().unwrap().len(),
        1,
        "executed once across replicas"
    );
    b.stop().await;
    a.stop().await;
}

async fn exports_reverify_offline(b: Backend) {
    let gw = TestGateway::spawn(b).await;
    activity(&gw).await;
    let (s, x) = gw
        .admin("GET", "/api/audit/export?since=1d&connection=c", None)
        .await;
    assert_eq!(s, 200, "{x}");
    let export: warden_core::evidence::AuditExport = serde_json::from_value(x.clone()).unwrap();
    assert_eq!(export.rows.len(), 3);
    warden_core::evidence::verify_export(&export).unwrap();
    let approved = export.rows.iter().find(|r| r.status == "EXECUTED").unwrap();
    assert_eq!(approved.approvals[0].approver, "dba@example.com");
    assert_eq!(approved.exit_code, Some(0));
    let rejected = export.rows.iter().find(|r| r.status == "REJECTED").unwrap();
    assert_eq!(rejected.decided_by.as_deref(), Some("dba@example.com"));
    // an edited export no longer verifies
    let mut forged = export.clone();
    forged.rows[0].requester = "ceo@example.com".into();
    assert!(warden_core::evidence::verify_export(&forged).is_err());
    // a row left out of the file is named
    let mut short = export.clone();
    let dropped = short.rows.remove(1).review_id;
    let err = warden_core::evidence::verify_export(&short)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&dropped.to_string()) && err.contains("not in the export"),
        "{err}"
    );
    // a review row deleted from the store: the chain still records it, the export says so
    tamper(&gw, b, &["DELETE FROM reviews WHERE status = 'REJECTED'"]).await;
    let (s, x) = gw
        .admin("GET", "/api/audit/export?since=1d&connection=c", None)
        .await;
    assert_eq!(s, 200, "{x}");
    let gutted: warden_core::evidence::AuditExport = serde_json::from_value(x).unwrap();
    assert_eq!(gutted.rows.len(), 2);
    let err = warden_core::evidence::verify_export(&gutted)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&rejected.review_id.to_string()), "{err}");
    // CSV: header, one line per review, formula injection neutralised
    let resp = reqwest::Client::new()
        .get(format!("{}/api/audit/export?format=csv", gw.base))
        .bearer_auth(&gw.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = resp.text().await.unwrap();
    // Read back as a spreadsheet would (RFC 4180): the header, and the command cell intact
    // but neutralised.
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        &header[..4],
        ["review_id", "type", "status", "requester"],
        "{csv}"
    );
    let command = header.iter().position(|h| h == "command").unwrap();
    let commands: Vec<String> = reader
        .records()
        .map(|r| r.unwrap()[command].to_string())
        .collect();
    assert!(
        commands.iter().any(|c| c == "'=cmd 1, \"quoted\""),
        "{commands:?}"
    );
    assert!(
        csv.ends_with("\r\n") && csv.starts_with("\"review_id\","),
        "{csv}"
    );
    // non-admins cannot export; bad params are refused
    let dev = gw.user("other@example.com", &[]).await;
    assert_eq!(
        gw.call("GET", "/api/audit/export", Some(&dev), None)
            .await
            .0,
        403
    );
    assert_eq!(
        gw.admin("GET", "/api/audit/export?since=yesterday", None)
            .await
            .0,
        400
    );
    assert_eq!(
        gw.admin("GET", "/api/audit/export?format=xml", None)
            .await
            .0,
        400
    );
    // Sessions run without review (no rule) are exported too, and checked: one deleted from
    // the store is named.
    let (dev, _) = (gw.user("free@example.com", &["dev"]).await, ());
    gw.command_connection("free", &["sh"], &[]).await;
    let (s, r) = gw
        .call(
            "POST",
            "/api/exec",
            Some(&dev),
            Some(json!({"connection": "free", "command": "echo unreviewed"})),
        )
        .await;
    assert_eq!(s, 200, "runs at once: {r}");
    let (_, x) = gw
        .admin("GET", "/api/audit/export?since=1d&connection=free", None)
        .await;
    let free: warden_core::evidence::AuditExport = serde_json::from_value(x).unwrap();
    assert!(free.rows.is_empty());
    assert_eq!(free.sessions.len(), 1, "{:?}", free.sessions);
    assert_eq!(free.sessions[0].command.as_deref(), Some("echo unreviewed"));
    assert_eq!(free.sessions[0].exit_code, Some(0));
    warden_core::evidence::verify_export(&free).unwrap();
    let mut edited = free.clone();
    edited.sessions[0].command = Some("echo something else".into());
    assert!(warden_core::evidence::verify_export(&edited).is_err());
    tamper(&gw, b, &["DELETE FROM sessions WHERE connection = 'free'"]).await;
    let (_, x) = gw
        .admin("GET", "/api/audit/export?since=1d&connection=free", None)
        .await;
    let gutted: warden_core::evidence::AuditExport = serde_json::from_value(x).unwrap();
    let err = warden_core::evidence::verify_export(&gutted)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("session") && err.contains("not in the export"),
        "{err}"
    );
    gw.stop().await;
}

async fn checkpoints_expose_a_rewritten_chain(b: Backend) {
    let keydir = tempfile::tempdir().unwrap();
    let key_path = keydir.path().join("checkpoint.key");
    let secret = [7u8; 32];
    std::fs::write(&key_path, base64_std(&secret)).unwrap();
    let public =
        warden_core::evidence::parse_key32(&warden_core::evidence::public_key_b64(&secret))
            .unwrap();
    let kp = key_path.clone();
    let cp_file = keydir.path().join("checkpoints.jsonl");
    let gw = TestGateway::spawn_with(b, move |c| {
        c.checkpoint_key = Some(kp);
        c.checkpoint_file = cp_file;
    })
    .await;
    activity(&gw).await;
    let (s, cp) = gw.admin("POST", "/api/audit/checkpoints", None).await;
    assert_eq!(s, 201, "{cp}");
    let cp: warden_core::evidence::Checkpoint = serde_json::from_value(cp).unwrap();
    let (_, list) = gw.admin("GET", "/api/audit/checkpoints", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let entry_hash = |entries: &Value, seq: i64| {
        entries
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["seq"] == seq)
            .map(|e| e["hash"].as_str().unwrap().to_string())
    };
    let (_, entries) = gw.admin("GET", "/api/audit?limit=10000", None).await;
    warden_core::evidence::verify_checkpoint(&public, &cp, entry_hash(&entries, cp.seq).as_deref())
        .unwrap();
    // An attacker rewrites entry 3 and recomputes every later hash and the head: the chain
    // verifies on its own, but no longer matches the signed checkpoint.
    rewrite_chain_from(&gw, b, 3).await;
    assert_eq!(
        verify(&gw).await.1["ok"],
        true,
        "a consistent rewrite fools the chain alone"
    );
    let (_, entries) = gw.admin("GET", "/api/audit?limit=10000", None).await;
    let err = warden_core::evidence::verify_checkpoint(
        &public,
        &cp,
        entry_hash(&entries, cp.seq).as_deref(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("rewritten"), "{err}");
    gw.stop().await;
}

/// A checkpoint key in a temp dir (with the checkpoint file beside it), and its public key.
fn signing_key(dir: &tempfile::TempDir) -> (std::path::PathBuf, std::path::PathBuf, [u8; 32]) {
    let key_path = dir.path().join("checkpoint.key");
    let secret = [11u8; 32];
    std::fs::write(&key_path, base64_std(&secret)).unwrap();
    let public =
        warden_core::evidence::parse_key32(&warden_core::evidence::public_key_b64(&secret))
            .unwrap();
    (key_path, dir.path().join("checkpoints.jsonl"), public)
}

/// Rewrites the chain from entry `from` on (a new actor, every later hash recomputed, the head
/// moved along): the chain verifies on its own afterwards.
async fn rewrite_chain_from(gw: &TestGateway, b: Backend, from: usize) {
    let (_, entries) = gw.admin("GET", "/api/audit?limit=10000", None).await;
    let mut all: Vec<warden_core::audit::AuditEntry> = serde_json::from_value(entries).unwrap();
    all[from - 1].actor = "nobody@example.com".into();
    let mut prev = all[from - 2].hash.clone();
    let mut stmts = Vec::new();
    for e in all.iter_mut().skip(from - 1) {
        e.prev_hash = prev.clone();
        e.hash = warden_core::audit::entry_hash(&e.prev_hash, e.seq, e.at, &e.actor, &e.event);
        prev = e.hash.clone();
        stmts.push(format!(
            "UPDATE audit_log SET actor = '{}', prev_hash = '{}', hash = '{}' WHERE seq = {}",
            e.actor, e.prev_hash, e.hash, e.seq
        ));
    }
    let last = all.last().unwrap();
    stmts.push(format!(
        "UPDATE audit_head SET hash = '{}' WHERE id = 1 AND seq = {}",
        last.hash, last.seq
    ));
    let refs: Vec<&str> = stmts.iter().map(String::as_str).collect();
    tamper(gw, b, &refs).await;
}

async fn one_review_verifies_alone(b: Backend) {
    let keydir = tempfile::tempdir().unwrap();
    let (key, file, public) = signing_key(&keydir);
    let gw = TestGateway::spawn_with(b, move |c| {
        c.checkpoint_key = Some(key);
        c.checkpoint_file = file;
    })
    .await;
    activity(&gw).await;
    let (_, reviews) = gw.admin("GET", "/api/reviews?status=all", None).await;
    let executed = reviews
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["status"] == "EXECUTED")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // More activity after it, so the review's entries sit inside a larger tree.
    activity_more(&gw).await;
    let (s, x) = gw
        .admin("GET", &format!("/api/audit/export?review={executed}"), None)
        .await;
    assert_eq!(s, 200, "{x}");
    let x: warden_core::evidence::AuditExport = serde_json::from_value(x).unwrap();
    assert_eq!(x.format, warden_core::evidence::REVIEW_EXPORT_FORMAT);
    assert_eq!(x.rows.len(), 1);
    let m = x.merkle.as_ref().unwrap();
    assert!(x.entries.len() >= 3, "request, approval, execution");
    assert!(x.entries.len() < x.head_seq as usize, "not the whole chain");
    assert_eq!(m.proofs.len(), x.entries.len());
    warden_core::evidence::verify_export(&x).unwrap();
    warden_core::evidence::verify_export_signature(&public, &x).unwrap();
    // The export's checkpoint is in the log and extends the previous ones.
    let (_, cps) = gw.admin("GET", "/api/audit/checkpoints", None).await;
    let cps: Vec<warden_core::evidence::Checkpoint> = serde_json::from_value(cps).unwrap();
    assert_eq!(cps.last(), m.checkpoint.as_ref());
    let (s, _) = gw.admin("POST", "/api/audit/checkpoints", None).await;
    assert_eq!(s, 201);
    let (_, cps) = gw.admin("GET", "/api/audit/checkpoints", None).await;
    let cps: Vec<warden_core::evidence::Checkpoint> = serde_json::from_value(cps).unwrap();
    assert_eq!(cps.len(), 2);
    warden_core::evidence::verify_checkpoint_log(&public, &cps).unwrap();
    // Edited on its way to the auditor (the approver swapped, the entry re-hashed): refused.
    let mut y = x.clone();
    let i = y
        .entries
        .iter()
        .position(|e| e.event["kind"] == "review_approved")
        .unwrap();
    let e = &mut y.entries[i];
    e.event["approver"] = json!("boss@example.com");
    e.hash = warden_core::audit::entry_hash(&e.prev_hash, e.seq, e.at, &e.actor, &e.event);
    y.rows[0].approvals[0].approver = "boss@example.com".into();
    let err = warden_core::evidence::verify_export(&y).unwrap_err();
    assert!(err.to_string().contains("inclusion"), "{err}");
    // An auditor may export one review; an engineer may not; unknown ids are 404, bad ids 400.
    let dev = gw.user("eng@example.com", &["dev"]).await;
    let (s, _) = gw
        .call(
            "GET",
            &format!("/api/audit/export?review={executed}"),
            Some(&dev),
            None,
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = gw
        .admin(
            "GET",
            &format!("/api/audit/export?review={}", uuid::Uuid::new_v4()),
            None,
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = gw
        .admin("GET", "/api/audit/export?review=not-an-id", None)
        .await;
    assert_eq!(s, 400);
    let (s, _) = gw
        .admin(
            "GET",
            &format!("/api/audit/export?review={executed}&format=csv"),
            None,
        )
        .await;
    assert_eq!(s, 400);
    gw.stop().await;
}

/// One more held command, approved and run.
async fn activity_more(gw: &TestGateway) {
    let dev = gw.user("dev2@example.com", &["dev"]).await;
    let dba = gw.user("dba2@example.com", &["dba"]).await;
    let (_, r) = gw
        .call(
            "POST",
            "/api/exec",
            Some(&dev),
            Some(json!({"connection": "c", "command": "more"})),
        )
        .await;
    let id = r["review"]["id"].as_str().unwrap().to_string();
    gw.decide(&dba, &id, "approve", Some(json!({"reason": "ok"})))
        .await;
    gw.call(
        "GET",
        &format!("/api/reviews/{id}/wait?timeout=10"),
        Some(&dev),
        None,
    )
    .await;
}

async fn the_witness_catches_store_and_file_rewritten_together(b: Backend) {
    use notify_support::Fake;
    use std::sync::Arc;
    let witness = Fake::start(Arc::new(|_| (200, json!({"ok": true})))).await;
    let keydir = tempfile::tempdir().unwrap();
    let (key, file, public) = signing_key(&keydir);
    let (k, f, url) = (key.clone(), file.clone(), witness.url.clone());
    let gw = TestGateway::spawn_with(b, move |c| {
        c.checkpoint_key = Some(k);
        c.checkpoint_file = f;
        c.checkpoint_witness_url = Some(warden_core::secret::Secret::new(format!("{url}/cp")));
    })
    .await;
    activity(&gw).await;
    let (s, _) = gw.admin("POST", "/api/audit/checkpoints", None).await;
    assert_eq!(s, 201);
    activity_more(&gw).await;
    let (s, _) = gw.admin("POST", "/api/audit/checkpoints", None).await;
    assert_eq!(s, 201);
    let received = |w: &Fake| -> Vec<warden_core::evidence::Checkpoint> {
        w.to("/cp")
            .iter()
            .map(|r| serde_json::from_value(r.json()).unwrap())
            .collect()
    };
    let held = received(&witness);
    assert_eq!(held.len(), 2, "each checkpoint reached the witness");
    assert!(held[1].consistency.is_some());
    warden_core::evidence::verify_checkpoint_log(&public, &held).unwrap();

    // The attacker rewrites the chain from entry 3 in the store and deletes the local
    // checkpoint file. The running gateway's tree still has the true chain: it refuses to sign.
    rewrite_chain_from(&gw, b, 3).await;
    std::fs::remove_file(&file).unwrap();
    assert_eq!(verify(&gw).await.1["ok"], true, "the chain alone is fooled");
    let (s, body) = gw.admin("POST", "/api/audit/checkpoints", None).await;
    assert_eq!(s, 409, "{body}");
    assert_eq!(body["code"], "chain_rewritten", "{body}");
    // Restarted (the tree rebuilt from the rewritten store), it signs what it finds, and the
    // witness now holds a checkpoint that cannot prove it extends the ones before.
    let (config, dir) = gw.stop().await;
    let gw = TestGateway::start(config, dir, None).await;
    let (s, body) = gw.admin("POST", "/api/audit/checkpoints", None).await;
    assert_eq!(s, 201, "{body}");
    let held = received(&witness);
    assert_eq!(held.len(), 3);
    let err = warden_core::evidence::verify_checkpoint_log(&public, &held).unwrap_err();
    assert!(err.to_string().contains("extends"), "{err}");
    // And against the live chain, the witness's first checkpoint names the rewrite.
    let (_, entries) = gw.admin("GET", "/api/audit?limit=10000", None).await;
    let at = entries
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["seq"] == held[0].seq)
        .map(|e| e["hash"].as_str().unwrap().to_string());
    assert!(warden_core::evidence::verify_checkpoint(&public, &held[0], at.as_deref()).is_err());
    gw.stop().await;
}

/// Reads NDJSON lines from a streaming response until `want` lines are in (10 s at most).
async fn read_lines(resp: &mut reqwest::Response, buf: &mut Vec<u8>, want: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let lines: Vec<Value> = buf
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(|l| serde_json::from_slice(l).ok())
            .collect();
        if lines.len() >= want {
            return lines;
        }
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .expect("stream lines in time")
            .expect("stream read");
        match chunk {
            Some(c) => buf.extend_from_slice(&c),
            None => return lines,
        }
    }
}

async fn the_siem_stream_is_ocsf_resumable_and_follows(b: Backend) {
    let gw = TestGateway::spawn(b).await;
    let (dev, _) = activity(&gw).await;
    let (_, entries) = gw.admin("GET", "/api/audit?limit=10000", None).await;
    let n = entries.as_array().unwrap().len();
    let http = reqwest::Client::new();
    let get = |path: String, token: String| {
        let http = http.clone();
        let base = gw.base.clone();
        async move {
            http.get(format!("{base}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    // The whole chain as OCSF lines; the entries they carry re-verify as a chain.
    let mut r = get("/api/audit/stream".into(), gw.admin_token.clone()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let lines = read_lines(&mut r, &mut Vec::new(), usize::MAX).await;
    assert_eq!(lines.len(), n, "one line per entry, and the stream ends");
    let back: Vec<warden_core::audit::AuditEntry> = lines
        .iter()
        .map(|l| warden_core::ocsf::entry_of_line(l).unwrap())
        .collect();
    warden_core::audit::verify_chain(&back, None).unwrap();
    for l in &lines {
        assert!(l["class_uid"].is_u64() && l["type_uid"].is_u64(), "{l}");
        assert_eq!(l["metadata"]["product"]["name"], "Warden");
    }
    assert!(
        lines
            .iter()
            .any(|l| l["class_uid"] == 3005 && l["status_id"] == 2),
        "the rejection is a refused privilege"
    );
    // Resumable: after=N gives exactly what follows N.
    let mut r = get(
        format!("/api/audit/stream?after={}", n - 2),
        gw.admin_token.clone(),
    )
    .await;
    let tail = read_lines(&mut r, &mut Vec::new(), usize::MAX).await;
    assert_eq!(tail.len(), 2);
    assert_eq!(tail[0]["metadata"]["sequence"], (n - 1) as i64);
    // Engineers are refused; an auditor follows the live chain.
    let r = get("/api/audit/stream".into(), dev).await;
    assert_eq!(r.status(), 403);
    let token = gw.auditor("audit@example.com", &[]).await;
    let (_, tokens) = gw.admin("GET", "/api/tokens", None).await;
    let token_id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["user"] == "audit@example.com" || t["user_email"] == "audit@example.com")
        .and_then(|t| t["id"].as_str())
        .expect("the auditor's token")
        .to_string();
    let (_, now) = gw.admin("GET", "/api/audit?limit=10000", None).await;
    let head = now.as_array().unwrap().len();
    let mut r = get(format!("/api/audit/stream?after={head}&follow=true"), token).await;
    assert_eq!(r.status(), 200);
    gw.user("new@example.com", &["dev"]).await;
    let mut buf = Vec::new();
    let live = read_lines(&mut r, &mut buf, 1).await;
    assert_eq!(live[0]["metadata"]["sequence"], (head + 1) as i64);
    assert_eq!(live[0]["api"]["operation"], "admin_change");
    // Revoking the auditor's token ends its stream.
    let (s, _) = gw
        .admin("DELETE", &format!("/api/tokens/{token_id}"), None)
        .await;
    assert!(s < 300);
    let rest = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Ok(Some(_)) = r.chunk().await {}
    })
    .await;
    assert!(rest.is_ok(), "the stream ended after the token was revoked");
    gw.stop().await;
}

fn base64_std(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

async fn retention_keeps_the_chain(b: Backend) {
    let gw = TestGateway::spawn_with(b, |c| c.audit_retention_sec = Some(1)).await;
    activity(&gw).await;
    gw.clock().advance(2);
    let pruned = gw.running.app.apply_retention().await.unwrap();
    assert_eq!(pruned, 2, "two executed sessions");
    let (_, sessions) = gw.admin("GET", "/api/sessions", None).await;
    for s in sessions.as_array().unwrap() {
        assert!(s["output"].is_null(), "{s}");
        assert!(s["output_sha256"].is_string(), "digest kept: {s}");
    }
    assert_eq!(verify(&gw).await.1["ok"], true);
    gw.stop().await;
}

/// Rows are not hashed themselves, but the chain records what they must say: an edit to a
/// session's command, output or exit code, a review's command, a row the chain never recorded
/// or a recorded row deleted — each is named by `audit verify`.
async fn edited_rows_are_named(b: Backend) {
    let cases: [(&[&str], &str); 9] = [
        (
            &["UPDATE reviews SET status = 'APPROVED' WHERE status = 'REJECTED'"],
            "recorded it rejected",
        ),
        (
            &["UPDATE reviews SET approvals_json = '[]' WHERE status = 'EXECUTED'"],
            "its stored approvals",
        ),
        (
            &["UPDATE reviews SET decided_by = 'ceo@example.com' WHERE status = 'REJECTED'"],
            "stored as rejected by ceo@example.com",
        ),
        (
            &["UPDATE sessions SET command = 'rm -rf /' WHERE command IS NOT NULL"],
            "its stored command is not the one entry",
        ),
        (
            &["UPDATE sessions SET output = 'nothing to see' WHERE output IS NOT NULL"],
            "its stored output is not the one entry",
        ),
        (
            &["UPDATE sessions SET exit_code = 0 WHERE exit_code IS NOT NULL"],
            "its stored exit code",
        ),
        (
            &["UPDATE reviews SET command = 'SELECT 1' WHERE command IS NOT NULL"],
            "review",
        ),
        (&["DELETE FROM sessions"], "is missing from the store"),
        (
            &["DELETE FROM reviews WHERE status = 'REJECTED'"],
            "is missing from the store",
        ),
    ];
    for (statements, named) in cases {
        let gw = TestGateway::spawn(b).await;
        activity(&gw).await;
        // One command that exits non-zero, so the exit code edit changes something.
        gw.command_connection("fails", &["sh", "-c", "echo out; exit 3"], &[])
            .await;
        gw.admin(
            "POST",
            "/api/exec",
            Some(json!({"connection": "fails", "command": "go"})),
        )
        .await;
        let (_, r) = verify(&gw).await;
        assert_eq!(r["ok"], true, "{r}");
        tamper(&gw, b, statements).await;
        let (s, r) = verify(&gw).await;
        assert_eq!(s, 409, "{statements:?}: {r}");
        let error = r["error"].as_str().unwrap_or_default();
        assert!(error.contains(named), "{statements:?}: {error}");
        gw.stop().await;
    }
}

/// Fail closed for executors: a command whose start cannot be recorded never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_never_runs_what_the_store_cannot_record() {
    let gw = TestGateway::spawn(Backend::Postgres).await;
    let dev = gw.user("dev@example.com", &["dev"]).await;
    let marker =
        std::env::temp_dir().join(format!("warden-stall-{}", uuid::Uuid::new_v4().simple()));
    let script = format!("cat > {}", marker.display());
    gw.command_connection("c", &["sh", "-c", &script], &[])
        .await;
    let exec = || {
        gw.call(
            "POST",
            "/api/exec",
            Some(&dev),
            Some(json!({"connection": "c", "command": "x"})),
        )
    };
    let url = gw.config.database_url.expose().clone();
    let mut store = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("ALTER TABLE audit_log RENAME TO audit_log_away")
        .execute(&mut store)
        .await
        .unwrap();
    let (s, body) = exec().await;
    assert!(s >= 500, "{s} {body}");
    assert!(
        !marker.exists(),
        "the command ran although its start was not recorded"
    );
    sqlx::query("ALTER TABLE audit_log_away RENAME TO audit_log")
        .execute(&mut store)
        .await
        .unwrap();
    let (s, body) = exec().await;
    assert_eq!(s, 200, "{body}");
    assert!(marker.exists(), "runs once the store is back");
    let _ = std::fs::remove_file(&marker);
    assert_eq!(verify(&gw).await.1["ok"], true);
    gw.stop().await;
}
