//! What changed between two scans, as events.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use berth_core::Instance;
use serde_json::json;

use super::Event;
use crate::fleet::Scan;
use crate::store::Store;

/// How long a written policy version waits for its history entry (its author) before it is
/// announced without one: the writer records the history right after the policy.
const HISTORY_GRACE_MS: u64 = 5_000;

/// The events between `prev` and `next`: policy versions written, instances registered,
/// draining, deregistered, ejected, zombies, and symbols left without instances. Records in
/// `next` which policy versions were announced.
pub async fn changes(prev: &Scan, next: &mut Scan, store: &Store) -> Vec<Event> {
    let mut events = policies(prev, next, store).await;
    let next = &*next;
    for (service, now) in &next.instances {
        let before = prev.instances.get(service).map_or(&[][..], Vec::as_slice);
        events.extend(instances(service, before, now, next));
        events.extend(seen(service, prev, next));
        events.extend(drained_symbols(service, before, now));
    }
    events.extend(zombies(prev, next));
    events
}

fn started_at(i: &Instance) -> u64 {
    i.started_at().unwrap_or(0)
}

fn symbol(i: &Instance) -> String {
    i.symbol().unwrap_or_default().to_string()
}

/// Every version written since the last one announced, with its author from the history. A
/// version whose history entry is not there yet waits (up to [`HISTORY_GRACE_MS`]); one
/// written without admin is announced as such once the grace is over.
async fn policies(prev: &Scan, next: &mut Scan, store: &Store) -> Vec<Event> {
    let mut events = Vec::new();
    let now = next.at_ms;
    for (service, &version) in &next.versions {
        let before = match prev.announced.get(service) {
            Some(&b) if b < version => b,
            // A service seen for the first time is the baseline; a version that went down
            // (a document deleted) is nothing to announce.
            _ => {
                next.announced.insert(service.clone(), version);
                continue;
            }
        };
        let history = store.history(service).await.ok();
        let entries: Vec<_> =
            (before + 1..=version).filter_map(|v| history.as_ref().and_then(|h| h.get(v))).collect();
        let recorded = entries.last().is_some_and(|e| e.version == version);
        let since = prev.unannounced_since.get(service).copied().unwrap_or(now);
        if !recorded && now.saturating_sub(since) < HISTORY_GRACE_MS {
            next.announced.insert(service.clone(), before);
            next.unannounced_since.insert(service.clone(), since);
            continue;
        }
        events.extend(
            entries.iter().map(|e| Event::policy(service, e.version, Some(&e.author), Some(&e.summary))),
        );
        if !recorded {
            events.push(Event::policy(service, version, None, Some("written outside berth admin")));
        }
        next.announced.insert(service.clone(), version);
    }
    events
}

/// Registrations and deregistrations (with the drain that came first, when there was one).
fn instances(service: &str, before: &[Instance], now: &[Instance], next: &Scan) -> Vec<Event> {
    let key = |i: &Instance| (i.addr, started_at(i));
    let (old, new): (BTreeSet<_>, BTreeSet<_>) =
        (before.iter().map(key).collect(), now.iter().map(key).collect());
    let mut events = Vec::new();
    for i in before.iter().filter(|i| !new.contains(&key(i))) {
        let id = format!("{}/{}", i.addr, started_at(i));
        let departed =
            next.departed.iter().find(|d| d.sidecar.instance == i.addr && d.sidecar.service == service);
        let lifecycle = departed.map(|d| d.lifecycle.as_str());
        let data = json!({"instance": i.addr, "symbol": symbol(i)});
        if lifecycle == Some("draining") {
            let mut data = data.clone();
            data["lifecycle"] = json!("draining");
            events.push(Event::new("instance.draining", format!("draining/{service}/{id}"), service, data));
        }
        let mut data = data;
        data["reason"] = json!(match (lifecycle, i.admin_addr().is_some()) {
            (Some("draining"), _) => "deregistered at the start of its drain".to_owned(),
            (Some(other), _) => format!("deregistered, its sidecar is {other}: the app failed its checks"),
            (None, true) =>
                "gone without a drain: its sidecar does not answer (crashed, or killed)".to_owned(),
            (None, false) => "gone from the registry".to_owned(),
        });
        events.push(Event::new(
            "instance.deregistered",
            format!("deregistered/{service}/{id}"),
            service,
            data,
        ));
    }
    for i in now.iter().filter(|i| !old.contains(&key(i))) {
        let data = json!({
            "instance": i.addr, "symbol": symbol(i), "started_at": i.started_at(),
            "version": i.metadata.get(berth_core::metadata::VERSION),
        });
        let id = format!("registered/{service}/{}/{}", i.addr, started_at(i));
        events.push(Event::new("instance.registered", id, service, data));
    }
    events
}

/// Instances consumers newly see draining (before the registry says so) or have ejected.
fn seen(service: &str, prev: &Scan, next: &Scan) -> Vec<Event> {
    let (before, now) = (prev.seen_states(service), next.seen_states(service));
    let count = |m: &BTreeMap<SocketAddr, Vec<&str>>, a: &SocketAddr, s: &str| {
        m.get(a).map_or(0, |v| v.iter().filter(|x| **x == s).count())
    };
    let started = |a: &SocketAddr| {
        [&next.instances, &prev.instances]
            .iter()
            .find_map(|m| m.get(service)?.iter().find(|i| i.addr == *a))
            .map_or(0, started_at)
    };
    let mut events = Vec::new();
    for addr in now.keys() {
        let id = format!("{service}/{addr}/{}", started(addr));
        let draining = count(&now, addr, "draining");
        if draining > 0 && count(&before, addr, "draining") == 0 {
            let data = json!({"instance": addr, "seen_by_consumers": draining});
            events.push(Event::new("instance.draining", format!("draining/{id}"), service, data));
        }
        let ejected = count(&now, addr, "ejected");
        if ejected > 0 && count(&before, addr, "ejected") == 0 {
            let data = json!({"instance": addr, "ejected_by_consumers": ejected});
            events.push(Event::new(
                "instance.ejected",
                format!("ejected/{id}/{}", next.at_ms),
                service,
                data,
            ));
        }
    }
    events
}

/// Symbols whose last instance left the registry (a retired deployment that has drained).
fn drained_symbols(service: &str, before: &[Instance], now: &[Instance]) -> Vec<Event> {
    let left: BTreeSet<String> = now.iter().map(symbol).collect();
    // Each gone symbol with the latest registration it had: an id every replica agrees on.
    let mut gone: BTreeMap<String, u64> = BTreeMap::new();
    for i in before.iter().filter(|i| !left.contains(&symbol(i))) {
        let latest = gone.entry(symbol(i)).or_default();
        *latest = (*latest).max(started_at(i));
    }
    gone.into_iter()
        .map(|(s, latest)| {
            let id = format!("symbol-drained/{service}/{s}/{latest}");
            Event::new("symbol.drained", id, service, json!({"symbol": s, "instances": 0}))
        })
        .collect()
}

/// Registered sidecars that answered neither this scan nor the one before.
fn zombies(prev: &Scan, next: &Scan) -> Vec<Event> {
    let failed_before: BTreeSet<SocketAddr> =
        prev.sidecars.iter().filter(|s| s.now.is_err()).map(|s| s.sidecar.instance).collect();
    next.sidecars
        .iter()
        .filter(|s| failed_before.contains(&s.sidecar.instance))
        .filter_map(|s| {
            let why = s.now.as_ref().err()?;
            let c = &s.sidecar;
            let id = format!("zombie/{}/{}/{}", c.service, c.instance, c.started_at.unwrap_or(0));
            let data = json!({"instance": c.instance, "symbol": c.symbol, "reason": format!("registered, but its sidecar does not answer: {why}")});
            Some(Event::new("zombie.found", id, &c.service, data))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::fleet::{Followed, Report, Seen, Sidecar};

    fn instance(port: u16, symbol: &str, started: u64) -> Instance {
        let mut i = Instance::new(SocketAddr::from(([127, 0, 0, 1], port)));
        i.metadata.insert(berth_core::metadata::SYMBOL.into(), symbol.into());
        i.metadata.insert(berth_core::metadata::STARTED_AT.into(), started.to_string());
        i.metadata.insert(berth_core::metadata::ADMIN_PORT.into(), (port + 1).to_string());
        i
    }

    /// A consumer (a sidecar of `web` at `port`) that sees users' instances in `states`, or
    /// does not answer.
    fn consumer(port: u16, states: &[(u16, &str)], answers: bool) -> Seen {
        let sidecar = Sidecar::of("web", &instance(port, "stable", 1)).unwrap();
        let instances =
            states.iter().map(|(p, s)| (SocketAddr::from(([127, 0, 0, 1], *p)), (*s).to_owned())).collect();
        let f = Followed { version: 0, rejected: None, instances };
        let report =
            Arc::new(Report { at_ms: 1, followed: [("users".to_owned(), f)].into(), counters: None });
        let now = if answers { Ok(report.clone()) } else { Err("no answer in time".to_owned()) };
        Seen { sidecar, now, last: Some(report) }
    }

    /// A scan with `users` and two consumers: one (port 9) seeing `states`, one (port 11)
    /// that never answers.
    fn scan(users: Vec<Instance>, states: &[(u16, &str)]) -> Scan {
        let web = vec![instance(9, "stable", 1), instance(11, "stable", 1)];
        Scan {
            number: 1,
            instances: [("users".to_owned(), users), ("web".to_owned(), web)].into(),
            sidecars: vec![consumer(9, states, true), consumer(11, &[], false)],
            ..Scan::default()
        }
    }

    #[tokio::test]
    async fn registrations_ejections_zombies_and_drained_symbols() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("dir://{}", dir.path().display()).parse().unwrap();
        let store = Store::new(berth_core::registry::open(&url).unwrap(), crate::metrics::Metrics::new());
        let prev = scan(vec![instance(1, "stable", 5), instance(3, "canary", 5)], &[(1, "serving")]);
        // :1 restarted (a new started_at), :3 (the last canary) left without a drain, :5 came.
        let next =
            scan(vec![instance(1, "stable", 6), instance(5, "blue", 6)], &[(1, "ejected"), (5, "serving")]);
        let mut next = next;
        let events = changes(&prev, &mut next, &store).await;
        let got: Vec<(&str, &str)> = events.iter().map(|e| (e.kind, e.id.as_str())).collect();
        assert_eq!(
            got[..5],
            [
                ("instance.deregistered", "deregistered/users/127.0.0.1:1/5"),
                ("instance.deregistered", "deregistered/users/127.0.0.1:3/5"),
                ("instance.registered", "registered/users/127.0.0.1:1/6"),
                ("instance.registered", "registered/users/127.0.0.1:5/6"),
                ("instance.ejected", "ejected/users/127.0.0.1:1/6/0"),
            ]
        );
        assert!(events[1].data["reason"].as_str().unwrap().starts_with("gone without a drain"));
        assert_eq!(events[4].data["ejected_by_consumers"], 1);
        assert_eq!((events[5].kind, &events[5].data["symbol"]), ("symbol.drained", &json!("canary")));
        assert_eq!(events[5].id, "symbol-drained/users/canary/5", "the same from every replica");
        // The second consumer answered neither scan: a zombie, named by its own registration.
        assert_eq!((events[6].kind, events[6].id.as_str()), ("zombie.found", "zombie/web/127.0.0.1:11/1"));
        assert_eq!(events.len(), 7, "{events:#?}");
        let mut again = next.clone();
        assert!(
            changes(&next, &mut again, &store).await.iter().all(|e| e.kind == "zombie.found"),
            "no change, no event"
        );
    }

    #[tokio::test]
    async fn a_version_waits_for_its_author_then_is_announced_once() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("dir://{}", dir.path().display()).parse().unwrap();
        let registry = berth_core::registry::open(&url).unwrap();
        let store = Store::new(registry.clone(), crate::metrics::Metrics::new());
        let at = |ms: u64, version: u64, announced: &Scan| Scan {
            number: 2,
            at_ms: ms,
            versions: [("users".to_owned(), version)].into(),
            announced: announced.announced.clone(),
            unannounced_since: announced.unannounced_since.clone(),
            ..Scan::default()
        };
        let base = Scan { announced: [("users".to_owned(), 0)].into(), ..Scan::default() };
        // Version 1 is stored, its history entry not yet: nothing is announced for now.
        let mut one = at(1_000, 1, &base);
        one.announced.clear();
        assert!(changes(&base, &mut one, &store).await.is_empty());
        assert_eq!((one.announced["users"], one.unannounced_since["users"]), (0, 1_000));
        // Then the writer records it: announced with its author, once.
        let change =
            crate::store::Change { service: "users", if_match: None, author: "alice", action: "set weights" };
        store
            .change(change, |c| {
                let mut p = c.editable()?;
                p.strict = true;
                Ok(p)
            })
            .await
            .unwrap();
        let mut two = at(2_000, 1, &one);
        let events = changes(&one, &mut two, &store).await;
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].id.as_str(), &events[0].data["author"]), ("policy/users/1", &json!("alice")));
        assert_eq!(two.announced["users"], 1);
        let mut three = at(3_000, 1, &two);
        assert!(changes(&two, &mut three, &store).await.is_empty(), "announced once");
        // A version nobody recorded is announced without an author once the grace is over.
        registry.publish_config("berth.traffic.users", r#"{"schema": 1, "version": 2}"#, None).await.unwrap();
        let mut four = at(4_000, 2, &three);
        assert!(changes(&three, &mut four, &store).await.is_empty());
        let mut late = at(4_000 + HISTORY_GRACE_MS, 2, &four);
        let events = changes(&four, &mut late, &store).await;
        assert_eq!((events.len(), &events[0].data["summary"]), (1, &json!("written outside berth admin")));
    }
}
