//! Command fingerprints for analytics: literals replaced by `?`, whitespace collapsed, keywords
//! upper-cased, so `SELECT * FROM t WHERE id = 42` and `select * from t where id=7` group together.
//!
//! Hand-written rather than a SQL parser because it must also work on shell commands and on SQL
//! that does not parse; it only needs to be stable, not exact.

/// Normalises a command into its fingerprint.
pub fn fingerprint(command: &str) -> String {
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
    fn literals_and_spacing_are_normalised() {
        assert_eq!(
            fingerprint("select * from t where id = 42"),
            fingerprint("SELECT *   FROM t WHERE id = 7;")
        );
        assert_eq!(
            fingerprint("UPDATE users SET name='it''s' WHERE id IN (1,2,3)"),
            "UPDATE USERS SET NAME=? WHERE ID IN (?)"
        );
        assert_eq!(
            fingerprint("kubectl get pods -n prod2"),
            "KUBECTL GET PODS -N PROD2"
        );
        assert_eq!(fingerprint("  "), "");
    }
}
