//! `--wait`: after a change, until every consumer sidecar of the service routes by the new
//! version (and, for `retire`, until the symbol's instances have left the registry), asking
//! the service's view every half second.

use std::time::{Duration, Instant};

use berth_core::Symbol;
use serde_json::Value;

use super::client::{Client, CtlError};

/// How often the service is asked while waiting.
const POLL: Duration = Duration::from_millis(500);

/// What to wait for.
#[derive(Debug)]
pub struct Goal<'a> {
    pub service: &'a str,
    /// The version written.
    pub version: u64,
    /// For `retire`: the symbol whose instances must be gone.
    pub retired: Option<&'a Symbol>,
}

/// The consumers that have not applied `version` (a later version counts).
fn laggards(v: &Value, version: u64) -> Vec<String> {
    let p = &v["propagation"];
    if p["version"].as_u64().unwrap_or(0) < version {
        return vec!["the service's policy is not at this version yet".into()];
    }
    p["lagging"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["version"].as_u64().is_none_or(|at| at < version))
        .map(|l| {
            let s = |k: &str| l[k].as_str().unwrap_or("?").to_owned();
            format!("{} {} ({})", s("service"), s("instance"), s("reason"))
        })
        .collect()
}

/// The instances of `symbol` still registered or draining.
fn remaining(v: &Value, symbol: &Symbol) -> Vec<String> {
    let instances = v["symbols"][symbol.as_str()].as_array().cloned().unwrap_or_default();
    instances
        .iter()
        .map(|i| format!("{} ({})", i["address"].as_str().unwrap_or("?"), i["state"].as_str().unwrap_or("?")))
        .collect()
}

/// Waits up to `timeout`; the line to print once done, or why not.
pub async fn until_applied(client: &Client, goal: Goal<'_>, timeout: Duration) -> Result<String, String> {
    let started = Instant::now();
    let path = format!("/api/v1/services/{}", super::client::encode(goal.service));
    loop {
        let (lagging, left, consumers) = match client.get(&path).await {
            Ok(v) => {
                let left = goal.retired.map(|s| remaining(&v, s)).unwrap_or_default();
                (laggards(&v, goal.version), left, v["propagation"]["consumers"].as_u64().unwrap_or(0))
            }
            Err(CtlError::Api { status, body }) if status != 401 && status != 403 => {
                (vec![format!("the API answered {status}: {}", body["detail"])], Vec::new(), 0)
            }
            Err(e) => return Err(e.to_string()),
        };
        let took = humantime::format_duration(Duration::from_millis(started.elapsed().as_millis() as u64));
        if lagging.is_empty() && left.is_empty() {
            let mut done = format!(
                "version {} applied by {consumers} consumer sidecar(s) of {} in {took}\n",
                goal.version, goal.service
            );
            if let Some(s) = goal.retired {
                done += &format!("no instance of {s} is left in the registry\n");
            }
            return Ok(done);
        }
        if started.elapsed() >= timeout {
            let mut why = format!("not applied within {}", humantime::format_duration(timeout));
            if !lagging.is_empty() {
                why += &format!(
                    ": {} consumer sidecar(s) of {} have not applied version {}:",
                    lagging.len(),
                    goal.service,
                    goal.version
                );
                why.extend(lagging.iter().map(|l| format!("\n  {l}")));
            }
            if !left.is_empty() {
                let s = goal.retired.map(Symbol::as_str).unwrap_or_default();
                why += &format!("\n{} instance(s) of {s} are still there:", left.len());
                why.extend(left.iter().map(|l| format!("\n  {l}")));
            }
            return Err(why);
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn laggards_are_those_below_the_version() {
        let v = json!({"propagation": {"version": 5, "consumers": 3, "applied": 1, "lagging": [
            {"service": "web", "instance": "127.0.0.1:1", "version": 4, "reason": "at version 4"},
            {"service": "web", "instance": "127.0.0.1:2", "version": null, "reason": "not answering"},
            {"service": "web", "instance": "127.0.0.1:3", "version": 4, "reason": "at version 4"}]}});
        assert_eq!(laggards(&v, 4), ["web 127.0.0.1:2 (not answering)"], "version 4 is applied by two");
        assert_eq!(laggards(&v, 5).len(), 3);
        assert_eq!(laggards(&v, 6), ["the service's policy is not at this version yet"]);
    }
}
