//! Whether a policy took effect: which consumer sidecars of a service route by its current
//! version, and which lag.
//!
//! A consumer of a service is a sidecar that follows it (its `/endpoints` lists it). A consumer
//! has applied version V when it routes by V or later. It lags when it routes by an older
//! version (the reason says whether it rejected the newer document), when it does not answer
//! and its last report had an older version, or when it never answered this
//! replica at all (then whether it follows the service is unknown, and it lags until it
//! answers — a `--wait` must not pass on a consumer it cannot see).

use std::net::SocketAddr;

use serde::Serialize;

use super::{Scan, Seen};

/// How far a service's current policy version has spread.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Propagation {
    /// The stored policy version.
    pub version: u64,
    /// Consumer sidecars: those that follow the service, or did when they last answered.
    pub consumers: usize,
    /// Consumers that route by `version` (or later).
    pub applied: usize,
    /// Every consumer that does not, and why.
    pub lagging: Vec<Laggard>,
    /// When the sidecars were last asked, RFC 3339 (absent before the first scan).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scanned_at: Option<String>,
}

/// A consumer sidecar that has not applied the current version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Laggard {
    /// The service of the sidecar's own app.
    pub service: String,
    /// The sidecar's registered address.
    pub instance: SocketAddr,
    /// The version it routes by, when known.
    pub version: Option<u64>,
    /// Why it lags, for people.
    pub reason: String,
}

impl std::fmt::Display for Laggard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({})", self.service, self.instance, self.reason)
    }
}

/// How `s` stands on `service`'s `version`: `None` when it is no consumer.
fn judge(s: &Seen, service: &str, version: u64) -> Option<Result<(), Laggard>> {
    let lag = |version: Option<u64>, reason: String| Laggard {
        service: s.sidecar.service.clone(),
        instance: s.sidecar.instance,
        version,
        reason,
    };
    match (&s.now, &s.last) {
        (Ok(report), _) => {
            let f = report.followed.get(service)?;
            Some(match (f.version >= version, &f.rejected) {
                (true, _) => Ok(()),
                (false, Some(why)) => Err(lag(
                    Some(f.version),
                    format!("at version {}; rejected the newer one: {why}", f.version),
                )),
                (false, None) => Err(lag(Some(f.version), format!("at version {}", f.version))),
            })
        }
        (Err(e), Some(last)) => {
            // One that applied the version and then stopped answering did apply it.
            let f = last.followed.get(service)?;
            Some(match f.version >= version {
                true => Ok(()),
                false => {
                    Err(lag(Some(f.version), format!("not answering: {e}; was at version {}", f.version)))
                }
            })
        }
        (Err(e), None) => {
            Some(Err(lag(None, format!("not answering: {e}; never reported whether it follows {service}"))))
        }
    }
}

/// The propagation of `service`'s `version` as `scan` saw it.
pub fn of(scan: &Scan, service: &str, version: u64) -> Propagation {
    let mut p = Propagation {
        version,
        consumers: 0,
        applied: 0,
        lagging: Vec::new(),
        scanned_at: (scan.number > 0).then(|| crate::history::rfc3339(scan.at_ms)),
    };
    for s in &scan.sidecars {
        match judge(s, service, version) {
            None => {}
            Some(Ok(())) => {
                p.consumers += 1;
                p.applied += 1;
            }
            Some(Err(l)) => {
                p.consumers += 1;
                p.lagging.push(l);
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::super::{Followed, Report, Sidecar};
    use super::*;

    fn seen(port: u16, now: Result<Option<(u64, Option<&str>)>, &str>, last: Option<u64>) -> Seen {
        let report = |v: Option<(u64, Option<&str>)>| {
            let followed = v.map(|(version, rejected)| {
                let f = Followed { version, rejected: rejected.map(Into::into), instances: BTreeMap::new() };
                ("users".to_owned(), f)
            });
            Arc::new(Report { at_ms: 1, followed: followed.into_iter().collect(), counters: None })
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let sidecar = Sidecar {
            service: "web".into(),
            instance: addr,
            admin: addr,
            symbol: berth_core::Symbol::stable(),
            started_at: None,
        };
        let now = now.map(report).map_err(str::to_owned);
        let last = now.as_ref().ok().cloned().or_else(|| last.map(|v| report(Some((v, None)))));
        Seen { sidecar, now, last }
    }

    #[test]
    fn consumers_at_the_version_applied_it_the_others_lag_with_a_reason() {
        let scan = Scan {
            number: 3,
            sidecars: vec![
                seen(1, Ok(Some((5, None))), None),
                seen(2, Ok(Some((6, None))), None),
                seen(3, Ok(Some((4, None))), None),
                seen(4, Ok(Some((4, Some("weights: must sum to 100")))), None),
                seen(5, Ok(None), None),
                seen(6, Err("no answer in time"), Some(4)),
                seen(7, Err("cannot connect"), None),
                seen(9, Err("no answer in time"), Some(5)),
            ],
            ..Scan::default()
        };
        let p = of(&scan, "users", 5);
        assert_eq!((p.consumers, p.applied), (7, 3), "{p:?}");
        let reasons: Vec<String> = p.lagging.iter().map(ToString::to_string).collect();
        assert_eq!(
            reasons,
            [
                "web 127.0.0.1:3 (at version 4)",
                "web 127.0.0.1:4 (at version 4; rejected the newer one: weights: must sum to 100)",
                "web 127.0.0.1:6 (not answering: no answer in time; was at version 4)",
                "web 127.0.0.1:7 (not answering: cannot connect; never reported whether it follows users)",
            ]
        );
        // A sidecar that stopped answering but never followed the service is no consumer.
        let other = Scan { sidecars: vec![seen(8, Err("cannot connect"), Some(1))], ..Scan::default() };
        let mut s = other.sidecars[0].clone();
        s.last = Some(Arc::new(Report::default()));
        let other = Scan { sidecars: vec![s], ..other };
        assert_eq!(of(&other, "users", 5).consumers, 0);
    }
}
