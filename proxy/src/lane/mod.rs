//! Lanes: the symbol a request keeps down the call chain.
//!
//! A symbol pinned at one hop (`x-berth-symbol: feature-x`) picks the instance of that hop only,
//! unless it travels. A *lane* is a symbol that travels: the consumer sidecar forwards it to
//! the instance it picked as `x-berth-symbol` and as the W3C `baggage` entry `berth.symbol`, the
//! provider sidecar hands both to its app, and an app that forwards either (OpenTelemetry SDKs
//! forward `baggage` by default) brings it to its own sidecar's outbound port, which routes the
//! next hop by it. A service without instances of the lane falls back to its default symbol
//! (or, strict, answers `503 no-symbol-instances`); the lane carries on past it.
//!
//! Where a request's symbol comes from, first found wins ([`Lanes::resolve`]):
//!
//! 1. `x-berth-symbol` (a bad value is the request's error: the app asked for it);
//! 2. the `baggage` entry `berth.symbol`;
//! 3. the configured alias headers (`--lane-headers`: `x-mse-tag`, `dubbo-tag`, …), in order;
//! 4. the path prefix `/<service>.<symbol>/`;
//! 5. the first matching rule of the called service's policy — a lane if the rule says
//!    `"lane": true`, else for this hop only;
//! 6. the calling sidecar's own symbol, as a lane, unless it is `stable` or the called
//!    service's default (`--no-own-lane` turns this off): a `canary` app prefers `canary` of
//!    what it calls, even when it forwards nothing.
//!
//! Nothing found: the policy's weighted split or its default decides, and no lane travels.
//! Values from baggage and alias headers that are not valid symbols are ignored: those headers
//! belong to the app and to other systems.

pub mod baggage;

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use berth_core::Symbol;
use berth_core::policy::{CompiledPolicy, RequestView};
use http::header::Entry;
use http::{HeaderMap, HeaderName, HeaderValue};

/// The baggage entry that carries a lane.
pub const BAGGAGE_KEY: &str = "berth.symbol";
/// How many fields [`Lanes::stamp`] may add to a request.
pub const STAMPED: usize = 2;
/// The header that pins a request to a symbol and carries its lane.
pub const SYMBOL: HeaderName = HeaderName::from_static(crate::outbound::SYMBOL_HEADER);

/// Where a request's symbol came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Header,
    Baggage,
    Alias,
    Prefix,
    /// A policy rule marked `"lane": true`.
    Rule,
    /// The calling sidecar's own symbol.
    Own,
    /// A policy rule for this hop only: not a lane.
    HopRule,
}

/// The symbol a request asks for, and where that came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub symbol: Symbol,
    pub source: Source,
}

impl Wanted {
    /// Whether the symbol travels on to the next hop.
    pub fn is_lane(&self) -> bool {
        self.source != Source::HopRule
    }
}

/// A request's `x-berth-symbol` that is not a symbol.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", crate::outbound::SYMBOL_HEADER)]
pub struct BadSymbol {
    #[source]
    pub source: berth_core::symbol::InvalidSymbol,
}

/// How one program finds and sets lanes.
#[derive(Clone, Debug, Default)]
pub struct Lanes {
    /// Headers other ecosystems carry a lane in, tried in order after `baggage`.
    pub aliases: Vec<HeaderName>,
    /// The calling sidecar's own symbol, the lane of requests that carry none; `None` with
    /// `--no-own-lane`, for `stable` and for programs without one (the gateway).
    pub own: Option<Symbol>,
    /// The header values of the last lane written.
    stamps: Arc<ArcSwapOption<Stamp>>,
}

/// One lane's header values, built once: a sidecar's requests mostly keep one lane, and
/// building them is most of what a lane costs a request (a `HeaderValue` clone is a reference
/// count).
#[derive(Debug)]
struct Stamp {
    symbol: Symbol,
    header: HeaderValue,
    /// `baggage` with only the lane, for requests without baggage of their own.
    baggage: HeaderValue,
}

impl Lanes {
    /// Lanes with these alias headers and, unless it is `stable`, this own symbol.
    pub fn new(aliases: Vec<HeaderName>, own: Option<Symbol>) -> Lanes {
        Lanes { aliases, own: own.filter(|s| s.as_str() != Symbol::DEFAULT), stamps: Arc::default() }
    }

    /// The same aliases, without an own symbol (the provider side: its own symbol is for its
    /// app's outbound calls, not for the requests it receives).
    pub fn without_own(&self) -> Lanes {
        Lanes { own: None, ..self.clone() }
    }

    /// Writes `lane` into a request for the next hop: `x-berth-symbol` and the baggage entry
    /// (every other baggage member kept).
    pub fn stamp(&self, headers: &mut HeaderMap, lane: &Symbol) {
        let Some((header, only)) = self.values(lane) else { return };
        // One lookup per name (each hashes it), whether the field is there or not.
        match headers.entry(SYMBOL) {
            Entry::Occupied(mut e) if *e.get() != header => {
                e.insert(header);
            }
            Entry::Occupied(_) => {}
            Entry::Vacant(e) => {
                e.insert(header);
            }
        }
        match headers.entry(baggage::BAGGAGE) {
            Entry::Occupied(_) => baggage::set(headers, BAGGAGE_KEY, lane.as_str()),
            Entry::Vacant(e) => {
                e.insert(only);
            }
        }
    }

    /// `lane`'s two header values, from the cache or built (and cached) now.
    fn values(&self, lane: &Symbol) -> Option<(HeaderValue, HeaderValue)> {
        if let Some(s) = self.stamps.load().as_ref().filter(|s| s.symbol == *lane) {
            return Some((s.header.clone(), s.baggage.clone()));
        }
        let stamp = Stamp {
            symbol: lane.clone(),
            header: HeaderValue::from_str(lane.as_str()).ok()?,
            baggage: baggage::single(BAGGAGE_KEY, lane.as_str())?,
        };
        let values = (stamp.header.clone(), stamp.baggage.clone());
        self.stamps.store(Some(Arc::new(stamp)));
        Some(values)
    }

    /// The lane a request carries in its headers (sources 1–3).
    pub fn carried(&self, headers: &HeaderMap) -> Result<Option<Wanted>, BadSymbol> {
        if let Some(v) = headers.get(&SYMBOL) {
            let symbol = v.to_str().unwrap_or("").parse().map_err(|source| BadSymbol { source })?;
            return Ok(Some(Wanted { symbol, source: Source::Header }));
        }
        if let Some(symbol) = baggage::find(headers, BAGGAGE_KEY).and_then(|v| v.parse().ok()) {
            return Ok(Some(Wanted { symbol, source: Source::Baggage }));
        }
        Ok(self.aliases.iter().find_map(|name| {
            let symbol = headers.get(name)?.to_str().ok()?.trim().parse().ok()?;
            Some(Wanted { symbol, source: Source::Alias })
        }))
    }

    /// The symbol a request to a service with `policy` wants: what it carries or its path
    /// prefix names (`asked`), else a rule's, else this sidecar's own.
    pub fn resolve(
        &self,
        asked: Option<Wanted>,
        policy: &CompiledPolicy,
        request: &impl RequestView,
    ) -> Option<Wanted> {
        if asked.is_some() {
            return asked;
        }
        if let Some((symbol, lane)) = policy.matching_rule(request) {
            let source = if lane { Source::Rule } else { Source::HopRule };
            return Some(Wanted { symbol: symbol.clone(), source });
        }
        let own = self.own.as_ref().filter(|s| **s != policy.policy.default)?;
        Some(Wanted { symbol: own.clone(), source: Source::Own })
    }
}

/// The provider side: a request that carries a lane reaches the app with it in both forms, so
/// that an app forwarding either keeps it. A request without one (or with a bad
/// `x-berth-symbol`, which is the caller's business) passes as it came.
pub fn hand_to_app(headers: &mut HeaderMap, lanes: &Lanes) {
    if let Ok(Some(lane)) = lanes.carried(headers) {
        lanes.stamp(headers, &lane.symbol);
    }
}

#[cfg(test)]
mod tests;
