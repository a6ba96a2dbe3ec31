//! The sidecar's configuration in-process: defaults, a file under flags, and every check that
//! `validate` makes. The environment's place between them (it cannot be set safely in a
//! threaded test) is tested through real processes in `tests/it/config.rs`.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use super::*;

/// What `berth proxy ARGS` gives: parsed, the file applied, validated.
fn load(args: &[&str]) -> Result<Config, ConfigError> {
    let raw: Vec<OsString> = args.iter().map(OsString::from).collect();
    let argv = std::iter::once(OsString::from("berth proxy")).chain(raw.iter().cloned());
    Standalone::try_parse_from(argv)?.args.with_config_file(&raw)?.validate()
}

/// The smallest valid command line, plus `extra`.
fn with(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["--service", "orders", "--app-port", "8080", "--registry", "dir:///tmp/unused"]
        .map(str::to_owned)
        .to_vec();
    v.extend(extra.iter().map(|s| (*s).to_owned()));
    v
}

fn load_with(extra: &[&str]) -> Result<Config, ConfigError> {
    let args = with(extra);
    load(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn defaults_are_the_documented_ones() {
    let c = load(&["--service", "orders", "--app-port", "8080"]).unwrap();
    assert_eq!(c.service, "orders");
    assert_eq!(c.symbol.as_str(), "stable");
    assert_eq!(c.app, addr("127.0.0.1:8080"));
    assert_eq!(c.app_protocol, AppProtocol::Http1);
    assert_eq!(c.app_health.to_string(), "tcp");
    assert_eq!(c.app_version, berth_core::VERSION);
    assert!(c.dependencies.is_empty());
    let s = Duration::from_secs;
    assert_eq!(
        c.health,
        HealthTiming { interval: s(1), timeout: s(1), healthy_threshold: 1, unhealthy_threshold: 3 }
    );
    assert_eq!(c.inbound, addr("0.0.0.0:15006"));
    assert_eq!(c.admin, addr("0.0.0.0:15020"));
    assert_eq!(c.outbound, addr("127.0.0.1:15001"));
    assert_eq!(
        c.timing,
        Timing {
            register_delay: Duration::ZERO,
            warmup: s(30),
            drain_min: s(5),
            drain_quiet: s(1),
            drain_timeout: s(30)
        }
    );
    assert!(c.drain_token.is_none() && c.services.is_empty() && c.lifecycle);
    assert_eq!(c.workers, 1);
    let o = &c.outbound_settings;
    assert_eq!((o.connect_timeout, o.request_timeout), (s(1), Some(s(30))));
    assert_eq!((o.ejection.after, o.ejection.base), (2, s(5)));
    assert!(o.failover);
    // No registry given: a directory under the user's data directory.
    assert!(matches!(c.registry, RegistryUrl::Dir(_)), "{}", c.registry);
}

#[test]
fn flags_set_every_option() {
    let c = load_with(&[
        "--symbol=canary",
        "--app-protocol=h2c",
        "--app-health=http:/healthz",
        "--app-version=7.1",
        "--dependency=tcp://db:5432",
        "--dependency=http://cache:80/ping",
        "--health-interval=250ms",
        "--healthy-threshold=2",
        "--unhealthy-threshold=5",
        "--inbound=127.0.0.1:7000",
        "--admin=127.0.0.1:7001",
        "--outbound=127.0.0.1:7002",
        "--advertise=10.0.0.9:7000",
        "--register-delay=2s",
        "--warmup=1m",
        "--drain-min=10s",
        "--drain-quiet=2s",
        "--drain-timeout=1m30s",
        "--drain-token=0123456789abcdef",
        "--services=users,billing",
        "--connect-timeout=200ms",
        "--request-timeout=0s",
        "--eject-after=4",
        "--eject-for=1s",
        "--workers=2",
        "--no-lifecycle",
    ])
    .unwrap();
    assert_eq!(
        (c.symbol.as_str(), c.app_protocol, c.app_version.as_str()),
        ("canary", AppProtocol::H2c, "7.1")
    );
    assert_eq!(c.app_health.to_string(), "http:/healthz");
    assert_eq!(c.dependencies.len(), 2);
    assert_eq!(
        (c.health.interval, c.health.healthy_threshold, c.health.unhealthy_threshold),
        (Duration::from_millis(250), 2, 5)
    );
    assert_eq!(
        (c.inbound, c.admin, c.outbound),
        (addr("127.0.0.1:7000"), addr("127.0.0.1:7001"), addr("127.0.0.1:7002"))
    );
    assert_eq!(c.advertise, addr("10.0.0.9:7000"));
    assert_eq!(c.timing.drain_timeout, Duration::from_secs(90));
    assert_eq!(c.drain_token, Some(DrainToken("0123456789abcdef".into())));
    assert_eq!(c.services, ["users", "billing"]);
    assert_eq!(c.outbound_settings.request_timeout, None, "0s is no limit");
    assert_eq!(c.workers, 2);
    assert!(!c.lifecycle && !c.outbound_settings.failover);
}

#[test]
fn a_file_sets_what_flags_leave_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.toml");
    std::fs::write(
        &path,
        "service = \"from-file\"\napp-port = 9000\nsymbol = \"canary\"\ndrain-min = \"10s\"\n\
         drain-timeout = \"1m\"\ndependency = [\"tcp://db:5432\", \"tcp://mq:5672\"]\nno-lifecycle = true\n",
    )
    .unwrap();
    let file = path.to_str().unwrap();
    let from_file = load(&["--config", file]).unwrap();
    assert_eq!((from_file.service.as_str(), from_file.symbol.as_str()), ("from-file", "canary"));
    assert_eq!(from_file.app.port(), 9000);
    assert_eq!(from_file.timing.drain_min, Duration::from_secs(10));
    assert_eq!(from_file.dependencies.len(), 2);
    assert!(!from_file.lifecycle, "a switch set in the file");
    // Defaults still fill what neither sets.
    assert_eq!(from_file.timing.drain_quiet, Duration::from_secs(1));

    let flags =
        load(&["--config", file, "--symbol", "blue", "--drain-min=20s", "--app-port", "9001"]).unwrap();
    assert_eq!((flags.service.as_str(), flags.symbol.as_str()), ("from-file", "blue"));
    assert_eq!((flags.app.port(), flags.timing.drain_min), (9001, Duration::from_secs(20)));
    assert_eq!(
        flags.timing.drain_timeout,
        Duration::from_secs(60),
        "the file's, under a flag it does not clash with"
    );
}

#[test]
fn a_bad_file_names_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.toml");
    for (content, expect) in [
        ("service = \"s\"\ncolour = \"red\"\n", "unknown key `colour`"),
        ("service = \"s\"\nconfig = \"other.toml\"\n", "unknown key `config`"),
        ("service = \"s\"\ndrain-min = { a = 1 }\n", "`drain-min` must be a string or a number"),
        ("service = \"s\"\nno-lifecycle = \"yes\"\n", "`no-lifecycle` must be true or false"),
        ("service = [\n", "berth.toml"),
    ] {
        std::fs::write(&path, content).unwrap();
        let err = load(&["--config", path.to_str().unwrap(), "--app-port", "1"]).unwrap_err();
        assert!(matches!(err, ConfigError::File { .. }), "{content:?}: {err:?}");
        let err = err.to_string();
        assert!(err.contains(expect) && err.contains("berth.toml"), "{content:?}: {err}");
    }
    std::fs::write(&path, "service = \"s\"\ndrain-quiet = \"soon\"\n").unwrap();
    let err = load(&["--config", path.to_str().unwrap(), "--app-port", "1"]).unwrap_err().to_string();
    assert!(err.contains("--drain-quiet") && err.contains("soon"), "{err}");
    let err = load(&["--config", "/nonexistent/berth.toml"]).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/berth.toml") && err.contains("cannot read"), "{err}");
}

#[test]
fn every_check_names_its_option_and_what_is_allowed() {
    for (extra, option, allowed) in [
        (&["--admin", "127.0.0.1:15006", "--inbound", "0.0.0.0:15006"][..], "--admin", "inbound port"),
        (&["--inbound", "0.0.0.0:8080"], "--inbound", "app's port 8080"),
        (&["--admin", "127.0.0.1:8080"], "--admin", "app's port 8080"),
        (&["--outbound", "127.0.0.1:8080"], "--outbound", "app's port 8080"),
        (&["--outbound", "127.0.0.1:15006"], "--outbound", "inbound or admin port"),
        (&["--outbound", "127.0.0.1:15020"], "--outbound", "inbound or admin port"),
        (&["--advertise", "0.0.0.0:80"], "--advertise", "concrete"),
        (&["--advertise", "10.0.0.1:0"], "--advertise", "concrete"),
        (&["--drain-min", "30s"], "--drain-timeout", "longer than --drain-min (30s)"),
        (&["--drain-quiet", "0s"], "--drain-quiet", "longer than zero"),
        (&["--connect-timeout", "0s"], "--connect-timeout", "longer than zero"),
        (&["--health-interval", "0s"], "--health-interval", "longer than zero"),
        (&["--health-timeout", "0s"], "--health-timeout", "longer than zero"),
        (&["--drain-token", "0123456789abcde"], "--drain-token", "at least 16 characters"),
    ] {
        let err = load_with(extra).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { .. }), "{extra:?}: {err:?}");
        let err = err.to_string();
        assert!(
            err.contains(option) && err.contains(allowed),
            "{extra:?}: expected {option}, {allowed:?} in {err}"
        );
    }
    // A short token is never echoed.
    let err = load_with(&["--drain-token", "s3cret"]).unwrap_err().to_string();
    assert!(!err.contains("s3cret"), "{err}");
    // Ports that differ only by address family or host do not clash unless they overlap.
    load_with(&["--inbound", "127.0.0.1:9000", "--admin", "127.0.0.2:9000"]).unwrap();
    load_with(&["--inbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--outbound", "127.0.0.1:0"]).unwrap();
}

#[test]
fn missing_service_or_app_port_says_how_to_give_it() {
    let err = load(&["--app-port", "8080"]).unwrap_err();
    assert!(matches!(&err, ConfigError::Missing { option, .. } if option == "--service"), "{err:?}");
    assert!(err.to_string().contains("BERTH_SERVICE"), "{err}");
    let err = load(&["--service", "orders"]).unwrap_err();
    assert!(matches!(&err, ConfigError::Missing { option, .. } if option == "--app-port"), "{err:?}");
}

#[test]
fn bad_values_are_refused_by_the_parser_naming_the_flag() {
    for (extra, option) in [
        (&["--app-port", "0"][..], "--app-port"),
        (&["--app-port", "65536"], "--app-port"),
        (&["--symbol", "Canary"], "--symbol"),
        (&["--app-protocol", "h3"], "--app-protocol"),
        (&["--app-health", "http:healthz"], "--app-health"),
        (&["--dependency", "db:5432"], "--dependency"),
        (&["--registry", "http://nacos:8848"], "--registry"),
        (&["--warmup", "forever"], "--warmup"),
        (&["--healthy-threshold", "0"], "--healthy-threshold"),
        (&["--unhealthy-threshold", "0"], "--unhealthy-threshold"),
        (&["--eject-after", "0"], "--eject-after"),
        (&["--workers", "0"], "--workers"),
        (&["--workers", "257"], "--workers"),
        (&["--services", "bad/name"], "--services"),
        (&["--inbound", "localhost:80"], "--inbound"),
    ] {
        let err = load_with(extra).unwrap_err();
        assert!(matches!(err, ConfigError::Clap(_)), "{extra:?}: {err:?}");
        assert!(err.to_string().contains(option), "{extra:?}: {err}");
    }
    assert_eq!(EXIT_CONFIG, 64, "EX_USAGE");
}

#[test]
fn url_passwords_are_found_and_never_echoed() {
    assert_eq!(password_of("nacos://berth:pw@nacos:8848"), Some("pw"));
    assert_eq!(password_of("nacos://berth:p@ss@nacos:8848?namespace=x"), Some("p@ss"));
    assert_eq!(password_of("nacos://berth@nacos:8848"), None);
    assert_eq!(password_of("nacos://nacos:8848/a@b"), None, "an @ in the path is not userinfo");
    assert_eq!(password_of("dir:///tmp/x"), None);
    let err = load_with(&["--registry", "nacos://berth:leaky-pw@nacos:port"]).unwrap_err().to_string();
    assert!(
        err.contains("--registry") && err.contains("berth:***@nacos:port") && !err.contains("leaky-pw"),
        "{err}"
    );
}

#[test]
fn registration_for_consumers_without_a_sidecar_defaults_to_policy_weights_and_the_symbol_as_version_and_hint()
 {
    let c = load_with(&[]).unwrap();
    assert_eq!(c.nacos_weight, crate::weight::Settings { follow_policy: true, scale: 1.0 });
    assert_eq!(c.symbol_metadata, ["version", "hint"]);
    assert_eq!(c.cluster, "DEFAULT");
    let c = load_with(&[
        "--nacos-weight",
        "fixed",
        "--nacos-weight-scale",
        "100",
        "--symbol-metadata",
        "lane,lane,",
        "--cluster",
        "zone-a",
    ])
    .unwrap();
    assert_eq!(c.nacos_weight, crate::weight::Settings { follow_policy: false, scale: 100.0 });
    assert_eq!((c.symbol_metadata.as_slice(), c.cluster.as_str()), (&["lane".to_owned()][..], "zone-a"));
    assert!(load_with(&["--symbol-metadata", ""]).unwrap().symbol_metadata.is_empty(), "empty: none");
    // --no-lifecycle is a plain registry client: weight 1.
    assert!(!load_with(&["--no-lifecycle"]).unwrap().nacos_weight.follow_policy);
}
