//! The HTTP header names berth puts on the wire, for every program that reads or writes them.

/// On a provider sidecar's responses while it drains: the read-only signal (value
/// [`DRAINING`]).
pub const LIFECYCLE: &str = "x-berth-lifecycle";
/// The value of [`LIFECYCLE`] while an instance drains.
pub const DRAINING: &str = "draining";
/// On every failure berth answers itself (not the app): a short code, e.g. `app-unavailable`.
pub const ERROR: &str = "x-berth-error";
/// Pins an outbound request to a symbol (`canary`, …).
pub const SYMBOL: &str = "x-berth-symbol";
/// `true` marks a non-idempotent request as safe to retry.
pub const RETRYABLE: &str = "x-berth-retryable";
/// The pod's drain token, which a non-loopback `/drain` needs (the injected preStop hook sends
/// it).
pub const DRAIN_TOKEN: &str = "x-berth-drain-token";
/// On the admin API's policy answers: whether the policy is stored or the default.
pub const POLICY_SOURCE: &str = "x-berth-policy-source";
/// On `berth admin`'s event webhook deliveries: the event's kind (`deregistered`, …).
pub const EVENT: &str = "x-berth-event";
/// On event webhook deliveries: the event's id, the same on every attempt to deliver it.
pub const DELIVERY: &str = "x-berth-delivery";
/// On event webhook deliveries: `sha256=` and the HMAC of the body under the webhook's secret.
pub const SIGNATURE: &str = "x-berth-signature-256";
