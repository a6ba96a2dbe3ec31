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

/// The response header that carries the read-only signal, and its value while draining
/// (defined with the other header names).
pub use crate::header::{DRAINING, LIFECYCLE as LIFECYCLE_HEADER};
