//! The shared vocabulary lives in `berth-core`: no other crate spells an `x-berth-*` header
//! name itself.

use std::path::{Path, PathBuf};

/// The crates' source files other than core's, each cut at its first `#[cfg(test)]` (tests
/// may spell what they check) and without test-only files.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("tests.rs") {
            out.push(path);
        }
    }
}

#[test]
fn only_core_spells_the_x_berth_header_names() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for krate in ["src", "proxy/src", "injector/src", "admin/src", "demo/src"] {
        sources(&root.join(krate), &mut files);
    }
    assert!(files.len() > 40, "found only {} source files", files.len());
    let mut spelled = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (n, line) in code.lines().enumerate() {
            let line = line.trim_start();
            if line.starts_with("//") {
                continue;
            }
            if line.contains("\"x-berth-") {
                spelled.push(format!("{}:{}: {line}", file.strip_prefix(root).unwrap().display(), n + 1));
            }
        }
    }
    assert!(spelled.is_empty(), "header names outside berth_core::header:\n{}", spelled.join("\n"));
}
