//! Action access requests end to end through the API, on SQLite and PostgreSQL stores: held
//! commands, quorum, rejection, withdrawal, force approval, expiry by the sweeper, exactly-once
//! execution under races, restart safety, and the real PostgreSQL / MariaDB executors.

use std::time::Duration;

use serde_json::{Value, json};
use warden_gateway::on_both_stores;
use warden_gateway::testing::{Backend, TestGateway};

on_both_stores!(
    held_command_runs_once_approved,
    quorum_require_all_and_amount,
    reject_withdraw_and_terminal_conflicts,
    force_approval_and_exemptions,
    expiry_by_the_sweeper,
    racing_approvers_execute_once,
    approval_racing_expiry_never_both,
    pending_review_survives_restart,
    every_step_is_audited,
    actions_are_what_each_caller_may_do,
);

async fn held_command_runs_once_approved(b: Backend) {
    let gw = TestGateway::spawn(b).await;
    let dev = gw.user("dev@example.com", &["dev"]).await;
    let dba = gw.user("dba@example.com", &["dba"]).await;
    let outsider = gw.user("eve@example.com", &["sales"]).await;
    gw.command_connection("shell", &["sh"], &["dba"]).await;
    let (s, r) = gw.exec(&dev, "shell", "echo approved-bytes; exit 3").await;
    assert_eq!(s, 202, "held: {r}");
    let review = &r["review"];
    assert_eq!(review["status"], "PENDING");
    assert_eq!(review["type"], "command");
    assert_eq!(review["requester"], "dev@example.com");
    assert_eq!(review["connection"], "shell");
    assert_eq!(review["rule"], "shell");
    assert_eq!(review["command"], "echo approved-bytes; exit 3");
    assert!(
        review["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/reviews/{}", review["id"].as_str().unwrap()))
    );
    let id = review["id"].as_str().unwrap().to_string();
    // the requester cannot approve; an outsider cannot see it; the approver lists it
    let (s, body) = gw.decide(&dev, &id, "approve", None).await;
    assert_eq!(s, 403, "{body}");
    assert_eq!(gw.decide(&outsider, &id, "approve", None).await.0, 404);
    let (_, pending) = gw
        .call("GET", "/api/reviews?status=pending", Some(&dba), None)
        .await;
    assert_eq!(pending.as_array().unwrap().len(), 1);
    let (_, none) = gw
        .call("GET", "/api/reviews?status=pending", Some(&outsider), None)
        .await;
    assert_eq!(none, json!([]));
    // a waiter is woken by the approval and gets the result
    let waiter = {
        let (base, dev) = (gw.base.clone(), dev.clone());
        let id = id.clone();
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
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (s, body) = gw
        .decide(&dba, &id, "approve", Some(json!({"reason": "looks fine"})))
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["approvals"][0]["approver"], "dba@example.com");
    assert_eq!(body["approvals"][0]["group"], "dba");
    let done = tokio::time::timeout(Duration::from_secs(15), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done["status"], "EXECUTED", "{done}");
    assert_eq!(done["result"]["exit_code"], 3);
    assert_eq!(done["result"]["output"], "approved-bytes\n");
    // approving again is a conflict; the review shows the stored result later too
    let (s, body) = gw.decide(&dba, &id, "approve", None).await;
    assert_eq!(s, 409, "{body}");
    let (_, later) = gw
        .call("GET", &format!("/api/reviews/{id}"), Some(&dev), None)
        .await;
    assert_eq!(later["result"]["output"], "approved-bytes\n");
    let (_, sessions) = gw
        .admin("GET", "/api/sessions?connection=shell", None)
        .await;
    assert_eq!(sessions.as_array().unwrap().len(), 1, "ran exactly once");
    gw.stop().await;
}

async fn quorum_require_all_and_amount(b: Backend) {
    let gw = TestGateway::spawn(b).await;
    let dev = gw.user("dev@example.com", &["dev"]).await;
    let both = gw.user("both@example.com", &["dba", "security"]).await;
    let dba2 = gw.user("dba2@example.com", &["dba"]).await;
    let dba3 = gw.user("dba3@example.com", &["dba"]).await;
    gw.command_connection("c", &["cat"], &[]).await;
    let (s, body) = gw.admin("POST", "/api/rules", Some(json!({"name": "dual", "type": "command", "connections": ["c"], "approval_groups": ["dba", "security"], "require_all_groups": true}))).await;
    assert_eq!(s, 201, "{body}");
    let (_, r) = gw.exec(&dev, "c", "hello").await;
    let id = r["review"]["id"].as_str().unwrap().to_string();
    let (_, after1) = gw.decide(&both, &id, "approve", None).await;
    assert_eq!(
        after1["status"], "PENDING",
        "one person covers one group: {after1}"
    );
    let (s, _) = gw.decide(&both, &id, "approve", None).await;
    assert_eq!(s, 403, "double approval by one person refused");
    let (_, after2) = gw.decide(&dba2, &id, "approve", None).await;
    assert_eq!(after2["status"], "APPROVED", "{after2}");
    assert_eq!(gw.wait(&dev, &id).await["result"]["output"], "hello");
    // approval amount 2 of distinct people within one group
    let (s, _) = gw.admin("PUT", "/api/rules/dual", Some(json!({"name": "dual", "type": "command", "connections": ["c"], "approval_groups": ["dba"], "approval_amount": 2}))).await;
    assert_eq!(s, 200);
    let (_, r) = gw.exec(&dev, "c", "two").await;
    let id = r["review"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        gw.decide(&dba2, &id, "approve", None).await.1["status"],
        "PENDING"
    );
    assert_eq!(
        gw.decide(&dba3, &id, "approve", None).await.1["status"],
        "APPROVED"
    );
    assert_eq!(gw.wait(&dev, &id).await["status"], "EXECUTED");
    gw.stop().await;
}

async fn reject_withdraw_and_terminal_conflicts(b: Backend) {
    let gw = TestGateway::spawn(b).await;
    let dev = gw.user("dev@example.com", &["dev"]).await;
    let dba = gw.user("dba@example.com", &["dba"]).await;
    gw.command_connection("c", &["cat"], &["dba"]).await;
    let (_, r) = gw.exec(&dev, "c", "DROP TABLE users").await;
    let id = r["review"]["id"].as_str().unwrap().to_string();
    let (s, body) = gw.decide(&dba, &id, "reject", None).await;
    assert_eq!(s, 400, "reason required: {body}");
    let (s, body) = gw
        .decide(
            &dba,
            &id,
            "reject",
            Some(json!({"reason": "use a migration"})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let done = gw.wait(&dev, &id).await;
    assert_eq!(done["status"], "REJECTED");
    assert_eq!(done["decided_by"], "dba@example.com");
    assert_eq!(done["reason"], "use a migration");
    assert!(done["result"].is_null(), "never executed");
    for (tok, action) in [(&dba, "approve"), (&dba, "reject"), (&dev, "withdraw")] {
        let (s, body) = gw
            .call(
                "PUT",
                &format!("/api/reviews/{id}/{action}"),
                Some(tok),
                Some(json!({"reason": "again"})),
            )
            .await;
        assert_eq!(s, 409, "{action} on a terminal review: {body}");
    }
    // withdraw by the requester only
    let (_, r) = gw.exec(&dev, "c", "oops").await;
    let id = r["review"]["id"].as_str().unwrap().to_string();
    assert_eq!(gw.decide(&dba, &id, "withdraw", None).await.0, 403);
    let (s, body) = gw.decide(&dev, &id, "withdraw", None).await;
    assert_eq!(s, 200);
    assert_eq!(body["status"], "REJECTED");
    assert_eq!(body["reason"], "withdrawn by requester");
    let (_, sessions) = gw.admin("GET", "/api/sessions", None).await;
    assert_eq!(sessions, json!([]), "nothing ran");
    gw.stop().await;
}

async fn force_approval_and_exemptions(b: Backend) {
    let gw = TestGateway::spawn(b).await;
    let oncall = gw.user("oncall@example.com", &["oncall", "dev"]).await;
    let sre = gw.user("sre@example.com", &["sre"]).await;
    let contractor = gw.user("c@example.com", &["contractors"]).await;
    gw.command_connection("c", &["cat"], &[]).await;
    let (s, body) = gw.admin("POST", "/api/rules", Some(json!({
        "name": "r", "type": "command", "connections": ["c"], "approval_groups": ["dba"], "approval_amount": 3,
        "force_approval_groups": ["oncall"], "exempt_groups": ["sre"], "required_groups": ["dev", "oncall"]
    }))).await;
    assert_eq!(s, 201, "{body}");
    // exempt: runs at once
    let (s, r) = gw.exec(&sre, "c", "exempt").await;
    assert_eq!((s, r["status"].as_str()), (200, Some("executed")), "{r}");
    // not in required groups: runs at once
    let (s, r) = gw.exec(&contractor, "c", "not required").await;
    assert_eq!((s, r["status"].as_str()), (200, Some("executed")), "{r}");
    // held; force approval of one's own request needs a reason
    let (s, r) = gw.exec(&oncall, "c", "fix prod").await;
    assert_eq!(s, 202);
    let id = r["review"]["id"].as_str().unwrap().to_string();
    let (s, _) = gw
        .decide(&oncall, &id, "approve", Some(json!({"force": true})))
        .await;
    assert_eq!(s, 400, "force without reason");
    let (s, body) = gw
        .decide(
            &oncall,
            &id,
            "approve",
            Some(json!({"force": true, "reason": "prod down"})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["forced"], true);
    let done = gw.wait(&oncall, &id).await;
    assert_eq!(done["status"], "EXECUTED");
    assert_eq!(done["result"]["output"], "fix prod");
    // an admin's own request is auto-approved and runs at once, recorded as a review
    gw.command_connection("c2", &["cat"], &["dba"]).await;
    let (s, r) = gw
        .admin(
            "POST",
            "/api/exec",
            Some(json!({"connection": "c2", "command": "admin"})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["review"]["status"], "EXECUTED");
    assert_eq!(r["review"]["approvals"][0]["auto"], true);
    gw.stop().await;
}

async fn expiry_by_the_sweeper(b: Backend) {
    let gw = TestGateway::spawn(b).await;
    let dev = gw.user("dev@example.com", &["dev"]).await;
    let dba = gw.user("dba@example.com", &["dba"]).await;
    gw.command_connection("c", &["cat"], &[]).await;
    gw.admin("POST", "/api/rules", Some(json!({"name": "r", "type": "command", "connections": ["c"], "approval_groups": ["dba"], "timeout_sec": 1}))).await;
    let (_, r) = gw.exec(&dev, "c", "too late").await;
    let id = r["review"]["id"].as_str().unwrap().to_string();
    let done = gw.wait(&dev, &id).await;
    assert_eq!(done["status"], "EXPIRED", "{done}");
    let (s, _) = gw.decide(&dba, &id, "approve", None).await;
    assert_eq!(s, 409);
    let (_, sessions) = gw.admin("GET", "/api/sessions", None).await;
    assert_eq!(sessions, json!([]), "an expired command never runs");
    gw.stop().await;
}

async fn racing_approvers_execute_once(b: Backend) {
    let gw = TestGateway::spawn(b).await;
    let dev = gw.user("dev@example.com", &["dev"]).await;
    let mut approvers = Vec::new();
    for i in 0..6 {
        approvers.push(gw.user(&format!("dba{i}@example.com"), &["dba"]).await);
    }
    gw.command_connection("c", &["cat"], &[]).await;
    gw.admin("POST", "/api/rules", Some(json!({"name": "r", "type": "command", "connections": ["c"], "approval_groups": ["dba"], "approval_amount": 2}))).await;
    for round in 0..3 {
        let (_, r) = gw.exec(&dev, "c", &format!("race {round}")).await;
        let id = r["review"]["id"].as_str().unwrap().to_string();
        let mut tasks = Vec::new();
        for t in &approvers {
            let (base, t, id) = (gw.base.clone(), t.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                reqwest::Client::new()
                    .put(format!("{base}/api/reviews/{id}/approve"))
                    .bearer_auth(t)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }));
        }
        let mut codes = Vec::new();
        for t in tasks {
            codes.push(t.await.unwrap());
        }
        let ok = codes.iter().filter(|c| **c == 200).count();
        assert!(ok >= 2, "at least the quorum got through: {codes:?}");
        assert!(codes.iter().all(|c| *c == 200 || *c == 409), "{codes:?}");
        let done = gw.wait(&dev, &id).await;
        assert_eq!(done["status"], "EXECUTED");
        let approvals = done["approvals"].as_array().unwrap();
        assert_eq!(approvals.len(), ok, "no approval lost, none invented");
        let (_, sessions) = gw
            .admin("GET", &format!("/api/sessions?review={id}"), None)
            .await;
        assert_eq!(
            sessions.as_array().unwrap().len(),
            1,
            "executed exactly once"
        );
    }
    gw.stop().await;
}

async fn approval_racing_expiry_never_both(b: Backend) {
    // The race is against the sweeper on real time: the approval lands around the deadline.
    let gw = TestGateway::spawn_real_time(b, |c| c.sweep_ms = 20).await;
    let dev = gw.user("dev@example.com", &["dev"]).await;
    let dba = gw.user("dba@example.com", &["dba"]).await;
    gw.command_connection("c", &["cat"], &[]).await;
    gw.admin("POST", "/api/rules", Some(json!({"name": "r", "type": "command", "connections": ["c"], "approval_groups": ["dba"], "timeout_sec": 1}))).await;
    for i in 0..4 {
        let (_, r) = gw.exec(&dev, "c", &format!("edge {i}")).await;
        let id = r["review"]["id"].as_str().unwrap().to_string();
        // approve right around the deadline
        tokio::time::sleep(Duration::from_millis(900 + i * 50)).await;
        let (s, _) = gw.decide(&dba, &id, "approve", None).await;
        let done = gw.wait(&dev, &id).await;
        let (_, sessions) = gw
            .admin("GET", &format!("/api/sessions?review={id}"), None)
            .await;
        match s {
            200 => {
                assert_eq!(done["status"], "EXECUTED", "{done}");
                assert_eq!(sessions.as_array().unwrap().len(), 1);
            }
            409 => {
                assert_eq!(done["status"], "EXPIRED", "{done}");
                assert_eq!(sessions, json!([]));
            }
            other => panic!("unexpected {other}"),
        }
    }
    gw.stop().await;
}

async fn pending_review_survives_restart(b: Backend) {
    let gw = TestGateway::spawn(b).await;
    let dev = gw.user("dev@example.com", &["dev"]).await;
    let dba = gw.user("dba@example.com", &["dba"]).await;
    gw.command_connection("c", &["cat"], &["dba"]).await;
    let (_, r) = gw.exec(&dev, "c", "after restart").await;
    let id = r["review"]["id"].as_str().unwrap().to_string();
    let (config, dir) = gw.stop().await;
    let gw = TestGateway::start(config, dir, None).await;
    let (_, again) = gw
        .call("GET", &format!("/api/reviews/{id}"), Some(&dev), None)
        .await;
    assert_eq!(again["status"], "PENDING", "{again}");
    let (s, _) = gw.decide(&dba, &id, "approve", None).await;
    assert_eq!(s, 200);
    let done = gw.wait(&dev, &id).await;
    assert_eq!(done["result"]["output"], "after restart");
    gw.stop().await;
}

async fn every_step_is_audited(b: Backend) {
    let gw = TestGateway::spawn(b).await;
    let dev = gw.user("dev@example.com", &["dev"]).await;
    let dba = gw.user("dba@example.com", &["dba"]).await;
    gw.command_connection("c", &["cat"], &["dba"]).await;
    let (_, r) = gw.exec(&dev, "c", "audited").await;
    let id = r["review"]["id"].as_str().unwrap().to_string();
    gw.decide(&dba, &id, "approve", Some(json!({"reason": "ok"})))
        .await;
    gw.wait(&dev, &id).await;
    let (s, timeline) = gw
        .call(
            "GET",
            &format!("/api/reviews/{id}/timeline"),
            Some(&dev),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let kinds: Vec<&str> = timeline
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "review_requested",
            "review_approved",
            "session_started",
            "review_executed"
        ],
        "{timeline}"
    );
    let req = &timeline[0]["event"];
    assert_eq!(
        req["command_sha256"],
        warden_core::command_sha256("audited")
    );
    assert_eq!(timeline[1]["event"]["approver"], "dba@example.com");
    assert_eq!(timeline[1]["event"]["group"], "dba");
    assert_eq!(timeline[3]["event"]["exit_code"], 0);
    // denial is audited too
    let sales = gw.user("s@example.com", &["sales"]).await;
    gw.admin("POST", "/api/connections", Some(json!({"name": "locked", "type": "command", "command": ["cat"], "access_groups": ["dba"]}))).await;
    assert_eq!(gw.exec(&sales, "locked", "x").await.0, 403);
    let (_, entries) = gw.admin("GET", "/api/audit?limit=1000", None).await;
    assert!(
        entries
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"]["kind"] == "access_denied" && e["actor"] == "s@example.com")
    );
    assert_eq!(
        gw.admin("GET", "/api/audit/verify", None).await.1["ok"],
        true
    );
    gw.stop().await;
}

/// `actions` in the review JSON is, for each caller, exactly what the API then lets them do:
/// every action offered succeeds when tried, every action withheld is refused.
async fn actions_are_what_each_caller_may_do(b: Backend) {
    let gw = TestGateway::spawn(b).await;
    let dev = gw.user("dev@example.com", &["dev"]).await;
    let dba = gw.user("dba@example.com", &["dba"]).await;
    let oncall = gw.user("oncall@example.com", &["oncall"]).await;
    let eve = gw.user("eve@example.com", &["sales"]).await;
    let auditor = gw.auditor("audit@example.com", &["dba", "oncall"]).await;
    gw.command_connection("c", &["cat"], &[]).await;
    let (s, body) = gw
        .admin(
            "POST",
            "/api/rules",
            Some(json!({
                "name": "r", "type": "command", "connections": ["c"], "approval_groups": ["dba"],
                "approval_amount": 2, "force_approval_groups": ["oncall"]
            })),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    // An admin in none of the rule's groups may still reject (so nothing stays stuck).
    let admin = gw.admin_token.clone();
    let who = [
        ("dev", &dev),
        ("dba", &dba),
        ("oncall", &oncall),
        ("eve", &eve),
        ("auditor", &auditor),
        ("admin", &admin),
    ];
    let actions_of = |v: &Value| -> Vec<String> {
        ["approve", "force", "reject", "withdraw", "revoke"]
            .into_iter()
            .filter(|a| v["actions"][*a] == true)
            .map(String::from)
            .collect()
    };
    let mut offered: std::collections::HashMap<&str, Vec<String>> = Default::default();
    for (name, tok) in who {
        let (_, r) = gw.exec(&dev, "c", &format!("for {name}")).await;
        let id = r["review"]["id"].as_str().unwrap().to_string();
        assert_eq!(r["review"]["outcome"], "pending", "{r}");
        assert_eq!(r["review"]["connection_type"], "command", "{r}");
        let (s, v) = gw
            .call("GET", &format!("/api/reviews/{id}"), Some(tok), None)
            .await;
        if name == "eve" {
            assert_eq!(s, 404, "eve may not even see it");
            offered.insert(name, vec![]);
        } else {
            assert_eq!(s, 200, "{v}");
            offered.insert(name, actions_of(&v));
        }
        // Try every action on its own fresh review, so one success does not hide another.
        for action in ["approve", "force", "reject", "withdraw"] {
            let (_, r) = gw.exec(&dev, "c", &format!("{name} tries {action}")).await;
            let id = r["review"]["id"].as_str().unwrap().to_string();
            let (path, body) = match action {
                "force" => ("approve", json!({"force": true, "reason": "outage"})),
                "approve" => ("approve", json!({})),
                a => (a, json!({"reason": "no"})),
            };
            let (s, resp) = gw
                .call(
                    "PUT",
                    &format!("/api/reviews/{id}/{path}"),
                    Some(tok),
                    Some(body),
                )
                .await;
            let allowed = offered[name].iter().any(|a| a == action);
            assert_eq!(
                s == 200,
                allowed,
                "{name} {action}: offered {:?}, got {s} {resp}",
                offered[name]
            );
        }
    }
    assert_eq!(offered["dev"], vec!["withdraw"]);
    assert_eq!(offered["dba"], vec!["approve", "reject"]);
    assert_eq!(offered["oncall"], vec!["force", "reject"]);
    assert_eq!(offered["auditor"], Vec::<String>::new());
    assert_eq!(offered["admin"], vec!["reject"]);
    // Listings carry the connection's type too (read once per page, not per review).
    let (_, listed) = gw
        .call("GET", "/api/reviews?per_page=100", Some(&dba), None)
        .await;
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["connection_type"] == "command"),
        "{listed}"
    );
    // …and that rejection is audited as an admin's, unlike an approver's.
    let (_, audit) = gw.admin("GET", "/api/audit?limit=1000", None).await;
    let rejections: Vec<(String, bool)> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"]["kind"] == "review_rejected" && e["event"]["withdrawn"] == false)
        .map(|e| {
            (
                e["event"]["by"].as_str().unwrap().to_string(),
                e["event"]["by_admin"] == true,
            )
        })
        .collect();
    assert!(
        rejections.contains(&(warden_gateway::testing::ADMIN_EMAIL.into(), true)),
        "{rejections:?}"
    );
    assert!(
        rejections.contains(&("dba@example.com".into(), false)),
        "{rejections:?}"
    );
    // Once dba approved, approving again is not offered (one of two approvals recorded).
    let (_, r) = gw.exec(&dev, "c", "half way").await;
    let id = r["review"]["id"].as_str().unwrap().to_string();
    let (s, v) = gw.decide(&dba, &id, "approve", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(actions_of(&v), vec!["reject"], "{v}");
    // Withdrawn is named as the outcome; the status stays REJECTED as the spec says.
    let (_, v) = gw.decide(&dev, &id, "withdraw", None).await;
    assert_eq!(
        (v["status"].as_str(), v["outcome"].as_str()),
        (Some("REJECTED"), Some("withdrawn")),
        "{v}"
    );
    assert!(actions_of(&v).is_empty(), "nothing is left to do: {v}");
    gw.stop().await;
}
