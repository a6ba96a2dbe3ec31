use std::time::Duration;

use serde_json::json;

use super::*;

fn pod(annotations: serde_json::Value, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "annotations": annotations, "labels": labels },
        "spec": { "containers": [
            { "name": "app", "ports": [{ "name": "web", "containerPort": 8080 }, { "name": "admin", "containerPort": 9000 }] },
        ]},
    }))
    .unwrap()
}

fn read(annotations: serde_json::Value) -> Result<PodSettings, AnnotationError> {
    PodSettings::read(&pod(annotations, json!({ "app": "shop" })), &InjectConfig::default())
}

#[test]
fn defaults_come_from_labels_the_first_port_and_the_config() {
    let s = read(json!({})).unwrap();
    assert_eq!(s.service, "shop");
    assert_eq!(s.symbol.as_str(), "stable");
    assert_eq!(s.app_port, 8080);
    assert_eq!(s.app_health, AppHealth::Tcp);
    assert!(s.dependencies.is_empty() && !s.http_proxy);
    let d = InjectConfig::default().defaults;
    assert_eq!((s.drain_min, s.drain_quiet, s.drain_timeout), (d.drain_min, d.drain_quiet, d.drain_timeout));
    assert_eq!((s.register_delay, s.warmup), (d.register_delay, d.warmup));
    assert_eq!(s.grace_period_seconds(&InjectConfig::default()), 5 + 30 + 5);
    let named = PodSettings::read(
        &pod(
            json!({}),
            json!({ "app": "x", "app.kubernetes.io/name": "y", "app.kubernetes.io/version": "1.2" }),
        ),
        &InjectConfig::default(),
    )
    .unwrap();
    assert_eq!((named.service.as_str(), named.app_version.as_deref()), ("y", Some("1.2")));
}

#[test]
fn each_annotation_sets_its_setting() {
    let s = read(json!({
        SERVICE: "orders", SYMBOL: "canary", APP_PORT: "admin", APP_HEALTH: "http:/healthz",
        DEPENDENCIES: "tcp://db:5432,http://cache:80/ping", REGISTER_DELAY: "3s", WARMUP: "2m",
        DRAIN_MIN: "7s", DRAIN_QUIET: "500ms", DRAIN_TIMEOUT: "1m", HTTP_PROXY: "true",
        CLUSTER: "zone-a",
    }))
    .unwrap();
    assert_eq!(s.service, "orders");
    assert_eq!(s.symbol.as_str(), "canary");
    assert_eq!(s.app_port, 9000, "a port name is looked up among the container ports");
    assert_eq!(s.app_health, AppHealth::Http { path: "/healthz".into() });
    assert_eq!(
        s.dependencies.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["tcp://db:5432", "http://cache:80/ping"]
    );
    assert_eq!(s.register_delay, Duration::from_secs(3));
    assert_eq!(s.warmup, Duration::from_secs(120));
    assert_eq!(s.drain_min, Duration::from_secs(7));
    assert_eq!(s.drain_quiet, Duration::from_millis(500));
    assert_eq!(s.drain_timeout, Duration::from_secs(60));
    assert!(s.http_proxy);
    assert_eq!(s.cluster.as_deref(), Some("zone-a"));
    assert_eq!(read(json!({})).unwrap().cluster, None, "the sidecar's default");
    assert_eq!(read(json!({ APP_PORT: "9000" })).unwrap().app_port, 9000);
    assert!(!read(json!({ HTTP_PROXY: "false" })).unwrap().http_proxy);
    let margin = InjectConfig { grace_period_margin: Duration::from_millis(1500), ..Default::default() };
    assert_eq!(s.grace_period_seconds(&margin), 7 + 60 + 2, "rounded up to whole seconds");
}

#[test]
fn bad_values_name_the_annotation_and_what_is_allowed() {
    let cases = [
        (json!({ SERVICE: "bad/name" }), SERVICE, "service name"),
        (json!({ SYMBOL: "Canary" }), SYMBOL, "lower-case"),
        (json!({ APP_PORT: "nope" }), APP_PORT, "name of a container port"),
        (json!({ APP_PORT: "15020" }), APP_PORT, "other than the sidecar's"),
        (json!({ APP_HEALTH: "http:healthz" }), APP_HEALTH, "http:/path"),
        (json!({ DEPENDENCIES: "tcp://db:5432,db" }), DEPENDENCIES, "tcp://host:port"),
        (json!({ REGISTER_DELAY: "later" }), REGISTER_DELAY, "duration"),
        (json!({ WARMUP: "-1s" }), WARMUP, "duration"),
        (json!({ DRAIN_MIN: "soon" }), DRAIN_MIN, "duration"),
        (json!({ DRAIN_QUIET: "0s" }), DRAIN_QUIET, "longer than zero"),
        (json!({ DRAIN_TIMEOUT: "3s" }), DRAIN_TIMEOUT, "longer than drain-min"),
        (json!({ HTTP_PROXY: "yes" }), HTTP_PROXY, "`true` or `false`"),
        (json!({ CONSUMERS: "java" }), CONSUMERS, "`spring-cloud`"),
        (json!({ CLUSTER: "zone_a" }), CLUSTER, "letters, digits or `-`"),
        (
            json!({ CONSUMERS: "spring-cloud", DRAIN_TIMEOUT: "30s" }),
            DRAIN_TIMEOUT,
            "longer than drain-min (40s)",
        ),
    ];
    for (annotations, key, allowed) in cases {
        let err = read(annotations.clone()).unwrap_err();
        assert_eq!(err.key, key, "{annotations}");
        assert!(err.to_string().contains(allowed), "{annotations}: {err}");
    }
    let no_service = PodSettings::read(&pod(json!({}), json!({})), &InjectConfig::default()).unwrap_err();
    assert_eq!(no_service.key, SERVICE);
    assert!(no_service.to_string().contains("app.kubernetes.io/name"), "{no_service}");
}

#[test]
fn a_pod_without_ports_must_name_its_app_port() {
    let portless: Pod = serde_json::from_value(
        json!({ "metadata": { "labels": { "app": "a" } }, "spec": { "containers": [{ "name": "a" }] } }),
    )
    .unwrap();
    let err = PodSettings::read(&portless, &InjectConfig::default()).unwrap_err();
    assert_eq!(err.key, APP_PORT);
    assert!(err.to_string().contains("set berth.io/app-port"), "{err}");
}

#[test]
fn opt_in_reads_enabled_and_disabled_only() {
    let with = |v: &str| opt_in(&pod(json!({ INJECT: v }), json!({})));
    assert_eq!(with("enabled"), Ok(OptIn::Enabled));
    assert_eq!(with("disabled"), Ok(OptIn::Disabled));
    assert_eq!(opt_in(&pod(json!({}), json!({}))), Ok(OptIn::Unset));
    assert!(with("true").unwrap_err().to_string().contains("`enabled` or `disabled`"));
    assert_eq!(ALL.len(), 14);
}

#[test]
fn a_consumers_preset_raises_the_drain_and_the_grace_period_under_the_pods_own_annotations() {
    let sc = read(json!({ CONSUMERS: "spring-cloud" })).unwrap();
    assert_eq!((sc.drain_min, sc.drain_timeout), (Duration::from_secs(40), Duration::from_secs(70)));
    assert_eq!(sc.grace_period_seconds(&InjectConfig::default()), 40 + 70 + 5);
    let berth = read(json!({ CONSUMERS: "berth" })).unwrap();
    assert_eq!(berth, read(json!({})).unwrap(), "the default preset is the defaults");
    let own = read(json!({ CONSUMERS: "spring-cloud", DRAIN_MIN: "50s" })).unwrap();
    assert_eq!((own.drain_min, own.drain_timeout), (Duration::from_secs(50), Duration::from_secs(70)));
    // A floor: longer configured defaults stay.
    let long = InjectConfig {
        defaults: crate::config::Defaults {
            drain_min: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(120),
            ..Default::default()
        },
        ..Default::default()
    };
    let kept = PodSettings::read(&pod(json!({ CONSUMERS: "spring-cloud" }), json!({ "app": "shop" })), &long)
        .unwrap();
    assert_eq!((kept.drain_min, kept.drain_timeout), (Duration::from_secs(60), Duration::from_secs(120)));
}
