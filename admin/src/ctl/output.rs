//! Human output of `berth ctl`: aligned tables and one-line summaries of the API's answers.

use std::fmt::Write as _;

use serde_json::Value;

use super::CtlCommand;

/// Columns padded to their widest cell, two spaces apart.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// A weight to two decimals (`-` when absent).
fn weight(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".into(), |w| format!("{w:.2}"))
}

/// `stable=90 canary=10` from a JSON object of numbers.
fn pairs(v: &Value) -> String {
    let parts: Vec<String> =
        v.as_object().into_iter().flatten().map(|(k, v)| format!("{k}={}", s(v))).collect();
    if parts.is_empty() { "none".into() } else { parts.join(" ") }
}

fn age(v: &Value) -> String {
    let Some(secs) = v.as_u64() else { return "-".into() };
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{}s", secs / 60, secs % 60),
        _ => format!("{}h{}m", secs / 3600, secs % 3600 / 60),
    }
}

/// `header x-beta = 1`, `cookie group ^= qa-`, `header x-tenant ~ ^acme$`, `header x present`.
fn condition(c: &Value) -> String {
    let source = match (c["header"].as_str(), c["cookie"].as_str()) {
        (Some(h), _) => format!("header {h}"),
        (None, Some(k)) => format!("cookie {k}"),
        _ => "?".into(),
    };
    let test = match (&c["exact"], &c["prefix"], &c["regex"], &c["present"]) {
        (Value::String(v), ..) => format!("= {v}"),
        (_, Value::String(v), ..) => format!("^= {v}"),
        (_, _, Value::String(v), _) => format!("~ {v}"),
        (.., Value::Bool(true)) => "present".into(),
        (.., Value::Bool(false)) => "absent".into(),
        _ => "?".into(),
    };
    format!("{source} {test}")
}

/// A policy in a few lines.
fn policy_lines(p: &Value) -> String {
    let mut out = format!(
        "default {}  weights {}  strict {}\n",
        s(&p["default"]),
        pairs(&p["weights"]),
        p["strict"].as_bool().unwrap_or(false)
    );
    if let Some(sticky) = p["sticky"].as_object() {
        let _ = writeln!(out, "sticky {}", pairs(&Value::Object(sticky.clone())));
    }
    for (i, rule) in p["rules"].as_array().into_iter().flatten().enumerate() {
        let conditions: Vec<String> = rule["match"].as_array().into_iter().flatten().map(condition).collect();
        let name = rule["name"].as_str().map(|n| format!(" ({n})")).unwrap_or_default();
        // A lane rule's symbol travels down the call chain; a plain one picks this hop only.
        let lane = if rule["lane"].as_bool() == Some(true) { " (lane)" } else { "" };
        let _ = writeln!(out, "rule {i}{name}: {} → {}{lane}", conditions.join(" and "), s(&rule["symbol"]));
    }
    for (addr, symbol) in p["overrides"].as_object().into_iter().flatten() {
        let _ = writeln!(out, "override {addr} → {}", s(symbol));
    }
    out
}

/// Whether the consumers route by the current version, and which do not.
fn propagation(p: &Value) -> String {
    let Some(consumers) = p["consumers"].as_u64() else { return String::new() };
    if consumers == 0 {
        return "no consumer sidecar follows it\n".into();
    }
    let mut out = format!(
        "version {} applied by {} of {consumers} consumer sidecar(s)\n",
        s(&p["version"]),
        s(&p["applied"])
    );
    for l in p["lagging"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  lagging: {} {} ({})", s(&l["service"]), s(&l["instance"]), s(&l["reason"]));
    }
    out
}

/// `0.953` as `95.3%`; `-` when absent.
fn percent(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".into(), |f| format!("{:.1}%", f * 100.0))
}

fn ms(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".into(), |f| format!("{f:.1}ms"))
}

/// The traffic per symbol over the last minute, when there was any.
fn traffic(t: &Value) -> String {
    let rows: Vec<Vec<String>> = t["symbols"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(symbol, x)| {
            let rps = x["rps"].as_f64().map_or_else(|| "-".into(), |r| format!("{r:.1}"));
            vec![
                symbol.clone(),
                percent(&x["target_share"]),
                percent(&x["observed_share"]),
                rps,
                percent(&x["success_rate"]),
                ms(&x["p50_ms"]),
                ms(&x["p99_ms"]),
            ]
        })
        .collect();
    if rows.is_empty() || t["seconds"].as_f64().unwrap_or(0.0) <= 0.0 {
        return String::new();
    }
    let secs = t["seconds"].as_f64().unwrap_or(0.0);
    format!("\ntraffic over the last {secs:.0}s (from the consumers' sidecars):\n")
        + &table(&["SYMBOL", "TARGET", "OBSERVED", "RPS", "SUCCESS", "P50", "P99"], &rows)
}

/// The table form of a command's answer.
pub fn render(command: &CtlCommand, v: &Value) -> String {
    match command {
        CtlCommand::Services => {
            let rows: Vec<Vec<String>> = v["services"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    vec![s(&r["name"]), s(&r["instances"]), pairs(&r["symbols"]), s(&r["policy_version"])]
                })
                .collect();
            table(&["SERVICE", "INSTANCES", "SYMBOLS", "POLICY"], &rows)
        }
        CtlCommand::Show { .. } => {
            let mut out = format!(
                "{}: {} instance(s), policy version {} ({})\n",
                s(&v["service"]),
                s(&v["instances"]),
                s(&v["version"]),
                s(&v["policy_source"])
            );
            match v["policy"].is_object() {
                true => out += &policy_lines(&v["policy"]),
                false => out += "the stored policy is invalid; sidecars keep their last good one\n",
            }
            out += &propagation(&v["propagation"]);
            out += &traffic(&v["traffic"]);
            let mut rows = Vec::new();
            for (symbol, instances) in v["symbols"].as_object().into_iter().flatten() {
                for i in instances.as_array().into_iter().flatten() {
                    let mark = if i["overridden"].as_bool() == Some(true) { " (override)" } else { "" };
                    let state = match i["warmup_progress"].as_f64() {
                        Some(p) => format!("{} {:.0}%", s(&i["state"]), p * 100.0),
                        None => s(&i["state"]),
                    };
                    rows.push(vec![
                        format!("{symbol}{mark}"),
                        s(&i["address"]),
                        state,
                        age(&i["age_seconds"]),
                        weight(&i["effective_weight"]),
                        weight(&i["nacos_weight"]),
                        s(&i["version"]),
                    ]);
                }
            }
            if rows.is_empty() {
                return out + "no registered instance\n";
            }
            out.push('\n');
            // WEIGHT: what berth's consumers balance by now; NACOS: what clients without a
            // sidecar split by (the policy share the instance's sidecar keeps).
            out + &table(&["SYMBOL", "ADDRESS", "STATE", "AGE", "WEIGHT", "NACOS", "VERSION"], &rows)
        }
        CtlCommand::Policy { file: None, .. } => {
            format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default())
        }
        CtlCommand::History { .. } => {
            let rows: Vec<Vec<String>> = v["entries"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| vec![s(&e["version"]), s(&e["at"]), s(&e["author"]), s(&e["summary"])])
                .collect();
            table(&["VERSION", "AT", "AUTHOR", "CHANGE"], &rows)
        }
        CtlCommand::Zombies { .. } => {
            let zombies = v["zombies"].as_array().cloned().unwrap_or_default();
            if zombies.is_empty() {
                return format!(
                    "no zombies among {} instance(s) of {}\n",
                    s(&v["checked"]),
                    s(&v["service"])
                );
            }
            let rows: Vec<Vec<String>> =
                zombies.iter().map(|z| vec![s(&z["address"]), s(&z["symbol"]), s(&z["reason"])]).collect();
            table(&["ADDRESS", "SYMBOL", "REASON"], &rows)
        }
        // Every change answers the same way.
        _ => {
            let unchanged = if v["changed"] == Value::Bool(false) { " (nothing written)" } else { "" };
            let mut out = format!(
                "{} is at version {}: {}{unchanged}\n",
                s(&v["service"]),
                s(&v["version"]),
                s(&v["summary"])
            );
            if let Some(w) = v["warning"].as_str() {
                let _ = writeln!(out, "warning: {w}");
            }
            if let Some(left) = v["remaining"].as_array() {
                let symbol = s(&v["retired"]);
                match left.is_empty() {
                    true => {
                        let _ = writeln!(out, "no instance of {symbol} is registered");
                    }
                    false => {
                        let list: Vec<String> = left.iter().map(s).collect();
                        let _ = writeln!(
                            out,
                            "{} instance(s) of {symbol} still registered: {}",
                            left.len(),
                            list.join(", ")
                        );
                    }
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tables_align_columns() {
        let t =
            table(&["A", "LONGER"], &[vec!["wide cell".into(), "x".into()], vec!["y".into(), "z".into()]]);
        assert_eq!(t, "A          LONGER\nwide cell  x\ny          z\n");
    }

    #[test]
    fn show_lists_policy_and_instances_by_symbol() {
        let answer = json!({
            "service": "users", "instances": 2, "version": 3, "policy_source": "registry",
            "policy": {"schema": 1, "version": 3, "default": "stable", "strict": false,
                "weights": {"canary": 10, "stable": 90},
                "rules": [{"name": "beta", "match": [{"header": "x-beta", "exact": "1"}], "symbol": "canary"},
                    {"match": [{"cookie": "team", "exact": "x"}], "symbol": "feature-x", "lane": true}]},
            "symbols": {
                "canary": [{"address": "10.0.0.2:15006", "symbol": "canary", "overridden": true, "state": "warming",
                    "age_seconds": 12, "weight": 1.0, "effective_weight": 0.4, "nacos_weight": 0.012,
                    "healthy": true, "enabled": true, "version": "1.1"}],
                "stable": [{"address": "10.0.0.1:15006", "symbol": "stable", "overridden": false, "state": "serving",
                    "age_seconds": 4000, "weight": 1.0, "effective_weight": 1.0, "nacos_weight": 1.8,
                    "healthy": true, "enabled": true, "version": null}]}
        });
        let out = render(&CtlCommand::Show { service: "users".into() }, &answer);
        assert!(out.starts_with("users: 2 instance(s), policy version 3 (registry)\n"), "{out}");
        assert!(out.contains("weights canary=10 stable=90"), "{out}");
        assert!(out.contains("rule 0 (beta): header x-beta = 1 → canary\n"), "not a lane: {out}");
        assert!(out.contains("rule 1: cookie team = x → feature-x (lane)\n"), "{out}");
        assert!(out.contains("AGE   WEIGHT  NACOS  VERSION"), "{out}");
        assert!(
            out.contains("canary (override)  10.0.0.2:15006  warming  12s   0.40    0.01   1.1"),
            "{out}"
        );
        assert!(out.contains("stable             10.0.0.1:15006  serving  1h6m  1.00    1.80   -"), "{out}");
    }
}
