//! The defaults every part of berth agrees on — the sidecar's flags, the injector's
//! configuration and the chart's `values.yaml` — each written once, here.
//!
//! Durations come in two forms made from one literal: a `Duration` for code and the text a
//! command line shows (`--help`'s `[default: 5s]`).

use std::time::Duration;

/// Defines `$name: Duration` and `$text: &str` from one number of seconds.
macro_rules! seconds {
    ($(#[$doc:meta])* $name:ident, $text:ident = $secs:literal) => {
        $(#[$doc])*
        pub const $name: Duration = Duration::from_secs($secs);
        #[doc = concat!("[`", stringify!($name), "`] as an option value: `", $secs, "s`.")]
        pub const $text: &str = concat!($secs, "s");
    };
}

seconds!(
    /// How long the app must stay healthy before it is registered.
    REGISTER_DELAY, REGISTER_DELAY_TEXT = 0
);
seconds!(
    /// How long after registration consumers ramp an instance's share up.
    WARMUP, WARMUP_TEXT = 30
);
seconds!(
    /// How long a drain keeps accepting, with the read-only signal, before it may end.
    DRAIN_MIN, DRAIN_MIN_TEXT = 5
);
seconds!(
    /// After drain-min, the drain ends once no request arrived for this long and none is in
    /// flight.
    DRAIN_QUIET, DRAIN_QUIET_TEXT = 1
);
seconds!(
    /// The drain is forced to end this long after it started.
    DRAIN_TIMEOUT, DRAIN_TIMEOUT_TEXT = 30
);
seconds!(
    /// Added to drain-min + drain-timeout for a pod's `terminationGracePeriodSeconds`: the
    /// app's own shutdown after its preStop hook returns.
    GRACE_PERIOD_MARGIN, GRACE_PERIOD_MARGIN_TEXT = 5
);

/// How a sidecar keeps its instance's Nacos weight (`--nacos-weight`): its share under the
/// traffic policy, for Nacos clients without a sidecar.
pub const NACOS_WEIGHT: &str = "policy";
/// The Nacos weight of an instance with an average share (`--nacos-weight-scale`).
pub const NACOS_WEIGHT_SCALE: f64 = 1.0;
/// [`NACOS_WEIGHT_SCALE`] as an option value.
pub const NACOS_WEIGHT_SCALE_TEXT: &str = "1";
/// The metadata keys the symbol is also registered under (`--symbol-metadata`): Spring Cloud
/// Alibaba's label routing (`version`) and Spring Cloud LoadBalancer's hints (`hint`).
pub const SYMBOL_METADATA: [&str; 2] = ["version", "hint"];
/// [`SYMBOL_METADATA`] as an option value.
pub const SYMBOL_METADATA_TEXT: &str = "version,hint";

/// The sidecar's inbound port: consumers' requests arrive here; it is the registered port.
pub const INBOUND_PORT: u16 = 15006;
/// The sidecar's outbound port: the app's calls to other services.
pub const OUTBOUND_PORT: u16 = 15001;
/// The sidecar's admin port: probes, metrics, state and the drain.
pub const ADMIN_PORT: u16 = 15020;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_text_is_its_duration() {
        for (d, text) in [
            (REGISTER_DELAY, REGISTER_DELAY_TEXT),
            (WARMUP, WARMUP_TEXT),
            (DRAIN_MIN, DRAIN_MIN_TEXT),
            (DRAIN_QUIET, DRAIN_QUIET_TEXT),
            (DRAIN_TIMEOUT, DRAIN_TIMEOUT_TEXT),
            (GRACE_PERIOD_MARGIN, GRACE_PERIOD_MARGIN_TEXT),
        ] {
            assert_eq!(crate::options::duration(text), Ok(d), "{text}");
        }
        assert!(DRAIN_TIMEOUT > DRAIN_MIN, "the defaults must pass the sidecar's own check");
        assert_eq!(NACOS_WEIGHT_SCALE_TEXT.parse::<f64>(), Ok(NACOS_WEIGHT_SCALE));
        assert_eq!(SYMBOL_METADATA_TEXT, SYMBOL_METADATA.join(","));
    }
}
