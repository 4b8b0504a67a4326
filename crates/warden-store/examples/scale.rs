//! Review listings at scale (issue 17 item 3), through the store's own API on SQLite and
//! PostgreSQL: seeds `SCALE_REVIEWS` reviews (each with its `review_requested` entry, so the
//! chain stays valid, and is verified after; `SCALE_BATCH` per transaction through
//! `Store::insert_reviews`), 1 in 100 decided by `dba`, one in ten pending, then times an
//! admin's and an approver's pending list (first page of 50) `SCALE_QUERIES` times each and prints p50/p99.
//!
//! Run by `bench/scale.sh`; prints, never asserts (timings are not tests).

use std::time::Instant;

use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use warden_core::audit::AuditEvent;
use warden_core::{Policy, Review, ReviewStatus, RuleType};
use warden_store::{AuditCtx, ReviewFilter, Store, Visibility};

fn env_num(k: &str, default: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn review(i: usize, now: OffsetDateTime) -> Review {
    let dba = i.is_multiple_of(100);
    let created = now - Duration::seconds(i as i64);
    let command = format!("UPDATE t SET x = {i}");
    Review {
        id: Uuid::new_v4(),
        kind: RuleType::Command,
        status: if i.is_multiple_of(10) {
            ReviewStatus::Pending
        } else {
            ReviewStatus::Executed
        },
        connection: if dba { "pg".into() } else { "ledger".into() },
        requester: format!("eng{}@example.com", i % 500),
        requester_groups: vec!["eng".into()],
        rule: "r".into(),
        policy: Policy {
            approval_groups: vec![if dba { "dba" } else { "finance" }.into()],
            require_all_groups: false,
            approval_amount: 1,
            force_approval_groups: vec!["sre".into()],
        },
        command_sha256: Some(warden_core::command_sha256(&command)),
        command: Some(command),
        duration_sec: None,
        request_reason: None,
        approvals: vec![],
        decided_by: None,
        reason: None,
        forced: false,
        created_at: created,
        decided_at: None,
        expires_at: now + Duration::days(1),
        window_end: None,
        version: 0,
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let n = env_num("SCALE_REVIEWS", 100_000);
    let queries = env_num("SCALE_QUERIES", 200);
    let url = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: scale STORE_URL"))?;
    let store = Store::connect(&url).await?;
    let now = OffsetDateTime::now_utc();
    let batch = env_num("SCALE_BATCH", 5_000).max(1);
    let t = Instant::now();
    // SCALE_SEED=0 reuses a store seeded by an earlier run (to compare query plans).
    let seed = env_num("SCALE_SEED", 1) != 0;
    let mut i = if seed { 0 } else { n };
    while i < n {
        // Oldest first, so the chain's times only move forward.
        let items: Vec<_> = (i..n.min(i + batch))
            .map(|k| {
                let r = review(n - 1 - k, now);
                let ev = AuditEvent::ReviewRequested {
                    review_id: r.id,
                    review_type: "command".into(),
                    connection: r.connection.clone(),
                    rule: r.rule.clone(),
                    command_sha256: r.command_sha256.clone(),
                    duration_sec: None,
                    reason: None,
                };
                let ctx = AuditCtx::new(&r.requester, r.created_at, vec![ev]);
                (r, ctx)
            })
            .collect();
        store.insert_reviews(&items).await?;
        i += items.len();
    }
    let seeded = t.elapsed().as_secs_f64();
    // The chain as the store holds it, walked page by page with the core's own check.
    let (mut entries, mut after, mut head) = (0usize, 0i64, None::<(i64, String)>);
    loop {
        let page = store.audit_entries(after, 10_000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        entries += page.len();
        let start = head.as_ref().map(|(s, h)| (*s, h.as_str()));
        head = warden_core::audit::verify_chain(&page, start)
            .map_err(|e| anyhow::anyhow!("the seeded chain does not verify: {e}"))?;
    }
    let pending = |visible_to: Option<Visibility>| ReviewFilter {
        status: Some(ReviewStatus::Pending),
        visible_to,
        page: 1,
        per_page: 50,
        ..ReviewFilter::default()
    };
    let bob = Visibility {
        email: "bob@example.com".into(),
        groups: vec!["dba".into()],
    };
    let mut report = Vec::new();
    let whom = if queries == 0 {
        vec![]
    } else {
        vec![("admin", pending(None)), ("approver", pending(Some(bob)))]
    };
    for (who, filter) in whom {
        let mut ms = Vec::with_capacity(queries);
        let mut total = 0;
        for _ in 0..queries {
            let t = Instant::now();
            let (_, tot) = store.list_reviews(&filter).await?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            total = tot;
        }
        report.push(format!(
            "{who}: pending total {total}, first page p50 {:.2} ms, p99 {:.2} ms",
            pct(&mut ms, 0.5),
            pct(&mut ms, 0.99)
        ));
    }
    if seed {
        println!(
            "{} reviews seeded in {seeded:.1} s ({:.0}/s, {batch} per transaction); chain of {entries} entries verifies",
            n,
            n as f64 / seeded
        );
    } else {
        println!("reviews seeded earlier; chain of {entries} entries verifies");
    }
    for line in report {
        println!("{line}");
    }
    Ok(())
}
