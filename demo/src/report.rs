//! What the demo prints: a progress line a second, and the summary.

use std::fmt::Write as _;
use std::time::Duration;

use crate::load::Load;
use crate::rollout::Summary;

/// Prints one progress line a second until aborted.
pub async fn progress(load: Load, quiet: bool) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let phases = load.snapshot();
        let Some(p) = phases.last() else { continue };
        let sent: u64 = phases.iter().map(|p| p.sent).sum();
        let failed: u64 = phases.iter().map(|p| p.failed).sum();
        let shares: Vec<String> = p.by_symbol.keys().map(|s| format!("{s} {:.1}%", p.share(s))).collect();
        let line = format!(
            "  [{:>5.1}s] {:<16} sent {sent:>7}  failed {failed:>5}  {}",
            load.elapsed().as_secs_f64(),
            p.name,
            shares.join("  ")
        );
        if quiet {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
}

/// The summary table.
pub fn summary(s: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nsummary (berth's lifecycle {}):", if s.lifecycle { "on" } else { "OFF" });
    let _ = writeln!(
        out,
        "  {:<16} {:>8} {:>7}  {:<34} target",
        "phase", "requests", "failed", "share per symbol"
    );
    for p in &s.phases {
        let shares: Vec<String> =
            p.by_symbol.keys().map(|sym| format!("{sym} {:.1}%", p.share(sym))).collect();
        let target: Vec<String> = p.target.iter().map(|(sym, pct)| format!("{sym} {pct:.0}%")).collect();
        let _ = writeln!(
            out,
            "  {:<16} {:>8} {:>7}  {:<34} {}",
            p.name,
            p.sent,
            p.failed,
            shares.join(", "),
            target.join(", ")
        );
        for (why, n) in &p.failures {
            let _ = writeln!(out, "  {:<16} {:>8} {n:>7}  failed: {why}", "", "");
        }
    }
    let _ = writeln!(out, "  {:<16} {:>8} {:>7}", "total", s.sent, s.failed);
    if s.lifecycle && !s.drains.is_empty() {
        let mut after: Vec<f64> = s.drains.iter().filter_map(|d| d.deregistered_after_ms).collect();
        after.sort_by(f64::total_cmp);
        let served: u64 = s.drains.iter().map(|d| d.served_while_draining).sum();
        let _ = writeln!(
            out,
            "  drains: {}; deregistered {:.1} ms (median, max {:.1} ms) after each drain began; {served} requests served while draining",
            s.drains.len(),
            after.get(after.len() / 2).copied().unwrap_or(f64::NAN),
            after.last().copied().unwrap_or(f64::NAN),
        );
    }
    let _ = writeln!(
        out,
        "\n{}",
        if s.failed == 0 {
            format!("zero failed requests out of {} in {:.0}s.", s.sent, s.seconds)
        } else {
            format!("{} of {} requests failed.", s.failed, s.sent)
        }
    );
    out
}
