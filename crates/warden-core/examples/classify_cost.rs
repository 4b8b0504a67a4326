//! What reading a statement costs: times `warden_core::classify::read` (libpg_query's parse,
//! then the walk over the parse tree) on the statements a benchmark or a driver sends, and
//! prints nanoseconds per statement. Run by `bench/classify.sh`; never a test.

use std::hint::black_box;
use std::time::Instant;

const STATEMENTS: &[(&str, &str)] = &[
    (
        "pgbench select-only",
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
    ),
    (
        "rows-10k",
        "SELECT aid, bid, abalance, filler FROM pgbench_accounts WHERE aid <= 10000;",
    ),
    (
        "join + functions",
        "SELECT a.aid, lower(b.filler), count(*) OVER (PARTITION BY a.bid) FROM pgbench_accounts a \
         JOIN pgbench_branches b USING (bid) WHERE a.aid BETWEEN $1 AND $2 ORDER BY 1 LIMIT 50",
    ),
    (
        "pgbench update (held)",
        "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;",
    ),
];

fn main() {
    let rounds: u32 = std::env::args()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    println!(
        "| statement | reading | ns per statement | of which libpg_query's parse | libpg_query's scan (lexer) alone |"
    );
    println!("|---|---|---:|---:|---:|");
    for (name, sql) in STATEMENTS {
        // Warm up (allocator, parser caches).
        for _ in 0..200 {
            black_box(warden_core::classify::read(black_box(sql)));
        }
        let start = Instant::now();
        let mut reading = None;
        for _ in 0..rounds {
            reading = Some(black_box(warden_core::classify::read(black_box(sql))));
        }
        let ns = start.elapsed().as_nanos() / u128::from(rounds);
        let start = Instant::now();
        for _ in 0..rounds {
            let _ = black_box(pg_query::parse(black_box(sql)));
        }
        let parse_ns = start.elapsed().as_nanos() / u128::from(rounds);
        let start = Instant::now();
        for _ in 0..rounds {
            let _ = black_box(pg_query::scan(black_box(sql)));
        }
        let scan_ns = start.elapsed().as_nanos() / u128::from(rounds);
        let shown = match reading {
            Some(r) if r.is_read() => "read".to_string(),
            Some(_) => "held".to_string(),
            None => String::new(),
        };
        println!("| {name} | {shown} | {ns} | {parse_ns} | {scan_ns} |");
    }
}
