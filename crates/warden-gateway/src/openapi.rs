//! The OpenAPI 3.1 document served at `/api/openapi.json`, built from one table of routes.
//!
//! Written by hand rather than derived (utoipa) to keep the handlers free of annotation noise;
//! the `every_route_is_documented` test reads the routers' source so the table cannot drift.

use serde_json::{Map, Value, json};

/// (method, path, summary, admin only?)
pub const ROUTES: &[(&str, &str, &str, bool)] = &[
    (
        "get",
        "/api/health",
        "Liveness and store reachability (no auth).",
        false,
    ),
    (
        "post",
        "/api/login",
        "Email + password → API token (12 h). Body {email, password}.",
        false,
    ),
    ("get", "/api/me", "The caller.", false),
    ("get", "/api/users", "List users.", true),
    (
        "post",
        "/api/users",
        "Create (or with overwrite: update) a user. Body {email, groups, admin, password?, overwrite}.",
        true,
    ),
    (
        "delete",
        "/api/users/{email}",
        "Delete a user and revoke their tokens.",
        true,
    ),
    ("get", "/api/groups", "Groups and their members.", true),
    (
        "get",
        "/api/tokens",
        "Token metadata (never the token). Admins: ?user=EMAIL.",
        false,
    ),
    (
        "post",
        "/api/tokens",
        "Create a token, shown once. Body {user?, name, expires_in?}.",
        false,
    ),
    ("delete", "/api/tokens/{id}", "Revoke a token.", false),
    (
        "get",
        "/api/connections",
        "Connections you may use (secrets never returned).",
        false,
    ),
    (
        "post",
        "/api/connections",
        "Create/overwrite a connection. Body {name, type, url?, command[], env[\"K=V\"], access_groups?, reviewers?, slack_channel?, teams_webhook?, overwrite}. On overwrite, a field left out keeps its stored value; access_groups [] clears them, reviewers [] removes the rule named after the connection. The answer is the connection plus warnings[] (e.g. a group with no members).",
        true,
    ),
    ("get", "/api/connections/{name}", "One connection.", false),
    (
        "delete",
        "/api/connections/{name}",
        "Delete a connection no rule binds.",
        true,
    ),
    (
        "post",
        "/api/connections/{name}/test",
        "Admins: check that the gateway reaches the target and logs in with the stored credentials (databases answer SELECT 1; a command connection's program is looked up, never run). Answer {ok, message, duration_ms}; audited.",
        true,
    ),
    ("get", "/api/rules", "Access request rules.", false),
    (
        "post",
        "/api/rules",
        "Create a rule (every field of SPEC §2).",
        true,
    ),
    ("get", "/api/rules/{name}", "One rule.", false),
    ("put", "/api/rules/{name}", "Replace a rule.", true),
    ("delete", "/api/rules/{name}", "Delete a rule.", true),
    (
        "post",
        "/api/exec",
        "Run a command: 200 {status: executed, session} or 202 {status: pending, review}. Body {connection, command}.",
        false,
    ),
    (
        "post",
        "/api/access-requests",
        "Request a JIT window. Body {connection, duration (seconds or \"2h\"), reason?}.",
        false,
    ),
    (
        "get",
        "/api/access",
        "The caller's open JIT windows.",
        false,
    ),
    (
        "get",
        "/api/reviews",
        "Reviews you can see. ?status=pending|…|all&connection=&requester=&type=&page=&per_page= (X-Total-Count header).",
        false,
    ),
    (
        "get",
        "/api/reviews/{id}",
        "One review with url, progress, outcome, the caller's permitted actions and result.",
        false,
    ),
    (
        "get",
        "/api/reviews/{id}/wait",
        "Long-poll until settled (or ?timeout=25 seconds, max 60).",
        false,
    ),
    (
        "get",
        "/api/reviews/{id}/timeline",
        "The review's audit entries.",
        false,
    ),
    (
        "put",
        "/api/reviews/{id}/approve",
        "Approve. Optional body {reason?, force?, duration?}.",
        false,
    ),
    (
        "put",
        "/api/reviews/{id}/reject",
        "Reject. Body {reason} (required).",
        false,
    ),
    (
        "put",
        "/api/reviews/{id}/withdraw",
        "Withdraw your own pending request.",
        false,
    ),
    (
        "put",
        "/api/reviews/{id}/revoke",
        "End an approved JIT window. Optional body {reason}.",
        false,
    ),
    (
        "get",
        "/api/sessions",
        "Sessions (admins: all; others: their own). ?user=&connection=&kind=&review=&page=",
        false,
    ),
    (
        "get",
        "/api/sessions/{id}",
        "One session with its output.",
        false,
    ),
    (
        "get",
        "/api/sessions/{id}/statements",
        "Statements of a proxied session.",
        false,
    ),
    (
        "get",
        "/api/audit",
        "Audit entries. ?after=SEQ&limit=N",
        true,
    ),
    (
        "get",
        "/api/audit/verify",
        "Walk the hash chain: 200 ok or 409 naming the first bad entry.",
        true,
    ),
    (
        "get",
        "/api/audit/stream",
        "NDJSON, one OCSF 1.1 line per audit entry (docs/siem.md). ?after=SEQ&follow=true keeps it open; blank lines are heartbeats (admins and auditors)",
        true,
    ),
    (
        "get",
        "/api/audit/export",
        "One row per review plus the chain segment proving it. ?since=&until=&connection=&format=json|csv; or ?review=ID: one review alone with Merkle inclusion proofs against a signed checkpoint (admins and auditors)",
        true,
    ),
    (
        "get",
        "/api/audit/checkpoints",
        "Signed checkpoints of the chain head and Merkle root, each with its consistency proof from the previous one.",
        true,
    ),
    (
        "post",
        "/api/audit/checkpoints",
        "Sign the current head now (needs WARDEN_CHECKPOINT_KEY).",
        true,
    ),
    (
        "get",
        "/api/analytics",
        "Time to approval (avg, p90), rates, top requesters/approvers/commands. ?since=30d&connection=",
        true,
    ),
    ("get", "/api/webhooks", "Webhook endpoints.", true),
    (
        "post",
        "/api/webhooks",
        "Add a webhook endpoint (Standard Webhooks signatures). Body {url, events?, secret?}.",
        true,
    ),
    (
        "delete",
        "/api/webhooks/{id}",
        "Remove a webhook endpoint.",
        true,
    ),
    (
        "get",
        "/api/deliveries",
        "Notification deliveries and their state.",
        true,
    ),
    (
        "post",
        "/api/slack/interactions",
        "Slack interactivity (signed by Slack; no bearer token).",
        false,
    ),
    (
        "post",
        "/api/slack/commands",
        "Slack slash commands: /warden subscribe (signed by Slack).",
        false,
    ),
    ("get", "/metrics", "Prometheus metrics (admin token).", true),
    (
        "get",
        "/api/openapi.json",
        "This document (no auth).",
        false,
    ),
];

pub fn document() -> Value {
    let mut paths = Map::new();
    for (method, path, summary, admin) in ROUTES {
        let open = matches!(
            *path,
            "/api/health"
                | "/api/login"
                | "/api/openapi.json"
                | "/api/slack/interactions"
                | "/api/slack/commands"
        );
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut responses = json!({
            "200": {"description": "OK"},
            "400": {"description": "Bad input", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            "404": {"description": "Unknown id", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        });
        if !open {
            responses["401"] = json!({"description": "Missing, unknown, revoked or expired token"});
            responses["403"] =
                json!({"description": if *admin { "Admins only" } else { "Not allowed" }});
        }
        let mut op = json!({"summary": summary, "responses": responses, "parameters": params});
        if !open {
            op["security"] = json!([{"bearer": []}]);
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Warden gateway API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Approvals for production access. Errors are {\"error\", \"code\"}."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "code"], "properties": {"error": {"type": "string"}, "code": {"type": "string"}}},
                "Review": {"type": "object", "properties": {
                    "id": {"type": "string", "format": "uuid"}, "type": {"enum": ["command", "jit"]},
                    "status": {"enum": ["PENDING", "APPROVED", "REJECTED", "EXPIRED", "REVOKED", "EXECUTED"]},
                    "connection": {"type": "string"}, "requester": {"type": "string"}, "command": {"type": ["string", "null"]},
                    "command_sha256": {"type": ["string", "null"]}, "duration_sec": {"type": ["integer", "null"]}, "rule": {"type": "string"},
                    "approvals": {"type": "array", "items": {"type": "object", "properties": {"approver": {"type": "string"}, "group": {"type": "string"}, "forced": {"type": "boolean"}, "at": {"type": "string", "format": "date-time"}}}},
                    "reason": {"type": ["string", "null"]}, "created_at": {"type": "string", "format": "date-time"},
                    "decided_at": {"type": ["string", "null"], "format": "date-time"}, "url": {"type": "string"}, "progress": {"type": "string"},
                    "connection_type": {"enum": ["postgres", "mysql", "sqlite", "command", null], "description": "The kind of target; null once the connection is deleted"},
                    "outcome": {"enum": ["pending", "approved", "auto_approved", "force_approved", "rejected", "withdrawn", "expired"],
                                "description": "How the review was decided (a withdrawal is REJECTED by status, withdrawn here)"},
                    "actions": {"type": "object", "description": "The decisions the caller may take now; the transitions still decide",
                                "properties": {"approve": {"type": "boolean"}, "reject": {"type": "boolean"}, "force": {"type": "boolean"},
                                               "withdraw": {"type": "boolean"}, "revoke": {"type": "boolean"}}},
                    "result": {"type": ["object", "null"]}
                }}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::ROUTES;

    /// Every `.route("PATH", method(...).method(...))` in the routers appears in the table.
    #[test]
    fn every_route_is_documented() {
        let src = [include_str!("api.rs"), include_str!("integrations.rs")].concat();
        let norm = src.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut found = 0;
        for chunk in norm.split(".route(").skip(1) {
            let chunk = chunk.trim_start();
            let Some(rest) = chunk.strip_prefix('"') else {
                continue;
            };
            let Some((path, call)) = rest.split_once('"') else {
                continue;
            };
            for m in ["get", "post", "put", "delete"] {
                if call.contains(&format!(", {m}(")) || call.contains(&format!(".{m}(")) {
                    found += 1;
                    assert!(
                        ROUTES.iter().any(|(rm, rp, _, _)| *rm == m && *rp == path),
                        "{m} {path} is not in openapi::ROUTES"
                    );
                }
            }
        }
        assert!(found >= 45, "the scan found the routes ({found})");
    }
}
