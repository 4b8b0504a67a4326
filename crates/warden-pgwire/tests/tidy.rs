//! Conventions this crate keeps: every Rust file opens with a `//!` doc saying what it is for,
//! and library code has no `unwrap()`/`expect(` outside its `#[cfg(test)]` modules.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_file_has_a_module_doc_and_library_code_does_not_unwrap() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "examples"] {
        rust_files(&root.join(dir), &mut files);
    }
    files.push(root.join("../../fuzz/fuzz_targets/frames.rs"));
    assert!(files.len() > 10);
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(
            text.trim_start().starts_with("//!"),
            "{} has no //! doc",
            f.display()
        );
        if f.starts_with(root.join("src")) || f.starts_with(root.join("examples")) {
            let library = text.split("#[cfg(test)]").next().unwrap_or("");
            for bad in [".unwrap()", ".expect("] {
                assert!(
                    !library.contains(bad),
                    "{} uses {bad} outside tests",
                    f.display()
                );
            }
        }
    }
}
