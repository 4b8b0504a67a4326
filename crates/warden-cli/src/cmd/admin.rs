//! `warden admin create|update|get|delete …`: users, tokens, connections, rules.

use std::io::Read;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use reqwest::Method;
use serde_json::{Map, Value, json};
use warden_gateway::app::ConnectionTest;

use super::review::{print_reviews, urlencode};
use crate::OutputArgs;
use crate::client::Client;
use crate::output::{self, Format, field, print_list};

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Create users, tokens, connections or rules.
    #[command(subcommand)]
    Create(Create),
    /// Change a rule (only the flags you give change).
    #[command(subcommand)]
    Update(Update),
    /// List users, groups, connections, rules, reviews, sessions or tokens.
    Get {
        #[arg(value_enum)]
        what: What,
        /// Show one item by name/id.
        name: Option<String>,
        /// reviews: pending, approved, … or all.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        connection: Option<String>,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Access-request analytics: time to approval (avg, p90), approval/rejection rates, expiries,
    /// top requesters, approvers and commands, per connection.
    Analytics {
        /// Period: a duration back from now (30d, 7d, 24h), an RFC 3339 time, or all.
        #[arg(long, default_value = "30d")]
        since: String,
        #[arg(long)]
        connection: Option<String>,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Delete a user, connection, rule or token.
    Delete {
        #[arg(value_enum)]
        what: Deletable,
        name: String,
    },
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum What {
    Users,
    Groups,
    Connections,
    Rules,
    Reviews,
    Sessions,
    Tokens,
    Webhooks,
    Deliveries,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum Deletable {
    User,
    Connection,
    Rule,
    Token,
    Webhook,
}

#[derive(clap::Subcommand, Debug)]
pub enum Create {
    /// A user (password from --password-stdin, else token-only).
    User {
        email: String,
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Full admin: changes users, connections, rules, integrations.
        #[arg(long, conflicts_with = "auditor")]
        admin: bool,
        /// Read-only auditor: reads every review, session, audit entry, export and analytics;
        /// runs nothing, decides nothing, changes nothing.
        #[arg(long)]
        auditor: bool,
        #[arg(long)]
        password_stdin: bool,
        #[arg(long)]
        overwrite: bool,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// An API token for a user (printed once).
    Token {
        #[arg(long)]
        user: String,
        #[arg(long, default_value = "api")]
        name: String,
        /// e.g. 30d, 12h; default never.
        #[arg(long)]
        expires_in: Option<String>,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// A connection. Secrets (URL password, --env values) are encrypted and never shown again.
    #[command(after_help = "Examples:
  warden admin create connection pg --type postgres --url postgres://app:secret@db:5432/app --reviewers dba,security
  warden admin create connection shell --type command --env TOKEN=xyz -- bash
  warden admin create connection local --type sqlite --url sqlite:///var/lib/app.db")]
    Connection(ConnectionArgs),
    /// An access request rule.
    Rule(RuleArgs),
    /// A webhook endpoint, signed per the Standard Webhooks spec.
    Webhook(super::notify::WebhookArgs),
}

#[derive(clap::Subcommand, Debug)]
pub enum Update {
    Rule(RuleArgs),
}

#[derive(clap::Args, Debug)]
pub struct ConnectionArgs {
    name: String,
    /// After saving, check that the gateway reaches the target and logs in with these
    /// credentials (databases answer SELECT 1; a command's program is looked up, not run).
    #[arg(long)]
    test: bool,
    /// postgres, mysql, sqlite or command.
    #[arg(long = "type")]
    kind: String,
    #[arg(long)]
    url: Option<String>,
    /// Only members of these groups may use the connection. With --overwrite, left out = kept.
    #[arg(long, value_delimiter = ',', conflicts_with = "clear_access_groups")]
    access_groups: Option<Vec<String>>,
    /// With --overwrite: remove every access group (opens the connection to every user).
    #[arg(long)]
    clear_access_groups: bool,
    /// Shorthand: a command rule named after the connection, one approver from each group.
    /// With --overwrite, left out = the rule is kept.
    #[arg(long, value_delimiter = ',', conflicts_with = "clear_reviewers")]
    reviewers: Option<Vec<String>>,
    /// With --overwrite: remove the review rule named after the connection (commands then run
    /// without review unless another rule holds them).
    #[arg(long)]
    clear_reviewers: bool,
    /// KEY=VALUE env var for command connections (repeatable; values are secret).
    #[arg(long = "env")]
    env: Vec<String>,
    /// Change an existing connection: only the fields given change.
    #[arg(long)]
    overwrite: bool,
    /// Notification plugin (slack or teams).
    #[arg(long)]
    plugin: Option<String>,
    #[arg(long)]
    slack_channel: Option<String>,
    #[arg(long)]
    teams_webhook: Option<String>,
    /// argv for command connections.
    #[arg(last = true)]
    command: Vec<String>,
    #[command(flatten)]
    out: OutputArgs,
}

#[derive(clap::Args, Debug)]
pub struct RuleArgs {
    name: String,
    /// command or jit.
    #[arg(long = "type")]
    kind: Option<String>,
    #[arg(long, value_delimiter = ',')]
    connections: Option<Vec<String>>,
    #[arg(long, value_delimiter = ',')]
    required_groups: Option<Vec<String>>,
    #[arg(long, value_delimiter = ',')]
    approval_groups: Option<Vec<String>>,
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    require_all_groups: Option<bool>,
    #[arg(long)]
    approval_amount: Option<i64>,
    #[arg(long, value_delimiter = ',')]
    force_approval_groups: Option<Vec<String>>,
    #[arg(long, value_delimiter = ',')]
    exempt_groups: Option<Vec<String>>,
    /// How long a request waits, e.g. 30m.
    #[arg(long)]
    timeout: Option<String>,
    /// JIT: longest window, e.g. 8h.
    #[arg(long)]
    max_duration: Option<String>,
    /// JIT: requests must carry --reason.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    require_reason: Option<bool>,
    #[arg(long)]
    description: Option<String>,
    #[command(flatten)]
    out: OutputArgs,
}

fn secs(s: &str) -> Result<i64> {
    warden_core::duration::parse_duration(s).map_err(anyhow::Error::from)
}

impl RuleArgs {
    /// Overlays the given flags on `base` (an existing rule's JSON, or empty).
    fn spec(&self, base: Value) -> Result<Value> {
        let mut m: Map<String, Value> = match base {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        for k in ["id", "created_at", "updated_at"] {
            m.remove(k);
        }
        m.insert("name".into(), json!(self.name));
        let mut set = |k: &str, v: Value| {
            m.insert(k.into(), v);
        };
        if let Some(v) = &self.kind {
            set("type", json!(v));
        }
        if let Some(v) = &self.connections {
            set("connections", json!(v));
        }
        if let Some(v) = &self.required_groups {
            set("required_groups", json!(v));
        }
        if let Some(v) = &self.approval_groups {
            set("approval_groups", json!(v));
        }
        if let Some(v) = self.require_all_groups {
            set("require_all_groups", json!(v));
        }
        if let Some(v) = self.approval_amount {
            set("approval_amount", json!(v));
        }
        if let Some(v) = &self.force_approval_groups {
            set("force_approval_groups", json!(v));
        }
        if let Some(v) = &self.exempt_groups {
            set("exempt_groups", json!(v));
        }
        if let Some(v) = &self.timeout {
            set("timeout_sec", json!(secs(v)?));
        }
        if let Some(v) = &self.max_duration {
            set("max_duration_sec", json!(secs(v)?));
        }
        if let Some(v) = self.require_reason {
            set("require_reason", json!(v));
        }
        if let Some(v) = &self.description {
            set("description", json!(v));
        }
        Ok(Value::Object(m))
    }
}

fn print_rules(format: Format, items: &Value) {
    let groups = |k: &'static str| move |v: &Value| output::cell(v.get(k));
    print_list(
        format,
        items,
        &[
            ("NAME", &field("name")),
            ("TYPE", &field("type")),
            ("CONNECTIONS", &groups("connections")),
            ("APPROVAL GROUPS", &groups("approval_groups")),
            ("ALL GROUPS", &field("require_all_groups")),
            ("AMOUNT", &field("approval_amount")),
            ("FORCE", &groups("force_approval_groups")),
            ("EXEMPT", &groups("exempt_groups")),
            ("REQUIRED", &groups("required_groups")),
            ("TIMEOUT", &|v: &Value| {
                v.get("timeout_sec")
                    .and_then(Value::as_i64)
                    .map(warden_core::duration::format_duration)
                    .unwrap_or_else(|| "default".into())
            }),
            ("MAX DURATION", &|v: &Value| {
                if v.get("type").and_then(Value::as_str) == Some("jit") {
                    warden_core::duration::format_duration(
                        v.get("max_duration_sec")
                            .and_then(Value::as_i64)
                            .unwrap_or(8 * 3600),
                    )
                } else {
                    String::new()
                }
            }),
        ],
    );
}

/// A connection's fields as the CLI compares them before → after an overwrite, with its
/// `--reviewers` (the approval groups of the rule named after it).
fn connection_view(c: &Value, rule: Option<&Value>) -> Vec<(&'static str, String)> {
    let list = |k: &str| output::cell(c.get(k));
    let groups = match c.get("access_groups").and_then(Value::as_array) {
        Some(a) if !a.is_empty() => list("access_groups"),
        _ => "(none: every user)".to_string(),
    };
    let reviewers = match rule.and_then(|r| r.get("approval_groups")) {
        Some(g) => output::cell(Some(g)),
        None => "(no rule)".to_string(),
    };
    vec![
        ("type", list("type")),
        ("url", list("url_redacted")),
        ("command", list("command")),
        ("env", list("env_keys")),
        ("access_groups", groups),
        ("reviewers", reviewers),
        ("slack_channel", list("slack_channel")),
        ("teams_webhook", list("teams_webhook")),
    ]
}

/// `admin create connection`: sends only the fields given, then prints what changed.
async fn save_connection(client: &Client, a: ConnectionArgs) -> Result<()> {
    let mut body = json!({"name": a.name, "type": a.kind, "overwrite": a.overwrite});
    let Some(m) = body.as_object_mut() else {
        bail!("internal error: request body is not an object");
    };
    if let Some(u) = &a.url {
        m.insert("url".into(), json!(u));
    }
    if !a.command.is_empty() {
        m.insert("command".into(), json!(a.command));
    }
    if !a.env.is_empty() {
        m.insert("env".into(), json!(a.env));
    }
    if a.clear_access_groups {
        m.insert("access_groups".into(), json!([]));
    } else if let Some(g) = &a.access_groups {
        m.insert("access_groups".into(), json!(g));
    }
    if a.clear_reviewers {
        m.insert("reviewers".into(), json!([]));
    } else if let Some(g) = &a.reviewers {
        m.insert("reviewers".into(), json!(g));
    }
    if let Some(c) = &a.slack_channel {
        m.insert("slack_channel".into(), json!(c));
    }
    if let Some(w) = &a.teams_webhook {
        m.insert("teams_webhook".into(), json!(w));
    }
    let conn_path = format!("/api/connections/{}", urlencode(&a.name));
    let rule_path = format!("/api/rules/{}", urlencode(&a.name));
    let before = if a.overwrite {
        let c: Option<Value> = client.call(Method::GET, &conn_path, None).await.ok();
        let r: Option<Value> = client.call(Method::GET, &rule_path, None).await.ok();
        c.map(|c| connection_view(&c, r.as_ref()))
    } else {
        None
    };
    let v: Value = client
        .call(Method::POST, "/api/connections", Some(&body))
        .await?;
    print_warnings(&v);
    if a.test {
        let t: ConnectionTest = client
            .call(Method::POST, &format!("{conn_path}/test"), None)
            .await?;
        if !t.ok {
            bail!(
                "connection {} was saved, but its test failed after {} ms: {}\n\
                 fix the URL or credentials and save it again with --overwrite --test",
                a.name,
                t.duration_ms,
                warden_core::text::visible(&t.message)
            );
        }
        eprintln!(
            "connection test passed in {} ms: {}",
            t.duration_ms,
            warden_core::text::visible(&t.message)
        );
    }
    if a.out.format == Format::Json {
        output::print_json(&v);
        return Ok(());
    }
    let Some(before) = before else {
        println!("created connection {}", a.name);
        return Ok(());
    };
    let rule: Option<Value> = client.call(Method::GET, &rule_path, None).await.ok();
    let after = connection_view(&v, rule.as_ref());
    println!("saved connection {}", a.name);
    let mut changed = false;
    for ((field, old), (_, new)) in before.iter().zip(&after) {
        if old != new {
            changed = true;
            println!("  {field}: {} → {}", shown(old), shown(new));
        }
    }
    if !changed {
        println!("  (nothing changed)");
    }
    Ok(())
}

fn shown(v: &str) -> &str {
    if v.is_empty() { "(none)" } else { v }
}

fn one(format: Format, v: &Value, what: &str) {
    if format == Format::Json {
        output::print_json(v);
    } else {
        println!("{what} {}", output::cell(v.get("name").or(v.get("email"))));
    }
}

pub async fn run(client: &Client, c: Command) -> Result<ExitCode> {
    client.require_token()?;
    match c {
        Command::Create(Create::User {
            email,
            groups,
            admin,
            auditor,
            password_stdin,
            overwrite,
            out,
        }) => {
            let password = if password_stdin {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                Some(s.trim_end_matches(['\n', '\r']).to_string())
            } else {
                None
            };
            let body = json!({"email": email, "groups": groups, "admin": admin, "auditor": auditor, "password": password, "overwrite": overwrite});
            let v: Value = client.call(Method::POST, "/api/users", Some(&body)).await?;
            one(out.format, &v, "created user");
        }
        Command::Create(Create::Token {
            user,
            name,
            expires_in,
            out,
        }) => {
            let exp = expires_in.as_deref().map(secs).transpose()?;
            let v: Value = client
                .call(
                    Method::POST,
                    "/api/tokens",
                    Some(&json!({"user": user, "name": name, "expires_in": exp})),
                )
                .await?;
            if out.format == Format::Json {
                output::print_json(&json!({"token": v.get("token")}));
            } else {
                println!("{}", output::cell(v.get("token")));
                eprintln!("(shown once: store it now)");
            }
        }
        Command::Create(Create::Connection(a)) => {
            if let Some(p) = &a.plugin
                && !matches!(p.as_str(), "slack" | "teams")
            {
                bail!("--plugin {p}: use slack or teams");
            }
            save_connection(client, a).await?;
        }
        Command::Create(Create::Rule(a)) => {
            let v: Value = client
                .call(Method::POST, "/api/rules", Some(&a.spec(Value::Null)?))
                .await?;
            print_warnings(&v);
            one(a.out.format, &v, "created rule");
        }
        Command::Create(Create::Webhook(a)) => super::notify::create_webhook(client, a).await?,
        Command::Update(Update::Rule(a)) => {
            let path = format!("/api/rules/{}", urlencode(&a.name));
            let current: Value = client.call(Method::GET, &path, None).await?;
            let v: Value = client
                .call(Method::PUT, &path, Some(&a.spec(current)?))
                .await?;
            print_warnings(&v);
            one(a.out.format, &v, "updated rule");
        }
        Command::Get {
            what,
            name,
            status,
            connection,
            out,
        } => get(client, what, name, status, connection, out.format).await?,
        Command::Analytics {
            since,
            connection,
            out,
        } => {
            let mut q = format!("/api/analytics?since={}", urlencode(&since));
            if let Some(c) = connection {
                q.push_str(&format!("&connection={}", urlencode(&c)));
            }
            let v: Value = client.call(Method::GET, &q, None).await?;
            print_analytics(&v, &since, out.format);
        }
        Command::Delete { what, name } => {
            let path = match what {
                Deletable::User => format!("/api/users/{}", urlencode(&name)),
                Deletable::Connection => format!("/api/connections/{}", urlencode(&name)),
                Deletable::Rule => format!("/api/rules/{}", urlencode(&name)),
                Deletable::Token => format!("/api/tokens/{}", urlencode(&name)),
                Deletable::Webhook => format!("/api/webhooks/{}", urlencode(&name)),
            };
            client
                .call_raw(Method::DELETE, &path, None)
                .await
                .with_context(|| format!("deleting {name}"))?;
            println!("deleted {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn get(
    client: &Client,
    what: What,
    name: Option<String>,
    status: Option<String>,
    connection: Option<String>,
    format: Format,
) -> Result<()> {
    let single = |path: String| async move { client.call::<Value>(Method::GET, &path, None).await };
    match (what, name) {
        (What::Webhooks, _) => super::notify::get_webhooks(client, format).await?,
        (What::Deliveries, _) => super::notify::get_deliveries(client, status, format).await?,
        (What::Connections, Some(n)) => output::print_record(
            format,
            &single(format!("/api/connections/{}", urlencode(&n))).await?,
        ),
        (What::Rules, Some(n)) => output::print_record(
            format,
            &single(format!("/api/rules/{}", urlencode(&n))).await?,
        ),
        (What::Reviews, Some(n)) => output::print_record(
            format,
            &single(format!("/api/reviews/{}", urlencode(&n))).await?,
        ),
        (What::Sessions, Some(n)) => output::print_record(
            format,
            &single(format!("/api/sessions/{}", urlencode(&n))).await?,
        ),
        (What::Groups, Some(_)) => bail!("groups are listed, not shown one by one"),
        (What::Users, _) => {
            let v = single("/api/users".into()).await?;
            print_list(
                format,
                &v,
                &[
                    ("EMAIL", &field("email")),
                    ("GROUPS", &field("groups")),
                    ("ADMIN", &field("admin")),
                    ("CREATED", &field("created_at")),
                ],
            );
        }
        (What::Groups, _) => {
            let v = single("/api/groups".into()).await?;
            print_list(
                format,
                &v,
                &[("GROUP", &field("name")), ("MEMBERS", &field("members"))],
            );
        }
        (What::Connections, None) => {
            let v = single("/api/connections".into()).await?;
            print_list(
                format,
                &v,
                &[
                    ("NAME", &field("name")),
                    ("TYPE", &field("type")),
                    ("TARGET", &|v: &Value| {
                        v.get("url_redacted")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                            .unwrap_or_else(|| output::cell(v.get("command")).replace(',', " "))
                    }),
                    ("ENV", &field("env_keys")),
                    ("ACCESS GROUPS", &field("access_groups")),
                    ("SLACK", &field("slack_channel")),
                ],
            );
        }
        (What::Rules, None) => print_rules(format, &single("/api/rules".into()).await?),
        (What::Reviews, None) => {
            let mut q = format!(
                "/api/reviews?status={}&per_page=200",
                urlencode(status.as_deref().unwrap_or("all"))
            );
            if let Some(c) = connection {
                q.push_str(&format!("&connection={}", urlencode(&c)));
            }
            let v = single(q).await?;
            if format == Format::Table
                && status
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case("approved"))
            {
                print_list(
                    format,
                    &v,
                    &[
                        ("ID", &field("id")),
                        ("TYPE", &field("type")),
                        ("CONNECTION", &field("connection")),
                        ("REQUESTER", &field("requester")),
                        ("WINDOW END", &field("window_end")),
                        ("TIME LEFT", &|v: &Value| {
                            let end = v.get("window_end").and_then(Value::as_str).and_then(|s| {
                                time::OffsetDateTime::parse(
                                    s,
                                    &time::format_description::well_known::Rfc3339,
                                )
                                .ok()
                            });
                            end.map(|e| {
                                warden_core::duration::format_duration(
                                    (e - time::OffsetDateTime::now_utc()).whole_seconds(),
                                )
                            })
                            .unwrap_or_default()
                        }),
                    ],
                );
            } else {
                print_reviews(format, &v);
            }
        }
        (What::Sessions, None) => {
            let mut q = "/api/sessions?per_page=200".to_string();
            if let Some(c) = connection {
                q.push_str(&format!("&connection={}", urlencode(&c)));
            }
            let v = single(q).await?;
            print_list(
                format,
                &v,
                &[
                    ("ID", &field("id")),
                    ("KIND", &field("kind")),
                    ("USER", &field("user")),
                    ("CONNECTION", &field("connection")),
                    ("COMMAND", &|v: &Value| {
                        output::truncate(&output::cell(v.get("command")), 40)
                    }),
                    ("EXIT", &field("exit_code")),
                    ("STARTED", &field("started_at")),
                    ("REVIEW", &field("review_id")),
                ],
            );
        }
        (What::Tokens, _) => {
            let v = single("/api/tokens".into()).await?;
            print_list(
                format,
                &v,
                &[
                    ("ID", &field("id")),
                    ("USER", &field("user_email")),
                    ("NAME", &field("name")),
                    ("CREATED", &field("created_at")),
                    ("EXPIRES", &field("expires_at")),
                    ("REVOKED", &field("revoked_at")),
                ],
            );
        }
    }
    Ok(())
}

fn secs_text(v: Option<&Value>) -> String {
    v.and_then(Value::as_f64)
        .map(|s| warden_core::duration::format_duration(s.round() as i64))
        .unwrap_or_else(|| "-".into())
}

fn pct(v: Option<&Value>) -> String {
    v.and_then(Value::as_f64)
        .map(|r| format!("{:.0}%", r * 100.0))
        .unwrap_or_else(|| "-".into())
}

fn print_analytics(v: &Value, since: &str, format: Format) {
    if format == Format::Json {
        output::print_json(v);
        return;
    }
    let o = &v["overall"];
    println!(
        "Access requests since {since}: {} total, {} pending",
        output::cell(o.get("total")),
        output::cell(o.get("pending"))
    );
    println!(
        "  approved {} ({}), rejected {} ({}), expired {}, withdrawn {}, forced {}, auto-approved {}",
        output::cell(o.get("approved")),
        pct(o.get("approval_rate")),
        output::cell(o.get("rejected")),
        pct(o.get("rejection_rate")),
        output::cell(o.get("expired")),
        output::cell(o.get("withdrawn")),
        output::cell(o.get("forced")),
        output::cell(o.get("auto_approved")),
    );
    println!(
        "  time to approval: avg {}, p90 {}",
        secs_text(o.get("avg_time_to_approval_sec")),
        secs_text(o.get("p90_time_to_approval_sec"))
    );
    println!("\nPer connection:");
    print_list(
        Format::Table,
        &v["per_connection"],
        &[
            ("CONNECTION", &field("connection")),
            ("TOTAL", &field("total")),
            ("APPROVED", &field("approved")),
            ("REJECTED", &field("rejected")),
            ("EXPIRED", &field("expired")),
            ("APPROVAL RATE", &|x: &Value| pct(x.get("approval_rate"))),
            ("AVG TO APPROVAL", &|x: &Value| {
                secs_text(x.get("avg_time_to_approval_sec"))
            }),
            ("P90", &|x: &Value| {
                secs_text(x.get("p90_time_to_approval_sec"))
            }),
        ],
    );
    println!("\nTop requesters:");
    print_list(
        Format::Table,
        &v["top_requesters"],
        &[
            ("REQUESTER", &field("requester")),
            ("REQUESTS", &field("count")),
        ],
    );
    println!("\nTop approvers:");
    print_list(
        Format::Table,
        &v["top_approvers"],
        &[
            ("APPROVER", &field("approver")),
            ("APPROVALS", &field("count")),
        ],
    );
    println!("\nMost common commands:");
    print_list(
        Format::Table,
        &v["top_commands"],
        &[
            ("COMMAND (NORMALISED)", &|x: &Value| {
                output::truncate(&output::cell(x.get("fingerprint")), 70)
            }),
            ("COUNT", &field("count")),
        ],
    );
}

/// The `warnings` a save returned (groups without members), on stderr.
fn print_warnings(v: &Value) {
    for w in v
        .get("warnings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        eprintln!("warning: {}", output::cell(Some(w)));
    }
}
