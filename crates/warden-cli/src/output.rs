//! Output helpers: tables for humans, JSON arrays for `-o json`.
//!
//! # What it must never do
//! Print server-supplied text raw to a terminal: every cell goes through
//! `warden_core::text::visible` (escape sequences, bidi and invisible code points shown
//! escaped), so an approver reads what runs. `-o json` is data and stays exact.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use serde_json::Value;
use warden_core::text::visible;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
}

pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// A cell's text for a JSON value (arrays joined by commas, null as empty).
pub fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => visible(s).into_owned(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| cell(Some(x)))
            .collect::<Vec<_>>()
            .join(","),
        Some(Value::Bool(b)) => {
            if *b {
                "yes".into()
            } else {
                "no".into()
            }
        }
        Some(other) => other.to_string(),
    }
}

pub fn truncate(s: &str, max: usize) -> String {
    let shown = visible(s);
    let one_line: String = shown.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// A table column: header and how to get the cell from a row.
pub type Column<'a> = (&'a str, &'a dyn Fn(&Value) -> String);

/// Prints `items` (a JSON array) as a table with `columns` (header, extractor), or as JSON.
pub fn print_list(format: Format, items: &Value, columns: &[Column<'_>]) {
    if format == Format::Json {
        let arr = if items.is_array() {
            items.clone()
        } else {
            Value::Array(vec![])
        };
        print_json(&arr);
        return;
    }
    let empty = vec![];
    let rows = items.as_array().unwrap_or(&empty);
    if rows.is_empty() {
        println!("(none)");
        return;
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    t.set_header(columns.iter().map(|(h, _)| *h));
    for r in rows {
        t.add_row(columns.iter().map(|(_, f)| f(r)));
    }
    println!("{t}");
}

pub fn field<'a>(name: &'a str) -> impl Fn(&Value) -> String + 'a {
    move |v: &Value| cell(v.get(name))
}

/// Prints one object as `field  value` lines (nested values as compact JSON, text through
/// [`visible`]), or as JSON.
pub fn print_record(format: Format, v: &Value) {
    let Some(obj) = v.as_object().filter(|_| format == Format::Table) else {
        print_json(v);
        return;
    };
    let width = obj.keys().map(|k| k.chars().count()).max().unwrap_or(0);
    for (k, x) in obj {
        let text = match x {
            Value::Object(_) => visible(&x.to_string()).into_owned(),
            Value::Array(a) if a.iter().any(|e| e.is_object()) => {
                visible(&x.to_string()).into_owned()
            }
            _ => cell(Some(x)),
        };
        println!("{k:width$}  {}", if text.is_empty() { "-" } else { &text });
    }
}
