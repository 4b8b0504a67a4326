//! Review listings at scale (issue 17 item 3), through the store's own API on SQLite and
//! PostgreSQL: seeds `SCALE_REVIEWS` reviews (each with its `review_requested` entry, so the
//! chain stays valid), 1 in 100 decided by `dba`, one in ten pending, then times an admin's and
//! an approver's pending list (first page of 50) `SCALE_QUERIES` times each and prints p50/p99.
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
    let t = Instant::now();
    for i in 0..n {
        let r = review(i, now);
        let ev = AuditEvent::ReviewRequested {
            review_id: r.id,
            review_type: "command".into(),
            connection: r.connection.clone(),
            rule: r.rule.clone(),
            command_sha256: r.command_sha256.clone(),
            duration_sec: None,
            reason: None,
        };
        store
            .insert_review(&r, AuditCtx::new(&r.requester, r.created_at, vec![ev]))
            .await?;
    }
    let seeded = t.elapsed().as_secs_f64();
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
    for (who, filter) in [("admin", pending(None)), ("approver", pending(Some(bob)))] {
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
    println!(
        "{} reviews seeded in {seeded:.1} s ({:.0}/s)",
        n,
        n as f64 / seeded
    );
    for line in report {
        println!("{line}");
    }
    Ok(())
}
