//! Instance metadata keys berth writes at registration.
//!
//! Metadata is written once per registration and never edited in place: registries differ in
//! how they treat metadata updates (rnacos, for one, keeps the first it saw). Lifecycle changes
//! are expressed by registering, deregistering and the read-only signal instead.

/// The instance's symbol (`stable`, `canary`, …).
pub const SYMBOL: &str = "berth.symbol";
/// When the instance registered, in milliseconds since the Unix epoch; warm-up counts from it.
pub const STARTED_AT: &str = "berth.started_at";
/// The app's version when known, else berth's.
pub const VERSION: &str = "berth.version";
/// What the instance's port speaks: `h2c` (HTTP/1.1 and HTTP/2 prior knowledge, as every berth
/// sidecar does) or `http1`.
pub const PROTOCOL: &str = "berth.protocol";

/// The instance's warm-up window in milliseconds: consumers ramp its share up over this long
/// after `berth.started_at`.
pub const WARMUP: &str = "berth.warmup";

/// The sidecar's admin port (`/state`, `/endpoints`, `/metrics`), on the registered IP. Admin
/// asks it which policy version of each followed service the sidecar applied, and what traffic
/// it sent; those routes are read-only and carry no secrets.
pub const ADMIN_PORT: &str = "berth.admin_port";

/// How the instance's registry weight is kept: `policy` when its sidecar keeps it equal to the
/// instance's share under the traffic policy (times its warm-up), for consumers without a
/// sidecar. berth's own consumers then balance it as weight 1 and apply the policy themselves
/// ([`crate::Instance::balance_weight`]). Absent: the weight is the registry's, and berth's
/// consumers honour it.
pub const WEIGHT: &str = "berth.weight";
/// The value of [`WEIGHT`] for a weight that follows the policy.
pub const WEIGHT_POLICY: &str = "policy";

/// Nacos's key for who registered an instance (Spring Cloud Alibaba writes `SPRING_CLOUD`,
/// Dubbo `DUBBO`); berth writes [`REGISTER_SOURCE_BERTH`].
pub const REGISTER_SOURCE: &str = "preserved.register.source";
/// berth's value of [`REGISTER_SOURCE`].
pub const REGISTER_SOURCE_BERTH: &str = "BERTH";

/// The keys the symbol is also written under by default, for clients without a sidecar:
/// `version` (Spring Cloud Alibaba's label routing) and `hint` (Spring Cloud LoadBalancer's
/// hint routing with `X-SC-LB-Hint`).
pub const SYMBOL_ALIASES: [&str; 2] = ["version", "hint"];

/// What a symbol alias key may be, for messages: [`is_alias_key`] checks it.
pub const ALIAS_KEY_RULE: &str = "a metadata key of 1–64 letters, digits, `.`, `_` or `-`, \
     not starting with `berth.` or `preserved.` (those are berth's and Nacos's own)";

/// Whether `key` may carry the symbol besides `berth.symbol`: see [`ALIAS_KEY_RULE`].
pub fn is_alias_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 64
        && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !key.starts_with("berth.")
        && !key.starts_with("preserved.")
}

/// The response header that carries the read-only signal, and its value while draining
/// (defined with the other header names).
pub use crate::header::{DRAINING, LIFECYCLE as LIFECYCLE_HEADER};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_keys_leave_berth_and_nacos_keys_alone() {
        for good in SYMBOL_ALIASES.iter().copied().chain(["lane", "app.track", "x_y-z"]) {
            assert!(is_alias_key(good), "{good}");
        }
        for bad in ["", "berth.symbol", "preserved.register.source", "a b", "k=v", &"k".repeat(65)] {
            assert!(!is_alias_key(bad), "{bad:?}");
        }
    }
}
