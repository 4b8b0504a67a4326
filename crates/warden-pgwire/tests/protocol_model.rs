//! Property test: random extended- and simple-protocol sequences (named and unnamed
//! statements and portals, closes, describes, flushes, parse errors, run-time errors,
//! messages the server skips after an error) through the proxy — reviewed and not — and
//! straight to the same PostgreSQL.
//!
//! Two properties, checked on every sequence:
//! 1. **The audit says what the server ran.** Every statement embeds a unique marker that the
//!    server echoes when it runs it (its one row, or its cast error). The markers the client
//!    receives, in order, are exactly the markers of the proxy's statement records, in order:
//!    the proxy never records a run the server skipped, never misses one, and never names the
//!    wrong text.
//! 2. **The proxy is transparent.** The client sees the same messages (kinds, rows, command
//!    tags, SQLSTATEs) through the proxy as directly.
//!
//! Sequences (with transaction blocks, where portals outlive `Sync` and an error aborts the
//! block, and row-limited `Execute`s) come from a seeded generator so a failure names its
//! seed and is replayed exactly.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;

/// A tiny deterministic generator (xorshift64*): sequences must replay from their seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

const STATEMENTS: &[&str] = &["", "s1", "s2"];
const PORTALS: &[&str] = &["", "p1"];

/// One frontend message, with a readable form for failure reports.
struct Msg {
    bytes: Vec<u8>,
    shown: String,
}

fn sql(kind: u64, marker: &str) -> String {
    match kind {
        // Runs: one row carrying the marker.
        0..=5 => format!("SELECT '{marker}'::text"),
        // Fails when run, naming the marker (the volatile call keeps the planner from
        // folding the cast, which would fail at Parse or Bind instead).
        6 => format!("SELECT ('{marker}' || repeat('', (random() * 0)::int))::int"),
        // Fails to parse (the marker never comes back).
        _ => format!("SELEC '{marker}'"),
    }
}

fn close(kind: u8, name: &str) -> Vec<u8> {
    let mut b = vec![kind];
    b.extend_from_slice(name.as_bytes());
    b.push(0);
    message(b'C', &b)
}

fn describe(kind: u8, name: &str) -> Vec<u8> {
    let mut b = vec![kind];
    b.extend_from_slice(name.as_bytes());
    b.push(0);
    message(b'D', &b)
}

/// A batch: maybe a simple query, then 0–8 random extended messages, then Sync. (A simple
/// query *inside* an unfinished extended batch ends the session: `review_walls.rs`.)
fn batch(rng: &mut Rng, case: u64, counter: &mut u32) -> Vec<Msg> {
    let mut out = Vec::new();
    if rng.below(3) == 0 {
        *counter += 1;
        let text = match rng.below(10) {
            // Transaction blocks: portals outlive Sync; an error aborts the block.
            7 => "BEGIN".to_string(),
            8 => "COMMIT".to_string(),
            9 => "ROLLBACK".to_string(),
            k => sql(k, &format!("mk{:07}{:04}", case % 10_000_000, *counter)),
        };
        out.push(Msg {
            bytes: ext::query(&text),
            shown: format!("Query({text:?})"),
        });
    }
    for _ in 0..rng.below(9) {
        let m = match rng.below(9) {
            0 | 1 => {
                *counter += 1;
                let name = rng.pick(STATEMENTS);
                let text = sql(
                    rng.below(8),
                    &format!("mk{:07}{:04}", case % 10_000_000, *counter),
                );
                Msg {
                    bytes: ext::parse(name, &text),
                    shown: format!("Parse({name:?}, {text:?})"),
                }
            }
            2 | 3 => {
                let (portal, statement) = (rng.pick(PORTALS), rng.pick(STATEMENTS));
                Msg {
                    bytes: ext::bind(portal, statement),
                    shown: format!("Bind({portal:?}, {statement:?})"),
                }
            }
            4 | 5 => {
                let portal = rng.pick(PORTALS);
                // Sometimes one row at a time (PortalSuspended, then the rest).
                let max_rows: i32 = if rng.below(4) == 0 { 1 } else { 0 };
                let mut b = portal.as_bytes().to_vec();
                b.push(0);
                b.extend_from_slice(&max_rows.to_be_bytes());
                Msg {
                    bytes: message(b'E', &b),
                    shown: format!("Execute({portal:?}, max_rows {max_rows})"),
                }
            }
            6 => {
                let (kind, name) = if rng.below(2) == 0 {
                    (b'S', rng.pick(STATEMENTS))
                } else {
                    (b'P', rng.pick(PORTALS))
                };
                Msg {
                    bytes: close(kind, name),
                    shown: format!("Close({}, {name:?})", kind as char),
                }
            }
            7 => {
                let (kind, name) = if rng.below(2) == 0 {
                    (b'S', rng.pick(STATEMENTS))
                } else {
                    (b'P', rng.pick(PORTALS))
                };
                Msg {
                    bytes: describe(kind, name),
                    shown: format!("Describe({}, {name:?})", kind as char),
                }
            }
            _ => Msg {
                bytes: message(b'H', &[]),
                shown: "Flush".into(),
            },
        };
        out.push(m);
    }
    out.push(Msg {
        bytes: ext::sync(),
        shown: "Sync".into(),
    });
    out
}

/// What the client saw, reduced to what must match between proxy and direct: message kinds,
/// data rows, command tags and SQLSTATEs (error texts may name the proxy's statement names).
fn reduce(msgs: &[(u8, Vec<u8>)]) -> Vec<String> {
    msgs.iter()
        .filter(|(t, _)| !matches!(t, b'N' | b'S'))
        .map(|(t, body)| match t {
            b'D' | b'C' => format!("{}:{}", *t as char, String::from_utf8_lossy(body)),
            b'E' => {
                let code = body
                    .split(|b| *b == 0)
                    .find(|f| f.first() == Some(&b'C'))
                    .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
                    .unwrap_or_default();
                format!("E:{code}")
            }
            _ => (*t as char).to_string(),
        })
        .collect()
}

/// Every marker (`mk` + 11 digits: case, then statement) in `s`, in order.
fn markers(s: &str) -> Vec<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 13 <= b.len() {
        if &b[i..i + 2] == b"mk" && b[i + 2..i + 13].iter().all(u8::is_ascii_digit) {
            out.push(s[i..i + 13].to_string());
            i += 13;
        } else {
            i += 1;
        }
    }
    out
}

/// Markers the server sent back: in rows and in errors raised while running a statement.
fn ran(msgs: &[(u8, Vec<u8>)]) -> Vec<String> {
    msgs.iter()
        .filter(|(t, _)| matches!(t, b'D' | b'E'))
        .flat_map(|(_, body)| markers(&String::from_utf8_lossy(body)))
        .collect()
}

/// Sends each batch and reads its answers: one `ReadyForQuery` per simple query and per
/// `Sync` (a batch's simple query comes first, where the server never skips it).
async fn play(s: &mut tokio::net::TcpStream, batches: &[Vec<Msg>]) -> Vec<(u8, Vec<u8>)> {
    let mut seen = Vec::new();
    for b in batches {
        let bytes: Vec<u8> = b.iter().flat_map(|m| m.bytes.clone()).collect();
        let readies = b
            .iter()
            .filter(|m| matches!(m.bytes.first(), Some(b'Q' | b'S')))
            .count();
        s.write_all(&bytes).await.unwrap();
        for _ in 0..readies {
            let got = read_until_ready(s).await;
            assert!(
                got.last().is_some_and(|m| m.0 == b'Z'),
                "connection closed; saw {seen:?} then {got:?}"
            );
            seen.extend(got);
        }
    }
    seen
}

async fn direct_session() -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect((PG_HOST, PG_PORT))
        .await
        .expect("PostgreSQL at 127.0.0.1:5432");
    s.write_all(&startup("postgres", "test")).await.unwrap();
    let got = read_until_ready(&mut s).await;
    assert_eq!(got.last().map(|m| m.0), Some(b'Z'), "{got:?}");
    s
}

async fn check(proxy: &Proxy, reviewed: bool, cases: std::ops::Range<u64>) {
    for case in cases {
        let seed = 0x9E37_79B9_7F4A_7C15 ^ (case + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mut rng = Rng(seed);
        let mut counter = 0;
        let batches: Vec<Vec<Msg>> = (0..=rng.below(6))
            .map(|_| batch(&mut rng, case, &mut counter))
            .collect();
        let shown = || {
            batches
                .iter()
                .map(|b| {
                    b.iter()
                        .map(|m| m.shown.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .collect::<Vec<_>>()
                .join("\n  ")
        };
        let ended_before = proxy.backend.ended.lock().unwrap().len();
        let mut s = raw_session(proxy).await;
        let through = play(&mut s, &batches).await;
        s.write_all(&message(b'X', &[])).await.unwrap();
        drop(s);
        let mut d = direct_session().await;
        let direct = play(&mut d, &batches).await;
        drop(d);
        // The session's end is reported after its last record.
        for _ in 0..200 {
            if proxy.backend.ended.lock().unwrap().len() > ended_before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let prefix = format!("mk{:07}", case % 10_000_000);
        let logs: Vec<_> = proxy
            .backend
            .logs()
            .into_iter()
            .filter(|l| markers(&l.statement).iter().any(|m| m.starts_with(&prefix)))
            .collect();
        let tag = |l: &warden_pgwire::StatementLog| l.tag.clone().unwrap_or_default();
        // Skipped runs are recorded as skipped; a portal run again after it was exhausted
        // returns no row (`SELECT 0`), so no marker comes back for it.
        let recorded: Vec<String> = logs
            .iter()
            .filter(|l| {
                // Refused in an aborted transaction block: the server ran nothing of it.
                tag(l) != warden_pgwire::SKIPPED && tag(l) != "SELECT 0" && tag(l) != "ERROR 25P02"
            })
            .flat_map(|l| markers(&l.statement))
            .collect();
        let exhausted = logs.iter().filter(|l| tag(l) == "SELECT 0").count();
        let empty_runs = reduce(&through)
            .iter()
            .filter(|m| m.as_str() == "C:SELECT 0\0")
            .count();
        let mode = if reviewed { "reviewed" } else { "audited" };
        assert_eq!(
            reduce(&through),
            reduce(&direct),
            "{mode} case {case}: the client saw something else through the proxy\n  {}",
            shown()
        );
        assert_eq!(
            exhausted,
            empty_runs,
            "{mode} case {case}: runs without rows\n  {}",
            shown()
        );
        assert_eq!(
            recorded,
            ran(&through),
            "{mode} case {case}: the audit does not say what the server ran\n  {}",
            shown()
        );
    }
}

/// Sequences per mode: 100, or `WARDEN_MODEL_CASES` for a longer search (case numbers are
/// seeds: a failure names the one to replay).
fn cases(first: u64) -> std::ops::Range<u64> {
    let n = std::env::var("WARDEN_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    first..first + n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audited_sessions_record_exactly_what_the_server_ran() {
    let proxy = Proxy::start(TestBackend::allow_all()).await;
    check(&proxy, false, cases(0)).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviewed_sessions_record_exactly_what_the_server_ran() {
    let proxy = Proxy::start(TestBackend::reviewing(vec![])).await;
    check(&proxy, true, cases(1_000_000)).await;
    proxy.stop().await;
}
