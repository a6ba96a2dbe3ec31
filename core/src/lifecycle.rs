//! Where an instance is in its life.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The sidecar's lifecycle, in the order an instance passes through it:
/// `starting → registering → warming → serving → draining → stopped`.
///
/// Unhealthy while registered goes back to `starting` (deregistered); a drain may start from
/// any state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// The app (or a dependency) is not yet healthy; not registered, not ready.
    Starting,
    /// Healthy; waiting out the register delay, then registering.
    Registering,
    /// Registered; consumers ramp its share up over the warm-up window.
    Warming,
    /// Registered with its full share.
    Serving,
    /// Deregistered and answering stragglers with the read-only signal.
    Draining,
    /// The drain is over; the process is exiting.
    Stopped,
}

impl Lifecycle {
    /// Every state, in order.
    pub const ALL: [Lifecycle; 6] = [
        Lifecycle::Starting,
        Lifecycle::Registering,
        Lifecycle::Warming,
        Lifecycle::Serving,
        Lifecycle::Draining,
        Lifecycle::Stopped,
    ];

    /// The lower-case name used in JSON, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Starting => "starting",
            Lifecycle::Registering => "registering",
            Lifecycle::Warming => "warming",
            Lifecycle::Serving => "serving",
            Lifecycle::Draining => "draining",
            Lifecycle::Stopped => "stopped",
        }
    }

    /// Whether the instance is (or should be) in the registry in this state.
    pub fn is_registered(self) -> bool {
        matches!(self, Lifecycle::Warming | Lifecycle::Serving)
    }

    /// Whether the instance is on its way out.
    pub fn is_leaving(self) -> bool {
        matches!(self, Lifecycle::Draining | Lifecycle::Stopped)
    }
}

impl fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A lifecycle name that is not one of the six states.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown lifecycle `{0}`: expected one of starting, registering, warming, serving, draining, stopped"
)]
pub struct UnknownLifecycle(String);

impl FromStr for Lifecycle {
    type Err = UnknownLifecycle;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Lifecycle::ALL.into_iter().find(|l| l.as_str() == s).ok_or_else(|| UnknownLifecycle(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for l in Lifecycle::ALL {
            assert_eq!(l.as_str().parse::<Lifecycle>().unwrap(), l);
            assert_eq!(serde_json::to_string(&l).unwrap(), format!("\"{l}\""));
        }
        assert!("ready".parse::<Lifecycle>().is_err());
    }

    #[test]
    fn only_warming_and_serving_are_registered() {
        let registered: Vec<_> = Lifecycle::ALL.into_iter().filter(|l| l.is_registered()).collect();
        assert_eq!(registered, [Lifecycle::Warming, Lifecycle::Serving]);
    }
}
