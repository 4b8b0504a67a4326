//! `/analytics` (admins only): average time to approval, approval rate, top requesters, most
//! common commands (normalised), per connection and per period, with simple server-rendered SVG
//! bar charts (no script, no chart library). The numbers come from `App::analytics`.
//!
//! # What it must never do
//! Put a label (requester, command fingerprint, connection) into the SVG unescaped: the chart
//! geometry is computed here, the text goes through the template's escaping like everything else.

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use serde::Deserialize;
use time::macros::format_description;

use super::view::{dur, truncate};
use super::{Nav, Viewer, WebResult, fail, render};
use crate::app::analytics::{Analytics, AnalyticsQuery, Stats, since_for};
use crate::http::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/analytics", get(page))
        .route("/analytics.csv", get(csv))
}

/// Widths of the charts' coordinate systems (they scale to their container): half-width cards,
/// and full-width ones, chosen so text stays near its CSS size on a laptop.
const HALF_W: f64 = 640.0;
const FULL_W: f64 = 1100.0;
const BAR_H: f64 = 22.0;
const GAP: f64 = 8.0;

/// One horizontal bar (label, value, geometry).
pub struct HBar {
    pub label: String,
    pub full: String,
    pub value: i64,
    pub y: String,
    pub text_y: String,
    pub width: String,
    pub value_x: String,
}

pub struct HChart {
    pub width: String,
    pub height: String,
    pub bars: Vec<HBar>,
    pub bar_x: String,
    pub bar_h: String,
}

/// Horizontal bars in a `width`-wide chart whose first `label_w` units hold the labels.
pub fn hchart(items: &[(String, i64)], width: f64, label_w: f64) -> HChart {
    let max = items.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1) as f64;
    let avail = width - label_w - 60.0;
    let label_chars = (label_w / 7.5) as usize;
    let bars = items
        .iter()
        .enumerate()
        .map(|(i, (label, value))| {
            let y = i as f64 * (BAR_H + GAP);
            let w = (*value as f64 / max * avail).max(2.0);
            HBar {
                label: truncate(label, label_chars),
                full: label.clone(),
                value: *value,
                y: format!("{y:.1}"),
                text_y: format!("{:.1}", y + BAR_H * 0.7),
                width: format!("{w:.1}"),
                value_x: format!("{:.1}", label_w + w + 6.0),
            }
        })
        .collect::<Vec<_>>();
    HChart {
        width: format!("{width:.0}"),
        height: format!("{:.0}", (bars.len().max(1) as f64) * (BAR_H + GAP)),
        bars,
        bar_x: format!("{label_w:.0}"),
        bar_h: format!("{BAR_H:.0}"),
    }
}

/// One column of the per-period chart: total and approved heights.
pub struct VBar {
    pub x: String,
    pub w: String,
    pub y_total: String,
    pub h_total: String,
    pub y_approved: String,
    pub h_approved: String,
    pub title: String,
}

pub struct VChart {
    pub bars: Vec<VBar>,
    pub first: String,
    pub last: String,
    pub max: i64,
    pub width: String,
    pub label_y: String,
}

const VH: f64 = 160.0;

fn vchart(a: &Analytics) -> VChart {
    let n = a.series.len().max(1) as f64;
    let max = a.series.iter().map(|b| b.total).max().unwrap_or(0).max(1);
    let slot = FULL_W / n;
    let w = (slot * 0.8).max(1.0);
    let label = |t: time::OffsetDateTime| {
        let f = if a.bucket_sec < 86400 {
            t.format(format_description!("[month]-[day] [hour]:00"))
        } else {
            t.format(format_description!("[year]-[month]-[day]"))
        };
        f.unwrap_or_default()
    };
    let bars = a
        .series
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let ht = b.total as f64 / max as f64 * VH;
            let ha = b.approved as f64 / max as f64 * VH;
            VBar {
                x: format!("{:.1}", i as f64 * slot + (slot - w) / 2.0),
                w: format!("{w:.1}"),
                y_total: format!("{:.1}", VH - ht),
                h_total: format!("{ht:.1}"),
                y_approved: format!("{:.1}", VH - ha),
                h_approved: format!("{ha:.1}"),
                title: format!(
                    "{}: {} request{}, {} approved",
                    label(b.start),
                    b.total,
                    if b.total == 1 { "" } else { "s" },
                    b.approved
                ),
            }
        })
        .collect();
    VChart {
        bars,
        first: a.series.first().map(|b| label(b.start)).unwrap_or_default(),
        last: a.series.last().map(|b| label(b.start)).unwrap_or_default(),
        max,
        width: format!("{FULL_W:.0}"),
        label_y: format!("{:.0}", VH + 16.0),
    }
}

/// A connection's (or everything's) numbers, formatted.
pub struct StatsRow {
    pub name: String,
    pub total: i64,
    pub pending: i64,
    pub approved: i64,
    pub rejected: i64,
    pub withdrawn: i64,
    pub expired: i64,
    pub forced: i64,
    pub auto_approved: i64,
    pub rate: String,
    pub rejection_rate: String,
    pub avg: String,
    pub p90: String,
}

fn secs_label(secs: Option<f64>) -> String {
    secs.map(|secs| {
        if secs < 1.0 {
            "< 1s".to_string()
        } else {
            dur(secs.round() as i64)
        }
    })
    .unwrap_or_else(|| "—".into())
}

fn pct(r: Option<f64>) -> String {
    r.map(|r| format!("{:.0}%", r * 100.0))
        .unwrap_or_else(|| "—".into())
}

fn stats_row(name: &str, s: &Stats) -> StatsRow {
    StatsRow {
        name: name.into(),
        total: s.total,
        pending: s.pending,
        approved: s.approved,
        rejected: s.rejected,
        withdrawn: s.withdrawn,
        expired: s.expired,
        forced: s.forced,
        auto_approved: s.auto_approved,
        rate: pct(s.approval_rate()),
        rejection_rate: pct(s.rejection_rate()),
        avg: secs_label(s.avg_time_to_approval_sec()),
        p90: secs_label(s.p90_time_to_approval_sec()),
    }
}

#[derive(Template)]
#[template(path = "analytics.html")]
struct Page {
    nav: Option<Nav>,
    /// `/analytics.csv?…` for the same period and connection.
    csv_href: String,
    period: String,
    connection: String,
    connections: Vec<String>,
    periods: Vec<(&'static str, &'static str)>,
    overall: StatsRow,
    per_connection: Vec<StatsRow>,
    series: VChart,
    requesters: HChart,
    approvers: HChart,
    commands: HChart,
    by_connection: HChart,
    truncated: bool,
}

#[derive(Deserialize, Default)]
struct PageQuery {
    period: Option<String>,
    connection: Option<String>,
}

impl PageQuery {
    fn period(&self) -> String {
        match self.period.as_deref() {
            Some(p @ ("24h" | "7d" | "30d" | "90d" | "all")) => p.to_string(),
            _ => "30d".to_string(),
        }
    }
    fn connection(&self) -> Option<String> {
        self.connection
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
    }
}

/// The page's numbers as CSV (`section,name,metric,value`), same period and connection filter;
/// every cell quoted and neutralised against formula injection (commands are attacker text).
async fn csv(State(app): State<AppState>, viewer: Viewer, Query(q): Query<PageQuery>) -> WebResult {
    use super::sessions::{csv_line, csv_response};
    viewer.reader_only("analytics", "only admins and auditors can see analytics")?;
    let fail = fail(&viewer, "analytics");
    let a = app
        .analytics(
            &viewer.user,
            AnalyticsQuery {
                connection: q.connection(),
                since: since_for(&q.period(), app.now()),
            },
        )
        .await
        .map_err(&fail)?;
    let mut out = String::new();
    let mut line = |section: &str, name: &str, metric: &str, value: String| {
        csv_line(
            &mut out,
            &[section.into(), name.into(), metric.into(), value],
        )
    };
    line("section", "name", "metric", "value".into());
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
    let mut stats = |name: &str, s: &Stats| {
        for (metric, v) in [
            ("total", s.total),
            ("pending", s.pending),
            ("approved", s.approved),
            ("rejected", s.rejected),
            ("withdrawn", s.withdrawn),
            ("expired", s.expired),
            ("forced", s.forced),
            ("auto_approved", s.auto_approved),
        ] {
            line("reviews", name, metric, v.to_string());
        }
        line("reviews", name, "approval_rate", opt(s.approval_rate()));
        line(
            "reviews",
            name,
            "avg_time_to_approval_sec",
            opt(s.avg_time_to_approval_sec()),
        );
        line(
            "reviews",
            name,
            "p90_time_to_approval_sec",
            opt(s.p90_time_to_approval_sec()),
        );
    };
    stats("all connections", &a.overall);
    for (n, s) in &a.per_connection {
        stats(n, s);
    }
    for (section, items) in [
        ("top_requesters", &a.top_requesters),
        ("top_approvers", &a.top_approvers),
        ("top_commands", &a.top_commands),
    ] {
        for (name, count) in items {
            line(section, name, "count", count.to_string());
        }
    }
    for b in &a.series {
        let at = warden_core::timefmt::format(b.start);
        line("series", &at, "total", b.total.to_string());
        line("series", &at, "approved", b.approved.to_string());
    }
    Ok(csv_response("warden-analytics.csv", out))
}

async fn page(
    State(app): State<AppState>,
    viewer: Viewer,
    Query(q): Query<PageQuery>,
) -> WebResult {
    viewer.reader_only("analytics", "only admins and auditors can see analytics")?;
    let fail = fail(&viewer, "analytics");
    let period = q.period();
    let connection = q.connection();
    let a = app
        .analytics(
            &viewer.user,
            AnalyticsQuery {
                connection: connection.clone(),
                since: since_for(&period, app.now()),
            },
        )
        .await
        .map_err(&fail)?;
    let connections = app
        .list_connections(&viewer.user)
        .await
        .map_err(&fail)?
        .into_iter()
        .map(|c| c.name)
        .collect();
    let by_connection: Vec<(String, i64)> = a
        .per_connection
        .iter()
        .take(10)
        .map(|(n, s)| (n.clone(), s.total))
        .collect();
    Ok(render(&Page {
        nav: viewer.nav("analytics"),
        csv_href: {
            let mut s = url::form_urlencoded::Serializer::new(String::new());
            s.append_pair("period", &period);
            s.append_pair("connection", connection.as_deref().unwrap_or(""));
            format!("/analytics.csv?{}", s.finish())
        },
        overall: stats_row("All connections", &a.overall),
        per_connection: a
            .per_connection
            .iter()
            .map(|(n, s)| stats_row(n, s))
            .collect(),
        series: vchart(&a),
        requesters: hchart(&a.top_requesters, HALF_W, 220.0),
        approvers: hchart(&a.top_approvers, HALF_W, 220.0),
        commands: hchart(&a.top_commands, FULL_W, 560.0),
        by_connection: hchart(&by_connection, HALF_W, 220.0),
        truncated: a.truncated,
        period,
        connection: connection.unwrap_or_default(),
        connections,
        periods: vec![
            ("24h", "Last 24 hours"),
            ("7d", "Last 7 days"),
            ("30d", "Last 30 days"),
            ("90d", "Last 90 days"),
            ("all", "All time"),
        ],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_value() {
        let c = hchart(&[("a".into(), 10), ("b".into(), 5)], 640.0, 220.0);
        let w0: f64 = c.bars[0].width.parse().unwrap();
        let w1: f64 = c.bars[1].width.parse().unwrap();
        assert!((w0 - 2.0 * w1).abs() < 0.2);
        assert_eq!(c.height, "60");
        assert_eq!(hchart(&[], 640.0, 220.0).bars.len(), 0);
    }
}
