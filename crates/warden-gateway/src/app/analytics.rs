//! Access-request analytics (SPEC §6): average time to approval, approval rate, top requesters,
//! most common commands (normalised with `warden_core::fingerprint`), per connection and per
//! period. Computed from the stored reviews on demand; admins only.
//!
//! # What it must never do
//! Show anything to a non-admin (it aggregates every user's requests), or keep state of its own:
//! every number is derived from the store at the time of the call, so two replicas agree.

use std::collections::HashMap;

use time::{Duration, OffsetDateTime};
use warden_core::fingerprint::fingerprint;
use warden_core::{Review, ReviewStatus, User};
use warden_store::ReviewFilter;

use super::{App, AppResult};

/// Reviews read per store page while aggregating.
const PAGE: u32 = 500;
/// Upper bound on the reviews aggregated by one call (keeps memory bounded on huge stores).
pub const MAX_REVIEWS: usize = 50_000;
/// How many entries the "top" lists keep.
pub const TOP_N: usize = 10;

/// What to aggregate: an optional connection and a period ending now.
#[derive(Debug, Clone, Default)]
pub struct AnalyticsQuery {
    pub connection: Option<String>,
    /// Only reviews created at or after this instant (`None` = all time).
    pub since: Option<OffsetDateTime>,
}

/// Counts and timings of one group of reviews (everything, or one connection).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub total: i64,
    pub pending: i64,
    /// Reached APPROVED (includes EXECUTED and REVOKED, forced and auto-approved ones).
    pub approved: i64,
    /// Rejected by an approver (withdrawals are counted apart).
    pub rejected: i64,
    pub withdrawn: i64,
    pub expired: i64,
    pub forced: i64,
    pub auto_approved: i64,
    /// Sum and count of (decided_at − created_at) over human approvals (auto-approvals excluded).
    approval_secs_sum: f64,
    approval_count: i64,
    /// Every human approval delay, for percentiles.
    approval_secs: Vec<f64>,
}

impl Stats {
    fn add(&mut self, r: &Review) {
        self.total += 1;
        match r.status {
            ReviewStatus::Pending => self.pending += 1,
            ReviewStatus::Approved | ReviewStatus::Executed | ReviewStatus::Revoked => {
                self.approved += 1;
                if r.forced {
                    self.forced += 1;
                }
                let auto = r.approvals.iter().any(|a| a.auto);
                if auto {
                    self.auto_approved += 1;
                } else if let Some(at) = r.decided_at {
                    let secs = (at - r.created_at).as_seconds_f64().max(0.0);
                    self.approval_secs_sum += secs;
                    self.approval_count += 1;
                    self.approval_secs.push(secs);
                }
            }
            ReviewStatus::Rejected => {
                if r.is_withdrawn() {
                    self.withdrawn += 1;
                } else {
                    self.rejected += 1;
                }
            }
            ReviewStatus::Expired => self.expired += 1,
        }
    }

    /// Mean seconds from request to approval, over human approvals.
    pub fn avg_time_to_approval_sec(&self) -> Option<f64> {
        (self.approval_count > 0).then(|| self.approval_secs_sum / self.approval_count as f64)
    }

    /// 90th percentile of the time to approval (nearest rank), over human approvals.
    pub fn p90_time_to_approval_sec(&self) -> Option<f64> {
        if self.approval_secs.is_empty() {
            return None;
        }
        let mut v = self.approval_secs.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        let rank = ((0.9 * v.len() as f64).ceil() as usize).clamp(1, v.len());
        Some(v[rank - 1])
    }

    /// Rejected / settled.
    pub fn rejection_rate(&self) -> Option<f64> {
        let settled = self.approved + self.rejected + self.expired;
        (settled > 0).then(|| self.rejected as f64 / settled as f64)
    }

    /// The numbers as JSON (API and CLI).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "total": self.total, "pending": self.pending, "approved": self.approved, "rejected": self.rejected,
            "withdrawn": self.withdrawn, "expired": self.expired, "forced": self.forced, "auto_approved": self.auto_approved,
            "approval_rate": self.approval_rate(), "rejection_rate": self.rejection_rate(),
            "avg_time_to_approval_sec": self.avg_time_to_approval_sec(),
            "p90_time_to_approval_sec": self.p90_time_to_approval_sec(),
        })
    }

    /// Approved / (approved + rejected + expired): the share of settled requests that were
    /// approved. Pending and withdrawn requests are not settled by an approver.
    pub fn approval_rate(&self) -> Option<f64> {
        let settled = self.approved + self.rejected + self.expired;
        (settled > 0).then(|| self.approved as f64 / settled as f64)
    }
}

/// One bucket of the per-period series.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub start: OffsetDateTime,
    pub total: i64,
    pub approved: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Analytics {
    pub overall: Stats,
    /// Per connection, most requests first.
    pub per_connection: Vec<(String, Stats)>,
    /// (requester, requests), most first.
    pub top_requesters: Vec<(String, i64)>,
    /// (command fingerprint, requests), most first. JIT requests have no command.
    pub top_commands: Vec<(String, i64)>,
    /// (approver, approvals given), most first (auto-approvals excluded).
    pub top_approvers: Vec<(String, i64)>,
    /// Requests per period bucket, oldest first (empty buckets included).
    pub series: Vec<Bucket>,
    pub bucket_sec: i64,
    /// True when more than [`MAX_REVIEWS`] matched and only the newest were aggregated.
    pub truncated: bool,
}

fn top(counts: HashMap<String, i64>) -> Vec<(String, i64)> {
    let mut v: Vec<(String, i64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(TOP_N);
    v
}

/// Bucket width for a period: hours up to two days, days up to ~3 months, then weeks.
pub fn bucket_for(period_sec: i64) -> i64 {
    if period_sec <= 2 * 86400 {
        3600
    } else if period_sec <= 92 * 86400 {
        86400
    } else {
        7 * 86400
    }
}

/// Aggregates `reviews` (pure: the page and the tests call it directly).
pub fn aggregate(
    reviews: &[Review],
    since: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Analytics {
    let mut overall = Stats::default();
    let mut per_conn: HashMap<String, Stats> = HashMap::new();
    let mut requesters: HashMap<String, i64> = HashMap::new();
    let mut commands: HashMap<String, i64> = HashMap::new();
    let mut approvers: HashMap<String, i64> = HashMap::new();
    for r in reviews {
        for a in r.approvals.iter().filter(|a| !a.auto) {
            *approvers.entry(a.approver.clone()).or_default() += 1;
        }
        overall.add(r);
        per_conn.entry(r.connection.clone()).or_default().add(r);
        *requesters.entry(r.requester.clone()).or_default() += 1;
        if let Some(c) = &r.command {
            *commands.entry(fingerprint(c)).or_default() += 1;
        }
    }
    let mut per_connection: Vec<(String, Stats)> = per_conn.into_iter().collect();
    per_connection.sort_by(|a, b| b.1.total.cmp(&a.1.total).then_with(|| a.0.cmp(&b.0)));

    let start = since
        .or_else(|| reviews.iter().map(|r| r.created_at).min())
        .unwrap_or(now);
    let bucket_sec = bucket_for((now - start).whole_seconds().max(1));
    let first = start.unix_timestamp().div_euclid(bucket_sec) * bucket_sec;
    let n = ((now.unix_timestamp() - first).div_euclid(bucket_sec) + 1).clamp(1, 400);
    let mut series: Vec<Bucket> = (0..n)
        .map(|i| Bucket {
            start: OffsetDateTime::from_unix_timestamp(first + i * bucket_sec).unwrap_or(now),
            total: 0,
            approved: 0,
        })
        .collect();
    for r in reviews {
        let idx = (r.created_at.unix_timestamp() - first).div_euclid(bucket_sec);
        if let Some(b) = usize::try_from(idx).ok().and_then(|i| series.get_mut(i)) {
            b.total += 1;
            if matches!(
                r.status,
                ReviewStatus::Approved | ReviewStatus::Executed | ReviewStatus::Revoked
            ) {
                b.approved += 1;
            }
        }
    }
    Analytics {
        overall,
        per_connection,
        top_requesters: top(requesters),
        top_commands: top(commands),
        top_approvers: top(approvers),
        series,
        bucket_sec,
        truncated: false,
    }
}

impl App {
    /// Analytics over the reviews matching `q` (admins and auditors).
    pub async fn analytics(&self, actor: &User, q: AnalyticsQuery) -> AppResult<Analytics> {
        self.require_reader(actor)?;
        let mut all: Vec<Review> = Vec::new();
        let mut truncated = false;
        let mut page = 1;
        loop {
            let filter = ReviewFilter {
                connection: q.connection.clone(),
                since: q.since,
                page,
                per_page: PAGE,
                ..ReviewFilter::default()
            };
            let (batch, total) = self.store.list_reviews(&filter).await?;
            let got = batch.len();
            all.extend(batch);
            if all.len() >= MAX_REVIEWS {
                truncated = total as usize > MAX_REVIEWS;
                all.truncate(MAX_REVIEWS);
                break;
            }
            if got < PAGE as usize || all.len() as i64 >= total {
                break;
            }
            page += 1;
        }
        let mut a = aggregate(&all, q.since, self.now());
        a.truncated = truncated;
        Ok(a)
    }
}

impl Analytics {
    /// The whole report as JSON (API and `warden admin analytics -o json`).
    pub fn to_json(&self) -> serde_json::Value {
        let pairs = |v: &[(String, i64)], k: &str| -> Vec<serde_json::Value> {
            v.iter()
                .map(|(name, n)| serde_json::json!({k: name, "count": n}))
                .collect()
        };
        serde_json::json!({
            "overall": self.overall.to_json(),
            "per_connection": self.per_connection.iter().map(|(c, s)| {
                let mut v = s.to_json();
                v["connection"] = serde_json::json!(c);
                v
            }).collect::<Vec<_>>(),
            "top_requesters": pairs(&self.top_requesters, "requester"),
            "top_approvers": pairs(&self.top_approvers, "approver"),
            "top_commands": pairs(&self.top_commands, "fingerprint"),
            "truncated": self.truncated,
        })
    }
}

/// Seconds in the named period (`24h`, `7d`, `30d`, `90d`); `None` for all time.
pub fn period_seconds(period: &str) -> Option<i64> {
    match period {
        "24h" => Some(86400),
        "7d" => Some(7 * 86400),
        "30d" => Some(30 * 86400),
        "90d" => Some(90 * 86400),
        _ => None,
    }
}

/// `now - period`, for [`AnalyticsQuery::since`].
pub fn since_for(period: &str, now: OffsetDateTime) -> Option<OffsetDateTime> {
    period_seconds(period).map(|s| now - Duration::seconds(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;
    use warden_core::review::{Actor, ApproveInput, NewReview};
    use warden_core::{Rule, RuleType};

    fn rule() -> Rule {
        let now = OffsetDateTime::now_utc();
        Rule {
            id: Uuid::new_v4(),
            name: "r".into(),
            description: String::new(),
            kind: RuleType::Command,
            connections: vec!["db".into()],
            required_groups: vec![],
            approval_groups: vec!["dba".into()],
            require_all_groups: false,
            approval_amount: 1,
            force_approval_groups: vec![],
            exempt_groups: vec![],
            timeout_sec: None,
            max_duration_sec: None,
            require_reason: false,
            created_at: now,
            updated_at: now,
        }
    }

    fn review(conn: &str, who: &str, cmd: &str, at: OffsetDateTime) -> Review {
        Review::new(
            &rule(),
            NewReview {
                id: uuid::Uuid::now_v7(),
                connection: conn.into(),
                requester: who.into(),
                requester_groups: vec![],
                command: Some(cmd.into()),
                duration_sec: None,
                request_reason: None,
            },
            3600,
            at,
        )
    }

    #[test]
    fn aggregates_rates_times_tops_and_series() {
        let now = OffsetDateTime::now_utc();
        let groups = vec!["dba".to_string()];
        let approver = Actor {
            email: "dba@x",
            groups: &groups,
            admin: false,
            auditor: false,
        };
        let t0 = now - Duration::hours(5);
        let approved = review("db", "a@x", "SELECT 1", t0)
            .approve(
                approver,
                ApproveInput::default(),
                t0 + Duration::seconds(120),
            )
            .unwrap();
        let rejected = review("db", "a@x", "select 2", t0)
            .reject(approver, Some("no"), t0 + Duration::seconds(10))
            .unwrap();
        let pending = review("shell", "b@x", "ls -la", now);
        let withdrawn = review("shell", "b@x", "ls", now)
            .withdraw(
                Actor {
                    email: "b@x",
                    groups: &[],
                    admin: false,
                    auditor: false,
                },
                now,
            )
            .unwrap();
        let a = aggregate(
            &[approved, rejected, pending, withdrawn],
            Some(now - Duration::hours(24)),
            now,
        );
        assert_eq!(a.overall.total, 4);
        assert_eq!(a.overall.approved, 1);
        assert_eq!(a.overall.rejected, 1);
        assert_eq!(a.overall.withdrawn, 1);
        assert_eq!(a.overall.pending, 1);
        assert_eq!(a.overall.approval_rate(), Some(0.5));
        assert_eq!(a.overall.avg_time_to_approval_sec(), Some(120.0));
        assert_eq!(a.top_requesters[0], ("a@x".to_string(), 2));
        // SELECT 1 and select 2 share one fingerprint
        assert_eq!(a.top_commands[0].1, 2);
        assert_eq!(a.per_connection.len(), 2);
        assert_eq!(a.bucket_sec, 3600);
        assert_eq!(a.series.iter().map(|b| b.total).sum::<i64>(), 4);
        assert_eq!(a.series.len(), 25);
    }

    #[test]
    fn empty_input_has_no_rates() {
        let now = OffsetDateTime::now_utc();
        let a = aggregate(&[], None, now);
        assert_eq!(a.overall.total, 0);
        assert_eq!(a.overall.approval_rate(), None);
        assert_eq!(a.overall.avg_time_to_approval_sec(), None);
        assert_eq!(a.series.len(), 1);
        assert_eq!(period_seconds("7d"), Some(604800));
        assert_eq!(since_for("all", now), None);
    }
}
