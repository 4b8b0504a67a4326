//! The shared shape of a paginated listing: `LIMIT`/`OFFSET` from a 1-based page, one page of
//! rows plus the total count of matching rows, and the helpers that build a WHERE clause while
//! binding its values.
//!
//! It must never splice a caller's value into SQL text: values are always bound parameters
//! (`cond`); only clauses and column names written in this crate become SQL.

use crate::Result;
use crate::backend::{self, Q, Val};

/// Page size when a filter leaves `per_page` at 0, and the largest page served.
const DEFAULT_PER_PAGE: u32 = 50;
const MAX_PER_PAGE: u32 = 1000;

/// One page of `SELECT {cols} FROM {table}{where} ORDER BY {order}` plus the total count of
/// matching rows: the shared shape of every paginated listing. `filter` adds the WHERE clause
/// and binds its values to the query it is given (it is called once per query).
pub(crate) async fn fetch_page<T: backend::Decode>(
    h: &mut backend::Handle,
    table: &str,
    cols: &str,
    order: &str,
    filter: impl Fn(&mut Q) -> String,
    page: u32,
    per_page: u32,
) -> Result<(Vec<T>, i64)> {
    let mut count = Q::dynamic(String::new());
    let w = filter(&mut count);
    let count = count.with_sql(format!("SELECT COUNT(*) FROM {table}{w}"));
    let (total,): (i64,) = h.fetch_one(count).await?;
    let mut q = Q::dynamic(String::new());
    let w = filter(&mut q);
    let (limit, offset) = limit_offset(page, per_page);
    let lim = q.next_param();
    q.push(limit);
    let off = q.next_param();
    q.push(offset);
    let q = q.with_sql(format!(
        "SELECT {cols} FROM {table}{w} ORDER BY {order} LIMIT {lim} OFFSET {off}"
    ));
    Ok((h.fetch_all(q).await?, total))
}

/// `(LIMIT, OFFSET)` for a 1-based page (0 counts as 1).
pub(crate) fn limit_offset(page: u32, per_page: u32) -> (i64, i64) {
    let per_page = match per_page {
        0 => DEFAULT_PER_PAGE,
        n => n.min(MAX_PER_PAGE),
    };
    let page = page.max(1);
    (
        i64::from(per_page),
        i64::from(page - 1) * i64::from(per_page),
    )
}

/// Appends `column op $n` to a WHERE list and binds `v`.
pub(crate) fn cond(w: &mut Vec<String>, query: &mut Q, clause: &str, v: impl Into<Val>) {
    w.push(clause.replace('?', &query.next_param()));
    query.push(v);
}

pub(crate) fn where_sql(w: &[String]) -> String {
    if w.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", w.join(" AND "))
    }
}
