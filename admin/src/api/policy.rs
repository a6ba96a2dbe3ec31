//! Changing a service's traffic policy: the whole document, weights, rules, symbol
//! overrides, promote and rollback; and its history. Every change goes through
//! [`Store::change`](crate::store::Store::change): `If-Match` (optional) carries the version
//! the caller read, the answer's `ETag` the version written.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::response::{IntoResponse, Response};
use berth_core::Symbol;
use berth_core::policy::{InvalidPolicy, Policy, Problem, Rule};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, header};
use serde::Deserialize;
use serde_json::json;

use super::services::Target;
use super::{ApiError, AppState, json_body};
use crate::auth::{Reader, Writer};
use crate::events::Event;
use crate::store::{Change, Current, Written};

/// The header that says whether a policy is stored or the default.
pub use berth_core::header::POLICY_SOURCE as SOURCE_HEADER;

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// The version in `If-Match` (`"7"`, `7` or `W/"7"`); `None` when absent or `*`.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else { return Ok(None) };
    let bad = || ApiError::bad_request("If-Match must be a policy version such as \"7\" (the ETag of a GET)");
    let s = value.to_str().map_err(|_| bad())?.trim();
    if s == "*" {
        return Ok(None);
    }
    let s = s.strip_prefix("W/").unwrap_or(s);
    let s = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(s);
    s.parse().map(Some).map_err(|_| bad())
}

/// A change request: a write token's caller, the checked path and the `If-Match` version. An
/// extractor, in this order: 401/403, then 400 for a bad path or `If-Match`.
#[derive(Debug)]
pub struct Edit {
    st: AppState,
    caller: crate::auth::Caller,
    target: Target,
    if_match: Option<u64>,
}

impl FromRequestParts<AppState> for Edit {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Writer(caller) = Writer::from_request_parts(parts, state).await?;
        let target = Target::from_request_parts(parts, state).await?;
        let if_match = if_match(&parts.headers)?;
        Ok(Edit { st: state.clone(), caller, target, if_match })
    }
}

impl Edit {
    /// Applies `change` through the store.
    async fn apply<F>(&self, action: &str, change: F) -> Result<Written, ApiError>
    where
        F: Fn(&Current) -> Result<Policy, ApiError>,
    {
        let c = Change {
            service: &self.target.service,
            if_match: self.if_match,
            author: &self.caller.name,
            action,
        };
        let w = self.st.store.change(c, change).await?;
        if w.changed {
            let e = Event::policy(c.service, w.policy.version, Some(c.author), Some(&w.summary));
            self.st.events.publish(e);
        }
        Ok(w)
    }

    /// Applies an edit of the current policy.
    async fn modify(&self, action: &str, edit: impl Fn(&mut Policy)) -> Result<Written, ApiError> {
        self.apply(action, |c| {
            let mut p = c.editable()?;
            edit(&mut p);
            Ok(p)
        })
        .await
    }

    /// The answer to a change: the new version in `ETag` and the body.
    fn answer(&self, w: Written) -> Response {
        let version = w.policy.version;
        ([(header::ETAG, etag(version))], Json(self.body(w))).into_response()
    }

    fn body(&self, w: Written) -> serde_json::Value {
        let mut body = json!({
            "service": self.target.service,
            "version": w.policy.version,
            "summary": w.summary,
            "changed": w.changed,
            "policy": w.policy,
        });
        if let Some(warning) = w.warning {
            body["warning"] = json!(warning);
        }
        body
    }
}

/// `GET …/policy`: the whole document; `ETag` is its version.
pub async fn get(State(st): State<AppState>, _: Reader, t: Target) -> Result<Response, ApiError> {
    let current = st.store.read(&t.service).await?;
    let policy = current.editable()?;
    let source = HeaderValue::from_static(current.source.as_str());
    let headers =
        [(header::ETAG, etag(current.version)), (header::HeaderName::from_static(SOURCE_HEADER), source)];
    Ok((headers, Json(policy)).into_response())
}

/// `PUT …/policy`: replaces the whole document (its `version` is set by admin).
pub async fn put(edit: Edit, body: Bytes) -> Result<Response, ApiError> {
    let value: serde_json::Value = json_body(&body)?;
    let new: Policy = serde_json::from_value(value).map_err(|e| {
        let problem = Problem { path: "$".into(), message: e.to_string() };
        ApiError::invalid("nothing was written", InvalidPolicy(vec![problem]))
    })?;
    Ok(edit.answer(edit.apply("replace policy", |_| Ok(new.clone())).await?))
}

/// `PUT …/weights`: `{"stable": 90, "canary": 10}` replaces the weighted split.
pub async fn weights(edit: Edit, body: Bytes) -> Result<Response, ApiError> {
    let weights: BTreeMap<Symbol, u32> = json_body(&body)?;
    Ok(edit.answer(edit.modify("set weights", |p| p.weights.clone_from(&weights)).await?))
}

/// `PUT …/rules`: a JSON array of rules replaces the rules.
pub async fn rules(edit: Edit, body: Bytes) -> Result<Response, ApiError> {
    let rules: Vec<Rule> = json_body(&body)?;
    Ok(edit.answer(edit.modify("set rules", |p| p.rules.clone_from(&rules)).await?))
}

/// `PUT …/symbols/{address}`: `{"symbol": "canary"}` overrides an instance's symbol;
/// `{"symbol": null}` removes the override.
pub async fn symbol(edit: Edit, body: Bytes) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        symbol: Option<Symbol>,
    }
    let Body { symbol } = json_body(&body)?;
    let raw = edit.target.address.clone().unwrap_or_default();
    // The canonical form, so `[::1]:80` and `[0:0::1]:80` are one key.
    let address = raw.parse::<SocketAddr>().map_or(raw, |a| a.to_string());
    let w = edit
        .modify(&format!("set symbol of {address}"), |p| {
            match &symbol {
                Some(s) => p.overrides.insert(address.clone(), s.clone()),
                None => p.overrides.remove(&address),
            };
        })
        .await?;
    Ok(edit.answer(w))
}

/// `POST …/promote`: `{"symbol": "canary"}` becomes the default and takes 100%. The answer
/// warns when no registered instance has that symbol (a typo, or promoted too early).
pub async fn promote(edit: Edit, body: Bytes) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        symbol: Symbol,
    }
    let Body { symbol } = json_body(&body)?;
    let mut w = edit
        .modify(&format!("promote {symbol}"), |p| {
            p.default = symbol.clone();
            p.weights = BTreeMap::from([(symbol.clone(), 100)]);
        })
        .await?;
    let service = &edit.target.service;
    if w.warning.is_none()
        && let (Ok(instances), Ok(policy)) =
            (edit.st.registry.instances(service).await, w.policy.clone().compile())
        && !instances.iter().any(|i| super::instances::symbol_of(&policy, i).0 == symbol)
    {
        w.warning = Some(format!("no registered instance of {service} has symbol `{symbol}` now"));
    }
    Ok(edit.answer(w))
}

/// `POST …/rollback`: writes the previous version's policy again, as a new version. The body
/// may name the version to go back to: `{"version": 3}`.
pub async fn rollback(edit: Edit, body: Bytes) -> Result<Response, ApiError> {
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct Body {
        version: Option<u64>,
    }
    let Body { version } =
        if body.iter().all(u8::is_ascii_whitespace) { Body::default() } else { json_body(&body)? };
    let service = &edit.target.service;
    let history = edit.st.store.history(service).await?;
    let target = version.unwrap_or(edit.st.store.read(service).await?.version.saturating_sub(1));
    let w = edit
        .apply(&format!("rollback to version {target}"), |c| {
            if c.version == 0 {
                return Err(ApiError::conflict("there is no policy version to roll back from"));
            }
            if target >= c.version {
                let detail = format!("version {target} is not older than the current version {}", c.version);
                return Err(ApiError::conflict(detail));
            }
            if target == 0 {
                return Ok(Policy::default());
            }
            history.get(target).map(|e| e.policy.clone()).ok_or_else(|| {
                let kept = crate::history::MAX_ENTRIES;
                ApiError::conflict(format!(
                    "version {target} is not in the history (it keeps the last {kept} versions)"
                ))
            })
        })
        .await?;
    Ok(edit.answer(w))
}

/// `POST …/symbols/{symbol}/retire`: takes a symbol out of service — out of the weights (its
/// share goes to the default symbol) and out of the rules; refused for the default symbol.
/// The answer lists its instances still registered (`drained` once there are none); the
/// event `symbol.drained` says when the last one has left.
pub async fn retire(edit: Edit) -> Result<Response, ApiError> {
    let raw = edit.target.symbol.clone().unwrap_or_default();
    let symbol: Symbol =
        raw.parse().map_err(|e| ApiError::bad_request(format!("`{raw}` is not a symbol: {e}")))?;
    let w = edit
        .apply(&format!("retire {symbol}"), |c| {
            let mut p = c.editable()?;
            if p.default == symbol {
                return Err(ApiError::conflict(format!(
                    "`{symbol}` is the default symbol and cannot be retired; promote another symbol first"
                )));
            }
            if let Some(share) = p.weights.remove(&symbol) {
                *p.weights.entry(p.default.clone()).or_default() += share;
            }
            // All to the default is what no weights say.
            if p.weights.keys().all(|s| *s == p.default) {
                p.weights.clear();
            }
            p.rules.retain(|r| r.symbol != symbol);
            Ok(p)
        })
        .await?;
    let service = &edit.target.service;
    let policy =
        w.policy.clone().compile().unwrap_or_else(|_| berth_core::policy::CompiledPolicy::fallback());
    let remaining: Vec<String> = edit
        .st
        .registry
        .instances(service)
        .await?
        .iter()
        .filter(|i| super::instances::symbol_of(&policy, i).0 == symbol)
        .map(|i| i.addr.to_string())
        .collect();
    let version = w.policy.version;
    let mut body = edit.body(w);
    body["retired"] = json!(symbol);
    body["drained"] = json!(remaining.is_empty());
    body["remaining"] = json!(remaining);
    Ok(([(header::ETAG, etag(version))], Json(body)).into_response())
}

/// `GET …/history`: past versions, newest first, with author, time and what changed.
pub async fn history(State(st): State<AppState>, _: Reader, t: Target) -> Result<Response, ApiError> {
    let mut entries = st.store.history(&t.service).await?.entries;
    entries.reverse();
    Ok(Json(json!({"service": t.service, "entries": entries})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_forms() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::IF_MATCH, HeaderValue::from_str(v).unwrap());
            if_match(&m)
        };
        assert_eq!(if_match(&HeaderMap::new()).unwrap(), None);
        assert_eq!(h("\"7\"").unwrap(), Some(7));
        assert_eq!(h("7").unwrap(), Some(7));
        assert_eq!(h("W/\"7\"").unwrap(), Some(7));
        assert_eq!(h("*").unwrap(), None);
        assert_eq!(h("\"seven\"").unwrap_err().status, http::StatusCode::BAD_REQUEST);
    }
}
