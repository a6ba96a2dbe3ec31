//! Changing a service's traffic policy: the whole document, weights, rules, symbol
//! overrides, promote and rollback; and its history. Every change goes through
//! [`Store::change`](crate::store::Store::change): `If-Match` (optional) carries the version
//! the caller read, the answer's `ETag` the version written.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use berth_core::Symbol;
use berth_core::policy::{InvalidPolicy, Policy, Problem, Rule};
use http::{HeaderMap, HeaderValue, header};
use serde::Deserialize;
use serde_json::json;

use super::services::Target;
use super::{ApiError, AppState, json_body};
use crate::auth::{Reader, Writer};
use crate::store::{Change, Written};

/// The header that says whether a policy is stored or the default.
pub const SOURCE_HEADER: &str = "x-berth-policy-source";

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

/// The answer to a change: the new version in `ETag` and the body.
fn written(service: &str, w: Written) -> Response {
    let mut body = json!({
        "service": service,
        "version": w.policy.version,
        "summary": w.summary,
        "policy": w.policy,
    });
    if let Some(warning) = w.warning {
        body["warning"] = json!(warning);
    }
    ([(header::ETAG, etag(w.policy.version))], Json(body)).into_response()
}

/// `GET …/policy`: the whole document; `ETag` is its version.
pub async fn get(State(st): State<AppState>, _: Reader, t: Target) -> Result<Response, ApiError> {
    let current = st.store.read(&t.service).await?;
    let policy = current.editable()?;
    let source = HeaderValue::from_static(current.source.as_str());
    Ok((
        [(header::ETAG, etag(current.version)), (header::HeaderName::from_static(SOURCE_HEADER), source)],
        Json(policy),
    )
        .into_response())
}

/// `PUT …/policy`: replaces the whole document (its `version` is set by admin).
pub async fn put(
    State(st): State<AppState>,
    Writer(caller): Writer,
    t: Target,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let precondition = if_match(&headers)?;
    let value: serde_json::Value = json_body(&body)?;
    let new: Policy = serde_json::from_value(value).map_err(|e| {
        let problem = Problem { path: "$".into(), message: e.to_string() };
        ApiError::invalid("nothing was written", InvalidPolicy(vec![problem]))
    })?;
    let change = Change {
        service: &t.service,
        if_match: precondition,
        author: &caller.name,
        action: "replace policy",
    };
    let w = st.store.change(change, |_| Ok(new.clone())).await?;
    Ok(written(&t.service, w))
}

/// `PUT …/weights`: `{"stable": 90, "canary": 10}` replaces the weighted split.
pub async fn weights(
    State(st): State<AppState>,
    Writer(caller): Writer,
    t: Target,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let precondition = if_match(&headers)?;
    let weights: BTreeMap<Symbol, u32> = json_body(&body)?;
    let change =
        Change { service: &t.service, if_match: precondition, author: &caller.name, action: "set weights" };
    let w = st
        .store
        .change(change, |c| {
            let mut p = c.editable()?;
            p.weights.clone_from(&weights);
            Ok(p)
        })
        .await?;
    Ok(written(&t.service, w))
}

/// `PUT …/rules`: a JSON array of rules replaces the rules.
pub async fn rules(
    State(st): State<AppState>,
    Writer(caller): Writer,
    t: Target,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let precondition = if_match(&headers)?;
    let rules: Vec<Rule> = json_body(&body)?;
    let change =
        Change { service: &t.service, if_match: precondition, author: &caller.name, action: "set rules" };
    let w = st
        .store
        .change(change, |c| {
            let mut p = c.editable()?;
            p.rules.clone_from(&rules);
            Ok(p)
        })
        .await?;
    Ok(written(&t.service, w))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SymbolBody {
    /// The symbol; `null` removes the override.
    symbol: Option<Symbol>,
}

/// `PUT …/symbols/{address}`: `{"symbol": "canary"}` overrides an instance's symbol;
/// `{"symbol": null}` removes the override.
pub async fn symbol(
    State(st): State<AppState>,
    Writer(caller): Writer,
    t: Target,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let precondition = if_match(&headers)?;
    let SymbolBody { symbol } = json_body(&body)?;
    let raw = t.address.clone().unwrap_or_default();
    // The canonical form, so `[::1]:80` and `[0:0::1]:80` are one key.
    let address = raw.parse::<SocketAddr>().map_or(raw, |a| a.to_string());
    let action = format!("set symbol of {address}");
    let change =
        Change { service: &t.service, if_match: precondition, author: &caller.name, action: &action };
    let w = st
        .store
        .change(change, |c| {
            let mut p = c.editable()?;
            match &symbol {
                Some(s) => p.overrides.insert(address.clone(), s.clone()),
                None => p.overrides.remove(&address),
            };
            Ok(p)
        })
        .await?;
    Ok(written(&t.service, w))
}

/// `POST …/promote`: `{"symbol": "canary"}` becomes the default and takes 100%.
pub async fn promote(
    State(st): State<AppState>,
    Writer(caller): Writer,
    t: Target,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        symbol: Symbol,
    }
    let precondition = if_match(&headers)?;
    let Body { symbol } = json_body(&body)?;
    let action = format!("promote {symbol}");
    let change =
        Change { service: &t.service, if_match: precondition, author: &caller.name, action: &action };
    let mut w = st
        .store
        .change(change, |c| {
            let mut p = c.editable()?;
            p.default = symbol.clone();
            p.weights = BTreeMap::from([(symbol.clone(), 100)]);
            Ok(p)
        })
        .await?;
    if w.warning.is_none() {
        w.warning = no_instance_warning(&st, &t.service, &w.policy, &symbol).await;
    }
    Ok(written(&t.service, w))
}

/// A warning when no registered instance has `symbol` (a typo, or promoted too early).
async fn no_instance_warning(
    st: &AppState,
    service: &str,
    policy: &Policy,
    symbol: &Symbol,
) -> Option<String> {
    let instances = st.registry.instances(service).await.ok()?;
    let compiled = policy.clone().compile().ok()?;
    let has = instances.iter().any(|i| {
        compiled.override_for(i.addr).cloned().or_else(|| i.symbol()).unwrap_or_default() == *symbol
    });
    (!has).then(|| format!("no registered instance of {service} has symbol `{symbol}` now"))
}

/// `POST …/rollback`: writes the previous version's policy again, as a new version. The body
/// may name the version to go back to: `{"version": 3}`.
pub async fn rollback(
    State(st): State<AppState>,
    Writer(caller): Writer,
    t: Target,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct Body {
        version: Option<u64>,
    }
    let precondition = if_match(&headers)?;
    let Body { version } =
        if body.iter().all(u8::is_ascii_whitespace) { Body::default() } else { json_body(&body)? };
    let history = st.store.history(&t.service).await?;
    let current_version = st.store.read(&t.service).await?.version;
    let target = version.unwrap_or(current_version.saturating_sub(1));
    let action = format!("rollback to version {target}");
    let change =
        Change { service: &t.service, if_match: precondition, author: &caller.name, action: &action };
    let w = st
        .store
        .change(change, |c| {
            if c.version == 0 {
                return Err(ApiError::conflict("there is no policy version to roll back from"));
            }
            if target >= c.version {
                return Err(ApiError::conflict(format!(
                    "version {target} is not older than the current version {}",
                    c.version
                )));
            }
            if target == 0 {
                return Ok(Policy::default());
            }
            history.get(target).map(|e| e.policy.clone()).ok_or_else(|| {
                ApiError::conflict(format!(
                    "version {target} is not in the history (it keeps the last {} versions)",
                    crate::history::MAX_ENTRIES
                ))
            })
        })
        .await?;
    Ok(written(&t.service, w))
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
