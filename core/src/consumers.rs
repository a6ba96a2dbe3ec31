//! Consumer presets: drain timings long enough for the consumers a service has.
//!
//! A drain keeps serving for drain-min after the deregistration, so consumers that still call
//! the instance — registry push delay, caches — are served. berth's consumers stop at the
//! read-only signal; Nacos clients that subscribe (Dubbo, the Java, Go and Python clients) stop
//! at the push, within about a second. Spring Cloud LoadBalancer keeps a cached instance list
//! for 35 s by default (`spring.cloud.loadbalancer.cache.ttl`), so its consumers may call a
//! deregistered instance for that long after the push reached them. Each preset is a floor on
//! the injector's defaults; a pod's own `berth.io/drain-min` and `berth.io/drain-timeout` win.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Who calls a service, for its drain timings (`berth.io/consumers`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consumers {
    /// berth's consumers and Nacos clients that subscribe: drain-min 5 s, drain-timeout 30 s.
    Berth,
    /// Spring Cloud LoadBalancer with its default cache: drain-min 40 s (its 35 s cache plus the
    /// push), drain-timeout 70 s.
    SpringCloud,
}

/// What a preset may be, for messages.
pub const CONSUMERS_RULE: &str = "`berth` (berth's consumers, Nacos clients that subscribe: Dubbo, the Nacos SDKs) \
     or `spring-cloud` (Spring Cloud LoadBalancer, which caches instance lists for 35 s)";

impl Consumers {
    /// The shortest drain-min that serves every call such consumers still make.
    pub fn drain_min(self) -> Duration {
        match self {
            Consumers::Berth => crate::defaults::DRAIN_MIN,
            Consumers::SpringCloud => Duration::from_secs(40),
        }
    }

    /// The drain-timeout to go with it: the defaults' 30 s, or for a longer drain-min that
    /// plus the 30 s requests in flight may take.
    pub fn drain_timeout(self) -> Duration {
        match self {
            Consumers::Berth => crate::defaults::DRAIN_TIMEOUT,
            Consumers::SpringCloud => self.drain_min() + crate::defaults::DRAIN_TIMEOUT,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Consumers::Berth => "berth",
            Consumers::SpringCloud => "spring-cloud",
        }
    }
}

impl FromStr for Consumers {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "berth" => Ok(Consumers::Berth),
            "spring-cloud" => Ok(Consumers::SpringCloud),
            _ => Err(CONSUMERS_RULE.into()),
        }
    }
}

impl fmt::Display for Consumers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spring_clouds_preset_outlasts_its_cache_and_the_push() {
        let sc: Consumers = "spring-cloud".parse().unwrap();
        assert!(sc.drain_min() > Duration::from_secs(35 + 1), "35 s cache plus a push of about a second");
        assert!(sc.drain_timeout() > sc.drain_min());
        assert_eq!("berth".parse::<Consumers>().unwrap().drain_min(), Duration::from_secs(5));
        assert_eq!(sc.to_string(), "spring-cloud");
        assert!("java".parse::<Consumers>().unwrap_err().contains("spring-cloud"));
    }
}
