//! The vocabulary every part of berth speaks.
//!
//! An instance of a service moves through a [`Lifecycle`]; it carries a [`Symbol`] (the
//! deployment it belongs to: `stable`, `canary`, …) and the [`metadata`] keys berth writes at
//! registration; consumers ramp a new instance's share up over its [`warmup`]. Instances live in a [`registry::Registry`]: Nacos in production, a directory
//! on a laptop or in the demo. The sidecar registers through it, consumers watch it, and admin
//! reads and writes traffic policies through it.
//!
//! The words the programs share on the wire and on their command lines live here too, each
//! written once: the [`header`] names, the [`check`]s, [`options`] parsers and the [`defaults`].

pub mod check;
pub mod consumers;
pub mod defaults;
pub mod header;
pub mod instance;
pub mod lifecycle;
pub mod metadata;
pub mod options;
pub mod policy;
pub mod registry;
pub mod shutdown;
pub mod symbol;
pub mod warmup;

pub use instance::Instance;
pub use lifecycle::Lifecycle;
pub use symbol::Symbol;

/// The version of berth, written into every registration as `berth.version` when the app's own
/// version is not known, and into `berth.io/injected` annotations.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Milliseconds since the Unix epoch, the unit of `berth.started_at`.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
