//! Traffic policies: which symbol a request to a service goes to.
//!
//! One JSON document per service, stored as config `berth.traffic.<service>` in group `BERTH`,
//! written by admin and read by every sidecar. [`Policy`] is the document; [`Policy::compile`]
//! is the one validator (admin rejects what it rejects, sidecars keep their last good policy
//! when it rejects) and yields a [`CompiledPolicy`] ready for the request path. The schema is
//! documented in `docs/traffic-policy.md`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::Symbol;

/// The schema version this build reads and writes.
pub const SCHEMA: u32 = 1;

/// A service's traffic policy document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Schema version; always [`SCHEMA`].
    pub schema: u32,
    /// Document version, raised by one on every change (admin's optimistic concurrency).
    #[serde(default)]
    pub version: u64,
    /// The symbol requests go to when nothing else decides, and the fallback.
    #[serde(default = "Symbol::stable")]
    pub default: Symbol,
    /// With `strict`, a request whose symbol has no usable instance fails (503) instead of
    /// falling back to the default symbol.
    #[serde(default)]
    pub strict: bool,
    /// Percent of the requests no rule matched, per symbol; they sum to 100. Empty: all to the
    /// default symbol.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub weights: BTreeMap<Symbol, u32>,
    /// Keeps one client on one symbol of the weighted split by hashing a header or cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<Source>,
    /// Header and cookie rules, tried in order; the first that matches picks the symbol.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// Per-instance symbol overrides (`"10.0.0.7:15006": "canary"`), which win over the symbol
    /// an instance registered with.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub overrides: BTreeMap<String, Symbol>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            schema: SCHEMA,
            version: 0,
            default: Symbol::stable(),
            strict: false,
            weights: BTreeMap::new(),
            sticky: None,
            rules: Vec::new(),
            overrides: BTreeMap::new(),
        }
    }
}

/// A rule: when every condition holds, the request goes to `symbol`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A name for people and logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Conditions, all of which must hold (at least one).
    #[serde(rename = "match")]
    pub conditions: Vec<Condition>,
    /// Where matching requests go.
    pub symbol: Symbol,
    /// `true`: the symbol becomes the request's lane — forwarded to the next hop, which keeps it
    /// down the call chain; `false` (the default): it picks this hop's instance only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lane: bool,
}

/// One condition: a source (`header` or `cookie`) and one kind of match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The request header to look at (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// The cookie to look at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// The value equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// The value starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The value matches this regular expression (Rust `regex` syntax, unanchored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// `true`: the header or cookie is present; `false`: it is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

/// Where a value comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Source {
    /// A request header.
    Header(String),
    /// A cookie of the `Cookie` header.
    Cookie(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Header(h) => write!(f, "header {h}"),
            Source::Cookie(c) => write!(f, "cookie {c}"),
        }
    }
}

/// What is wrong with a policy, and where (`rules[1].match[0].regex`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A policy that cannot be used, with every problem found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid traffic policy: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct InvalidPolicy(pub Vec<Problem>);

/// How a compiled condition matches a value.
#[derive(Clone, Debug)]
enum Matcher {
    Exact(String),
    Prefix(String),
    Regex(regex::Regex),
    Present(bool),
}

/// A condition ready to evaluate: its value is the policy's `sources[slot]`.
#[derive(Clone, Debug)]
struct CompiledCondition {
    slot: usize,
    matcher: Matcher,
}

/// A validated policy, ready for the request path.
#[derive(Clone, Debug)]
pub struct CompiledPolicy {
    /// The document it was compiled from.
    pub policy: Policy,
    /// Each rule's conditions, its symbol and whether that becomes the lane.
    rules: Vec<(Vec<CompiledCondition>, Symbol, bool)>,
    /// The distinct headers and cookies the rules look at: each is read once per request,
    /// however many rules name it.
    sources: Vec<Source>,
    /// Weighted symbols with their cumulative upper bounds out of 100, for picking.
    cumulative: Vec<(u32, Symbol)>,
    overrides: BTreeMap<SocketAddr, Symbol>,
}

/// The longest a regex may be, so a policy cannot make sidecars compile huge automata.
const MAX_REGEX: usize = 1024;

impl Policy {
    /// Parses and validates a document.
    pub fn parse(json: &str) -> Result<CompiledPolicy, InvalidPolicy> {
        let policy: Policy = serde_json::from_str(json)
            .map_err(|e| InvalidPolicy(vec![Problem { path: "$".into(), message: e.to_string() }]))?;
        policy.compile()
    }

    /// Validates the policy, reporting every problem, and compiles it.
    pub fn compile(self) -> Result<CompiledPolicy, InvalidPolicy> {
        let mut problems = Vec::new();
        let mut problem = |path: String, message: String| problems.push(Problem { path, message });
        if self.schema != SCHEMA {
            problem(
                "schema".into(),
                format!("unsupported schema {}; this berth reads {SCHEMA}", self.schema),
            );
        }
        let total: u64 = self.weights.values().map(|w| u64::from(*w)).sum();
        if !self.weights.is_empty() && total != 100 {
            problem("weights".into(), format!("weights must sum to 100, not {total}"));
        }
        if let Some(Source::Header(name) | Source::Cookie(name)) = &self.sticky
            && name.is_empty()
        {
            problem("sticky".into(), "names no header or cookie".into());
        }
        let mut rules = Vec::new();
        let mut sources: Vec<Source> = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.conditions.is_empty() {
                problem(format!("rules[{i}].match"), "a rule needs at least one condition".into());
            }
            let mut conditions = Vec::new();
            for (j, c) in rule.conditions.iter().enumerate() {
                match c.compile() {
                    Ok((source, matcher)) => {
                        let slot = sources.iter().position(|s| *s == source).unwrap_or_else(|| {
                            sources.push(source);
                            sources.len() - 1
                        });
                        conditions.push(CompiledCondition { slot, matcher });
                    }
                    Err(message) => problem(format!("rules[{i}].match[{j}]"), message),
                }
            }
            rules.push((conditions, rule.symbol.clone(), rule.lane));
        }
        let mut overrides = BTreeMap::new();
        for (addr, symbol) in &self.overrides {
            match addr.parse::<SocketAddr>() {
                Ok(a) => {
                    overrides.insert(a, symbol.clone());
                }
                Err(_) => {
                    problem(format!("overrides[{addr:?}]"), "keys must be instance addresses ip:port".into())
                }
            }
        }
        if !problems.is_empty() {
            return Err(InvalidPolicy(problems));
        }
        let mut cumulative = Vec::new();
        let mut upto = 0;
        for (symbol, w) in self.weights.iter().filter(|(_, w)| **w > 0) {
            upto += w;
            cumulative.push((upto, symbol.clone()));
        }
        Ok(CompiledPolicy { policy: self, rules, sources, cumulative, overrides })
    }
}

impl Condition {
    fn compile(&self) -> Result<(Source, Matcher), String> {
        let source = match (&self.header, &self.cookie) {
            (Some(h), None) if is_token(h) => Source::Header(h.to_ascii_lowercase()),
            (None, Some(c)) if is_token(c) => Source::Cookie(c.clone()),
            (Some(_), None) | (None, Some(_)) => {
                return Err("the header or cookie name is not a valid token".into());
            }
            _ => return Err("a condition names exactly one of `header` or `cookie`".into()),
        };
        let matcher = match (&self.exact, &self.prefix, &self.regex, self.present) {
            (Some(v), None, None, None) => Matcher::Exact(v.clone()),
            (None, Some(v), None, None) => Matcher::Prefix(v.clone()),
            (None, None, Some(r), None) if r.len() > MAX_REGEX => {
                return Err(format!("regex is longer than {MAX_REGEX} characters"));
            }
            (None, None, Some(r), None) => Matcher::Regex(
                regex::RegexBuilder::new(r)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| format!("invalid regex: {e}"))?,
            ),
            (None, None, None, Some(p)) => Matcher::Present(p),
            _ => return Err("a condition has exactly one of `exact`, `prefix`, `regex` or `present`".into()),
        };
        Ok((source, matcher))
    }
}

/// An RFC 9110 token: what header and cookie names are made of.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Looks values of a request up for rule evaluation.
pub trait RequestView {
    /// The value of a header (lower-case name), if present.
    fn header(&self, name: &str) -> Option<&str>;
    /// The value of a cookie, if present.
    fn cookie(&self, name: &str) -> Option<&str>;
}

impl CompiledPolicy {
    /// The policy used when a service has none: everything to `stable`.
    pub fn fallback() -> Self {
        let policy = Policy::default();
        CompiledPolicy {
            policy,
            rules: Vec::new(),
            sources: Vec::new(),
            cumulative: Vec::new(),
            overrides: BTreeMap::new(),
        }
    }

    /// The symbol of the first rule the request matches.
    pub fn rule_symbol(&self, req: &impl RequestView) -> Option<&Symbol> {
        self.matching_rule(req).map(|(symbol, _)| symbol)
    }

    /// The first rule the request matches: its symbol, and whether that becomes the lane.
    pub fn matching_rule(&self, req: &impl RequestView) -> Option<(&Symbol, bool)> {
        let mut values = Values { sources: &self.sources, req, read: [None; MEMO_SLOTS] };
        self.rules
            .iter()
            .find(|(conditions, ..)| conditions.iter().all(|c| c.matcher.holds(values.get(c.slot))))
            .map(|(_, symbol, lane)| (symbol, *lane))
    }

    /// The symbol of the weighted split for a roll in `0..100`; the default when unweighted.
    pub fn weighted_symbol(&self, roll: u32) -> &Symbol {
        self.cumulative.iter().find(|(upto, _)| roll < *upto).map_or(&self.policy.default, |(_, s)| s)
    }

    /// Whether the policy splits by weight at all.
    pub fn is_weighted(&self) -> bool {
        !self.cumulative.is_empty()
    }

    /// The symbol this policy assigns an instance, if overridden.
    pub fn override_for(&self, addr: SocketAddr) -> Option<&Symbol> {
        self.overrides.get(&addr)
    }
}

/// How many of a policy's distinct sources one request remembers (more are read per rule).
const MEMO_SLOTS: usize = 8;

/// One request's values of a policy's sources, each read on first use: a 100-rule policy on
/// one header parses the header's name and validates its value once, not 100 times.
struct Values<'a, R> {
    sources: &'a [Source],
    req: &'a R,
    read: [Option<Option<&'a str>>; MEMO_SLOTS],
}

impl<'a, R: RequestView> Values<'a, R> {
    fn get(&mut self, slot: usize) -> Option<&'a str> {
        let (req, source) = (self.req, &self.sources[slot]);
        let fetch = || match source {
            Source::Header(h) => req.header(h),
            Source::Cookie(c) => req.cookie(c),
        };
        match self.read.get_mut(slot) {
            Some(Some(value)) => *value,
            Some(memo) => *memo.insert(fetch()),
            None => fetch(),
        }
    }
}

impl Matcher {
    fn holds(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (Matcher::Present(want), v) => v.is_some() == *want,
            (_, None) => false,
            (Matcher::Exact(e), Some(v)) => v == e,
            (Matcher::Prefix(p), Some(v)) => v.starts_with(p.as_str()),
            (Matcher::Regex(r), Some(v)) => r.is_match(v),
        }
    }
}

#[cfg(test)]
mod tests;
