//! Option values every berth program parses the same way: durations, service names, and the
//! exit code for bad configuration.

use std::time::Duration;

/// Exit code of every berth program for bad configuration (EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;

/// Parses a human duration: `500ms`, `5s`, `1m30s`.
pub fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e}; expected a duration such as 500ms, 5s or 1m"))
}

/// Checks a service name (the sidecar's `--service`, the injector's `berth.io/service`).
pub fn service_name(s: &str) -> Result<String, String> {
    if crate::registry::is_service_name(s) {
        Ok(s.to_owned())
    } else {
        Err(crate::registry::SERVICE_NAME_RULE.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_human_and_errors_say_what_is_expected() {
        assert_eq!(duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        let err = duration("soon").unwrap_err();
        assert!(err.contains("expected a duration such as 500ms"), "{err}");
    }

    #[test]
    fn service_names_follow_the_rule() {
        assert_eq!(service_name("user-service").as_deref(), Ok("user-service"));
        for bad in ["", ".hidden", "a b", &"x".repeat(129)] {
            assert_eq!(service_name(bad), Err(crate::registry::SERVICE_NAME_RULE.to_owned()), "{bad:?}");
        }
    }
}
