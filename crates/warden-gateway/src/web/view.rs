//! Formatting shared by the pages: times, ages, durations, truncation, status badges, and the
//! result of an execution as a table (SQL rows) or raw output.
//!
//! # What it must never do
//! Produce HTML: everything here returns plain strings that the templates escape.

use time::OffsetDateTime;
use time::macros::format_description;
use warden_core::{ReviewStatus, Session};

/// `2026-11-01 12:34:56 UTC`.
pub fn ts(t: OffsetDateTime) -> String {
    let fmt = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    t.to_offset(time::UtcOffset::UTC)
        .format(&fmt)
        .map(|s| format!("{s} UTC"))
        .unwrap_or_else(|_| t.to_string())
}

pub fn ts_opt(t: Option<OffsetDateTime>) -> String {
    t.map(ts).unwrap_or_default()
}

/// Machine-readable timestamp for `<time datetime=…>`.
pub fn iso(t: OffsetDateTime) -> String {
    warden_core::timefmt::format(t)
}

/// A coarse age: `just now`, `5m`, `3h`, `2d`.
pub fn age(then: OffsetDateTime, now: OffsetDateTime) -> String {
    let s = (now - then).whole_seconds().max(0);
    match s {
        0..=59 => "just now".into(),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

/// `1h30m` for seconds.
pub fn dur(secs: i64) -> String {
    warden_core::duration::format_duration(secs)
}

/// Milliseconds as `850 ms` / `2.4 s`.
pub fn ms(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// At most `max` characters on one line (whitespace runs collapsed), with `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    let one_line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut out: String = one_line.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// The CSS class of a status badge.
pub fn status_class(s: ReviewStatus) -> &'static str {
    match s {
        ReviewStatus::Pending => "pending",
        ReviewStatus::Approved => "approved",
        ReviewStatus::Executed => "executed",
        ReviewStatus::Rejected => "rejected",
        ReviewStatus::Expired | ReviewStatus::Revoked => "closed",
    }
}

/// A result set: column names and cells (`None` = SQL NULL).
#[derive(Debug, Clone, Default)]
pub struct TableView {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

/// What an execution produced, ready to show.
#[derive(Debug, Clone, Default)]
pub struct ResultView {
    pub session_id: String,
    pub exit_code: String,
    pub ok: bool,
    pub duration: String,
    pub output: String,
    pub truncated: bool,
    pub table: Option<TableView>,
    pub running: bool,
}

/// The rows of `rows_json` (`[{col: value|null}, …]`) as a table; `None` if not that shape.
pub fn table_from_rows(rows: &serde_json::Value) -> Option<TableView> {
    let arr = rows.as_array()?;
    let first = arr.first()?.as_object()?;
    let columns: Vec<String> = first.keys().cloned().collect();
    let rows = arr
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| match row.get(c) {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::String(s)) => Some(s.clone()),
                    Some(other) => Some(other.to_string()),
                })
                .collect()
        })
        .collect();
    Some(TableView { columns, rows })
}

impl ResultView {
    pub fn of(s: &Session) -> ResultView {
        let table = s.rows_json.as_ref().and_then(table_from_rows);
        ResultView {
            session_id: s.id.to_string(),
            exit_code: s.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            ok: s.exit_code == Some(0),
            duration: s.duration_ms.map(ms).unwrap_or_default(),
            output: s.output.clone().unwrap_or_default(),
            truncated: s.output_truncated,
            table,
            running: s.ended_at.is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn formats() {
        let now = OffsetDateTime::now_utc();
        assert_eq!(age(now, now), "just now");
        assert_eq!(age(now - time::Duration::minutes(5), now), "5m ago");
        assert_eq!(age(now - time::Duration::hours(50), now), "2d ago");
        assert_eq!(truncate("a  b\nc", 10), "a b c");
        assert_eq!(truncate("abcdefghij", 5), "abcd…");
        assert_eq!(ms(850), "850 ms");
        assert_eq!(ms(2400), "2.4 s");
        assert!(ts(now).ends_with(" UTC"));
    }

    #[test]
    fn rows_keep_column_order_and_nulls() {
        let v: serde_json::Value =
            serde_json::from_str(r#"[{"z":"1","a":null},{"z":"2","a":"x"}]"#).unwrap();
        let t = table_from_rows(&v).unwrap();
        assert_eq!(t.columns, vec!["z", "a"]);
        assert_eq!(t.rows[0], vec![Some("1".into()), None]);
        assert!(table_from_rows(&json!([])).is_none());
        assert!(table_from_rows(&json!("x")).is_none());
    }
}
