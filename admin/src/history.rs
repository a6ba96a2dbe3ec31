//! The history of a service's policy: every version admin wrote, who wrote it, when, and what
//! changed.
//!
//! Kept as its own config document `berth.history.<service>` in group `BERTH`, next to the
//! policy, as `{"entries": [...]}` oldest first, capped at [`MAX_ENTRIES`] (and
//! [`MAX_BYTES`]). Each entry holds the whole policy of that version, which is what a rollback
//! writes again.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use berth_core::Symbol;
use berth_core::policy::Policy;
use serde::{Deserialize, Serialize};

/// The most entries kept; older ones are dropped.
pub const MAX_ENTRIES: usize = 100;
/// The most bytes the document may take; older entries are dropped to stay under it.
pub const MAX_BYTES: usize = 256 * 1024;

/// The config data id of a service's policy history.
pub fn history_data_id(service: &str) -> String {
    format!("berth.history.{service}")
}

/// One version of the policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The policy version this entry records.
    pub version: u64,
    /// The name of the token that wrote it.
    pub author: String,
    /// When, RFC 3339 (UTC).
    pub at: String,
    /// What changed, in one line (`weights stable=100 → stable=90 canary=10`).
    pub summary: String,
    /// The whole policy of this version.
    pub policy: Policy,
}

/// The history document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Oldest first, one per version.
    pub entries: Vec<Entry>,
}

impl History {
    /// Adds `entry` in version order (replacing an entry of the same version) and drops the
    /// oldest entries beyond the caps.
    pub fn push(&mut self, entry: Entry) {
        match self.entries.binary_search_by_key(&entry.version, |e| e.version) {
            Ok(i) => self.entries[i] = entry,
            Err(i) => self.entries.insert(i, entry),
        }
        let excess = self.entries.len().saturating_sub(MAX_ENTRIES);
        self.entries.drain(..excess);
        while self.entries.len() > 1 && serde_json::to_string(self).map_or(0, |s| s.len()) > MAX_BYTES {
            self.entries.remove(0);
        }
    }

    /// The entry of `version`, if still kept.
    pub fn get(&self, version: u64) -> Option<&Entry> {
        self.entries.binary_search_by_key(&version, |e| e.version).ok().map(|i| &self.entries[i])
    }
}

/// `ms` since the epoch as RFC 3339 with milliseconds (UTC).
pub fn rfc3339(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

fn weights(w: &BTreeMap<Symbol, u32>) -> String {
    if w.is_empty() {
        return "none".into();
    }
    w.iter().map(|(s, p)| format!("{s}={p}")).collect::<Vec<_>>().join(" ")
}

fn sticky(p: &Policy) -> String {
    p.sticky.as_ref().map_or_else(|| "none".into(), ToString::to_string)
}

/// What changed from `old` to `new`, in one line; `version` is not a change.
pub fn summarize(old: &Policy, new: &Policy) -> String {
    let mut parts: Vec<String> = Vec::new();
    if old.default != new.default {
        parts.push(format!("default {} → {}", old.default, new.default));
    }
    if old.strict != new.strict {
        parts.push(format!("strict {} → {}", old.strict, new.strict));
    }
    if old.weights != new.weights {
        parts.push(format!("weights {} → {}", weights(&old.weights), weights(&new.weights)));
    }
    if old.sticky != new.sticky {
        parts.push(format!("sticky {} → {}", sticky(old), sticky(new)));
    }
    if old.rules != new.rules {
        let mut s = format!("rules {} → {}", old.rules.len(), new.rules.len());
        let targets: Vec<String> = new.rules.iter().map(|r| r.symbol.to_string()).collect();
        if !targets.is_empty() {
            let _ = write!(s, " (to {})", targets.join(", "));
        }
        parts.push(s);
    }
    for (addr, symbol) in &new.overrides {
        if old.overrides.get(addr) != Some(symbol) {
            parts.push(format!("override {addr} → {symbol}"));
        }
    }
    for addr in old.overrides.keys().filter(|a| !new.overrides.contains_key(*a)) {
        parts.push(format!("override {addr} removed"));
    }
    if parts.is_empty() { "no change".into() } else { parts.join("; ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: &str) -> Policy {
        Policy::parse(json).unwrap().policy
    }

    fn entry(version: u64) -> Entry {
        Entry {
            version,
            author: "ci".into(),
            at: "t".into(),
            summary: String::new(),
            policy: Policy::default(),
        }
    }

    #[test]
    fn summaries_say_what_changed() {
        let old = policy(r#"{"schema":1}"#);
        let new = policy(
            r#"{"schema":1,"default":"canary","weights":{"stable":90,"canary":10},"sticky":{"header":"x-user"},
            "rules":[{"match":[{"header":"x-beta","exact":"1"}],"symbol":"canary"}],"overrides":{"10.0.0.1:80":"blue"}}"#,
        );
        assert_eq!(
            summarize(&old, &new),
            "default stable → canary; weights none → canary=10 stable=90; sticky none → header x-user; \
             rules 0 → 1 (to canary); override 10.0.0.1:80 → blue"
        );
        assert_eq!(
            summarize(&new, &old),
            "default canary → stable; weights canary=10 stable=90 → none; sticky header x-user → none; rules 1 → 0; override 10.0.0.1:80 removed"
        );
        let mut bumped = new.clone();
        bumped.version += 1;
        assert_eq!(summarize(&new, &bumped), "no change");
    }

    #[test]
    fn entries_stay_ordered_and_capped() {
        let mut h = History::default();
        for v in (1..=MAX_ENTRIES as u64 + 5).rev() {
            h.push(entry(v));
        }
        assert_eq!(h.entries.len(), MAX_ENTRIES);
        assert_eq!(h.entries[0].version, 6);
        assert!(h.entries.windows(2).all(|w| w[0].version < w[1].version));
        assert!(h.get(5).is_none() && h.get(6).is_some());
        let mut again = entry(7);
        again.author = "other".into();
        h.push(again);
        assert_eq!(h.get(7).unwrap().author, "other");
        assert_eq!(h.entries.len(), MAX_ENTRIES);
    }
}
