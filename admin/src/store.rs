//! Policies in the registry, changed with optimistic concurrency and recorded in the history.
//!
//! A change reads the stored policy (and the MD5 the registry gives its content), checks the
//! caller's `If-Match` version, applies the change, sets `version` to the stored one plus one,
//! validates the exact text it will store with [`Policy::parse`] — the validator the sidecars
//! use — and writes it only if the stored content still has the MD5 it read. Of two writers
//! that read the same version, one wins and the other gets 412 (or, when it gave no
//! `If-Match`, its change is applied again to the winner's version). Then the history gets the
//! new entry. A change that changes nothing (the same document but for its version) writes
//! nothing: controllers re-apply their state constantly, and the history must not fill with
//! no-ops. Admin keeps nothing in memory, so any number of replicas can run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_core::policy::{InvalidPolicy, Policy};
use berth_core::registry::{ConfigEntry, Registry, RegistryError, policy_data_id};
use http::StatusCode;

use crate::api::ApiError;
use crate::history::{Entry, History, history_data_id, summarize};
use crate::metrics::Metrics;

/// How often a change without `If-Match` is retried when another writer got in first.
const ATTEMPTS: usize = 5;

/// Reads and writes policies and their history.
#[derive(Clone, Debug)]
pub struct Store {
    registry: Arc<dyn Registry>,
    metrics: Metrics,
    /// One writer per service at a time in this process: the registry's conditional write
    /// (check, then compare-and-set) has a window that a registry ignoring the compare leaves
    /// open, and this closes it for the writers of one replica.
    writers: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Where the current policy comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// No document is stored: the default policy (version 0) applies.
    Default,
    /// The document stored in the registry.
    Registry,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::Registry => "registry",
        }
    }
}

/// The stored policy as last read.
#[derive(Clone, Debug)]
pub struct Current {
    /// The policy, or why the stored document is unusable (edited by hand in Nacos, say).
    pub policy: Result<Policy, InvalidPolicy>,
    /// Its version (for an unusable document, the `version` it says, else 0).
    pub version: u64,
    pub source: Source,
    md5: Option<String>,
}

impl Current {
    fn from_entry(entry: Option<ConfigEntry>) -> Current {
        let Some(entry) = entry else {
            return Current { policy: Ok(Policy::default()), version: 0, source: Source::Default, md5: None };
        };
        let policy = Policy::parse(&entry.content).map(|c| c.policy);
        let version = match &policy {
            Ok(p) => p.version,
            Err(_) => serde_json::from_str::<serde_json::Value>(&entry.content)
                .ok()
                .and_then(|v| v["version"].as_u64())
                .unwrap_or(0),
        };
        Current { policy, version, source: Source::Registry, md5: Some(entry.md5) }
    }

    /// The policy to change, or 409 when the stored one is unusable.
    pub fn editable(&self) -> Result<Policy, ApiError> {
        self.policy.clone().map_err(|e| {
            let mut err = ApiError::invalid("the stored policy is invalid", e);
            err.status = StatusCode::CONFLICT;
            err.error = "stored policy is invalid".into();
            err.detail += "; sidecars keep their last good policy; PUT a whole policy to replace it";
            err
        })
    }
}

/// A change to make.
#[derive(Clone, Copy, Debug)]
pub struct Change<'a> {
    pub service: &'a str,
    /// The version the caller read (`If-Match`), if it gave one.
    pub if_match: Option<u64>,
    /// The token name, recorded in the history.
    pub author: &'a str,
    /// What the caller asked for, for the history (`set weights`, `promote canary`).
    pub action: &'a str,
}

/// A change that was written.
#[derive(Clone, Debug)]
pub struct Written {
    pub policy: Policy,
    /// What changed, as recorded in the history.
    pub summary: String,
    /// Set when the policy was written but something after it failed (the history entry).
    pub warning: Option<String>,
    /// `false` when the change changed nothing and no version was written.
    pub changed: bool,
}

/// Whether two policies are the same document but for their versions.
fn same_document(a: &Policy, b: &Policy) -> bool {
    Policy { version: 0, ..a.clone() } == Policy { version: 0, ..b.clone() }
}

impl Store {
    pub fn new(registry: Arc<dyn Registry>, metrics: Metrics) -> Self {
        Store { registry, metrics, writers: Arc::default() }
    }

    /// The policy of `service` as stored now.
    pub async fn read(&self, service: &str) -> Result<Current, ApiError> {
        Ok(Current::from_entry(self.registry.get_config(&policy_data_id(service)).await?))
    }

    /// The history of `service`, oldest first (empty when none is stored).
    pub async fn history(&self, service: &str) -> Result<History, ApiError> {
        Ok(self.read_history(service).await?.0)
    }

    async fn read_history(&self, service: &str) -> Result<(History, Option<String>), RegistryError> {
        let Some(entry) = self.registry.get_config(&history_data_id(service)).await? else {
            return Ok((History::default(), None));
        };
        let history = serde_json::from_str(&entry.content).unwrap_or_else(|e| {
            tracing::warn!(service, error = %e, "the stored history is unreadable; starting it again");
            History::default()
        });
        Ok((history, Some(entry.md5)))
    }

    /// Applies `change` (which gets the current policy and returns the new one) as described
    /// in the module documentation.
    pub async fn change<F>(&self, c: Change<'_>, change: F) -> Result<Written, ApiError>
    where
        F: Fn(&Current) -> Result<Policy, ApiError>,
    {
        let data_id = policy_data_id(c.service);
        let writer = {
            let mut writers = self.writers.lock().unwrap_or_else(|e| e.into_inner());
            writers.entry(c.service.to_owned()).or_default().clone()
        };
        let _one_writer = writer.lock().await;
        for attempt in 1..=ATTEMPTS {
            let current = self.read(c.service).await?;
            if let Some(want) = c.if_match.filter(|v| *v != current.version) {
                self.metrics.policy_write("conflict");
                return Err(ApiError::precondition_failed(
                    current.version,
                    format!(
                        "the policy is at version {}, not {want}; read it again and reapply the change",
                        current.version
                    ),
                ));
            }
            let mut new = change(&current)?;
            if let Ok(old) = &current.policy
                && same_document(old, &new)
            {
                self.metrics.policy_write("unchanged");
                tracing::debug!(
                    service = c.service,
                    version = current.version,
                    author = c.author,
                    action = c.action,
                    "change changes nothing; not written"
                );
                let summary = format!("{}: no change", c.action);
                return Ok(Written { policy: old.clone(), summary, warning: None, changed: false });
            }
            new.version = current.version + 1;
            let content = serde_json::to_string_pretty(&new)
                .map_err(|e| ApiError::unprocessable(format!("the policy cannot be serialized: {e}")))?;
            // The one validator, on exactly the text the sidecars will read.
            let policy = Policy::parse(&content).map_err(|e| {
                self.metrics.policy_write("invalid");
                ApiError::invalid("nothing was written", e)
            })?;
            let lost = match self.publish(&data_id, &content, current.md5.as_deref()).await {
                Ok(won) => !won,
                Err(RegistryError::Conflict { .. }) => true,
                Err(e) => return Err(e.into()),
            };
            if lost {
                if c.if_match.is_none() && attempt < ATTEMPTS {
                    continue;
                }
                self.metrics.policy_write("conflict");
                return Err(ApiError::precondition_failed(
                    current.version + 1,
                    "another change was written at the same time; read the policy again and reapply",
                ));
            }
            let old = current.policy.unwrap_or_default();
            let summary = format!("{}: {}", c.action, summarize(&old, &policy.policy));
            let warning = self.record(c, &policy.policy, &summary).await;
            self.metrics.policy_write("written");
            tracing::info!(service = c.service, version = policy.policy.version, author = c.author, %summary, "policy written");
            return Ok(Written { policy: policy.policy, summary, warning, changed: true });
        }
        Err(ApiError::conflict("the policy kept changing under this change; try again"))
    }

    /// Writes `content` if the stored document still has `md5`; `Ok(false)` when another
    /// writer's document stands. Creating a document cannot be conditional in Nacos, so a
    /// create reads back what stands.
    async fn publish(&self, data_id: &str, content: &str, md5: Option<&str>) -> Result<bool, RegistryError> {
        self.registry.publish_config(data_id, content, md5).await?;
        if md5.is_some() {
            return Ok(true);
        }
        let now = self.registry.get_config(data_id).await?;
        Ok(now.is_some_and(|e| e.content == content))
    }

    /// Adds the history entry of a written policy; a warning for the caller if it could not.
    async fn record(&self, c: Change<'_>, policy: &Policy, summary: &str) -> Option<String> {
        let entry = Entry {
            version: policy.version,
            author: c.author.to_owned(),
            at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            summary: summary.to_owned(),
            policy: policy.clone(),
        };
        let data_id = history_data_id(c.service);
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            let attempt = async {
                let (mut history, md5) = self.read_history(c.service).await?;
                history.push(entry.clone());
                let content = serde_json::to_string(&history).unwrap_or_default();
                self.publish(&data_id, &content, md5.as_deref()).await
            };
            match attempt.await {
                Ok(true) => return None,
                Ok(false) => last = "another writer got in first".into(),
                Err(RegistryError::Conflict { .. }) => last = "another writer got in first".into(),
                Err(e) => {
                    last = e.to_string();
                    break;
                }
            }
        }
        self.metrics.history_failure();
        tracing::error!(service = c.service, version = policy.version, error = %last, "policy written but not recorded in the history");
        Some(format!("version {} was written but not recorded in the history: {last}", policy.version))
    }
}

#[cfg(test)]
mod tests;
