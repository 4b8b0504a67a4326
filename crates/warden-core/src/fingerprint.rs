//! Command fingerprints for analytics, so that one command written differently counts once.
//!
//! SQL is normalised by PostgreSQL's own parser (libpg_query through `pg_query`): constants
//! become `$1`, `$2`… (`normalize`), and the statement is printed back from its parse tree
//! (`deparse`), so spacing, case, comments and literal values do not split one statement into
//! several. Text that does not parse as PostgreSQL SQL (shell commands, MySQL dialect) gets a
//! simple textual fingerprint: literals replaced by `?`, whitespace collapsed, upper-cased —
//! stable, not exact.

/// Normalises a command into its fingerprint.
pub fn fingerprint(command: &str) -> String {
    sql_fingerprint(command).unwrap_or_else(|| text_fingerprint(command))
}

/// The statement as PostgreSQL's parser reads it, constants replaced by parameters.
fn sql_fingerprint(command: &str) -> Option<String> {
    if command.trim().is_empty() {
        return None;
    }
    let normalized = pg_query::normalize(command).ok()?;
    let parsed = pg_query::parse(&normalized).ok()?;
    parsed.deparse().ok().filter(|d| !d.is_empty())
}

/// The textual fallback for what is not PostgreSQL SQL.
fn text_fingerprint(command: &str) -> String {
    let mut out = String::with_capacity(command.len());
    let mut chars = command.chars().peekable();
    let mut last_space = true;
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                // a string literal ('…', "…", with doubled quotes as escapes) → ?
                while let Some(n) = chars.next() {
                    if n == c {
                        if chars.peek() == Some(&c) {
                            chars.next();
                            continue;
                        }
                        break;
                    }
                }
                out.push('?');
                last_space = false;
            }
            c if c.is_ascii_digit() && (last_space || !prev_is_word(&out)) => {
                while chars
                    .peek()
                    .is_some_and(|n| n.is_ascii_alphanumeric() || *n == '.')
                {
                    chars.next();
                }
                out.push('?');
                last_space = false;
            }
            c if c.is_whitespace() => {
                if !last_space {
                    out.push(' ');
                    last_space = true;
                }
            }
            c => {
                out.push(c.to_ascii_uppercase());
                last_space = false;
            }
        }
    }
    let trimmed = out.trim().trim_end_matches(';').trim_end();
    collapse_lists(trimmed)
}

fn prev_is_word(s: &str) -> bool {
    s.chars()
        .last()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `IN (?, ?, ?)` → `IN (?)` so lists of any length group together.
fn collapse_lists(s: &str) -> String {
    let mut out = s.to_string();
    for pat in ["?, ?", "?,?"] {
        while out.contains(pat) {
            out = out.replace(pat, "?");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::fingerprint;

    #[test]
    fn sql_is_normalised_by_postgresqls_parser() {
        assert_eq!(
            fingerprint("select * from t where id = 42"),
            fingerprint("SELECT *   FROM t /* hot path */ WHERE id=7;")
        );
        assert_eq!(
            fingerprint("select * from t where id = 42"),
            "SELECT * FROM t WHERE id = $1"
        );
        assert_eq!(
            fingerprint("UPDATE users SET name='it''s' WHERE id = 3"),
            fingerprint("update users\n   set name = 'bob'\n where id = 9")
        );
        assert_ne!(
            fingerprint("DELETE FROM a WHERE id = 1"),
            fingerprint("DELETE FROM b WHERE id = 1")
        );
    }

    #[test]
    fn other_text_gets_a_textual_fingerprint() {
        assert_eq!(
            fingerprint("kubectl get pods -n prod2"),
            "KUBECTL GET PODS -N PROD2"
        );
        assert_eq!(fingerprint("echo 'a'  'b'"), fingerprint("ECHO 'x' 'y'"));
        assert_eq!(fingerprint("  "), "");
    }
}
