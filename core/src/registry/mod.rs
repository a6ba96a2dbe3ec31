//! Where instances and traffic policies live.
//!
//! [`Registry`] is the one interface the sidecar, admin and demo use. [`nacos::NacosRegistry`]
//! speaks to a Nacos (or rnacos) server over its gRPC protocol; [`dir::DirRegistry`] keeps
//! the same data as files in a directory, for machines without a Nacos server.
//! [`RegistryUrl`] picks one: `nacos://host:port?namespace=…&group=…` or `dir:///path`.

pub mod dir;
pub mod nacos;
mod url;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::Instance;

pub use self::url::{InvalidRegistryUrl, RegistryUrl, password_of, without_password};

/// The config group berth's own documents (traffic policies, their history) live in.
pub const CONFIG_GROUP: &str = "BERTH";

/// The config data id of a service's traffic policy.
pub fn policy_data_id(service: &str) -> String {
    format!("berth.traffic.{service}")
}

/// What a service name may be, for messages: [`is_service_name`] checks it.
pub const SERVICE_NAME_RULE: &str =
    "a service name is 1–128 letters, digits, `-`, `_`, `.`, `:` or `@`, not starting with `.`";

/// Whether `s` is a service name berth accepts (and can use in a config data id or a file
/// name): see [`SERVICE_NAME_RULE`].
pub fn is_service_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@'))
        && !s.starts_with('.')
}

/// A service's instances as last pushed; replaced whole on every change.
pub type InstanceSet = Arc<[Instance]>;

/// A config document and the version the registry gives it (the MD5 of its content, as Nacos
/// computes it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigEntry {
    /// The document.
    pub content: String,
    /// Hex MD5 of `content`; pass it back to [`Registry::publish_config`] for a conditional write.
    pub md5: String,
}

impl ConfigEntry {
    /// An entry for `content`, with its MD5 computed.
    pub fn new(content: String) -> Self {
        let md5 = format!("{:x}", md5::compute(content.as_bytes()));
        ConfigEntry { content, md5 }
    }
}

/// What went wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The server could not be reached (or answered nothing in time).
    #[error("registry {registry} is unreachable: {detail}")]
    Unreachable { registry: String, detail: String },
    /// The server answered, but refused or failed the operation.
    #[error("registry {registry} failed to {op}: {detail}")]
    Failed { registry: String, op: String, detail: String },
    /// A conditional write found a different version than expected.
    #[error("config {data_id} changed since version {expected}")]
    Conflict { data_id: String, expected: String },
    /// A file of the directory registry could not be read or written.
    #[error("registry file {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A service registry with config storage, namespaced and grouped by its URL.
#[async_trait]
pub trait Registry: Send + Sync + std::fmt::Debug {
    /// The registry's URL, with any password hidden: safe for logs and errors.
    fn describe(&self) -> String;

    /// The namespace instances and configs live in.
    fn namespace(&self) -> &str;

    /// Registers `instance` as an ephemeral instance of `service`: it disappears if this process
    /// dies. Registering an address again replaces it.
    async fn register(&self, service: &str, instance: &Instance) -> Result<(), RegistryError>;

    /// Removes `instance` from `service`. Removing an absent instance is not an error.
    async fn deregister(&self, service: &str, instance: &Instance) -> Result<(), RegistryError>;

    /// The instances of `service` as the registry holds them right now (no cache).
    async fn instances(&self, service: &str) -> Result<Vec<Instance>, RegistryError>;

    /// Subscribes to `service`: the receiver holds the instances as last pushed and changes on
    /// every push. Watching a service twice shares one subscription.
    async fn watch(&self, service: &str) -> Result<watch::Receiver<InstanceSet>, RegistryError>;

    /// The names of the services registered in this namespace and group.
    async fn services(&self) -> Result<Vec<String>, RegistryError>;

    /// A config document of [`CONFIG_GROUP`], if it exists.
    async fn get_config(&self, data_id: &str) -> Result<Option<ConfigEntry>, RegistryError>;

    /// Writes a config document of [`CONFIG_GROUP`]. With `expected_md5`, only if the stored
    /// document still has that version ([`RegistryError::Conflict`] otherwise).
    async fn publish_config(
        &self,
        data_id: &str,
        content: &str,
        expected_md5: Option<&str>,
    ) -> Result<(), RegistryError>;

    /// Watches a config document of [`CONFIG_GROUP`]: the receiver holds its content (`None`
    /// while it does not exist) and changes whenever it does.
    async fn watch_config(&self, data_id: &str) -> Result<watch::Receiver<Option<Arc<str>>>, RegistryError>;
}

/// Opens the registry a URL names. Connecting is lazy: a Nacos server that is down now is
/// retried by each operation, so this never fails for an unreachable server.
pub fn open(url: &RegistryUrl) -> Result<Arc<dyn Registry>, RegistryError> {
    Ok(match url {
        RegistryUrl::Nacos(n) => Arc::new(nacos::NacosRegistry::new(n.clone())),
        RegistryUrl::Dir(d) => Arc::new(dir::DirRegistry::open(d.clone())?),
    })
}
