//! Choosing an instance for a request.
//!
//! In order (DESIGN.md, "Outbound routing"):
//! 1. candidates: the registry's usable instances (healthy, enabled, weight > 0), minus those
//!    seen draining or ejected — unless nothing else is left;
//! 2. the symbol: the one the request wants (its lane, a path prefix, a policy rule — decided
//!    by the route layer, [`crate::lane`]), else a weighted pick among symbols (sticky by a
//!    header or cookie hash when configured);
//!    a symbol without candidates falls back to the default symbol, or fails when strict;
//! 3. the instance: power of two choices (linkerd2-proxy's `p2c`) — two weighted random picks
//!    of *distinct* instances, the less loaded wins, where load is the peak-EWMA latency times
//!    the requests in flight plus one ([`Endpoint::load`]). Weight is the registry's weight
//!    times the warm-up factor (age since `berth.started_at` over the warm-up window), and
//!    warm-up is skipped while most of the service is warming (a full restart).
//!
//! Candidates that drain or are ejected are avoided before the symbol is: a request for a
//! symbol whose instances are all ejected goes to the default symbol's healthy ones rather than
//! to a dead instance (unless the policy is strict).
//!
//! Sticky keys are hashed with 64-bit FNV-1a ([`sticky_roll`]): a specified hash, so sidecars
//! built by different compilers split users the same way.
//!
//! The common case — the wanted symbol has instances that are untried, not draining and not
//! ejected — is decided without looking at every instance ([`sampled`]): a choice costs the
//! same at 10 instances as at 10,000. Anything else takes the exact path, which scans.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use berth_core::policy::{CompiledPolicy, RequestView, Source};
use berth_core::{Instance, Symbol};

use crate::endpoint::{Endpoint, PeerSettings, clock_ms};

/// Draws per weighted pick before [`sampled`] gives the choice to the exact path.
const SAMPLE_DRAWS: usize = 16;

/// One usable instance of a snapshot.
#[derive(Clone, Debug)]
pub struct Entry {
    pub endpoint: Arc<Endpoint>,
    pub symbol: Symbol,
    /// The weight this sidecar balances by: the registry's, or 1 for an instance whose
    /// registry weight is its policy share kept for consumers without a sidecar (the policy is
    /// applied here already; see `Instance::balance_weight`).
    pub weight: f64,
    /// The registry's weight, as consumers without a sidecar see it.
    pub nacos_weight: f64,
    /// `berth.started_at`, ms since the epoch.
    pub started_at: Option<u64>,
    /// The instance's warm-up window in ms.
    pub warmup_ms: u64,
}

impl Entry {
    fn warmup_factor(&self, now_ms: u64) -> f64 {
        berth_core::warmup::factor(self.started_at, self.warmup_ms, now_ms)
    }
}

/// A service's usable instances, rebuilt whole when the registry or the policy changes.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub entries: Vec<Entry>,
    /// Fx, not SipHash: looked up on every pick; the symbols come from the registry.
    by_symbol: rustc_hash::FxHashMap<Symbol, Group>,
    /// When each instance that says when it started ends its warm-up (ms since the epoch),
    /// sorted: how many are warming at a time is a binary search, not a scan.
    warm_ends: Vec<u64>,
    /// Instances the registry lists, usable or not.
    pub listed: usize,
}

impl Snapshot {
    /// Builds a snapshot, reusing the endpoints (and their state) of `previous`.
    pub fn build(
        instances: &[Instance],
        policy: &CompiledPolicy,
        previous: &Snapshot,
        default_warmup_ms: u64,
    ) -> Snapshot {
        Snapshot::build_with(instances, policy, previous, default_warmup_ms, &PeerSettings::default())
    }

    /// [`Snapshot::build`], with new endpoints made with `peer` settings.
    pub fn build_with(
        instances: &[Instance],
        policy: &CompiledPolicy,
        previous: &Snapshot,
        default_warmup_ms: u64,
        peer: &PeerSettings,
    ) -> Snapshot {
        let old: HashMap<SocketAddr, &Arc<Endpoint>> =
            previous.entries.iter().map(|e| (e.endpoint.addr, &e.endpoint)).collect();
        let mut entries = Vec::new();
        for i in instances.iter().filter(|i| i.is_usable()) {
            let started_at = i.started_at();
            let endpoint = match old.get(&i.addr) {
                Some(e) if e.h2 == i.speaks_h2c() => {
                    e.set_registration(started_at.unwrap_or(0));
                    Arc::clone(e)
                }
                _ => Arc::new(Endpoint::instance(
                    i.addr,
                    i.speaks_h2c(),
                    started_at.unwrap_or(0),
                    peer.clone(),
                )),
            };
            let symbol = policy.override_for(i.addr).cloned().or_else(|| i.symbol()).unwrap_or_default();
            let warmup_ms =
                i.warmup().map_or(default_warmup_ms, |w| u64::try_from(w.as_millis()).unwrap_or(u64::MAX));
            // Not `i.weight`: a policy-kept registry weight would apply the policy twice, and a
            // canary without a share (Nacos weight 0) must stay reachable by pin.
            let weight = i.balance_weight();
            entries.push(Entry { endpoint, symbol, weight, nacos_weight: i.weight, started_at, warmup_ms });
        }
        let mut by_symbol = rustc_hash::FxHashMap::<Symbol, Group>::default();
        for (n, e) in entries.iter().enumerate() {
            let group = by_symbol.entry(e.symbol.clone()).or_default();
            group.members.push(n);
            group.max_weight = group.max_weight.max(e.weight);
        }
        // Only instances that warm at all (berth_core::warmup::is_warming), so that the count
        // agrees with admin's.
        let mut warm_ends: Vec<u64> = entries
            .iter()
            .filter(|e| e.warmup_ms > 0)
            .filter_map(|e| e.started_at.map(|s| s.saturating_add(e.warmup_ms)))
            .collect();
        warm_ends.sort_unstable();
        Snapshot { entries, by_symbol, warm_ends, listed: instances.len() }
    }

    /// Whether any usable instance has this symbol.
    pub fn has_symbol(&self, symbol: &Symbol) -> bool {
        self.by_symbol.contains_key(symbol)
    }

    /// The entry for an address.
    pub fn get(&self, addr: SocketAddr) -> Option<&Entry> {
        self.entries.iter().find(|e| e.endpoint.addr == addr)
    }

    /// Whether warm-up applies now: some instance is warming, but not most of them
    /// ([`berth_core::warmup::applies`]).
    pub fn warmup_applies(&self, now_ms: u64) -> bool {
        let warm = self.warm_ends.partition_point(|end| *end <= now_ms);
        berth_core::warmup::applies(self.warm_ends.len() - warm, self.entries.len())
    }

    /// The weight the balancer gives an entry now.
    pub fn effective_weight(&self, entry: &Entry, now_ms: u64, warmup: bool) -> f64 {
        if warmup { entry.weight * entry.warmup_factor(now_ms) } else { entry.weight }
    }
}

/// The instances of one symbol.
#[derive(Debug, Default)]
struct Group {
    members: Vec<usize>,
    /// The largest registry weight among them: no effective weight is above it.
    max_weight: f64,
}

/// What a request asks of the balancer.
#[derive(Debug)]
pub struct Ask<'a, R> {
    /// The symbol the request wants (its lane, path prefix or rule, [`crate::lane`]).
    pub explicit: Option<&'a Symbol>,
    /// Headers and cookies for sticky keys.
    pub request: &'a R,
    /// Instances this request already tried.
    pub tried: &'a [SocketAddr],
    pub now_ms: u64,
    /// For a hedge: only an instance of the `explicit` symbol (the first attempt's) that
    /// neither drains nor is ejected will do — a hedge is extra, never a last resort, and never
    /// moves a request to another symbol (canary analysis and sticky users rely on that).
    pub hedge: bool,
    /// The service's latency jitter (four deviations, µs): load differences within it are
    /// noise, not a slower instance.
    pub jitter_micros: f64,
}

/// Why no instance was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoChoice {
    /// The registry lists no usable instance.
    NoInstances { listed: usize },
    /// The policy is strict and the symbol has no usable instance.
    StrictSymbol { symbol: Symbol },
    /// Every usable instance was already tried by this request.
    Exhausted { tried: usize },
}

/// The symbol a request goes to, before candidates are considered.
pub fn pick_symbol<'p, R: RequestView>(policy: &'p CompiledPolicy, ask: &Ask<'p, R>) -> &'p Symbol {
    if let Some(s) = ask.explicit {
        return s;
    }
    if !policy.is_weighted() {
        return &policy.policy.default;
    }
    let roll = match &policy.policy.sticky {
        Some(source) => {
            sticky_value(source, ask.request).map_or_else(|| rand::random_range(0..100), sticky_roll)
        }
        None => rand::random_range(0..100),
    };
    policy.weighted_symbol(roll)
}

/// Where a sticky key lands among the weights (0–99): its 64-bit FNV-1a hash modulo 100.
pub fn sticky_roll(key: &str) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = key.bytes().fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    u32::try_from(hash % 100).unwrap_or(0)
}

fn sticky_value<'r, R: RequestView>(source: &Source, req: &'r R) -> Option<&'r str> {
    match source {
        Source::Header(h) => req.header(&h.to_ascii_lowercase()),
        Source::Cookie(c) => req.cookie(c),
    }
}

/// Chooses an instance; returns its entry index and the symbol it was chosen for.
pub fn choose<R: RequestView>(
    snapshot: &Snapshot,
    policy: &CompiledPolicy,
    ask: &Ask<'_, R>,
) -> Result<(usize, Symbol), NoChoice> {
    if snapshot.entries.is_empty() {
        return Err(NoChoice::NoInstances { listed: snapshot.listed });
    }
    let wanted = pick_symbol(policy, ask);
    if let Some(index) = sampled(snapshot, wanted, ask) {
        return Ok((index, wanted.clone()));
    }
    let entry = |i: &usize| &snapshot.entries[*i].endpoint;
    let untried = |i: &usize| !ask.tried.contains(&entry(i).addr);
    let not_draining = |i: &usize| untried(i) && !entry(i).is_draining();
    let fresh = |i: &usize| not_draining(i) && !entry(i).is_ejected();
    let members = |symbol: &Symbol| snapshot.by_symbol.get(symbol).map_or(&[][..], |g| &g.members[..]);
    let nonempty = |v: Vec<usize>| (!v.is_empty()).then_some(v);
    let of = |symbol: &Symbol, keep: &dyn Fn(&usize) -> bool| {
        nonempty(members(symbol).iter().copied().filter(|i| keep(i)).collect())
    };
    let any =
        |keep: &dyn Fn(&usize) -> bool| nonempty((0..snapshot.entries.len()).filter(|i| keep(i)).collect());
    // In order: the wanted symbol's healthy instances; with a strict policy, any of its
    // instances or none; else the default symbol's healthy ones, then anyone healthy. When
    // nothing is healthy, an ejected instance (it may have recovered) before a draining one
    // (it still serves): any instance beats failing the request.
    let pool = if ask.hedge {
        of(wanted, &fresh)
    } else if policy.policy.strict {
        if members(wanted).is_empty() {
            return Err(NoChoice::StrictSymbol { symbol: wanted.clone() });
        }
        of(wanted, &fresh).or_else(|| of(wanted, &not_draining)).or_else(|| of(wanted, &untried))
    } else {
        of(wanted, &fresh)
            .or_else(|| of(&policy.policy.default, &fresh))
            .or_else(|| any(&fresh))
            .or_else(|| any(&not_draining))
            .or_else(|| any(&untried))
    };
    let Some(pool) = pool else {
        return Err(NoChoice::Exhausted { tried: ask.tried.len() });
    };
    let index = p2c(snapshot, &pool, ask.now_ms, ask.jitter_micros);
    Ok((index, snapshot.entries[index].symbol.clone()))
}

/// Power of two choices without a scan, when the wanted symbol has fresh instances (untried,
/// not draining, not ejected) — then the exact path's pool is exactly those, and this draws
/// from the same distribution. Each weighted pick is rejection sampling: a uniformly drawn
/// member of the symbol is kept with probability (its effective weight ÷ the symbol's largest
/// weight), and drawn again when it is not fresh. `None` after [`SAMPLE_DRAWS`] misses in a
/// pick (most of the symbol tried, draining or ejected, very uneven weights, or no fresh
/// instance at all); the exact path then decides, and since it draws afresh, the result still
/// follows the exact distribution.
fn sampled<R>(snapshot: &Snapshot, symbol: &Symbol, ask: &Ask<'_, R>) -> Option<usize> {
    let group = snapshot.by_symbol.get(symbol)?;
    let warmup = snapshot.warmup_applies(ask.now_ms);
    let pick = || {
        for _ in 0..SAMPLE_DRAWS {
            let i = group.members[rand::random_range(0..group.members.len())];
            let entry = &snapshot.entries[i];
            let e = &entry.endpoint;
            if ask.tried.contains(&e.addr) || e.is_draining() || e.is_ejected() {
                continue;
            }
            let weight = snapshot.effective_weight(entry, ask.now_ms, warmup);
            if rand::random::<f64>() * group.max_weight < weight {
                return Some(i);
            }
        }
        None
    };
    let a = pick()?;
    if group.members.len() == 1 {
        return Some(a);
    }
    // Two distinct candidates: drawing `a` twice would leave no choice at all.
    let b = (0..SAMPLE_DRAWS).find_map(|_| pick().filter(|b| *b != a))?;
    Some(less_loaded(snapshot, a, b, ask.jitter_micros))
}

/// How much less loaded the second candidate must be to win: loads within half again of each
/// other, plus the service's jitter (at least 5 ms), count as equal, so that between instances
/// that are all fine the weights decide, not latency noise; a busy, slow or hung instance is
/// well past that.
const LOAD_RATIO: f64 = 1.5;
const MIN_LOAD_SLACK_MICROS: f64 = 5_000.0;

/// The less loaded of two entries; the first when they are about as loaded (so that equal
/// loads follow the weights of the picks).
fn less_loaded(snapshot: &Snapshot, a: usize, b: usize, jitter_micros: f64) -> usize {
    let now = clock_ms();
    let load = |i: usize| snapshot.entries[i].endpoint.load(now);
    let slack = jitter_micros.max(MIN_LOAD_SLACK_MICROS);
    if load(b) * LOAD_RATIO + slack <= load(a) { b } else { a }
}

/// Two weighted random picks of distinct entries; the less loaded wins, the first on a tie.
///
/// Weight acts once, in the picks: with equal load the shares follow the weights exactly, and
/// under load the comparison steers away from the busier or slower instance.
fn p2c(snapshot: &Snapshot, pool: &[usize], now_ms: u64, jitter_micros: f64) -> usize {
    if pool.len() == 1 {
        return pool[0];
    }
    let warmup = snapshot.warmup_applies(now_ms);
    let weights: Vec<f64> =
        pool.iter().map(|i| snapshot.effective_weight(&snapshot.entries[*i], now_ms, warmup)).collect();
    let total: f64 = weights.iter().sum();
    let pick = |skip: Option<usize>| -> usize {
        let total = total - skip.map_or(0.0, |s| weights[s]);
        let mut roll = rand::random::<f64>() * total;
        let mut last = 0;
        for (n, w) in weights.iter().enumerate() {
            if Some(n) == skip {
                continue;
            }
            if roll < *w {
                return n;
            }
            roll -= w;
            last = n;
        }
        last
    };
    let a = pick(None);
    let b = pick(Some(a));
    less_loaded(snapshot, pool[a], pool[b], jitter_micros)
}

mod layer;

pub use self::layer::{Attempt, Balance, Pick, Picked, View, explain};

#[cfg(test)]
mod tests;
