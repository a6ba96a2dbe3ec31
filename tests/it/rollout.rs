//! The promise of berth, end to end: a rolling restart, a crash and a canary rollout under
//! steady load against a real rnacos lose no request — and the same script with berth's
//! lifecycle off does lose some, so this test can fail.

use std::time::Duration;

use crate::support::{Proc, Rnacos, berth};

/// How long one demo run may take; a run here takes about 45 s.
const DEMO_LIMIT: Duration = Duration::from_secs(150);

async fn demo(nacos: &Rnacos, extra: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let mut cmd = berth();
    cmd.args(["demo", "--registry", &nacos.url(), "--rate", "100", "--hold", "4s", "--json"]).args(extra);
    let mut proc = Proc::spawn("berth demo", cmd);
    // Inside the limit .config/nextest.toml gives this test (two runs of this).
    let status = proc.wait_exit(DEMO_LIMIT).await;
    let out = proc.output();
    let start = out.find("\n{").map_or(0, |i| i + 1);
    let summary =
        serde_json::from_str(&out[start..]).unwrap_or_else(|e| panic!("no JSON summary ({e}):\n{out}"));
    (status.code(), summary, out)
}

#[tokio::test]
async fn a_rollout_under_load_loses_nothing_with_berth_and_something_without() {
    let nacos = Rnacos::start().await;
    let (code, summary, out) = demo(&nacos, &[]).await;
    assert_eq!(summary["failed"], 0, "{out}");
    assert_eq!(code, Some(0), "{out}");
    assert!(summary["seconds"].as_f64().unwrap() >= 30.0, "the load ran at least 30 s: {summary}");
    assert!(summary["sent"].as_u64().unwrap() >= 2_900, "{summary}");
    let phases: Vec<&str> =
        summary["phases"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(phases, ["steady", "rolling restart", "crash", "canary 10%", "canary 50%", "promoted"]);
    for d in summary["drains"].as_array().unwrap() {
        assert_eq!(d["exit_code"], 0, "{d}");
        assert!(d["deregistered_after_ms"].as_f64().unwrap() < 2_000.0, "{d}");
    }
    let promoted = summary["phases"].as_array().unwrap().last().unwrap();
    assert_eq!(
        promoted["by_symbol"].get("stable"),
        None,
        "after promote everything goes to canary: {promoted}"
    );

    let nacos = Rnacos::start().await;
    let (code, summary, out) = demo(&nacos, &["--no-lifecycle"]).await;
    assert!(summary["failed"].as_u64().unwrap() > 0, "without the lifecycle some requests must fail:\n{out}");
    assert_eq!(code, Some(1), "{out}");
}

#[tokio::test]
async fn the_demo_on_its_default_registry_prints_each_step_and_a_summary() {
    // Its default registry is a directory in a scratch folder of the temporary directory,
    // which it removes: here a temporary directory of this test's own.
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = berth();
    cmd.args(["demo", "--rate", "100", "--hold", "1s", "--instances", "2"]).env("TMPDIR", tmp.path());
    let mut proc = Proc::spawn("berth demo", cmd);
    let status = proc.wait_exit(DEMO_LIMIT).await;
    let out = proc.output();
    assert_eq!(status.code(), Some(0), "{out}");
    let registry = format!("registry: dir://{}/berth-demo-", tmp.path().display());
    assert!(out.contains(&registry), "not on its default registry:\n{out}");
    for step in ["stopping stable-1", "ready (canary)", "promote"] {
        assert!(out.contains(step), "no {step:?} in:\n{out}");
    }
    let summary = &out[out.find("summary (berth's lifecycle on):").unwrap_or_else(|| panic!("{out}"))..];
    let mut total = 0;
    for phase in ["steady", "rolling restart", "crash", "canary 10%", "canary 50%", "promoted"] {
        let row = summary
            .lines()
            .find(|l| l.starts_with(&format!("  {phase} ")))
            .unwrap_or_else(|| panic!("no {phase} row in:\n{summary}"));
        let numbers: Vec<u64> =
            row[phase.len() + 2..].split_whitespace().take(2).map(|n| n.parse().unwrap()).collect();
        assert!(numbers[0] > 0 && numbers[1] == 0, "{phase}: {row}");
        total += numbers[0];
    }
    assert!(summary.contains(&format!("zero failed requests out of {total} in")), "{summary}");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "the demo left its scratch folder behind: {left:?}");
}
