//! The house rules, checked over the whole workspace's source (not one crate): every module
//! says what it is for, production code has no `unwrap()`, SQL text lives only in the store,
//! the core reads no clock or RNG, only the application talks to the store, and the test
//! harness is not part of a shipped build, and the HTTP adapters (API, web, integrations) do
//! not import each other.
//!
//! Known debts are listed by file in `ALLOWED_*` below (issue 18 tracks them). A list may only
//! shrink: a new file breaking a rule fails here, and so does a listed file that no longer
//! breaks it (take it off the list).

use std::path::{Path, PathBuf};

/// Outside `crates/warden-gateway/src/app/`, files that still reach the store directly (none:
/// `App`'s store field is private to `app`, so the compiler holds this line too).
const ALLOWED_STORE_OUTSIDE_APP: &[&str] = &[];

/// Crates allowed to depend on `warden-store`.
const ALLOWED_STORE_DEPENDENTS: &[&str] = &[
    "crates/warden-gateway/Cargo.toml",
    // The notifier tails the audit log (its outbox) itself.
    "crates/warden-notify/Cargo.toml",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// Every `.rs` file under `crates/*/src`, as (path relative to the workspace, text).
fn sources() -> Vec<(String, String)> {
    let root = workspace();
    let mut out = Vec::new();
    let mut stack = vec![root.join("crates")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("dir entry").path();
            let rel = path
                .strip_prefix(&root)
                .expect("under root")
                .to_string_lossy()
                .replace('\\', "/");
            if path.is_dir() {
                if !rel.ends_with("/target") {
                    stack.push(path);
                }
            } else if rel.ends_with(".rs") && rel.contains("/src/") {
                out.push((rel, std::fs::read_to_string(&path).expect("read source")));
            }
        }
    }
    assert!(out.len() > 50, "found only {} source files", out.len());
    out.sort();
    out
}

/// The production part of a file: everything before its `#[cfg(test)]` module; nothing for a
/// file that is itself a test module or the feature-gated test harness.
fn production(rel: &str, text: &str) -> String {
    if rel.ends_with("/tests.rs") || rel.ends_with("/src/testing.rs") {
        return String::new();
    }
    let end = text.find("#[cfg(test)]").unwrap_or(text.len());
    text[..end].to_string()
}

/// Lines of `text` containing `needle` outside `//` comments.
fn code_lines<'a>(text: &'a str, needle: &dyn Fn(&str) -> bool) -> Vec<&'a str> {
    text.lines()
        .filter(|l| {
            let code = l.split("//").next().unwrap_or_default();
            needle(code)
        })
        .collect()
}

#[test]
fn every_module_says_what_it_is_for() {
    let missing: Vec<String> = sources()
        .into_iter()
        .filter(|(rel, _)| !rel.ends_with("/tests.rs"))
        .filter(|(_, text)| !text.trim_start().starts_with("//!"))
        .map(|(rel, _)| rel)
        .collect();
    assert!(
        missing.is_empty(),
        "modules without a `//!` doc saying what they are for: {missing:#?}"
    );
}

#[test]
fn production_code_has_no_unwrap() {
    let mut found = Vec::new();
    for (rel, text) in sources() {
        for l in code_lines(&production(&rel, &text), &|c| c.contains(".unwrap()")) {
            found.push(format!("{rel}: {}", l.trim()));
        }
    }
    assert!(
        found.is_empty(),
        "unwrap() outside tests (return an error with context instead): {found:#?}"
    );
}

#[test]
fn sql_text_lives_only_in_the_store() {
    // A statement's shape, not a word in a message ("SELECT INTO creates a table").
    let is_sql = |c: &str| {
        (c.contains("\"SELECT ") && c.contains(" FROM "))
            || (c.contains("\"UPDATE ") && c.contains(" SET "))
            || [
                "\"INSERT INTO ",
                "\"DELETE FROM ",
                "\"CREATE TABLE ",
                "\"ALTER TABLE ",
            ]
            .iter()
            .any(|s| c.contains(s))
    };
    let mut found = Vec::new();
    for (rel, text) in sources() {
        if rel.starts_with("crates/warden-store/") {
            continue;
        }
        for l in code_lines(&production(&rel, &text), &is_sql) {
            found.push(format!("{rel}: {}", l.trim()));
        }
    }
    assert!(
        found.is_empty(),
        "SQL outside warden-store (only the store knows SQL): {found:#?}"
    );
}

#[test]
fn the_core_reads_no_clock_and_no_rng() {
    let reads = [
        "now_v7",
        "new_v4",
        "now_utc",
        "SystemTime::now",
        "Instant::now",
        "rand::",
        "getrandom",
        "OsRng",
    ];
    let mut found = Vec::new();
    for (rel, text) in sources() {
        if !rel.starts_with("crates/warden-core/") {
            continue;
        }
        for l in code_lines(&production(&rel, &text), &|c| {
            reads.iter().any(|r| c.contains(r))
        }) {
            found.push(format!("{rel}: {}", l.trim()));
        }
    }
    assert!(
        found.is_empty(),
        "the core reads the clock or the RNG (take time and ids as arguments): {found:#?}"
    );
}

#[test]
fn only_the_application_talks_to_the_store() {
    let mut offenders = Vec::new();
    for (rel, text) in sources() {
        let app = rel.starts_with("crates/warden-gateway/src/app/");
        let relevant =
            rel.starts_with("crates/warden-gateway/") || rel.starts_with("crates/warden-cli/");
        if app || !relevant {
            continue;
        }
        // `.store` as a field (an atomic's `.store(…)` is something else).
        let prod = production(&rel, &text);
        let uses = code_lines(&prod, &|c| {
            c.match_indices(".store").any(|(i, _)| {
                let next = c[i + ".store".len()..].chars().next();
                !matches!(next, Some(ch) if ch == '(' || ch == '_' || ch.is_alphanumeric())
            })
        });
        if !uses.is_empty() {
            offenders.push(rel);
        }
    }
    let new: Vec<&String> = offenders
        .iter()
        .filter(|r| !ALLOWED_STORE_OUTSIDE_APP.contains(&r.as_str()))
        .collect();
    assert!(
        new.is_empty(),
        "only app/ talks to the store; add a use case there instead: {new:#?}"
    );
    let cleared: Vec<&&str> = ALLOWED_STORE_OUTSIDE_APP
        .iter()
        .filter(|a| !offenders.iter().any(|o| o == *a))
        .collect();
    assert!(
        cleared.is_empty(),
        "no longer reach the store: take them off ALLOWED_STORE_OUTSIDE_APP: {cleared:#?}"
    );

    let root = workspace();
    let mut dependents = Vec::new();
    for entry in std::fs::read_dir(root.join("crates")).expect("crates dir") {
        let manifest = entry.expect("entry").path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let rel = manifest
            .strip_prefix(&root)
            .expect("under root")
            .to_string_lossy()
            .replace('\\', "/");
        if rel != "crates/warden-store/Cargo.toml"
            && text
                .lines()
                .any(|l| l.trim_start().starts_with("warden-store"))
        {
            dependents.push(rel);
        }
    }
    dependents.sort();
    let mut allowed: Vec<String> = ALLOWED_STORE_DEPENDENTS
        .iter()
        .map(|s| s.to_string())
        .collect();
    allowed.sort();
    assert_eq!(dependents, allowed, "crates that depend on warden-store");
}

#[test]
fn the_test_harness_is_not_in_a_shipped_build() {
    let lib = std::fs::read_to_string(workspace().join("crates/warden-gateway/src/lib.rs"))
        .expect("lib.rs");
    let at = lib
        .find("pub mod testing;")
        .expect("the testing module is declared in lib.rs");
    let before = lib[..at].trim_end();
    assert!(
        before.ends_with("#[cfg(feature = \"testing\")]"),
        "`testing` (fixed test key, known admin password) must be behind the `testing` feature"
    );
    let manifest = std::fs::read_to_string(workspace().join("crates/warden-gateway/Cargo.toml"))
        .expect("Cargo.toml");
    let features = manifest
        .split("[features]")
        .nth(1)
        .and_then(|s| s.split("\n[").next())
        .unwrap_or_default();
    assert!(
        !features
            .lines()
            .any(|l| l.trim_start().starts_with("default")),
        "no default features: a shipped build must not enable `testing`"
    );
}

#[test]
fn the_http_adapters_do_not_import_each_other() {
    // The API, the web app and the integrations share `http` (state, errors, extractors);
    // `server` assembles their routers. An import between two of them is how the 12-file
    // circle started, so each names only `http` of the HTTP layer.
    let adapters = [
        ("crates/warden-gateway/src/api.rs", "crate::api"),
        (
            "crates/warden-gateway/src/integrations.rs",
            "crate::integrations",
        ),
        ("crates/warden-gateway/src/web/", "crate::web"),
    ];
    let mut found = Vec::new();
    for (rel, text) in sources() {
        let Some((_, own)) = adapters.iter().find(|(p, _)| rel.starts_with(p)) else {
            continue;
        };
        let code = production(&rel, &text);
        for (_, other) in adapters.iter().filter(|(_, m)| m != own) {
            for line in code_lines(&code, &|l| l.contains(other)) {
                found.push(format!("{rel}: {}", line.trim()));
            }
        }
        for line in code_lines(&code, &|l| l.contains("crate::server")) {
            found.push(format!("{rel}: {}", line.trim()));
        }
    }
    assert!(
        found.is_empty(),
        "HTTP adapters importing each other (or the server); share through crate::http:\n{}",
        found.join("\n")
    );
}
