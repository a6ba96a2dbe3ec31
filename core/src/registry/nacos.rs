//! The registry on a Nacos (or rnacos) server, through `nacos-sdk`'s gRPC client.
//!
//! One naming and one config client per process, created on first use and held for the
//! process's life: each keeps a long-lived connection, re-registers our instances after a
//! reconnect and delivers pushes. A server that is down when berth starts is simply retried by
//! the next operation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nacos_sdk::api::config::{ConfigChangeListener, ConfigResponse, ConfigService, ConfigServiceBuilder};
use nacos_sdk::api::error::Error as NacosError;
use nacos_sdk::api::naming::{
    NamingChangeEvent, NamingEventListener, NamingService, NamingServiceBuilder, ServiceInstance,
};
use nacos_sdk::api::props::ClientProps;
use tokio::sync::{OnceCell, watch};

use super::url::NacosUrl;
use super::{CONFIG_GROUP, ConfigEntry, InstanceSet, Registry, RegistryError, RegistryUrl};
use crate::Instance;

/// How long connecting to the server may take before an operation reports it unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a watched config document is read again while it does not exist: soon after the
/// watch starts (a policy written just after a service is first called is seen within a
/// second), then half as often each time up to the longest wait, so that a sidecar following
/// 1,000 services without policies asks Nacos 200 times a second, not 2,000.
const RESYNC_ABSENT_FIRST: Duration = Duration::from_millis(500);
const RESYNC_ABSENT_MAX: Duration = Duration::from_secs(5);

/// The waits between reads of a document that stays absent ([`RESYNC_ABSENT_FIRST`] doubling
/// up to [`RESYNC_ABSENT_MAX`]).
fn absent_waits() -> impl Iterator<Item = Duration> {
    std::iter::successors(Some(RESYNC_ABSENT_FIRST), |w| Some((*w * 2).min(RESYNC_ABSENT_MAX)))
}
/// How often a watched config document is read again to catch a missed push.
const RESYNC: Duration = Duration::from_secs(10);

/// A Nacos server, connected on first use.
pub struct NacosRegistry {
    url: NacosUrl,
    naming: OnceCell<NamingService>,
    config: OnceCell<ConfigService>,
    watches: Mutex<HashMap<String, watch::Receiver<InstanceSet>>>,
    config_watches: Mutex<HashMap<String, watch::Receiver<Option<Arc<str>>>>>,
}

impl std::fmt::Debug for NacosRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NacosRegistry").field("url", &self.url).finish_non_exhaustive()
    }
}

impl NacosRegistry {
    /// A registry for `url`; nothing is connected yet.
    pub fn new(url: NacosUrl) -> Self {
        NacosRegistry {
            url,
            naming: OnceCell::new(),
            config: OnceCell::new(),
            watches: Mutex::default(),
            config_watches: Mutex::default(),
        }
    }

    fn props(&self) -> ClientProps {
        let mut props = ClientProps::new()
            .server_addr(self.url.servers.join(","))
            .namespace(if self.url.namespace == super::url::DEFAULT_NAMESPACE {
                ""
            } else {
                &self.url.namespace
            })
            .app_name("berth")
            // Our URL, not NACOS_CLIENT_* variables of the environment, says where Nacos is.
            .env_first(false)
            // A cache shared by every berth process: the client writes it but never loads it at start.
            .cache_dir(std::env::temp_dir().join("berth-nacos-cache"));
        if let Some(port) = self.url.grpc_port {
            props = props.remote_grpc_port(port);
        }
        if let Some(user) = &self.url.username {
            props = props.auth_username(user.clone());
        }
        if let Some(password) = &self.url.password {
            props = props.auth_password(password.clone());
        }
        props
    }

    fn unreachable(&self, detail: impl std::fmt::Display) -> RegistryError {
        RegistryError::Unreachable { registry: self.describe(), detail: detail.to_string() }
    }

    fn failed(&self, op: &str, err: impl std::fmt::Display) -> RegistryError {
        RegistryError::Failed { registry: self.describe(), op: op.to_owned(), detail: err.to_string() }
    }

    async fn naming(&self) -> Result<&NamingService, RegistryError> {
        self.naming
            .get_or_try_init(|| async {
                let builder = NamingServiceBuilder::new(self.props());
                let builder =
                    if self.url.username.is_some() { builder.enable_auth_plugin_http() } else { builder };
                match tokio::time::timeout(CONNECT_TIMEOUT, builder.build()).await {
                    Ok(Ok(naming)) => Ok(naming),
                    Ok(Err(e)) => Err(self.unreachable(e)),
                    Err(_) => Err(self.unreachable("no answer within 5s")),
                }
            })
            .await
    }

    async fn config(&self) -> Result<&ConfigService, RegistryError> {
        self.config
            .get_or_try_init(|| async {
                let builder = ConfigServiceBuilder::new(self.props());
                let builder =
                    if self.url.username.is_some() { builder.enable_auth_plugin_http() } else { builder };
                match tokio::time::timeout(CONNECT_TIMEOUT, builder.build()).await {
                    Ok(Ok(config)) => Ok(config),
                    Ok(Err(e)) => Err(self.unreachable(e)),
                    Err(_) => Err(self.unreachable("no answer within 5s")),
                }
            })
            .await
    }

    /// Runs one request with a deadline, mapping errors to [`RegistryError`].
    async fn call<T>(
        &self,
        op: &str,
        fut: impl Future<Output = Result<T, NacosError>>,
    ) -> Result<T, RegistryError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(
                e @ (NacosError::ClientUnhealthy(_)
                | NacosError::NoAvailableServer
                | NacosError::TonicGrpcTransport(_)),
            )) => Err(self.unreachable(e)),
            Ok(Err(e)) => Err(self.failed(op, e)),
            Err(_) => Err(self.unreachable(format!("{op}: no answer within 5s"))),
        }
    }

    fn group(&self) -> Option<String> {
        Some(self.url.group.clone())
    }
}

fn to_nacos(instance: &Instance) -> ServiceInstance {
    ServiceInstance {
        ip: instance.addr.ip().to_string(),
        port: i32::from(instance.addr.port()),
        weight: instance.weight,
        healthy: instance.healthy,
        enabled: instance.enabled,
        ephemeral: true,
        cluster_name: Some(instance.cluster.clone()),
        metadata: instance.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        ..ServiceInstance::default()
    }
}

fn from_nacos(i: &ServiceInstance) -> Option<Instance> {
    let ip = i.ip.parse().ok()?;
    let port = u16::try_from(i.port).ok()?;
    Some(Instance {
        addr: std::net::SocketAddr::new(ip, port),
        weight: i.weight,
        healthy: i.healthy,
        enabled: i.enabled,
        cluster: i.cluster_name.clone().unwrap_or_else(|| crate::instance::DEFAULT_CLUSTER.to_owned()),
        metadata: i.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    })
}

fn instance_set(instances: &[ServiceInstance]) -> InstanceSet {
    let mut v: Vec<Instance> = instances.iter().filter_map(from_nacos).collect();
    v.sort_by_key(|i| i.addr);
    v.into()
}

/// Forwards naming pushes into a watch channel (the SDK's callback must not block).
struct Pushes(watch::Sender<InstanceSet>);

impl NamingEventListener for Pushes {
    fn event(&self, event: Arc<NamingChangeEvent>) {
        if let Some(instances) = &event.instances {
            let set = instance_set(instances);
            self.0.send_if_modified(|old| {
                let changed = **old != *set;
                if changed {
                    *old = set;
                }
                changed
            });
        }
    }
}

/// A config document's content as the server has it now (empty: it does not exist); `None`
/// when the server could not be asked.
async fn read_config(config: &ConfigService, data_id: &str) -> Option<String> {
    let read = config.get_config(data_id.to_owned(), CONFIG_GROUP.to_owned());
    match tokio::time::timeout(REQUEST_TIMEOUT, read).await {
        Ok(Ok(resp)) => Some(resp.content().clone()),
        Ok(Err(NacosError::ConfigNotFound(_))) => Some(String::new()),
        _ => None,
    }
}

/// Forwards config changes into a watch channel.
struct ConfigPushes(watch::Sender<Option<Arc<str>>>);

impl ConfigPushes {
    /// Publishes `content` (empty: the document does not exist) if it changed.
    fn set(&self, content: &str) {
        let new = (!content.is_empty()).then(|| Arc::from(content));
        self.0.send_if_modified(|old| {
            let changed = *old != new;
            if changed {
                old.clone_from(&new);
            }
            changed
        });
    }
}

impl ConfigChangeListener for ConfigPushes {
    fn notify(&self, config: ConfigResponse) {
        self.set(config.content());
    }
}

#[async_trait]
impl Registry for NacosRegistry {
    fn describe(&self) -> String {
        RegistryUrl::Nacos(self.url.clone()).to_string()
    }

    fn namespace(&self) -> &str {
        &self.url.namespace
    }

    async fn register(&self, service: &str, instance: &Instance) -> Result<(), RegistryError> {
        let naming = self.naming().await?;
        self.call("register", naming.register_instance(service.to_owned(), self.group(), to_nacos(instance)))
            .await
    }

    async fn deregister(&self, service: &str, instance: &Instance) -> Result<(), RegistryError> {
        let naming = self.naming().await?;
        self.call(
            "deregister",
            naming.deregister_instance(service.to_owned(), self.group(), to_nacos(instance)),
        )
        .await
    }

    async fn instances(&self, service: &str) -> Result<Vec<Instance>, RegistryError> {
        let naming = self.naming().await?;
        let all = self
            .call(
                "list instances",
                naming.get_all_instances(service.to_owned(), self.group(), Vec::new(), false),
            )
            .await?;
        Ok(instance_set(&all).to_vec())
    }

    async fn watch(&self, service: &str) -> Result<watch::Receiver<InstanceSet>, RegistryError> {
        if let Some(rx) = self.watches.lock().unwrap_or_else(|e| e.into_inner()).get(service) {
            return Ok(rx.clone());
        }
        let naming = self.naming().await?;
        let (tx, rx) = watch::channel(InstanceSet::from([]));
        let listener = Arc::new(Pushes(tx));
        self.call(
            "subscribe",
            naming.subscribe(service.to_owned(), self.group(), Vec::new(), listener.clone()),
        )
        .await?;
        // The first push may race the subscription; seed the set from a query.
        let now = self
            .call(
                "list instances",
                naming.get_all_instances(service.to_owned(), self.group(), Vec::new(), true),
            )
            .await?;
        let seed = Arc::new(NamingChangeEvent {
            service_name: service.to_owned(),
            group_name: self.url.group.clone(),
            clusters: String::new(),
            instances: Some(now),
        });
        listener.event(seed);
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        Ok(watches.entry(service.to_owned()).or_insert(rx).clone())
    }

    async fn services(&self) -> Result<Vec<String>, RegistryError> {
        let naming = self.naming().await?;
        let mut all = Vec::new();
        for page in 1.. {
            let (names, total) =
                self.call("list services", naming.get_service_list(page, 500, self.group())).await?;
            let done = names.is_empty();
            all.extend(names);
            if done || all.len() >= usize::try_from(total).unwrap_or(0) {
                break;
            }
        }
        all.sort();
        all.dedup();
        Ok(all)
    }

    async fn get_config(&self, data_id: &str) -> Result<Option<ConfigEntry>, RegistryError> {
        let config = self.config().await?;
        match tokio::time::timeout(
            REQUEST_TIMEOUT,
            config.get_config(data_id.to_owned(), CONFIG_GROUP.to_owned()),
        )
        .await
        {
            Ok(Ok(resp)) if resp.content().is_empty() => Ok(None),
            Ok(Ok(resp)) => Ok(Some(ConfigEntry::new(resp.content().clone()))),
            Ok(Err(NacosError::ConfigNotFound(_))) => Ok(None),
            Ok(Err(e)) => Err(self.failed("read config", e)),
            Err(_) => Err(self.unreachable("read config: no answer within 5s")),
        }
    }

    async fn publish_config(
        &self,
        data_id: &str,
        content: &str,
        expected_md5: Option<&str>,
    ) -> Result<(), RegistryError> {
        let config = self.config().await?;
        let (data_id_s, group, content_s) = (data_id.to_owned(), CONFIG_GROUP.to_owned(), content.to_owned());
        let written = match expected_md5 {
            Some(md5) => {
                let current = self.get_config(data_id).await?;
                if current.as_ref().map(|c| c.md5.as_str()) != Some(md5) {
                    return Err(RegistryError::Conflict {
                        data_id: data_id.to_owned(),
                        expected: md5.to_owned(),
                    });
                }
                self.call(
                    "publish config",
                    config.publish_config_cas(
                        data_id_s,
                        group,
                        content_s,
                        Some("json".into()),
                        md5.to_owned(),
                    ),
                )
                .await
            }
            None => {
                self.call(
                    "publish config",
                    config.publish_config(data_id_s, group, content_s, Some("json".into())),
                )
                .await
            }
        };
        match written {
            Ok(true) => Ok(()),
            Ok(false) | Err(RegistryError::Failed { .. }) if expected_md5.is_some() => {
                Err(RegistryError::Conflict {
                    data_id: data_id.to_owned(),
                    expected: expected_md5.unwrap_or_default().to_owned(),
                })
            }
            Ok(false) => Err(self.failed("publish config", "the server refused the write")),
            Err(e) => Err(e),
        }
    }

    async fn watch_config(&self, data_id: &str) -> Result<watch::Receiver<Option<Arc<str>>>, RegistryError> {
        if let Some(rx) = self.config_watches.lock().unwrap_or_else(|e| e.into_inner()).get(data_id) {
            return Ok(rx.clone());
        }
        let config = self.config().await?;
        let (tx, rx) = watch::channel(None);
        let listener = Arc::new(ConfigPushes(tx));
        self.call(
            "watch config",
            config.add_listener(data_id.to_owned(), CONFIG_GROUP.to_owned(), listener.clone()),
        )
        .await?;
        // The receiver holds the document from the start: a watcher deciding something at once
        // (a sidecar's first Nacos weight, a consumer's first request) sees the stored policy,
        // not "none yet".
        if let Some(content) = read_config(config, data_id).await {
            listener.set(&content);
        }
        // nacos-sdk 0.8.3 drops the first change of a document that did not exist when the
        // listener was added, and a push can be missed while disconnected: read it again now
        // and then, often while it is absent.
        let (config, data_id_owned, pushes) = (config.clone(), data_id.to_owned(), listener);
        tokio::spawn(async move {
            let mut absent = absent_waits();
            loop {
                let wait = if pushes.0.borrow().is_none() {
                    absent.next().unwrap_or(RESYNC_ABSENT_MAX)
                } else {
                    absent = absent_waits();
                    RESYNC
                };
                tokio::time::sleep(wait).await;
                if let Some(content) = read_config(&config, &data_id_owned).await {
                    pushes.set(&content);
                }
                if pushes.0.is_closed() {
                    return;
                }
            }
        });
        let mut watches = self.config_watches.lock().unwrap_or_else(|e| e.into_inner());
        Ok(watches.entry(data_id.to_owned()).or_insert(rx).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absent_document_is_read_again_less_and_less_often() {
        let ms: Vec<u128> = absent_waits().take(7).map(|d| d.as_millis()).collect();
        assert_eq!(ms, [500, 1_000, 2_000, 4_000, 5_000, 5_000, 5_000]);
    }
}
