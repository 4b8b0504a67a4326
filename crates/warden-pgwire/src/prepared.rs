//! What each `Execute` of the extended protocol runs: the statement text behind every prepared
//! statement and portal of one session.
//!
//! A driver prepares a statement once (`Parse`) and runs it many times (`Bind` + `Execute`),
//! so recording or reviewing `Parse` alone would miss every run after the first. The relay
//! feeds this tracker the `Parse`, `Bind` and `Close` messages the server confirmed
//! ([`Op`]s) and gets back, per `Execute`, the text it runs. Portals end with their
//! transaction ([`Tracker::forget_portals`] when the server reports it idle).
//!
//! Under statement review the tracker also **renames** every named statement on its way to the
//! server (`s1` → `_warden_<nonce>_<n>`, a fresh name per `Parse`). Otherwise a `Parse` the
//! server refuses (say, "already exists" after an SQL `DEALLOCATE` the proxy did not follow)
//! would leave the proxy believing a name means a text it does not mean, and a reviewer would
//! approve one statement while another runs. With fresh names, what the proxy believes about a
//! name is either true or the server does not know the name at all. A query that is just
//! `DEALLOCATE name` / `DEALLOCATE ALL` is followed (and, under renaming, sent with the server's
//! name); one inside a multi-statement query is not, and then fails on the server (fail closed).
//!
//! Pure state, no I/O. It never decides anything: the relay asks the backend about the texts.

use std::collections::HashMap;
use std::sync::Arc;

/// Names tracked per session beyond which new ones are recorded as unknown (PostgreSQL holds
/// the statements too; this only bounds the proxy's own memory against a hostile client).
const MAX_NAMES: usize = 65_536;

/// One change to the server's prepared statements and portals, applied to the tracker only
/// once the server confirms it: after an error the server skips every message until `Sync`,
/// so a change the client asked for may never have happened.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Parse {
        name: Box<[u8]>,
        server: Box<[u8]>,
        text: Arc<str>,
    },
    Bind {
        portal: Box<[u8]>,
        statement: Box<[u8]>,
        params: String,
    },
    Close {
        kind: u8,
        name: Box<[u8]>,
    },
    /// The proxy's own `Parse` of the unnamed statement (a refusal) may have dropped it; a
    /// simple query drops it (and the unnamed portal) too.
    ForgetUnnamed,
    /// A `Bind` whose names could not be read: no portal is known any more.
    ForgetPortals,
}

/// What one `Execute` runs: the statement text and, apart, its parameters as shown to a
/// reviewer (`$1 = '42', …`). Kept apart so the statement is classified on its own text only;
/// the record shows both (`Display`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Run {
    pub text: Arc<str>,
    pub params: Option<Arc<str>>,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.params {
            Some(p) => write!(f, "{}\n-- parameters: {p}", self.text),
            None => f.write_str(&self.text),
        }
    }
}

/// A statement name as the server knows it, and the text behind it.
type Known = (Box<[u8]>, Arc<str>);

/// One session's prepared statements and portals.
#[derive(Clone, Default)]
pub(crate) struct Tracker {
    /// Client statement name → (name on the server, text).
    statements: HashMap<Box<[u8]>, Known>,
    /// Portal name → the text it runs (with its parameters under review).
    portals: HashMap<Box<[u8]>, Run>,
    /// The unnamed portal, kept apart: drivers rebind it on every run.
    unnamed_portal: Option<Run>,
    /// Renaming (statement review) on: the nonce and counter of server-side names.
    rename: Option<(String, u64)>,
}

fn show(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

impl Tracker {
    /// A tracker that renames named statements on their way to the server.
    pub fn renaming() -> Self {
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        Self {
            rename: Some((nonce[..16].to_string(), 0)),
            ..Self::default()
        }
    }

    /// A `Parse`: returns the statement name to send to the server.
    #[cfg(test)]
    pub fn parse(&mut self, name: &[u8], text: &str) -> Box<[u8]> {
        let server = self.server_name_for_parse(name);
        self.prepared(name, &server, text.into());
        server
    }

    /// The server-side name a `Parse` of `name` gets under renaming: the name it already has
    /// while it is live (so the server refuses a second `Parse` of a live name, as it would
    /// without the proxy; if the proxy's belief was stale the server accepts it, and only its
    /// confirmation changes what the name means), else a fresh one.
    pub fn server_name_for_parse(&mut self, name: &[u8]) -> Box<[u8]> {
        if self.rename.is_some()
            && !name.is_empty()
            && let Some((server, _)) = self.statements.get(name)
        {
            return server.clone();
        }
        match &mut self.rename {
            Some((nonce, n)) if !name.is_empty() => {
                *n += 1;
                format!("_warden_{nonce}_{n}").into_bytes().into()
            }
            _ => name.into(),
        }
    }

    /// Keeps the renaming counter of `other` (a copy this tracker was cloned into), so server
    /// names handed out there are never handed out again.
    pub fn keep_counter(&mut self, other: &Tracker) {
        if let (Some((_, mine)), Some((_, theirs))) = (&mut self.rename, &other.rename) {
            *mine = (*mine).max(*theirs);
        }
    }

    /// Applies one change the server confirmed (`ParseComplete`, `BindComplete`,
    /// `CloseComplete`), or one that holds whatever the server did ([`Op::ForgetUnnamed`]).
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::Parse { name, server, text } => self.prepared(name, server, text.clone()),
            Op::Bind {
                portal,
                statement,
                params,
            } => self.bind(portal, statement, params),
            Op::Close { kind, name } => self.close(*kind, name),
            Op::ForgetUnnamed => {
                self.statements.remove(&b""[..]);
                self.unnamed_portal = None;
            }
            Op::ForgetPortals => self.forget_portals(),
        }
    }

    fn prepared(&mut self, name: &[u8], server: &[u8], text: Arc<str>) {
        if self.statements.len() >= MAX_NAMES && !self.statements.contains_key(name) {
            return;
        }
        let text: Arc<str> = match self.statements.get(name) {
            // Without renaming, the server refuses a second Parse of a live name, unless an
            // SQL DEALLOCATE the proxy cannot see came first: say both, never guess.
            Some((_, old)) if self.rename.is_none() && !name.is_empty() => format!(
                "-- prepared statement \"{}\" prepared again without Close; the server runs \
                 the one it accepted: {old} /* or */ {text}",
                show(name)
            )
            .into(),
            _ => text,
        };
        self.statements.insert(name.into(), (server.into(), text));
    }

    /// A `Bind`: records what the portal runs. (Its statement name for the server is
    /// [`Tracker::server_name`].) Runs on every execution of a prepared statement: no copy of
    /// the text, no allocation for the unnamed portal.
    pub fn bind(&mut self, portal: &[u8], statement: &[u8], params: &str) {
        let text = match self.statements.get(statement) {
            Some((_, text)) => text.clone(),
            // Reads as SQL on purpose: the read-only classifier holds it (fail closed).
            None => Arc::from(format!("EXECUTE \"{}\"", show(statement))),
        };
        let runs = Run {
            text,
            params: (!params.is_empty()).then(|| params.into()),
        };
        if portal.is_empty() {
            self.unnamed_portal = Some(runs);
        } else if self.portals.len() < MAX_NAMES || self.portals.contains_key(portal) {
            self.portals.insert(portal.into(), runs);
        }
    }

    /// What an `Execute` of `portal` runs.
    pub fn execute(&self, portal: &[u8]) -> Run {
        let known = if portal.is_empty() {
            self.unnamed_portal.clone()
        } else {
            self.portals.get(portal).cloned()
        };
        known.unwrap_or_else(|| Run {
            // Reads as SQL on purpose: the classifier holds it (fail closed).
            text: format!(
                "EXECUTE \"{}\" -- a portal not bound through this connection",
                show(portal)
            )
            .into(),
            params: None,
        })
    }

    /// Follows an SQL `DEALLOCATE` (simple query) that drops prepared statements: they share
    /// one namespace with the protocol's, and drivers use it (psycopg trims its prepared-statement
    /// cache with `DEALLOCATE name`). Returns the query to send instead when the name must be
    /// translated for the server (under renaming); `None` sends the client's text unchanged.
    pub fn deallocate(&mut self, sql: &str) -> Option<String> {
        match parse_deallocate(sql)? {
            Deallocate::All => {
                self.statements.clear();
                None
            }
            Deallocate::One(name) => {
                let (server, _) = self.statements.remove(name.as_bytes())?;
                if self.rename.is_none() || *server == *name.as_bytes() {
                    return None;
                }
                // Server names are `_warden_<hex>_<n>`: nothing in them needs escaping.
                Some(format!("DEALLOCATE \"{}\"", show(&server)))
            }
        }
    }

    /// A `Bind` whose names could not be read: no portal is known any more (later `Execute`s
    /// are recorded as unknown rather than as a stale text).
    pub fn forget_portals(&mut self) {
        self.portals.clear();
        self.unnamed_portal = None;
    }

    /// The server's name for a client statement name (`Bind`/`Describe`/`Close`); unknown
    /// names go through unchanged (the server then finds them or not).
    pub fn server_name(&self, statement: &[u8]) -> Box<[u8]> {
        self.statements
            .get(statement)
            .map_or_else(|| statement.into(), |(s, _)| s.clone())
    }

    /// A `Close` of a statement (`b'S'`) or portal (`b'P'`).
    pub fn close(&mut self, kind: u8, name: &[u8]) {
        match kind {
            b'S' => {
                self.statements.remove(name);
            }
            _ if name.is_empty() => self.unnamed_portal = None,
            _ => {
                self.portals.remove(name);
            }
        }
    }
}

/// True when `sql` is an SQL `DEALLOCATE` the tracker follows.
pub(crate) fn may_deallocate(sql: &str) -> bool {
    parse_deallocate(sql).is_some()
}

/// What an SQL `DEALLOCATE` drops.
#[derive(Debug, PartialEq, Eq)]
enum Deallocate {
    One(String),
    All,
}

/// `DEALLOCATE [PREPARE] { name | ALL } [;]` as the whole query, with the name as PostgreSQL
/// resolves it (unquoted: ASCII letters lowered; quoted: as written, `""` for `"`). Anything
/// else — other statements, several statements, comments — is `None`: the proxy then keeps
/// its view, and a name it did not translate is one the server does not know (under renaming).
///
/// Hand-written because only this one statement shape matters and the SQL parser used by the
/// gateway (classification) does not belong in the relay.
fn parse_deallocate(sql: &str) -> Option<Deallocate> {
    let mut rest = sql.trim();
    rest = rest.strip_suffix(';').unwrap_or(rest).trim_end();
    /// Consumes the keyword `w` (any case) at the start of `s`, if a word ends there.
    fn word(s: &mut &str, w: &str) -> bool {
        let t = s.trim_start();
        match t.get(..w.len()) {
            Some(head) if head.eq_ignore_ascii_case(w) => {
                let after = &t[w.len()..];
                let ends = after.is_empty()
                    || after.starts_with(|c: char| c.is_ascii_whitespace() || c == '"');
                if ends {
                    *s = after;
                }
                ends
            }
            _ => false,
        }
    }
    if !word(&mut rest, "DEALLOCATE") {
        return None;
    }
    word(&mut rest, "PREPARE");
    let name = rest.trim();
    if name.eq_ignore_ascii_case("ALL") {
        return Some(Deallocate::All);
    }
    if let Some(quoted) = name.strip_prefix('"') {
        let inner = quoted.strip_suffix('"')?;
        // Every `"` inside must be doubled.
        if inner.replace("\"\"", "").contains('"') || inner.is_empty() {
            return None;
        }
        return Some(Deallocate::One(inner.replace("\"\"", "\"")));
    }
    let mut chars = name.chars();
    let first = chars.next()?;
    let starts = first.is_alphabetic() || first == '_';
    if !starts || !chars.all(|c| c.is_alphanumeric() || c == '_' || c == '$') {
        return None;
    }
    Some(Deallocate::One(name.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executions_resolve_through_portals() {
        let mut t = Tracker::default();
        assert_eq!(&*t.parse(b"s1", "UPDATE a SET x = $1"), b"s1");
        t.parse(b"", "SELECT 1");
        t.bind(b"", b"s1", "");
        assert_eq!(&*t.execute(b"").to_string(), "UPDATE a SET x = $1");
        t.bind(b"p", b"", "$1 = '2'");
        assert_eq!(
            &*t.execute(b"p").to_string(),
            "SELECT 1\n-- parameters: $1 = '2'"
        );
        // Re-executing a portal, and executing after a new Bind, both resolve.
        assert_eq!(&*t.execute(b"").to_string(), "UPDATE a SET x = $1");
        t.close(b'S', b"s1");
        t.bind(b"", b"s1", "");
        assert_eq!(&*t.execute(b"").to_string(), "EXECUTE \"s1\"");
        assert!(t.execute(b"nope").to_string().contains("not bound"));
    }

    #[test]
    fn sql_deallocate_is_read_as_postgresql_reads_it() {
        let one = |n: &str| Some(Deallocate::One(n.into()));
        assert_eq!(parse_deallocate("DEALLOCATE s1"), one("s1"));
        assert_eq!(
            parse_deallocate("  deallocate prepare _pg3_12 ;"),
            one("_pg3_12")
        );
        assert_eq!(parse_deallocate("DEALLOCATE Mixed$1"), one("mixed$1"));
        assert_eq!(
            parse_deallocate("DEALLOCATE \"Mixed \"\"q\"\"\""),
            one("Mixed \"q\"")
        );
        assert_eq!(parse_deallocate("DEALLOCATE\"x\""), one("x"));
        assert_eq!(parse_deallocate("DEALLOCATE ALL"), Some(Deallocate::All));
        assert_eq!(
            parse_deallocate("deallocate prepare all;"),
            Some(Deallocate::All)
        );
        for not in [
            "DEALLOCATE",
            "DEALLOCATEs1",
            "DEALLOCATE s1; DROP TABLE t",
            "DEALLOCATE s1 -- x",
            "DEALLOCATE \"a\"b\"",
            "DEALLOCATE \"\"",
            "DEALLOCATE 1abc",
            "SELECT 1",
            "",
        ] {
            assert_eq!(parse_deallocate(not), None, "{not}");
        }
    }

    #[test]
    fn deallocate_translates_renamed_statements_and_forgets_them() {
        let mut t = Tracker::renaming();
        let server = t.parse(b"s1", "DELETE FROM a");
        let sql = t.deallocate("DEALLOCATE S1").expect("translated");
        assert_eq!(sql, format!("DEALLOCATE \"{}\"", show(&server)));
        // Gone: a second DEALLOCATE goes to the server as written (which then refuses it).
        assert_eq!(t.deallocate("DEALLOCATE s1"), None);
        t.bind(b"", b"s1", "");
        assert_eq!(&*t.execute(b"").to_string(), "EXECUTE \"s1\"");
        t.parse(b"a", "SELECT 1");
        t.parse(b"b", "SELECT 2");
        assert_eq!(t.deallocate("DEALLOCATE ALL"), None);
        assert_eq!(&*t.server_name(b"a"), b"a");

        // Without renaming the text goes as written; the name is forgotten, so preparing it
        // again is not reported as ambiguous.
        let mut t = Tracker::default();
        t.parse(b"s", "DELETE FROM a");
        assert_eq!(t.deallocate("DEALLOCATE s"), None);
        t.parse(b"s", "SELECT 1");
        t.bind(b"", b"s", "");
        assert_eq!(&*t.execute(b"").to_string(), "SELECT 1");
    }

    #[test]
    fn a_name_prepared_twice_is_recorded_as_ambiguous() {
        let mut t = Tracker::default();
        t.parse(b"s", "DELETE FROM a");
        t.parse(b"s", "SELECT 1");
        t.bind(b"", b"s", "");
        let text = t.execute(b"").to_string();
        assert!(
            text.contains("DELETE FROM a") && text.contains("SELECT 1"),
            "{text}"
        );
    }

    #[test]
    fn renaming_gives_every_new_statement_a_fresh_server_name() {
        let mut t = Tracker::renaming();
        let a = t.parse(b"s", "DELETE FROM a");
        assert!(a.starts_with(b"_warden_"));
        // A live name keeps its server name, so the server refuses a second Parse of it.
        assert_eq!(t.server_name_for_parse(b"s"), a);
        t.close(b'S', b"s");
        let b = t.parse(b"s", "SELECT 1");
        assert_ne!(
            a, b,
            "a name prepared again after Close gets a fresh server name"
        );
        assert_eq!(&*t.parse(b"", "SELECT 2"), b"");
        t.bind(b"", b"s", "");
        assert_eq!(&*t.execute(b"").to_string(), "SELECT 1");
        assert_eq!(t.server_name(b"s"), b);
        assert_eq!(&*t.server_name(b"other"), b"other");
    }
}
