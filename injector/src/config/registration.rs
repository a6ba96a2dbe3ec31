//! How injected sidecars register for Nacos clients without a sidecar (docs/mixed-fleets.md):
//! the `registration` key of the injection defaults, the chart's `sidecar.registration.*`.
//!
//! Each field is a sidecar option; a pod's sidecar gets it in its environment only when it
//! differs from the sidecar's own default, so the pod specs of a default install stay as they
//! were. A pod's `berth.io/cluster` annotation wins over `cluster`.

use berth_core::{defaults, instance, metadata};
use k8s_openapi::api::core::v1::EnvVar;
use serde::Deserialize;

use super::ConfigError;

/// The sidecar's Nacos weight, symbol metadata and cluster, unless a pod says otherwise.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Registration {
    /// `--nacos-weight`: `policy` (the instance's share under the traffic policy, times its
    /// warm-up) or `fixed` (1).
    pub nacos_weight: String,
    /// `--nacos-weight-scale`: the Nacos weight of an instance with an average share (100 for
    /// clients that truncate weights to integers, such as nacos-sdk-go).
    pub nacos_weight_scale: f64,
    /// `--symbol-metadata`: the metadata keys the symbol is also registered under; empty for
    /// none.
    pub symbol_metadata: Vec<String>,
    /// `--cluster`: the Nacos cluster instances register in, unless a pod's `berth.io/cluster`
    /// names another.
    pub cluster: String,
}

impl Default for Registration {
    fn default() -> Self {
        Registration {
            nacos_weight: defaults::NACOS_WEIGHT.into(),
            nacos_weight_scale: defaults::NACOS_WEIGHT_SCALE,
            symbol_metadata: defaults::SYMBOL_METADATA.map(String::from).into(),
            cluster: instance::DEFAULT_CLUSTER.into(),
        }
    }
}

impl Registration {
    /// Checks each field as the sidecar would, so that no injected sidecar fails to start.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |option: &str, value: &dyn ToString, allowed: &str| ConfigError::Invalid {
            option: format!("registration.{option}"),
            value: value.to_string(),
            allowed: allowed.into(),
        };
        if !matches!(self.nacos_weight.as_str(), "policy" | "fixed") {
            return Err(invalid("nacosWeight", &self.nacos_weight, "`policy` or `fixed`"));
        }
        if !(self.nacos_weight_scale > 0.0 && self.nacos_weight_scale <= instance::MAX_WEIGHT) {
            return Err(invalid(
                "nacosWeightScale",
                &self.nacos_weight_scale,
                "above 0 and at most 10000 (Nacos's largest weight)",
            ));
        }
        if let Some(key) = self.symbol_metadata.iter().find(|k| !metadata::is_alias_key(k)) {
            return Err(invalid("symbolMetadata", key, metadata::ALIAS_KEY_RULE));
        }
        if !instance::is_cluster_name(&self.cluster) {
            return Err(invalid("cluster", &self.cluster, instance::CLUSTER_RULE));
        }
        Ok(())
    }

    /// The sidecar's environment for these settings, with `cluster` the pod's own (its
    /// annotation) if it has one: only what differs from the sidecar's defaults.
    pub fn env(&self, pod_cluster: Option<&str>) -> Vec<EnvVar> {
        let var =
            |name: &str, value: String| EnvVar { name: name.into(), value: Some(value), value_from: None };
        let default = Registration::default();
        let mut vars = Vec::new();
        if self.nacos_weight != default.nacos_weight {
            vars.push(var("BERTH_NACOS_WEIGHT", self.nacos_weight.clone()));
        }
        if self.nacos_weight_scale != default.nacos_weight_scale {
            vars.push(var("BERTH_NACOS_WEIGHT_SCALE", self.nacos_weight_scale.to_string()));
        }
        if self.symbol_metadata != default.symbol_metadata {
            vars.push(var("BERTH_SYMBOL_METADATA", self.symbol_metadata.join(",")));
        }
        match pod_cluster {
            Some(cluster) => vars.push(var("BERTH_CLUSTER", cluster.to_owned())),
            None if self.cluster != default.cluster => vars.push(var("BERTH_CLUSTER", self.cluster.clone())),
            None => {}
        }
        vars
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(vars: &[EnvVar]) -> Vec<(String, String)> {
        vars.iter().map(|v| (v.name.clone(), v.value.clone().unwrap_or_default())).collect()
    }

    #[test]
    fn only_what_differs_from_the_sidecars_defaults_reaches_the_pod() {
        let default = Registration::default();
        default.validate().unwrap();
        assert!(default.env(None).is_empty(), "a default install's pods stay as they were");
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(names(&default.env(Some("zone-a"))), [pair("BERTH_CLUSTER", "zone-a")]);
        let set = Registration {
            nacos_weight: "fixed".into(),
            nacos_weight_scale: 100.0,
            symbol_metadata: Vec::new(),
            cluster: "zone-b".into(),
        };
        set.validate().unwrap();
        assert_eq!(
            names(&set.env(None)),
            [
                pair("BERTH_NACOS_WEIGHT", "fixed"),
                pair("BERTH_NACOS_WEIGHT_SCALE", "100"),
                pair("BERTH_SYMBOL_METADATA", ""),
                pair("BERTH_CLUSTER", "zone-b"),
            ]
        );
        assert_eq!(names(&set.env(Some("zone-a")))[3], pair("BERTH_CLUSTER", "zone-a"), "the pod's own wins");
    }

    #[test]
    fn bad_values_name_the_key() {
        let bad = |f: fn(&mut Registration)| {
            let mut r = Registration::default();
            f(&mut r);
            r.validate().unwrap_err().to_string()
        };
        assert!(bad(|r| r.nacos_weight = "random".into()).contains("registration.nacosWeight"));
        assert!(bad(|r| r.nacos_weight_scale = 0.0).contains("registration.nacosWeightScale"));
        assert!(bad(|r| r.nacos_weight_scale = 20_000.0).contains("at most 10000"));
        assert!(
            bad(|r| r.symbol_metadata = vec!["berth.symbol".into()]).contains("registration.symbolMetadata")
        );
        assert!(bad(|r| r.cluster = "zone_a".into()).contains("registration.cluster"));
    }
}
