//! The outbound routing options, shared by the sidecar (`berth proxy`) and the edge
//! (`berth gateway`): timeouts, ejection, hedging, PINGs, the retry budget, and the headers a
//! lane may come in.

use std::time::Duration;

use clap::Args;
use http::HeaderName;

use super::{ConfigError, duration};

/// How outbound requests are routed, timed and sent again.
#[derive(Debug, Clone, Args)]
pub struct OutboundArgs {
    /// How long connecting to an instance may take before the request moves to another one.
    #[arg(long, help_heading = "Outbound", env = "BERTH_CONNECT_TIMEOUT", value_name = "DURATION", default_value = "1s", value_parser = duration)]
    pub connect_timeout: Duration,

    /// How long an outbound request may take, every attempt included, until its response
    /// headers; past it the app gets 504. `0s` for no limit.
    #[arg(long, help_heading = "Outbound", env = "BERTH_REQUEST_TIMEOUT", value_name = "DURATION", default_value = "30s", value_parser = duration)]
    pub request_timeout: Duration,

    /// Consecutive failures (refused or broken connections, timeouts) that eject an instance.
    #[arg(long, help_heading = "Outbound", env = "BERTH_EJECT_AFTER", value_name = "N", default_value = "2", value_parser = clap::value_parser!(u32).range(1..))]
    pub eject_after: u32,

    /// How long a first ejection lasts; each further one doubles it (2×, 4×, 8×), up to ten
    /// times as long.
    #[arg(long, help_heading = "Outbound", env = "BERTH_EJECT_FOR", value_name = "DURATION", default_value = "5s", value_parser = duration)]
    pub eject_for: Duration,

    /// How long one attempt may wait for an instance's response headers before it counts as
    /// that instance's failure and an idempotent request moves to another; `0s` for no limit
    /// of its own (the request timeout still applies).
    #[arg(long, help_heading = "Outbound", env = "BERTH_ATTEMPT_TIMEOUT", value_name = "DURATION", default_value = "0s", value_parser = duration)]
    pub attempt_timeout: Duration,

    /// The shortest wait before an idempotent request that has no answer yet is also sent to a
    /// second instance (a hedge; the first answer wins). The wait is the service's usual answer
    /// time (smoothed latency plus four deviations), at least this long and at most the
    /// hedge delay maximum.
    #[arg(long, help_heading = "Outbound", env = "BERTH_HEDGE_DELAY_MIN", value_name = "DURATION", default_value = "50ms", value_parser = duration)]
    pub hedge_delay_min: Duration,

    /// The longest wait before a hedge (see the hedge delay minimum).
    #[arg(long, help_heading = "Outbound", env = "BERTH_HEDGE_DELAY_MAX", value_name = "DURATION", default_value = "1s", value_parser = duration)]
    pub hedge_delay_max: Duration,

    /// Send no hedged attempts.
    #[arg(long, help_heading = "Outbound", env = "BERTH_NO_HEDGE")]
    pub no_hedge: bool,

    /// How long an HTTP/2 connection to an instance, with requests in flight, may be silent
    /// before the sidecar sends it a PING; `0s`: no PINGs.
    #[arg(long, help_heading = "Outbound", env = "BERTH_H2_KEEPALIVE_INTERVAL", value_name = "DURATION", default_value = "1s", value_parser = duration)]
    pub h2_keepalive_interval: Duration,

    /// How long a PING may go unanswered before the connection is closed, its idempotent
    /// requests moved to other instances and the instance ejected.
    #[arg(long, help_heading = "Outbound", env = "BERTH_H2_KEEPALIVE_TIMEOUT", value_name = "DURATION", default_value = "1s", value_parser = duration)]
    pub h2_keepalive_timeout: Duration,

    /// Retries and hedges may add this share of the requests of the last 10 s (percent).
    #[arg(long, help_heading = "Outbound", env = "BERTH_RETRY_BUDGET", value_name = "PERCENT", default_value = "20", value_parser = clap::value_parser!(u16).range(0..=1000))]
    pub retry_budget: u16,

    /// Retries and hedges allowed per second besides --retry-budget.
    #[arg(long, help_heading = "Outbound", env = "BERTH_RETRY_MIN_PER_SECOND", value_name = "N", default_value = "10", value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub retry_min_per_second: u32,

    /// Headers other ecosystems carry a request's lane in, tried in order after
    /// `x-berth-symbol` and the `baggage` entry `berth.symbol` (none by default; the common
    /// ones: `x-mse-tag,dubbo-tag,service-lane,x-opensergo-traffic`). Comma-separated.
    #[arg(long, help_heading = "Outbound", env = "BERTH_LANE_HEADERS", value_name = "NAMES", value_delimiter = ',', value_parser = lane_header)]
    pub lane_headers: Vec<HeaderName>,
}

/// A header a lane may come in: a lower-case field name that is not one berth reads already
/// or one a proxy hop drops.
fn lane_header(s: &str) -> Result<HeaderName, String> {
    const RESERVED: [&str; 9] = [
        berth_core::header::SYMBOL,
        "baggage",
        "host",
        "connection",
        "keep-alive",
        "te",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
    ];
    let name = s.trim().to_ascii_lowercase();
    if RESERVED.contains(&name.as_str()) {
        return Err(format!("`{name}` is read already or dropped at every hop; name another header"));
    }
    HeaderName::try_from(name).map_err(|_| "expected a header name such as x-mse-tag".to_owned())
}

impl OutboundArgs {
    /// Checks what one flag alone cannot and builds the settings; `failover` is off only with
    /// `--no-lifecycle`.
    pub fn settings(&self, failover: bool) -> Result<crate::outbound::Settings, ConfigError> {
        let human = |d: Duration| humantime::format_duration(d).to_string();
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::invalid("--connect-timeout", "0s", "must be longer than zero"));
        }
        if self.hedge_delay_min.is_zero() {
            return Err(ConfigError::invalid(
                "--hedge-delay-min",
                "0s",
                "must be longer than zero (use --no-hedge to turn hedging off)",
            ));
        }
        if self.hedge_delay_max < self.hedge_delay_min {
            return Err(ConfigError::invalid(
                "--hedge-delay-max",
                human(self.hedge_delay_max),
                format!("must not be shorter than --hedge-delay-min ({})", human(self.hedge_delay_min)),
            ));
        }
        if !self.h2_keepalive_interval.is_zero() && self.h2_keepalive_timeout.is_zero() {
            return Err(ConfigError::invalid("--h2-keepalive-timeout", "0s", "must be longer than zero"));
        }
        let some = |d: Duration| (!d.is_zero()).then_some(d);
        Ok(crate::outbound::Settings {
            connect_timeout: self.connect_timeout,
            request_timeout: some(self.request_timeout),
            ejection: crate::endpoint::Ejection { after: self.eject_after, base: self.eject_for },
            failover,
            attempt_timeout: some(self.attempt_timeout),
            keepalive: some(self.h2_keepalive_interval)
                .map(|interval| crate::endpoint::KeepAlive { interval, timeout: self.h2_keepalive_timeout }),
            hedging: (!self.no_hedge).then_some(crate::outbound::Hedging {
                min_delay: self.hedge_delay_min,
                max_delay: self.hedge_delay_max,
            }),
            budget: crate::outbound::BudgetSettings {
                ratio: f32::from(self.retry_budget) / 100.0,
                min_per_second: self.retry_min_per_second,
            },
        })
    }
}
