//! Result-set formatting shared by the SQL executors: psql's "aligned" format (header centred,
//! `---+---` separator, numbers right-aligned, `+` continuation marks for multi-line values,
//! `(N rows)` footer, blank line) and the JSON rows (`rows_json`) of a result set.
//!
//! Values arrive as text (or NULL). Control characters other than newline and tab are shown
//! escaped (`\x1b`, `\r`) like psql does, so a stored value can never drive the user's terminal.
//! Executors never decide access; this module only renders what already ran.

use unicode_width::UnicodeWidthStr;

/// One result set: column names, per-column alignment, and the rows that were kept.
#[derive(Debug, Clone, Default)]
pub(crate) struct ResultSet {
    pub(crate) columns: Vec<String>,
    /// `true` for numeric columns (shown right-aligned).
    pub(crate) right_align: Vec<bool>,
    /// The rows kept in memory (all of them, unless the output budget ran out).
    pub(crate) rows: Vec<Vec<Option<String>>>,
    /// Rows received, kept or not.
    pub(crate) row_count: u64,
    stored_bytes: usize,
}

impl ResultSet {
    pub(crate) fn new(columns: Vec<String>, right_align: Vec<bool>) -> Self {
        let mut right_align = right_align;
        right_align.resize(columns.len(), false);
        Self {
            columns,
            right_align,
            rows: Vec::new(),
            row_count: 0,
            stored_bytes: 0,
        }
    }

    /// Counts a row and keeps it if the raw bytes kept so far stay within `budget` (the room left
    /// under the output cap: a row that can't fit raw can't fit rendered either). Returns whether
    /// the row was kept.
    pub(crate) fn push_row(&mut self, row: Vec<Option<String>>, budget: usize) -> bool {
        self.row_count += 1;
        let size: usize = row
            .iter()
            .map(|v| v.as_ref().map_or(0, String::len) + 3)
            .sum();
        if self.stored_bytes + size > budget || self.rows.len() as u64 + 1 != self.row_count {
            return false;
        }
        self.stored_bytes += size;
        self.rows.push(row);
        true
    }

    /// `true` when some rows were counted but not kept.
    pub(crate) fn is_partial(&self) -> bool {
        (self.rows.len() as u64) < self.row_count
    }

    /// psql-style aligned table, footer and trailing blank line.
    pub(crate) fn render(&self) -> String {
        render_aligned(&self.columns, &self.right_align, &self.rows, self.row_count)
    }

    /// Same table with another footer line (e.g. rows received before a timeout).
    pub(crate) fn render_with_footer(&self, footer: &str) -> String {
        let mut out = self.render();
        let default = format!("{}\n\n", row_footer(self.row_count));
        if out.ends_with(&default) {
            out.truncate(out.len() - default.len());
            out.push_str(footer);
            out.push_str("\n\n");
        }
        out
    }

    /// `[{"column": "value" | null, …}, …]` for the rows kept. Duplicate column names get a
    /// `_2`, `_3`… suffix so no value is lost.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let keys = unique_keys(&self.columns);
        let rows = self
            .rows
            .iter()
            .map(|row| {
                let mut obj = serde_json::Map::new();
                for (key, value) in keys.iter().zip(row.iter()) {
                    let v = match value {
                        Some(s) => serde_json::Value::String(s.clone()),
                        None => serde_json::Value::Null,
                    };
                    obj.insert(key.clone(), v);
                }
                serde_json::Value::Object(obj)
            })
            .collect();
        serde_json::Value::Array(rows)
    }
}

fn unique_keys(columns: &[String]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::with_capacity(columns.len());
    for c in columns {
        let mut key = c.clone();
        let mut n = 1;
        while keys.contains(&key) {
            n += 1;
            key = format!("{c}_{n}");
        }
        keys.push(key);
    }
    keys
}

/// `(1 row)` / `(N rows)`.
pub(crate) fn row_footer(n: u64) -> String {
    if n == 1 {
        "(1 row)".to_string()
    } else {
        format!("({n} rows)")
    }
}

/// Makes a value safe and measurable for display: tabs expanded to 8-column stops, other
/// control characters (except newline) escaped as psql does. Returns the display lines.
fn display_lines(value: &str) -> Vec<String> {
    value
        .split('\n')
        .map(|line| {
            let mut out = String::with_capacity(line.len());
            let mut col = 0usize;
            for ch in line.chars() {
                match ch {
                    '\t' => {
                        let n = 8 - (col % 8);
                        out.extend(std::iter::repeat_n(' ', n));
                        col += n;
                    }
                    '\r' => {
                        out.push_str("\\r");
                        col += 2;
                    }
                    c if c.is_control() => {
                        let code = c as u32;
                        let esc = if code <= 0xff {
                            format!("\\x{code:02x}")
                        } else {
                            format!("\\u{code:04x}")
                        };
                        col += esc.len();
                        out.push_str(&esc);
                    }
                    c => {
                        out.push(c);
                        col += UnicodeWidthStr::width(c.encode_utf8(&mut [0u8; 4]) as &str);
                    }
                }
            }
            out
        })
        .collect()
}

fn width(s: &str) -> usize {
    UnicodeWidthStr::width(s)
}

fn pad_right(out: &mut String, s: &str, w: usize) {
    out.push_str(s);
    out.extend(std::iter::repeat_n(' ', w.saturating_sub(width(s))));
}

fn pad_left(out: &mut String, s: &str, w: usize) {
    out.extend(std::iter::repeat_n(' ', w.saturating_sub(width(s))));
    out.push_str(s);
}

fn center(out: &mut String, s: &str, w: usize) {
    let extra = w.saturating_sub(width(s));
    let left = extra / 2;
    out.extend(std::iter::repeat_n(' ', left));
    out.push_str(s);
    out.extend(std::iter::repeat_n(' ', extra - left));
}

/// Renders like `psql` (aligned, border 1): NULL shows as an empty cell.
pub(crate) fn render_aligned(
    columns: &[String],
    right_align: &[bool],
    rows: &[Vec<Option<String>>],
    row_count: u64,
) -> String {
    let mut out = String::new();
    let ncols = columns.len();
    let right = |j: usize| right_align.get(j).copied().unwrap_or(false);
    if ncols == 0 {
        out.push_str("--\n");
        out.push_str(&row_footer(row_count));
        out.push_str("\n\n");
        return out;
    }

    let headers: Vec<Vec<String>> = columns.iter().map(|c| display_lines(c)).collect();
    let cells: Vec<Vec<Vec<String>>> = rows
        .iter()
        .map(|row| {
            (0..ncols)
                .map(|j| match row.get(j) {
                    Some(Some(v)) => display_lines(v),
                    _ => vec![String::new()],
                })
                .collect()
        })
        .collect();

    let mut widths: Vec<usize> = headers
        .iter()
        .map(|h| h.iter().map(|l| width(l)).max().unwrap_or(0))
        .collect();
    for row in &cells {
        for (j, cell) in row.iter().enumerate() {
            let w = cell.iter().map(|l| width(l)).max().unwrap_or(0);
            if w > widths[j] {
                widths[j] = w;
            }
        }
    }

    // Header (always padded, trailing space included, as psql does).
    let header_lines = headers.iter().map(Vec::len).max().unwrap_or(1);
    for i in 0..header_lines {
        for (j, h) in headers.iter().enumerate() {
            out.push(' ');
            center(&mut out, h.get(i).map_or("", String::as_str), widths[j]);
            out.push(if i + 1 < h.len() { '+' } else { ' ' });
            if j + 1 < ncols {
                out.push('|');
            }
        }
        out.push('\n');
    }
    for (j, w) in widths.iter().enumerate() {
        if j > 0 {
            out.push('+');
        }
        out.extend(std::iter::repeat_n('-', w + 2));
    }
    out.push('\n');

    for row in &cells {
        let lines = row.iter().map(Vec::len).max().unwrap_or(1);
        for i in 0..lines {
            for (j, cell) in row.iter().enumerate() {
                let text = cell.get(i).map_or("", String::as_str);
                let continues = i + 1 < cell.len();
                let last = j + 1 == ncols;
                out.push(' ');
                if last && !continues {
                    // psql does not pad the last column (no trailing blanks).
                    if right(j) {
                        pad_left(&mut out, text, widths[j]);
                    } else {
                        out.push_str(text);
                    }
                    continue;
                }
                if right(j) {
                    pad_left(&mut out, text, widths[j]);
                } else {
                    pad_right(&mut out, text, widths[j]);
                }
                out.push(if continues { '+' } else { ' ' });
                if !last {
                    out.push('|');
                }
            }
            out.push('\n');
        }
    }
    out.push_str(&row_footer(row_count));
    out.push_str("\n\n");
    out
}

/// `LINE 2: select * from nope;` and a caret under the character at 1-based `pos` (counted
/// in characters over the whole script), as psql shows a server's error position.
pub(crate) fn error_position(query: &str, pos: usize) -> String {
    if pos == 0 {
        return String::new();
    }
    let chars: Vec<char> = query.chars().collect();
    let idx = (pos - 1).min(chars.len());
    let line_no = chars[..idx].iter().filter(|c| **c == '\n').count() + 1;
    let line_start = chars[..idx]
        .iter()
        .rposition(|c| *c == '\n')
        .map_or(0, |i| i + 1);
    let line_end = chars[idx..]
        .iter()
        .position(|c| *c == '\n')
        .map_or(chars.len(), |i| idx + i);
    let line: String = chars[line_start..line_end]
        .iter()
        .map(|c| if *c == '\t' { ' ' } else { *c })
        .collect();
    let line = line.trim_end_matches('\r');
    let prefix = format!("LINE {line_no}: ");
    let before: String = chars[line_start..idx]
        .iter()
        .map(|c| if *c == '\t' { ' ' } else { *c })
        .collect();
    let caret_col = prefix.len() + width(&before);
    format!("{prefix}{line}\n{}^\n", " ".repeat(caret_col))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    fn cols(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    // Expected strings below are psql 15 output (`psql -X`), byte for byte.
    #[test]
    fn simple_table_like_psql() {
        let out = render_aligned(
            &cols(&["a", "bb"]),
            &[true, false],
            &[vec![s("1"), s("x")]],
            1,
        );
        assert_eq!(out, " a | bb \n---+----\n 1 | x\n(1 row)\n\n");
    }

    #[test]
    fn multiline_unicode_null_and_numbers() {
        let out = render_aligned(
            &cols(&["t", "n", "z", "m", "last"]),
            &[false, true, true, false, false],
            &[vec![
                s("héllo 日本"),
                s("12.5"),
                None,
                s("two\nlines"),
                s("x"),
            ]],
            1,
        );
        let expected = concat!(
            "     t      |  n   | z |   m   | last \n",
            "------------+------+---+-------+------\n",
            " héllo 日本 | 12.5 |   | two  +| x\n",
            "            |      |   | lines | \n",
            "(1 row)\n\n",
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn empty_result_and_last_column_continuation() {
        assert_eq!(
            render_aligned(&cols(&["x"]), &[false], &[], 0),
            " x \n---\n(0 rows)\n\n"
        );
        let out = render_aligned(&cols(&["ml"]), &[false], &[vec![s("a\nbb")]], 1);
        assert_eq!(out, " ml \n----\n a +\n bb\n(1 row)\n\n");
    }

    #[test]
    fn control_chars_and_tabs_escaped() {
        let out = render_aligned(
            &cols(&["c", "e", "last"]),
            &[false, false, true],
            &[vec![s("a\u{1}b\rc"), s("é"), s("1")]],
            1,
        );
        assert_eq!(
            out,
            "     c     | e | last \n-----------+---+------\n a\\x01b\\rc | é |    1\n(1 row)\n\n"
        );
        let out = render_aligned(&cols(&["?column?"]), &[false], &[vec![s("tab\there")]], 1);
        assert_eq!(
            out,
            "   ?column?   \n--------------\n tab     here\n(1 row)\n\n"
        );
    }

    #[test]
    fn multiline_header() {
        let out = render_aligned(
            &cols(&["x", "header\ntwo"]),
            &[false, false],
            &[vec![s("xxx"), s("multi\nline")]],
            1,
        );
        let expected = concat!(
            "  x  | header+\n",
            "     |  two   \n",
            "-----+--------\n",
            " xxx | multi +\n",
            "     | line\n",
            "(1 row)\n\n",
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn right_aligned_rows() {
        let out = render_aligned(
            &cols(&["a", "b"]),
            &[true, true],
            &[vec![s("1"), s("2")], vec![s("10"), s("200")]],
            2,
        );
        assert_eq!(
            out,
            " a  |  b  \n----+-----\n  1 |   2\n 10 | 200\n(2 rows)\n\n"
        );
    }

    #[test]
    fn json_rows_and_budget() {
        let mut rs = ResultSet::new(cols(&["a", "a", "n"]), vec![]);
        assert!(rs.push_row(vec![s("1"), s("2"), None], 100));
        assert!(!rs.push_row(vec![s(&"x".repeat(200)), None, None], 100));
        assert!(
            !rs.push_row(vec![s("1"), None, None], 100),
            "no holes once a row was dropped"
        );
        assert!(rs.is_partial());
        assert_eq!(rs.row_count, 3);
        assert_eq!(
            rs.to_json(),
            serde_json::json!([{"a": "1", "a_2": "2", "n": null}])
        );
    }
}
