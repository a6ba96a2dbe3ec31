//! Reading services: the list with counts by symbol, one service's instances grouped by
//! symbol with its policy, and its zombies.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::response::{IntoResponse, Response};
use berth_core::Symbol;
use berth_core::policy::CompiledPolicy;
use futures_util::StreamExt;
use http::request::Parts;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState};
use crate::auth::Reader;
use crate::store::Current;

/// The path parameters of a service's routes, checked.
#[derive(Debug)]
pub struct Target {
    pub service: String,
    pub address: Option<String>,
    pub symbol: Option<String>,
}

#[derive(Deserialize)]
struct RawTarget {
    service: String,
    address: Option<String>,
    symbol: Option<String>,
}

impl FromRequestParts<AppState> for Target {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Path(raw) = Path::<RawTarget>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        if !berth_core::registry::is_service_name(&raw.service) {
            return Err(ApiError::bad_request(format!(
                "`{}` is not a service name: {}",
                raw.service,
                berth_core::registry::SERVICE_NAME_RULE
            )));
        }
        Ok(Target { service: raw.service, address: raw.address, symbol: raw.symbol })
    }
}

/// The compiled policy for symbol resolution; the fallback when the stored one is unusable.
pub(super) fn compiled(current: &Current) -> CompiledPolicy {
    current.policy.clone().ok().and_then(|p| p.compile().ok()).unwrap_or_else(CompiledPolicy::fallback)
}

/// `GET /api/v1/services`: every registered service with its instance count by symbol.
pub async fn list(State(st): State<AppState>, _: Reader) -> Result<Response, ApiError> {
    let names = st.registry.services().await?;
    let rows: Vec<Result<serde_json::Value, ApiError>> = futures_util::stream::iter(names)
        .map(|name| {
            let st = st.clone();
            async move {
                let (instances, current) = tokio::try_join!(
                    async { st.registry.instances(&name).await.map_err(ApiError::from) },
                    st.store.read(&name)
                )?;
                let policy = compiled(&current);
                let mut symbols: BTreeMap<Symbol, usize> = BTreeMap::new();
                for i in &instances {
                    *symbols.entry(super::instances::symbol_of(&policy, i).0).or_default() += 1;
                }
                Ok(json!({"name": name, "instances": instances.len(), "symbols": symbols, "policy_version": current.version}))
            }
        })
        .buffered(8)
        .collect()
        .await;
    let services = rows.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(Json(json!({ "services": services })).into_response())
}

/// `GET /api/v1/services/{service}`: instances grouped by symbol, the policy and its version.
pub async fn show(State(st): State<AppState>, _: Reader, t: Target) -> Result<Response, ApiError> {
    let (instances, current) = tokio::try_join!(
        async { st.registry.instances(&t.service).await.map_err(ApiError::from) },
        st.store.read(&t.service)
    )?;
    if instances.is_empty() && current.source == crate::store::Source::Default {
        return Err(ApiError::not_found(format!(
            "service `{}` has no registered instance and no policy in {}",
            t.service,
            st.registry.describe()
        )));
    }
    let policy = compiled(&current);
    let scan = st.fleet.latest();
    let symbols = super::instances::by_symbol(&t.service, &policy, &instances, &scan, st.warmup);
    let traffic = st.window(&t.service, &policy.policy).await;
    let mut body = json!({
        "service": t.service,
        "instances": instances.len(),
        "symbols": symbols,
        "version": current.version,
        "policy_source": current.source.as_str(),
        "policy": current.policy.as_ref().ok(),
        "propagation": crate::fleet::propagation::of(&scan, &t.service, current.version),
        "traffic": traffic,
    });
    if let Err(e) = &current.policy {
        body["policy_problems"] = json!(e.0);
    }
    Ok(Json(body).into_response())
}

/// `GET /api/v1/services/{service}/zombies`: registered instances that answer nothing useful.
pub async fn zombies(State(st): State<AppState>, _: Reader, t: Target) -> Result<Response, ApiError> {
    let (instances, current) = tokio::try_join!(
        async { st.registry.instances(&t.service).await.map_err(ApiError::from) },
        st.store.read(&t.service)
    )?;
    let policy = compiled(&current);
    let targets: Vec<(SocketAddr, String)> =
        instances.iter().map(|i| (i.addr, super::instances::symbol_of(&policy, i).0.to_string())).collect();
    let found = crate::zombies::find(targets, st.probe_timeout).await;
    if !instances.is_empty() {
        st.metrics.zombies(&t.service, found.len());
    }
    for z in &found {
        let started =
            instances.iter().find(|i| i.addr == z.address).and_then(|i| i.started_at()).unwrap_or(0);
        let id = format!("zombie/{}/{}/{started}", t.service, z.address);
        let data = json!({"instance": z.address, "symbol": z.symbol, "reason": z.reason});
        st.events.publish(crate::events::Event::new("zombie.found", id, &t.service, data));
    }
    Ok(Json(json!({"service": t.service, "checked": instances.len(), "zombies": found})).into_response())
}
