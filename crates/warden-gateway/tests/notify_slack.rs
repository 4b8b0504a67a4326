//! Slack and Teams end to end, against local stand-ins for Slack's Web API and a Teams incoming
//! webhook: the review message (Block Kit: facts, command code block, buttons carrying the
//! review id), signed interactions (forged and stale signatures refused, nothing changes),
//! Approve clicks through the real decision code, ephemeral refusals, the reject modal, in-place
//! updates on every decision path, the requester's DM, `/warden subscribe`, and Teams cards.

mod notify_support;

use std::sync::Arc;

use serde_json::{Value, json};
use warden_gateway::testing::{Backend, FakeClock, TestGateway};

use notify_support::*;

const DEV: (&str, &str) = ("U_DEV", "dev@example.com");
const DBA: (&str, &str) = ("U_DBA", "dba@example.com");
const EVE: (&str, &str) = ("U_EVE", "eve@example.com");

struct Setup {
    gw: TestGateway,
    slack: Fake,
    dev: String,
    dba: String,
}

async fn setup() -> Setup {
    let slack = Fake::start(slack_handler(&[DEV, DBA, EVE])).await;
    let url = slack.url.clone();
    let gw = TestGateway::spawn_with(Backend::Sqlite, |c| slack_config(c, &url)).await;
    finish_setup(gw, slack).await
}

async fn finish_setup(gw: TestGateway, slack: Fake) -> Setup {
    let dev = gw.user(DEV.1, &["dev"]).await;
    let dba = gw.user(DBA.1, &["dba"]).await;
    gw.user(EVE.1, &["sales"]).await;
    let (s, b) = gw
        .admin(
            "POST",
            "/api/connections",
            Some(json!({"name": "shell", "type": "command", "command": ["sh"], "reviewers": ["dba"], "slack_channel": "C123"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    Setup {
        gw,
        slack,
        dev,
        dba,
    }
}

async fn review(gw: &TestGateway, id: &str) -> Value {
    let (s, r) = gw.admin("GET", &format!("/api/reviews/{id}"), None).await;
    assert_eq!(s, 200, "{r}");
    r
}

async fn notify(gw: &TestGateway) {
    gw.running.app.notifier().try_run_once().await.unwrap();
}

fn find_block<'a>(blocks: &'a Value, kind: &str) -> Vec<&'a Value> {
    blocks
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn review_message_signed_clicks_and_updates() {
    let Setup { gw, slack, dev, .. } = setup().await;
    let id = gw
        .held(
            &dev,
            "shell",
            "UPDATE accounts SET plan = 'pro' WHERE id < 7 && true",
        )
        .await;
    notify(&gw).await;

    // The message: bearer token, channel, facts, the exact command in a code block, buttons.
    let posts = slack.to("/chat.postMessage");
    assert_eq!(posts.len(), 1, "one message per review");
    let p = &posts[0];
    assert_eq!(p.method, "POST");
    assert_eq!(
        p.header("authorization").unwrap(),
        format!("Bearer {BOT_TOKEN}")
    );
    let body = p.json();
    assert_eq!(body["channel"], "C123");
    assert!(body["text"].as_str().unwrap().contains("dev@example.com"));
    let blocks = &body["blocks"];
    let text = all_text(blocks);
    for needle in [
        "dev@example.com",
        "*Groups*\ndev",
        "shell (command)",
        "*Rule*\nshell (command)",
        "dba",
        &format!("/reviews/{id}"),
    ] {
        assert!(text.contains(needle), "{needle:?} missing in {text}");
    }
    let code = "```\nUPDATE accounts SET plan = 'pro' WHERE id &lt; 7 &amp;&amp; true\n```";
    assert!(
        find_block(blocks, "section")
            .iter()
            .any(|b| b["text"]["text"] == code),
        "code block missing: {blocks:#}"
    );
    let actions = find_block(blocks, "actions");
    assert_eq!(actions.len(), 1);
    let ids: Vec<&str> = actions[0]["elements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action_id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&format!("warden_approve:{id}:dba").as_str()),
        "{ids:?}"
    );
    assert!(
        ids.contains(&format!("warden_reject:{id}").as_str()),
        "{ids:?}"
    );
    let ts = "1700000000.000001";

    // Forged and stale signatures: 401, nothing changes.
    let approve = click(
        DBA.0,
        &format!("warden_approve:{id}:dba"),
        &format!("{}/response/1", slack.url),
    );
    let (s, _) = slack_post(
        &gw.base,
        "/api/slack/interactions",
        &approve,
        now_unix(),
        "wrong-secret",
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = slack_post(
        &gw.base,
        "/api/slack/interactions",
        &approve,
        now_unix() - 600,
        SIGNING_SECRET,
    )
    .await;
    assert_eq!(s, 401);
    let resp = reqwest::Client::new()
        .post(format!("{}/api/slack/interactions", gw.base))
        .body(approve.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401, "unsigned");
    assert_eq!(review(&gw, &id).await["status"], "PENDING");

    // A non-approver's click: refused ephemerally through response_url, nothing changes.
    let eve = click(
        EVE.0,
        &format!("warden_approve:{id}:dba"),
        &format!("{}/response/eve", slack.url),
    );
    let (s, _) = slack_post(
        &gw.base,
        "/api/slack/interactions",
        &eve,
        now_unix(),
        SIGNING_SECRET,
    )
    .await;
    assert_eq!(s, 200);
    let reqs = slack
        .wait_for("the ephemeral refusal", |r| {
            r.iter().any(|r| r.path == "/response/eve")
        })
        .await;
    let refusal = reqs
        .iter()
        .find(|r| r.path == "/response/eve")
        .unwrap()
        .json();
    assert_eq!(refusal["response_type"], "ephemeral");
    assert!(
        refusal["text"].as_str().unwrap().contains("dba"),
        "{refusal}"
    );
    assert_eq!(review(&gw, &id).await["status"], "PENDING");

    // The approver's click approves through the real decision code; the command runs.
    let (s, _) = slack_post(
        &gw.base,
        "/api/slack/interactions",
        &approve,
        now_unix(),
        SIGNING_SECRET,
    )
    .await;
    assert_eq!(s, 200);
    let (s, r) = gw
        .call(
            "GET",
            &format!("/api/reviews/{id}/wait?timeout=10"),
            Some(&dev),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(r["status"], "EXECUTED", "{r}");
    assert_eq!(r["approvals"][0]["approver"], DBA.1);
    assert_eq!(r["approvals"][0]["group"], "dba");

    // The message is updated in place with the outcome; the requester gets a DM.
    notify(&gw).await;
    let updates = slack.to("/chat.update");
    assert!(!updates.is_empty(), "chat.update expected");
    let last = updates.last().unwrap().json();
    assert_eq!(last["channel"], "C123");
    assert_eq!(last["ts"], ts);
    let text = all_text(&last["blocks"]);
    assert!(
        text.contains("1 of 1") && text.contains("dba@example.com"),
        "{text}"
    );
    assert!(
        find_block(&last["blocks"], "actions").is_empty(),
        "buttons gone once decided"
    );
    let dms: Vec<Value> = slack
        .to("/chat.postMessage")
        .iter()
        .map(|r| r.json())
        .filter(|b| b["channel"] == DEV.0)
        .collect();
    assert_eq!(dms.len(), 1, "one DM to the requester on the decision");
    assert!(
        dms[0]["text"].as_str().unwrap().contains("Approved"),
        "{}",
        dms[0]
    );

    // Running again sends nothing twice.
    let before = slack.requests().len();
    notify(&gw).await;
    assert_eq!(slack.requests().len(), before);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reject_through_the_modal() {
    let Setup { gw, slack, dev, .. } = setup().await;
    let id = gw.held(&dev, "shell", "DROP TABLE accounts").await;
    notify(&gw).await;

    // A non-approver's Reject: refused, no modal.
    let eve = click(
        EVE.0,
        &format!("warden_reject:{id}"),
        &format!("{}/response/eve", slack.url),
    );
    let (s, _) = slack_post(
        &gw.base,
        "/api/slack/interactions",
        &eve,
        now_unix(),
        SIGNING_SECRET,
    )
    .await;
    assert_eq!(s, 200);
    slack
        .wait_for("refusal", |r| r.iter().any(|r| r.path == "/response/eve"))
        .await;
    assert!(slack.to("/views.open").is_empty());

    // The approver's Reject opens the modal with the trigger id.
    let c = click(
        DBA.0,
        &format!("warden_reject:{id}"),
        &format!("{}/response/dba", slack.url),
    );
    let (s, _) = slack_post(
        &gw.base,
        "/api/slack/interactions",
        &c,
        now_unix(),
        SIGNING_SECRET,
    )
    .await;
    assert_eq!(s, 200);
    let opened = slack.to("/views.open");
    assert_eq!(opened.len(), 1);
    let v = opened[0].json();
    assert_eq!(v["trigger_id"], format!("trigger-{}", DBA.0));
    assert_eq!(v["view"]["callback_id"], "warden_reject_modal");
    assert_eq!(v["view"]["private_metadata"], id);
    assert_eq!(review(&gw, &id).await["status"], "PENDING");

    // An empty reason is refused in the modal; a forged submission changes nothing.
    let (s, body) = slack_post(
        &gw.base,
        "/api/slack/interactions",
        &submit_reject(DBA.0, &id, " "),
        now_unix(),
        SIGNING_SECRET,
    )
    .await;
    assert_eq!(s, 200);
    let errors: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(errors["response_action"], "errors");
    let sub = submit_reject(DBA.0, &id, "use the migration");
    let (s, _) = slack_post(
        &gw.base,
        "/api/slack/interactions",
        &sub,
        now_unix(),
        "forged",
    )
    .await;
    assert_eq!(s, 401);
    assert_eq!(review(&gw, &id).await["status"], "PENDING");

    // The submission rejects with the reason.
    let (s, body) = slack_post(
        &gw.base,
        "/api/slack/interactions",
        &sub,
        now_unix(),
        SIGNING_SECRET,
    )
    .await;
    assert_eq!((s, body.as_str()), (200, ""));
    let r = review(&gw, &id).await;
    assert_eq!(r["status"], "REJECTED");
    assert_eq!(r["decided_by"], DBA.1);
    assert_eq!(r["reason"], "use the migration");

    notify(&gw).await;
    let last = slack.to("/chat.update").last().unwrap().json();
    let text = all_text(&last["blocks"]);
    assert!(
        text.contains("Rejected") && text.contains("use the migration") && text.contains(DBA.1),
        "{text}"
    );
    let dm = slack
        .to("/chat.postMessage")
        .iter()
        .map(|r| r.json())
        .find(|b| b["channel"] == DEV.0)
        .expect("DM to the requester");
    assert!(all_text(&dm).contains("use the migration"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_decision_path_updates_the_message() {
    let slack = Fake::start(slack_handler(&[DEV, DBA, EVE])).await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut config = TestGateway::config(dir.path().to_path_buf(), None);
    slack_config(&mut config, &slack.url);
    config.sweep_ms = 3_600_000; // the test sweeps by hand
    let clock = FakeClock::new();
    let gw = TestGateway::start(config, dir, Some(clock.clone())).await;
    let Setup {
        gw,
        slack,
        dev,
        dba,
    } = finish_setup(gw, slack).await;

    // API approval (the CLI and the web app use the same endpoint).
    let a = gw.held(&dev, "shell", "echo a").await;
    // Expiry by the sweeper (a command longer than Slack allows in one block).
    let long = format!("echo {}", "<x>".repeat(2000));
    let b = gw.held(&dev, "shell", &long).await;
    notify(&gw).await;
    assert_eq!(slack.to("/chat.postMessage").len(), 2);
    let post_b = slack
        .to("/chat.postMessage")
        .iter()
        .map(|r| r.json())
        .find(|p| all_text(&p["blocks"]).contains(&b))
        .unwrap();
    for block in post_b["blocks"].as_array().unwrap() {
        if let Some(t) = block["text"]["text"].as_str() {
            assert!(t.chars().count() <= 3000, "section over Slack's limit");
        }
    }
    let text = all_text(&post_b["blocks"]);
    assert!(text.contains("```\necho &lt;x&gt;"), "escaped code block");
    assert!(
        text.contains("Command truncated") && text.contains(&format!("/reviews/{b}|")),
        "link to the full text: {text}"
    );
    let (s, r) = gw.decide(&dba, &a, "approve", None).await;
    assert_eq!(s, 200, "{r}");
    gw.call(
        "GET",
        &format!("/api/reviews/{a}/wait?timeout=10"),
        Some(&dev),
        None,
    )
    .await;
    clock.advance(7200);
    gw.sweep().await;
    assert_eq!(review(&gw, &b).await["status"], "EXPIRED");
    notify(&gw).await;

    // Each review's message (found by its review id) was updated with its own outcome.
    let updates: Vec<Value> = slack.to("/chat.update").iter().map(|r| r.json()).collect();
    let latest = |id: &str| {
        updates
            .iter()
            .map(|u| all_text(&u["blocks"]))
            .rfind(|t| t.contains(id))
            .unwrap_or_else(|| panic!("no update for review {id}"))
    };
    let text_a = latest(&a);
    assert!(
        text_a.contains("Executed") && text_a.contains(DBA.1),
        "{text_a}"
    );
    assert!(latest(&b).contains("Expired"), "{}", latest(&b));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribe_links_the_slack_user() {
    let slack = Fake::start(slack_handler(&[
        ("U_OPS", "ops@example.com"),
        ("U_NOBODY", "nobody@example.com"),
    ]))
    .await;
    let url = slack.url.clone();
    let gw = TestGateway::spawn_with(Backend::Sqlite, |c| slack_config(c, &url)).await;
    gw.user("ops@example.com", &["ops"]).await;
    let cmd = |user: &str, text: &str| {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("command", "/warden")
            .append_pair("text", text)
            .append_pair("user_id", user)
            .append_pair("team_id", "T1")
            .finish()
    };
    let (s, _) = slack_post(
        &gw.base,
        "/api/slack/commands",
        &cmd("U_OPS", "subscribe"),
        now_unix(),
        "forged",
    )
    .await;
    assert_eq!(s, 401);
    let (s, body) = slack_post(
        &gw.base,
        "/api/slack/commands",
        &cmd("U_OPS", "whoami"),
        now_unix(),
        SIGNING_SECRET,
    )
    .await;
    assert_eq!(s, 200);
    assert!(body.contains("not linked"), "{body}");
    let (s, body) = slack_post(
        &gw.base,
        "/api/slack/commands",
        &cmd("U_OPS", "subscribe"),
        now_unix(),
        SIGNING_SECRET,
    )
    .await;
    assert_eq!(s, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["response_type"], "ephemeral");
    assert!(
        v["text"].as_str().unwrap().contains("ops@example.com"),
        "{v}"
    );
    let (_, body) = slack_post(
        &gw.base,
        "/api/slack/commands",
        &cmd("U_OPS", "whoami"),
        now_unix(),
        SIGNING_SECRET,
    )
    .await;
    assert!(
        body.contains("linked to the Warden user ops@example.com"),
        "{body}"
    );
    let (_, body) = slack_post(
        &gw.base,
        "/api/slack/commands",
        &cmd("U_NOBODY", "subscribe"),
        now_unix(),
        SIGNING_SECRET,
    )
    .await;
    assert!(body.contains("No Warden user"), "{body}");
    // The link is audited.
    let (_, audit) = gw.admin("GET", "/api/audit?after=0&limit=1000", None).await;
    assert!(audit.to_string().contains("slack_link"), "link audited");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn teams_cards() {
    let teams = Fake::start(Arc::new(|_r: &Req| (202, json!({})))).await;
    let gw = TestGateway::spawn_with(Backend::Sqlite, |c| {
        c.notify_poll_ms = 0;
        c.notify_backoff_ms = 20;
    })
    .await;
    let dev = gw.user(DEV.1, &["dev"]).await;
    let dba = gw.user(DBA.1, &["dba"]).await;
    let hook = format!(
        "{}/workflows/abc/triggers/manual/paths/invoke?sig=SECRETSIG",
        teams.url
    );
    let (s, b) = gw
        .admin(
            "POST",
            "/api/connections",
            Some(json!({"name": "shell", "type": "command", "command": ["sh"], "reviewers": ["dba"], "teams_webhook": hook})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let id = gw.held(&dev, "shell", "echo teams").await;
    notify(&gw).await;
    let posts = teams.to("/workflows/abc/triggers/manual/paths/invoke");
    assert_eq!(posts.len(), 1);
    let card = posts[0].json();
    assert_eq!(card["type"], "message");
    let att = &card["attachments"][0];
    assert_eq!(
        att["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let content = &att["content"];
    assert_eq!(content["type"], "AdaptiveCard");
    let facts = content["body"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "FactSet")
        .unwrap();
    let fact = |t: &str| {
        facts["facts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["title"] == t)
            .map(|f| f["value"].as_str().unwrap().to_string())
    };
    assert_eq!(fact("Requester").unwrap(), DEV.1);
    assert_eq!(fact("Connection").unwrap(), "shell (command)");
    assert_eq!(fact("Rule").unwrap(), "shell (command)");
    assert!(all_text(content).contains("echo teams"));
    assert_eq!(content["actions"][0]["type"], "Action.OpenUrl");
    assert!(
        content["actions"][0]["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/reviews/{id}"))
    );

    let (s, _) = gw.decide(&dba, &id, "approve", None).await;
    assert_eq!(s, 200);
    gw.call(
        "GET",
        &format!("/api/reviews/{id}/wait?timeout=10"),
        Some(&dev),
        None,
    )
    .await;
    notify(&gw).await;
    let posts = teams.to("/workflows/abc/triggers/manual/paths/invoke");
    let outcomes: Vec<String> = posts[1..].iter().map(|p| all_text(&p.json())).collect();
    assert!(
        outcomes.iter().any(|t| t.contains("APPROVED")),
        "{outcomes:?}"
    );
    assert!(
        outcomes.iter().any(|t| t.contains("EXECUTED")),
        "{outcomes:?}"
    );

    // The delivery log shows Teams deliveries without the webhook's secret URL.
    let (s, log) = gw.admin("GET", "/api/deliveries?kind=teams", None).await;
    assert_eq!(s, 200, "{log}");
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .all(|d| d["status"] == "sent"),
        "{log}"
    );
    assert!(!log.to_string().contains("SECRETSIG"), "{log}");
    gw.stop().await;
}

/// Another entry point for a decision: an auditor in the approver group clicks Approve in Slack.
/// The click is signed and its user known, and it is still refused (read-only), ephemerally;
/// the review stays PENDING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditors_slack_click_decides_nothing() {
    let Setup { gw, slack, dev, .. } = setup().await;
    let (s, b) = gw
        .admin(
            "POST",
            "/api/users",
            Some(json!({"email": EVE.1, "groups": ["dba"], "auditor": true, "overwrite": true})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let id = gw.held(&dev, "shell", "echo never").await;
    for action in [
        format!("warden_approve:{id}:dba"),
        format!("warden_reject:{id}"),
    ] {
        let c = click(EVE.0, &action, &format!("{}/response/audit", slack.url));
        let (s, _) = slack_post(
            &gw.base,
            "/api/slack/interactions",
            &c,
            now_unix(),
            SIGNING_SECRET,
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(review(&gw, &id).await["status"], "PENDING", "{action}");
    }
    let reqs = slack
        .wait_for("the ephemeral refusal", |r| {
            r.iter().any(|r| r.path == "/response/audit")
        })
        .await;
    let refusal = reqs
        .iter()
        .find(|r| r.path == "/response/audit")
        .unwrap()
        .json();
    assert!(
        refusal["text"].as_str().unwrap_or("").contains("read-only"),
        "{refusal}"
    );
    gw.stop().await;
}
