//! Connections: create/overwrite/list/delete, secrets sealed before they reach the store, and
//! the `--reviewers` shorthand rule created in the same transaction.
//!
//! # What it must never do
//! Widen access by omission: an overwrite changes only the fields given. A field left out
//! (`None`, or an empty URL/env/command) keeps its stored value; access groups are cleared only
//! by an explicit empty list, the `--reviewers` rule is removed only by an explicit empty
//! `reviewers` list. Groups with no members are accepted with a warning saying so.
//!
//! Accept a target that reaches the gateway itself: a `sqlite` connection naming a file inside
//! the data dir (the store, the secret key, the checkpoints) or the store file wherever it lives
//! is refused here, and again by [`App::refuse_private_target`] right before every execution (the
//! second wall: a symlink or a connection stored before this check cannot get past it).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;
use warden_core::audit::AuditEvent;
use warden_core::rule::{RuleSpec, valid_name};
use warden_core::secret::Secret;
use warden_core::{Connection, ConnectionType, User};
use warden_exec::Target;
use warden_store::{AuditCtx, ConnectionRecord};

use super::identity::validate_groups;

/// What `POST /api/connections/{name}/test` answers.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct ConnectionTest {
    pub ok: bool,
    /// What worked, or the target's own error (secrets masked), saying what to fix.
    pub message: String,
    pub duration_ms: i64,
}

/// The name most like `name` (a typo, another case), if one is close enough to suggest.
fn closest_name<'a>(name: &str, names: &'a [String]) -> Option<&'a str> {
    let name = name.to_lowercase();
    names
        .iter()
        .map(|n| (strsim::jaro_winkler(&name, &n.to_lowercase()), n))
        .filter(|(score, _)| *score >= 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, n)| n.as_str())
}

/// `program` as the gateway would start it: a path to an executable file, or a name found on
/// the gateway's PATH.
fn find_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.is_empty() {
        return None;
    }
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| executable(p))
}
use super::{App, AppError, AppResult};
use crate::secrets::{ConnectionSecrets, redact_url};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateConnection {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub url: Option<Secret<String>>,
    #[serde(default)]
    pub command: Vec<String>,
    /// `KEY=VALUE` pairs; values are secrets.
    #[serde(default)]
    pub env: Vec<Secret<String>>,
    /// `None`: keep (on overwrite) / none (on create). `Some([])`: clear explicitly.
    #[serde(default)]
    pub access_groups: Option<Vec<String>>,
    /// `None`: leave the rules alone. `Some([])`: on overwrite, remove the shorthand rule named
    /// after the connection (explicitly).
    #[serde(default)]
    pub reviewers: Option<Vec<String>>,
    /// `None`: keep; `Some("")`: clear.
    #[serde(default)]
    pub slack_channel: Option<String>,
    #[serde(default)]
    pub teams_webhook: Option<String>,
    #[serde(default)]
    pub overwrite: bool,
}

/// A saved connection and what the admin should know about it (groups with no members).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SavedConnection {
    #[serde(flatten)]
    pub connection: Connection,
    pub warnings: Vec<String>,
}

fn connection_json(c: &Connection) -> serde_json::Value {
    json!({
        "type": c.kind.as_str(), "url": c.url_redacted, "command": c.command, "env_keys": c.env_keys,
        "access_groups": c.access_groups, "slack_channel": c.slack_channel,
    })
}

fn check_url(kind: ConnectionType, url: &str) -> AppResult<()> {
    let bad = |m: String| Err(AppError::bad("invalid_url", m));
    let parsed = match url::Url::parse(url) {
        Ok(u) => u,
        Err(_) => {
            return bad("url: not a valid URL (e.g. postgres://user:pass@host:5432/db)".into());
        }
    };
    let scheme_ok = match kind {
        ConnectionType::Postgres => matches!(parsed.scheme(), "postgres" | "postgresql"),
        ConnectionType::Mysql => matches!(parsed.scheme(), "mysql" | "mariadb"),
        ConnectionType::Sqlite => parsed.scheme() == "sqlite",
        ConnectionType::Command => false,
    };
    if !scheme_ok {
        return bad(format!(
            "url: scheme {:?} does not match connection type {}",
            parsed.scheme(),
            kind.as_str()
        ));
    }
    if kind == ConnectionType::Sqlite && !parsed.path().starts_with('/') {
        return bad("url: sqlite needs an absolute path: sqlite:///abs/path.db".into());
    }
    if kind != ConnectionType::Sqlite && parsed.host_str().is_none_or(str::is_empty) {
        return bad("url: a host is required".into());
    }
    Ok(())
}

/// `path` absolute with symlinks resolved as far as it exists (for a missing file: its directory
/// resolved and its name appended), so two names of one file compare equal.
fn resolve(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) if !dir.as_os_str().is_empty() => resolve(dir).join(name),
        _ => path.to_path_buf(),
    }
}

/// True when both names exist and are the same file (a hard link is another name for it).
#[cfg(unix)]
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &Path, _: &Path) -> bool {
    false
}

/// A connection as shown: its stored `url_redacted` redacted again, so a row saved before query
/// string passwords were redacted never shows one (redaction is idempotent).
fn shown(mut c: Connection) -> Connection {
    c.url_redacted = c.url_redacted.as_deref().map(redact_url);
    c
}

impl App {
    /// The files of the gateway no connection may name, besides everything in the data dir: the
    /// store file (and its journal, WAL and shared-memory files) wherever it lives, the
    /// checkpoint file and keys.
    fn private_files(&self) -> Vec<PathBuf> {
        let c = &self.config;
        let mut files = Vec::new();
        if let Some(store) = crate::datadir::sqlite_store_file(c.database_url.expose()) {
            for suffix in ["-wal", "-shm", "-journal"] {
                let mut name = store.clone().into_os_string();
                name.push(suffix);
                files.push(PathBuf::from(name));
            }
            files.push(store);
        }
        files.push(c.checkpoint_file.clone());
        files.extend(c.checkpoint_key.iter().cloned());
        files.extend(c.tls_key.iter().cloned());
        files
    }

    /// Refuses a `sqlite:` URL whose file is the gateway's own: inside the data dir, or one of
    /// [`Self::private_files`] (through a symlink or a hard link too). `Err` says why.
    pub(crate) fn refuse_private_file(&self, url: &str) -> Result<(), String> {
        let Some(path) = warden_exec::sqlite_file(url)? else {
            return Ok(());
        };
        let target = resolve(&path);
        let data_dir = resolve(&self.config.data_dir);
        if target.starts_with(&data_dir) {
            return Err(format!(
                "{} is inside the gateway's data dir {}: the gateway's own store and keys can never be a connection target (use a database file outside it)",
                path.display(),
                data_dir.display()
            ));
        }
        for file in self.private_files() {
            if target == resolve(&file) || same_file(&target, &file) {
                return Err(format!(
                    "{} is the gateway's own file {}: it can never be a connection target",
                    path.display(),
                    file.display()
                ));
            }
        }
        Ok(())
    }

    /// The second wall, right before an execution: `Some(message)` when the target is the
    /// gateway's own file (see [`Self::refuse_private_file`]).
    pub(crate) fn refuse_private_target(&self, target: &Target) -> Option<String> {
        if target.kind != ConnectionType::Sqlite {
            return None;
        }
        let url = target.url.as_ref()?;
        self.refuse_private_file(url.expose())
            .err()
            .map(|m| format!("warden: refused: {m}\n"))
    }

    pub async fn create_connection(
        &self,
        actor: &User,
        req: CreateConnection,
    ) -> AppResult<SavedConnection> {
        self.require_admin(actor)?;
        let name = req.name.trim().to_string();
        if !valid_name(&name) {
            return Err(AppError::bad(
                "invalid_name",
                format!("name: {name:?} is invalid (letters, digits, - _ . @; up to 128)"),
            ));
        }
        let kind = ConnectionType::parse(&req.kind).ok_or_else(|| {
            AppError::bad(
                "invalid_type",
                format!(
                    "type: {:?} is not one of postgres, mysql, sqlite, command",
                    req.kind
                ),
            )
        })?;
        let existing = self.store.get_connection(&name).await?;
        if existing.is_some() && !req.overwrite {
            return Err(AppError::conflict(
                "duplicate",
                format!("connection {name} already exists (use --overwrite to replace it)"),
            ));
        }
        let old = existing
            .as_ref()
            .map(|r| &r.connection)
            .filter(|c| c.kind == kind);
        // An argv left out keeps the stored one (same type only).
        let command = if req.command.is_empty() {
            old.map(|c| c.command.clone()).unwrap_or_default()
        } else {
            req.command.clone()
        };
        let old_secrets = match &existing {
            Some(rec) => self
                .secrets
                .open(&name, &rec.secret)
                .map_err(AppError::Internal)?,
            None => ConnectionSecrets::default(),
        };
        let url = req
            .url
            .as_ref()
            .map(|u| u.expose().trim().to_string())
            .filter(|u| !u.is_empty())
            .or(old_secrets.url.clone());
        match (kind, &url) {
            (ConnectionType::Command, Some(_)) => {
                return Err(AppError::bad(
                    "invalid_url",
                    "url: command connections take an argv after --, not a URL",
                ));
            }
            (ConnectionType::Command, None) if command.is_empty() => {
                return Err(AppError::bad(
                    "missing_command",
                    "command: give the program to run after --, e.g. -- psql -h db.internal app",
                ));
            }
            (ConnectionType::Command, None) => {}
            (_, None) => {
                return Err(AppError::bad(
                    "missing_url",
                    format!("url: a {} connection needs --url", kind.as_str()),
                ));
            }
            (_, Some(u)) => {
                check_url(kind, u)?;
                if kind == ConnectionType::Sqlite {
                    self.refuse_private_file(u)
                        .map_err(|m| AppError::bad("invalid_url", format!("url: {m}")))?;
                }
            }
        }
        if kind != ConnectionType::Command && !command.is_empty() {
            return Err(AppError::bad(
                "invalid_command",
                "command: only command connections take an argv",
            ));
        }
        let mut env: Vec<(String, String)> = Vec::new();
        for pair in &req.env {
            let Some((k, v)) = pair.expose().split_once('=') else {
                return Err(AppError::bad("invalid_env", "env: use KEY=VALUE"));
            };
            let valid_key = !k.is_empty()
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !k.starts_with(|c: char| c.is_ascii_digit());
            if !valid_key {
                return Err(AppError::bad(
                    "invalid_env",
                    format!("env: {k:?} is not a valid variable name"),
                ));
            }
            env.retain(|(ek, _)| ek != k);
            env.push((k.to_string(), v.to_string()));
        }
        if req.env.is_empty() {
            env = old_secrets.env.clone();
        }
        let access_groups = match &req.access_groups {
            Some(g) => validate_groups("access_groups", g)?,
            None => existing
                .as_ref()
                .map(|r| r.connection.access_groups.clone())
                .unwrap_or_default(),
        };
        let reviewers = match &req.reviewers {
            Some(g) => Some(validate_groups("reviewers", g)?),
            None => None,
        };
        let keep = |given: &Option<String>, stored: Option<&String>| match given {
            Some(v) => Some(v.clone()).filter(|s| !s.is_empty()),
            None => stored.cloned(),
        };
        let slack_channel = keep(
            &req.slack_channel,
            existing
                .as_ref()
                .and_then(|r| r.connection.slack_channel.as_ref()),
        );
        let teams_webhook = keep(
            &req.teams_webhook,
            existing
                .as_ref()
                .and_then(|r| r.connection.teams_webhook.as_ref()),
        );
        for (field, v) in [
            ("slack_channel", &req.slack_channel),
            ("teams_webhook", &req.teams_webhook),
        ] {
            if v.as_ref().is_some_and(|s| s.len() > 512) {
                return Err(AppError::bad(
                    "too_long",
                    format!("{field}: longer than 512 characters"),
                ));
            }
        }
        let now = self.now();
        let before = existing.as_ref().map(|r| r.connection.clone());
        let connection = Connection {
            id: before.as_ref().map(|c| c.id).unwrap_or_else(Uuid::new_v4),
            name: name.clone(),
            kind,
            url_redacted: url.as_deref().map(redact_url),
            command,
            env_keys: env.iter().map(|(k, _)| k.clone()).collect(),
            access_groups,
            slack_channel,
            teams_webhook,
            created_at: before.as_ref().map(|c| c.created_at).unwrap_or(now),
            updated_at: now,
        };
        let secret = self
            .secrets
            .seal(&name, &ConnectionSecrets { url, env })
            .map_err(AppError::Internal)?;
        let mut events = vec![AuditEvent::AdminChange {
            entity: "connection".into(),
            action: if before.is_some() { "update" } else { "create" }.into(),
            name: name.clone(),
            before: before.as_ref().map(connection_json),
            after: Some(connection_json(&connection)),
        }];
        let reviewers = reviewers.unwrap_or_default();
        let rule = if reviewers.is_empty() {
            None
        } else {
            let rules = self.store.list_rules().await?;
            let mut known: Vec<String> = self
                .store
                .list_connections()
                .await?
                .into_iter()
                .map(|c| c.name)
                .collect();
            known.push(name.clone());
            let replacing = rules.iter().find(|r| r.name == name).map(|r| r.id);
            let rule = RuleSpec::reviewers_shorthand(&name, &reviewers)
                .validate(&known, &rules, replacing, Uuid::now_v7(), now)
                .map_err(|e| AppError::bad("invalid_rule", e.to_string()))?;
            events.push(AuditEvent::AdminChange {
                entity: "rule".into(),
                action: if replacing.is_some() {
                    "update"
                } else {
                    "create"
                }
                .into(),
                name: rule.name.clone(),
                before: rules
                    .iter()
                    .find(|r| r.name == name)
                    .and_then(|r| serde_json::to_value(r).ok()),
                after: serde_json::to_value(&rule).ok(),
            });
            Some(rule)
        };
        let warnings = self
            .empty_group_warnings(&name, &connection.access_groups, &reviewers, &req)
            .await?;
        let rec = ConnectionRecord {
            connection: connection.clone(),
            secret,
        };
        self.store
            .upsert_connection(
                &rec,
                req.overwrite,
                rule.as_ref(),
                AuditCtx::new(&actor.email, now, events),
            )
            .await?;
        // Removing the review rule widens access: only on an explicit empty list, and after the
        // connection is saved (a failure here leaves the rule, i.e. the narrower state).
        if before.is_some() && req.reviewers.as_ref().is_some_and(Vec::is_empty) {
            let shorthand = self
                .store
                .get_rule(&name)
                .await?
                .filter(|r| r.kind == warden_core::RuleType::Command && r.binds(&name));
            if shorthand.is_some() {
                self.delete_rule(actor, &name).await?;
            }
        }
        Ok(SavedConnection {
            connection,
            warnings,
        })
    }

    /// Warnings for the groups just given that have no members: no one could approve (reviewers)
    /// or use (access groups) the connection through them until someone joins.
    async fn empty_group_warnings(
        &self,
        name: &str,
        access_groups: &[String],
        reviewers: &[String],
        req: &CreateConnection,
    ) -> AppResult<Vec<String>> {
        let users = self.store.list_users().await?;
        let empty = |g: &String| !users.iter().any(|u| u.groups.contains(g));
        let mut warnings = Vec::new();
        if req.access_groups.is_some() {
            for g in access_groups.iter().filter(|g| empty(g)) {
                warnings.push(format!(
                    "access group {g} has no members: only admins can use {name} through it until someone is added (warden admin create user EMAIL --groups {g} --overwrite)"
                ));
            }
        }
        for g in reviewers.iter().filter(|g| empty(g)) {
            warnings.push(format!(
                "reviewer group {g} has no members: no one can approve requests on {name} until someone is added (warden admin create user EMAIL --groups {g} --overwrite)"
            ));
        }
        Ok(warnings)
    }

    /// Connections the user may use (admins: all).
    pub async fn list_connections(&self, actor: &User) -> AppResult<Vec<Connection>> {
        let all = self.store.list_connections().await?;
        Ok(all
            .into_iter()
            .filter(|c| actor.reads_all() || c.allows(actor))
            .map(shown)
            .collect())
    }

    pub async fn get_connection(&self, actor: &User, name: &str) -> AppResult<Connection> {
        let rec = self.store.get_connection(name).await?;
        match rec {
            Some(r) if actor.reads_all() || r.connection.allows(actor) => Ok(shown(r.connection)),
            _ => Err(AppError::NotFound(
                self.unknown_connection(actor, name).await,
            )),
        }
    }

    /// What to say about a connection name that names nothing `user` may use: the closest
    /// name among the connections they may use (never one they may not, so nothing leaks),
    /// or where to find them.
    pub(crate) async fn unknown_connection(&self, user: &User, name: &str) -> String {
        let names: Vec<String> = self
            .list_connections(user)
            .await
            .map(|cs| cs.into_iter().map(|c| c.name).collect())
            .unwrap_or_default();
        match closest_name(name, &names) {
            Some(n) => format!("no connection {name:?}: did you mean {n:?}?"),
            None => format!(
                "no connection {name:?} (warden admin get connections lists the ones you can use)"
            ),
        }
    }

    pub async fn delete_connection(&self, actor: &User, name: &str) -> AppResult<()> {
        self.require_admin(actor)?;
        let rec = self
            .store
            .get_connection(name)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no connection {name:?}")))?;
        let ev = AuditEvent::AdminChange {
            entity: "connection".into(),
            action: "delete".into(),
            name: name.into(),
            before: Some(connection_json(&rec.connection)),
            after: None,
        };
        Ok(self
            .store
            .delete_connection(name, AuditCtx::new(&actor.email, self.now(), vec![ev]))
            .await?)
    }

    /// `admin create connection … --test`: can the gateway reach the target and log in with
    /// the stored credentials? Databases answer `SELECT 1` (read-only, nothing is changed);
    /// a command connection is not run (its program could do anything), only looked up on
    /// the gateway's PATH. Admins only; audited; the answer is masked like any output.
    pub async fn test_connection(&self, actor: &User, name: &str) -> AppResult<ConnectionTest> {
        self.require_admin(actor)?;
        let rec = self
            .store
            .get_connection(name)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no connection {name:?}")))?;
        let target = self.target_for(&rec)?;
        let started = std::time::Instant::now();
        let (ok, message) = if let Some(refused) = self.refuse_private_target(&target) {
            (false, refused)
        } else if target.kind == ConnectionType::Command {
            let program = target.command.first().cloned().unwrap_or_default();
            match find_program(&program) {
                Some(path) => (
                    true,
                    format!(
                        "{program} is {} (not run: a test never runs a command)",
                        path.display()
                    ),
                ),
                None => (
                    false,
                    format!("{program:?} is not an executable file on the gateway's PATH"),
                ),
            }
        } else {
            let opts = warden_exec::ExecOptions {
                output_cap: 64 * 1024,
                timeout: std::time::Duration::from_secs(10),
                isolation: self.isolation.clone(),
            };
            let out = warden_exec::execute(&target, "SELECT 1", &opts).await;
            let ok = out.exit_code == 0;
            let message = if ok {
                "reached the server and logged in; SELECT 1 answered".to_string()
            } else {
                out.output.trim().to_string()
            };
            (ok, message)
        };
        let duration_ms = started.elapsed().as_millis() as i64;
        let ev = AuditEvent::AdminChange {
            entity: "connection".into(),
            action: "test".into(),
            name: name.to_string(),
            before: None,
            after: Some(json!({"ok": ok, "duration_ms": duration_ms})),
        };
        self.store
            .append_audit(AuditCtx::new(&actor.email, self.now(), vec![ev]))
            .await?;
        Ok(ConnectionTest {
            ok,
            message,
            duration_ms,
        })
    }

    /// The executor target for a connection, with decrypted secrets. Only for executing approved
    /// work and opening proxy upstreams.
    pub fn target_for(&self, rec: &ConnectionRecord) -> AppResult<Target> {
        let s = self
            .secrets
            .open(&rec.connection.name, &rec.secret)
            .map_err(AppError::Internal)?;
        Ok(Target {
            kind: rec.connection.kind,
            url: s.url.map(Secret::new),
            command: rec.connection.command.clone(),
            env: s
                .env
                .into_iter()
                .map(|(k, v)| (k, Secret::new(v)))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn suggests_only_close_names() {
        let names: Vec<String> = ["prod-db", "staging-db", "k8s"].map(String::from).into();
        assert_eq!(super::closest_name("prod-bd", &names), Some("prod-db"));
        assert_eq!(super::closest_name("PROD-DB", &names), Some("prod-db"));
        assert_eq!(super::closest_name("stagingdb", &names), Some("staging-db"));
        assert_eq!(super::closest_name("mysql", &names), None);
        assert_eq!(super::closest_name("x", &[]), None);
    }
}
