//! The outside tools some tests run (helm, kubernetes-validate, promtool): from `$BERTH_*`,
//! else from where `scripts/deps/` puts them; a clear failure without them.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A tool from `$var`, else `~/.cache/berth/tools/<cached>`.
pub fn tool(var: &str, cached: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_default();
    let path = cache.join("berth/tools").join(cached);
    assert!(
        path.is_file(),
        "{var} is not set and {} does not exist: run scripts/test.sh, whose scripts/deps/ install it",
        path.display()
    );
    path
}

/// Runs `cmd` with `stdin`; its exit status and what it printed (stdout, then stderr).
pub fn run_with_input(mut cmd: Command, stdin: &str) -> (bool, String) {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), printed)
}

/// `promtool check metrics` on `text`: whether it passed (no parse error, no lint problem)
/// and what promtool said.
pub fn promtool_check(text: &str) -> (bool, String) {
    // Debian's prometheus package puts it on PATH (scripts/deps/41-prometheus.sh).
    let promtool = std::env::var_os("BERTH_PROMTOOL").unwrap_or_else(|| "promtool".into());
    let mut cmd = Command::new(promtool);
    cmd.args(["check", "metrics"]);
    run_with_input(cmd, text)
}

/// Fails unless `text` is valid Prometheus text by Prometheus's own parser and linter.
pub fn assert_valid_metrics(text: &str, what: &str) {
    let (ok, said) = promtool_check(text);
    assert!(ok, "{what}: promtool check metrics refused it:\n{said}\n---\n{text}");
}
