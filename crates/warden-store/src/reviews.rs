//! Reviews: their insertion, optimistic version-checked updates, filtered and visibility-limited
//! listings, and the execution claims (a lease per approved review).
//!
//! It must never compute a transition itself (approvals, quorum, expiry are the core's): it
//! stores the review the core computed, and only if the stored version is the one it started
//! from, so a concurrent change is a `Conflict`, never a lost update.

use time::OffsetDateTime;
use uuid::Uuid;
use warden_core::{Review, ReviewStatus, RuleType};

use crate::backend::{Q, WriteTx, q};
use crate::query::{cond, fetch_page, limit_offset, where_sql};
use crate::rows::{ReviewRow, to_json};
use crate::{AuditCtx, Result, Store, StoreError, dup};

/// Filters for listing reviews. `page` starts at 1.
#[derive(Debug, Clone, Default)]
pub struct ReviewFilter {
    pub status: Option<ReviewStatus>,
    pub connection: Option<String>,
    pub requester: Option<String>,
    pub kind: Option<RuleType>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    /// Only the reviews this user may see: their own, and those whose approval or
    /// force-approval groups include one of theirs (`None`: every review).
    pub visible_to: Option<Visibility>,
    pub page: u32,
    pub per_page: u32,
}

/// Who is looking at a review listing (see [`ReviewFilter::visible_to`]).
#[derive(Debug, Clone, Default)]
pub struct Visibility {
    pub email: String,
    pub groups: Vec<String>,
}

/// Column lists, one per table, shared by every SELECT of that table.
macro_rules! review_cols {
    () => {
        "id, kind, status, connection, requester, requester_groups_json, rule_name, policy_json, \
         command, command_sha256, duration_sec, request_reason, approvals_json, decided_by, reason, \
         forced, created_at_ms, decided_at_ms, expires_at_ms, window_end_ms, version"
    };
}

/// The conditions of a review listing other than visibility, binding their values onto
/// `query`. The columns named exist in `reviews` and in `review_deciders` alike.
fn review_conds(f: &ReviewFilter, query: &mut Q) -> Vec<String> {
    let mut w = Vec::new();
    if let Some(s) = f.status {
        cond(&mut w, query, "status = ?", s.as_str());
    }
    if let Some(c) = &f.connection {
        cond(&mut w, query, "connection = ?", c);
    }
    if let Some(r) = &f.requester {
        cond(&mut w, query, "requester = ?", r);
    }
    if let Some(k) = f.kind {
        cond(&mut w, query, "kind = ?", k.as_str());
    }
    if let Some(t) = f.since {
        cond(&mut w, query, "created_at_ms >= ?", t);
    }
    if let Some(t) = f.until {
        cond(&mut w, query, "created_at_ms < ?", t);
    }
    w
}

/// The reviews `v` may see that match `f`, as `(id, created_at_ms)` rows: their own (off the
/// `reviews` index by requester) united with those one of their groups decides (off the
/// deciders' own index, which carries the filtered columns). Both are read from covering
/// indexes; no review that does not match is visited. With `newest`, each half stops at that
/// many rows, newest first (a page needs no more than `offset + limit` of either).
fn visible_ids(f: &ReviewFilter, v: &Visibility, query: &mut Q, newest: Option<i64>) -> String {
    let limit = |query: &mut Q, order: &str| match newest {
        Some(n) => {
            let p = query.next_param();
            query.push(n);
            format!(" ORDER BY {order} LIMIT {p}")
        }
        None => String::new(),
    };
    let me = query.next_param();
    query.push(v.email.as_str());
    let mut own = vec![format!("requester = {me}")];
    own.extend(review_conds(f, query));
    let own_limit = limit(query, "created_at_ms DESC, id DESC");
    let mut sql = format!(
        "SELECT * FROM (SELECT id, created_at_ms FROM reviews{}{own_limit}) own",
        where_sql(&own)
    );
    if !v.groups.is_empty() {
        let groups: Vec<String> = v
            .groups
            .iter()
            .map(|g| {
                let p = query.next_param();
                query.push(g.as_str());
                p
            })
            .collect();
        let mut decided = vec![format!("grp IN ({})", groups.join(", "))];
        decided.extend(review_conds(f, query));
        let decided_limit = limit(query, "created_at_ms DESC, id DESC");
        sql.push_str(&format!(
            " UNION SELECT * FROM (SELECT DISTINCT review_id AS id, created_at_ms \
             FROM review_deciders{}{decided_limit}) decided",
            where_sql(&decided)
        ));
    }
    sql
}

/// One review's rows (the review, its deciders, its claim) and audit entries, inside `tx`.
async fn insert_review_tx(
    tx: &mut WriteTx,
    r: &Review,
    audit: &AuditCtx,
    claimed: bool,
) -> Result<()> {
    let res = tx
            .execute(
                q("INSERT INTO reviews (id, kind, status, connection, requester, requester_groups_json, \
                   rule_name, policy_json, command, command_sha256, duration_sec, request_reason, \
                   approvals_json, decided_by, reason, forced, created_at_ms, decided_at_ms, \
                   expires_at_ms, window_end_ms, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                   $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)")
                .bind(r.id)
                .bind(r.kind.as_str())
                .bind(r.status.as_str())
                .bind(&r.connection)
                .bind(&r.requester)
                .bind(to_json("requester groups", &r.requester_groups)?)
                .bind(&r.rule)
                .bind(to_json("policy", &r.policy)?)
                .bind(&r.command)
                .bind(&r.command_sha256)
                .bind(r.duration_sec)
                .bind(&r.request_reason)
                .bind(to_json("approvals", &r.approvals)?)
                .bind(&r.decided_by)
                .bind(&r.reason)
                .bind(r.forced)
                .bind(r.created_at)
                .bind(r.decided_at)
                .bind(r.expires_at)
                .bind(r.window_end)
                .bind(r.version),
            )
            .await;
    dup(res, || format!("review {} already exists", r.id))?;
    let mut deciders: Vec<&String> = r
        .policy
        .approval_groups
        .iter()
        .chain(&r.policy.force_approval_groups)
        .collect();
    deciders.sort();
    deciders.dedup();
    for g in deciders {
        tx.execute(
            q(
                "INSERT INTO review_deciders (review_id, grp, status, created_at_ms, connection, \
                   requester, kind) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(r.id)
            .bind(g)
            .bind(r.status.as_str())
            .bind(r.created_at)
            .bind(&r.connection)
            .bind(&r.requester)
            .bind(r.kind.as_str()),
        )
        .await?;
    }
    if claimed {
        tx.execute(
            q("UPDATE reviews SET exec_claimed_at_ms = $2 WHERE id = $1")
                .bind(r.id)
                .bind(r.created_at),
        )
        .await?;
    }
    tx.audit(audit.now, &audit.actor, &audit.events)
}

impl Store {
    // ---- reviews -------------------------------------------------------------------------

    /// Inserts a new review (version 0 as given) with its audit events.
    ///
    /// Returns the stored review (timestamps truncated to milliseconds).
    pub async fn insert_review(&self, review: &Review, audit: AuditCtx) -> Result<Review> {
        self.insert_review_inner(review, audit, false).await
    }

    /// Inserts a review whose execution belongs to someone else (a proxied statement runs in
    /// its client's session once approved): its execution slot is claimed from the start, so
    /// neither `execute_review` nor the sweeper's recovery ever runs it through an executor.
    pub async fn insert_review_claimed(&self, review: &Review, audit: AuditCtx) -> Result<Review> {
        self.insert_review_inner(review, audit, true).await
    }

    async fn insert_review_inner(
        &self,
        review: &Review,
        audit: AuditCtx,
        claimed: bool,
    ) -> Result<Review> {
        let mut tx = self
            .db
            .write(format!("creating review {}", review.id))
            .await?;
        insert_review_tx(&mut tx, review, &audit, claimed).await?;
        let stored = review_in_tx(&mut tx, review.id).await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// Inserts many reviews, each with its own audit entries, in one transaction: all of them
    /// or none. What an import (or `bench/scale.sh`'s seeding) uses; the rows and the chain
    /// are exactly those of as many [`Store::insert_review`] calls.
    pub async fn insert_reviews(&self, batch: &[(Review, AuditCtx)]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self
            .db
            .write(format!("creating {} reviews", batch.len()))
            .await?;
        for (review, audit) in batch {
            insert_review_tx(&mut tx, review, audit, false).await?;
        }
        tx.commit().await
    }
    pub async fn get_review(&self, id: Uuid) -> Result<Option<Review>> {
        let mut h = self.db.read(format!("reading review {id}")).await?;
        let row: Option<ReviewRow> = h
            .fetch_optional(
                q(concat!(
                    "SELECT ",
                    review_cols!(),
                    " FROM reviews WHERE id = $1"
                ))
                .bind(id),
            )
            .await?;
        row.map(ReviewRow::into_review).transpose()
    }
    /// Newest first. Returns the page and the total count matching the filter.
    ///
    /// `since` is inclusive, `until` exclusive (on `created_at`); `per_page` 0 means 50, at most
    /// 1000 per page.
    pub async fn list_reviews(&self, filter: &ReviewFilter) -> Result<(Vec<Review>, i64)> {
        let mut h = self.db.read("listing reviews").await?;
        let (rows, total): (Vec<ReviewRow>, i64) = match &filter.visible_to {
            None => {
                fetch_page(
                    &mut h,
                    "reviews",
                    review_cols!(),
                    "created_at_ms DESC, id DESC",
                    |q| where_sql(&review_conds(filter, q)),
                    filter.page,
                    filter.per_page,
                )
                .await?
            }
            Some(v) => {
                // Counted and paged on the visible ids alone; only the page's reviews are read.
                let mut count = Q::dynamic(String::new());
                let ids = visible_ids(filter, v, &mut count, None);
                let count = count.with_sql(format!("SELECT COUNT(*) FROM ({ids}) v"));
                let (total,): (i64,) = h.fetch_one(count).await?;
                let (limit, offset) = limit_offset(filter.page, filter.per_page);
                let mut page = Q::dynamic(String::new());
                let ids = visible_ids(filter, v, &mut page, Some(offset + limit));
                let lim = page.next_param();
                page.push(limit);
                let off = page.next_param();
                page.push(offset);
                let page = page.with_sql(format!(
                    concat!(
                        "SELECT ",
                        review_cols!(),
                        " FROM reviews WHERE id IN (SELECT id FROM ({}) v \
                         ORDER BY created_at_ms DESC, id DESC LIMIT {} OFFSET {}) \
                         ORDER BY created_at_ms DESC, id DESC"
                    ),
                    ids, lim, off
                ));
                (h.fetch_all(page).await?, total)
            }
        };
        Ok((
            rows.into_iter()
                .map(ReviewRow::into_review)
                .collect::<Result<_>>()?,
            total,
        ))
    }
    /// Persists a transition computed by the core: succeeds only if the stored version is still
    /// `review.version` (the version the transition started from); stores `version + 1` and
    /// returns the stored review. `Conflict` otherwise — the caller reloads and retries.
    ///
    /// Only the fields a transition may change are written (status, duration, approvals,
    /// decision, expiry, window); the command, requester, connection, rule and policy recorded
    /// at request time never change. `NotFound` if the review does not exist. On `Conflict` or
    /// `NotFound` nothing is written, audit entries included.
    pub async fn update_review(&self, review: &Review, audit: AuditCtx) -> Result<Review> {
        let mut tx = self
            .db
            .write(format!("updating review {}", review.id))
            .await?;
        let stored = update_review_tx(&mut tx, review, &audit).await?;
        tx.commit().await?;
        Ok(stored)
    }
    /// PENDING reviews whose `expires_at <= now`.
    pub async fn reviews_to_expire(&self, now: OffsetDateTime) -> Result<Vec<Review>> {
        self.reviews_where(
            "finding reviews to expire",
            q(concat!(
                "SELECT ",
                review_cols!(),
                " FROM reviews WHERE status = 'PENDING' AND expires_at_ms <= $1 ORDER BY expires_at_ms, id"
            ))
            .bind(now),
        )
        .await
    }
    /// APPROVED jit reviews whose `window_end <= now`.
    pub async fn windows_to_finish(&self, now: OffsetDateTime) -> Result<Vec<Review>> {
        self.reviews_where(
            "finding JIT windows to finish",
            q(concat!(
                "SELECT ",
                review_cols!(),
                " FROM reviews WHERE status = 'APPROVED' AND kind = 'jit' AND window_end_ms <= $1 \
                 ORDER BY window_end_ms, id"
            ))
            .bind(now),
        )
        .await
    }
    /// APPROVED jit reviews of `requester` on `connection` (the caller checks the window).
    ///
    /// Newest first.
    pub async fn approved_windows(&self, requester: &str, connection: &str) -> Result<Vec<Review>> {
        self.reviews_where(
            "finding approved JIT windows",
            q(concat!(
                "SELECT ",
                review_cols!(),
                " FROM reviews WHERE status = 'APPROVED' AND kind = 'jit' AND requester = $1 \
                 AND connection = $2 ORDER BY created_at_ms DESC, id DESC"
            ))
            .bind(requester)
            .bind(connection),
        )
        .await
    }
    /// Claims the one execution of an approved command review: true for exactly one caller,
    /// across threads and replicas.
    ///
    /// A single conditional UPDATE (`status = 'APPROVED' AND exec_claimed_at IS NULL`); it does
    /// not change the review's version.
    pub async fn claim_execution(&self, review_id: Uuid, now: OffsetDateTime) -> Result<bool> {
        // A write like any other, so it shares the commit of writes running beside it.
        let mut tx = self
            .db
            .write(format!("claiming the execution of review {review_id}"))
            .await?;
        let n = tx
            .execute(
                q("UPDATE reviews SET exec_claimed_at_ms = $2 \
                   WHERE id = $1 AND status = 'APPROVED' AND exec_claimed_at_ms IS NULL")
                .bind(review_id)
                .bind(now),
            )
            .await?;
        tx.commit().await?;
        Ok(n == 1)
    }
    /// Renews the execution claims of reviews a live proxy session still holds. A claim is a
    /// lease: the sweeper takes a claim older than the execution timeout for a crashed
    /// execution, so a held statement that waits (or runs) long must keep renewing it.
    pub async fn renew_claims(&self, review_ids: &[Uuid], now: OffsetDateTime) -> Result<()> {
        if review_ids.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.write("renewing execution claims").await?;
        for id in review_ids {
            tx.execute(
                q("UPDATE reviews SET exec_claimed_at_ms = $2 WHERE id = $1 \
                   AND status IN ('PENDING', 'APPROVED') AND exec_claimed_at_ms IS NOT NULL")
                .bind(*id)
                .bind(now),
            )
            .await?;
        }
        tx.commit().await
    }
    /// APPROVED command reviews nobody has claimed (crash between approval and execution),
    /// decided before `decided_before`: a review approved a moment ago is about to be claimed
    /// by the request that approved it, which must not lose that race to the recovery.
    pub async fn unclaimed_approved(&self, decided_before: OffsetDateTime) -> Result<Vec<Review>> {
        self.reviews_where(
            "finding unclaimed approved reviews",
            q(concat!(
                "SELECT ",
                review_cols!(),
                " FROM reviews WHERE status = 'APPROVED' AND kind = 'command' \
                 AND exec_claimed_at_ms IS NULL AND decided_at_ms < $1 ORDER BY created_at_ms, id"
            ))
            .bind(decided_before),
        )
        .await
    }
    /// APPROVED command reviews claimed before `before` that never reached EXECUTED.
    pub async fn stale_claims(&self, before: OffsetDateTime) -> Result<Vec<Review>> {
        self.reviews_where(
            "finding stale execution claims",
            q(concat!(
                "SELECT ",
                review_cols!(),
                " FROM reviews WHERE status = 'APPROVED' AND kind = 'command' \
                 AND exec_claimed_at_ms < $1 ORDER BY exec_claimed_at_ms, id"
            ))
            .bind(before),
        )
        .await
    }

    async fn reviews_where(&self, ctx: &'static str, query: Q) -> Result<Vec<Review>> {
        let mut h = self.db.read(ctx).await?;
        let rows: Vec<ReviewRow> = h.fetch_all(query).await?;
        rows.into_iter().map(ReviewRow::into_review).collect()
    }
}

/// The version-checked update of [`Store::update_review`], inside `tx`.
pub(crate) async fn update_review_tx(
    tx: &mut WriteTx,
    review: &Review,
    audit: &AuditCtx,
) -> Result<Review> {
    let r = review;
    let n = tx
        .execute(
            q(
                "UPDATE reviews SET status = $2, duration_sec = $3, approvals_json = $4, \
               decided_by = $5, reason = $6, forced = $7, decided_at_ms = $8, expires_at_ms = $9, \
               window_end_ms = $10, version = version + 1 WHERE id = $1 AND version = $11",
            )
            .bind(r.id)
            .bind(r.status.as_str())
            .bind(r.duration_sec)
            .bind(to_json("approvals", &r.approvals)?)
            .bind(&r.decided_by)
            .bind(&r.reason)
            .bind(r.forced)
            .bind(r.decided_at)
            .bind(r.expires_at)
            .bind(r.window_end)
            .bind(r.version),
        )
        .await?;
    if n == 0 {
        let exists = tx
            .fetch_optional::<(String,)>(q("SELECT id FROM reviews WHERE id = $1").bind(r.id))
            .await?
            .is_some();
        return Err(if exists {
            StoreError::Conflict
        } else {
            StoreError::NotFound(format!("review {} not found", r.id))
        });
    }
    // The deciders' copy of the status follows the review's (listings filter on it).
    tx.execute(
        q("UPDATE review_deciders SET status = $2 WHERE review_id = $1 AND status <> $2")
            .bind(r.id)
            .bind(r.status.as_str()),
    )
    .await?;
    tx.audit(audit.now, &audit.actor, &audit.events)?;
    review_in_tx(tx, r.id).await
}

/// Reads a review back inside a write transaction (to return what was stored).
async fn review_in_tx(tx: &mut WriteTx, id: Uuid) -> Result<Review> {
    let row: ReviewRow = tx
        .fetch_one(
            q(concat!(
                "SELECT ",
                review_cols!(),
                " FROM reviews WHERE id = $1"
            ))
            .bind(id),
        )
        .await?;
    row.into_review()
}
