//! Configuration: every bad input exits 64 naming the option; flags beat the environment,
//! which beats the file, which beats defaults.

use crate::support::{App, Sidecar, berth, client, dir_registry};

fn proxy_fails(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = berth();
    cmd.arg("proxy").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
    stderr
}

#[test]
fn bad_configuration_exits_64_naming_the_option() {
    let ok = ["--service", "s", "--app-port", "8080", "--registry", "dir:///tmp/berth-test-unused"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut v: Vec<&str> = ok.to_vec();
        v.extend_from_slice(extra);
        v
    };
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (vec!["--app-port", "8080"], "--service", "name the app's service"),
        (vec!["--service", "s"], "--app-port", "127.0.0.1"),
        (with(&["--app-port", "0"]), "--app-port", "0"),
        (with(&["--app-port", "70000"]), "--app-port", "70000"),
        (with(&["--app-health", "http:nope"]), "--app-health", "http:/path"),
        (with(&["--dependency", "db:5432"]), "--dependency", "tcp://host:port"),
        (with(&["--registry", "http://nacos:8848"]), "--registry", "nacos://"),
        (with(&["--drain-min", "soon"]), "--drain-min", "duration"),
        (
            with(&["--drain-min", "30s", "--drain-timeout", "10s"]),
            "--drain-timeout",
            "longer than --drain-min",
        ),
        (with(&["--symbol", "Canary"]), "--symbol", "lower-case"),
        (with(&["--inbound", "0.0.0.0:9000", "--admin", "127.0.0.1:9000"]), "--admin", "inbound port"),
        (with(&["--inbound", "0.0.0.0:8080"]), "--inbound", "app's port"),
        (with(&["--advertise", "0.0.0.0:1"]), "--advertise", "concrete"),
        (with(&["--drain-token", "short"]), "--drain-token", "16 characters"),
        (with(&["--healthy-threshold", "0"]), "--healthy-threshold", "0"),
        (with(&["--workers", "0"]), "--workers", "0"),
        (with(&["--service", "bad/name"]), "--service", "service name"),
        (with(&["--no-such-flag"]), "--no-such-flag", ""),
    ];
    for (args, option, allowed) in cases {
        let err = proxy_fails(&args, &[]);
        assert!(
            err.contains(option) && err.contains(allowed),
            "{args:?}: expected {option} and {allowed:?} in: {err}"
        );
    }
    let err = proxy_fails(&with(&[]), &[("POD_IP", "not-an-ip")]);
    assert!(err.contains("POD_IP") && err.contains("not-an-ip"), "{err}");
    let err = proxy_fails(&ok, &[("BERTH_WARMUP", "forever")]);
    assert!(err.contains("--warmup") && err.contains("forever"), "{err}");
}

#[test]
fn a_bad_config_file_exits_64_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.toml");
    for (content, expect) in [
        ("service = \"s\"\ncolour = \"red\"\n", "unknown key `colour`"),
        ("service = \"s\"\ndrain-quiet = \"x\"\n", "--drain-quiet"),
        ("service = [\n", "berth.toml"),
        ("service = \"s\"\ndrain-min = { a = 1 }\n", "drain-min"),
    ] {
        std::fs::write(&path, content).unwrap();
        let err = proxy_fails(&["--config", path.to_str().unwrap(), "--app-port", "8080"], &[]);
        assert!(err.contains(expect), "{content:?}: expected {expect:?} in: {err}");
    }
    let err = proxy_fails(&["--config", "/nonexistent/berth.toml", "--app-port", "1"], &[]);
    assert!(err.contains("/nonexistent/berth.toml") && err.contains("cannot read"), "{err}");
}

#[test]
fn help_documents_every_flag_and_exits_zero() {
    let out = berth().args(["proxy", "--help"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--service",
        "--symbol",
        "--app-port",
        "--app-protocol",
        "--app-health",
        "--dependency",
        "--inbound",
        "--admin",
        "--advertise",
        "--registry",
        "--register-delay",
        "--warmup",
        "--drain-min",
        "--drain-quiet",
        "--drain-timeout",
        "--drain-token",
        "--app-max-connections",
        "--app-max-connecting",
        "--app-queue-timeout",
        "--app-request-timeout",
        "BERTH_SERVICE",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

/// `berth proxy`'s options table in README.md: flag, then default as written there.
fn readme_proxy_options() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split("## `berth proxy`").nth(1).unwrap();
    let table = section.split("| option | default | what |").nth(1).unwrap();
    table
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let flag = cells[1].trim_matches('`').split(' ').next().unwrap().to_string();
            (flag, cells[2].to_string())
        })
        .collect()
}

/// Each flag of `berth proxy --help` with the text of its entry.
fn help_entries(help: &str) -> Vec<(String, String)> {
    let mut entries: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let t = line.trim_start();
        let flag = t.strip_prefix("-h, ").or_else(|| t.strip_prefix("-V, ")).unwrap_or(t);
        if line.starts_with("  ") && flag.starts_with("--") {
            let name = flag.split([' ', '=']).next().unwrap().to_string();
            entries.push((name, String::new()));
        } else if let Some((_, text)) = entries.last_mut() {
            text.push_str(t);
            text.push(' ');
        }
    }
    entries
}

#[test]
fn the_readme_documents_every_flag_of_help_with_its_default() {
    let out = berth().args(["proxy", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let readme = readme_proxy_options();
    let helped = help_entries(&help);
    assert!(helped.len() > 30, "--help parsed into {} flags:\n{help}", helped.len());
    for (flag, text) in &helped {
        if flag == "--help" || flag == "--version" {
            continue;
        }
        let Some((_, documented)) = readme.iter().find(|(f, _)| f == flag) else {
            panic!("README's `berth proxy` options table lacks {flag}");
        };
        // A default written as code in the README is the one clap applies.
        if let Some(value) = documented.strip_prefix('`').and_then(|d| d.strip_suffix('`')) {
            assert!(
                text.contains(&format!("[default: {value}]")),
                "README says {flag} defaults to {value}; --help says: {text}"
            );
        }
    }
    for (flag, _) in &readme {
        assert!(helped.iter().any(|(f, _)| f == flag), "README documents {flag}, which --help lacks");
    }
}

async fn symbol_of(file_symbol: &str, env: Option<&str>, flag: Option<&str>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start("precedence").await;
    let path = dir.path().join("berth.toml");
    std::fs::write(
        &path,
        format!(
            "service = \"from-file\"\napp-port = {}\nsymbol = \"{file_symbol}\"\nregistry = \"{}\"\ninbound = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n",
            app.addr.port(),
            dir_registry(&dir)
        ),
    )
    .unwrap();
    let mut cmd = berth();
    cmd.args(["proxy", "--config", path.to_str().unwrap()]);
    if let Some(e) = env {
        cmd.env("BERTH_SYMBOL", e);
    }
    if let Some(f) = flag {
        cmd.args(["--symbol", f]);
    }
    let sidecar = Sidecar::spawn("precedence", cmd).await;
    let state: serde_json::Value =
        client().get(sidecar.admin_url("/state")).send().await.unwrap().json().await.unwrap();
    assert_eq!(state["service"], "from-file");
    state["symbol"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn flags_beat_environment_beats_file() {
    assert_eq!(symbol_of("canary", None, None).await, "canary");
    assert_eq!(symbol_of("canary", Some("blue"), None).await, "blue");
    assert_eq!(symbol_of("canary", Some("blue"), Some("green")).await, "green");
}

/// Variables that hold credentials, each with a value that must never be printed.
const SECRETS: [(&str, &str); 8] = [
    ("BERTH_REGISTRY", "nacos://berth:leak-1-registry@127.0.0.1:8848"),
    ("BERTH_DRAIN_TOKEN", "leak-2-drain-token-0123456789"),
    ("BERTH_TOKEN", "leak-3-admin-token-0123456789"),
    ("BERTH_DEPENDENCY", "http://user:leak-4-dependency@127.0.0.1:1/healthz"),
    ("BERTH_SERVER", "https://user:leak-5-server@127.0.0.1:15080"),
    ("BERTH_WEBHOOK_SECRET", "leak-6-webhook-secret-0123456789"),
    ("BERTH_WEBHOOK", "https://hooks:leak-7-webhook@127.0.0.1:1/events"),
    ("BERTH_PROMETHEUS", "http://user:leak-8-prometheus@127.0.0.1:9090/"),
];

#[test]
fn help_never_prints_a_credential_from_the_environment() {
    for sub in ["proxy", "admin", "ctl", "injector", "inject", "demo", "sample-app"] {
        let mut cmd = berth();
        cmd.args([sub, "--help"]).envs(SECRETS);
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{sub} --help");
        let printed =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!printed.contains("leak-"), "berth {sub} --help printed a credential:\n{printed}");
        if sub == "proxy" {
            // Still says where each option can come from.
            for (var, _) in &SECRETS[..2] {
                assert!(printed.contains(&format!("[env: {var}]")), "{var} in:\n{printed}");
            }
        }
    }
}

#[test]
fn a_bad_url_is_refused_without_printing_its_password() {
    let err = proxy_fails(
        &["--service", "s", "--app-port", "8080"],
        &[("BERTH_REGISTRY", "nacos://berth:leak-6-password@127.0.0.1:notaport")],
    );
    assert!(err.contains("--registry") && err.contains("notaport"), "{err}");
    assert!(!err.contains("leak-6"), "the error printed the password: {err}");
    let err = proxy_fails(
        &["--service", "s", "--app-port", "8080", "--registry", "dir:///tmp/berth-test-unused"],
        &[("BERTH_DEPENDENCY", "http://user:leak-7-password@db/nope")],
    );
    assert!(err.contains("--dependency"), "{err}");
    assert!(!err.contains("leak-7"), "the error printed the password: {err}");
    let out = berth()
        .args(["admin", "--registry", "nacos://berth:leak-8-password@127.0.0.1:notaport"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("--registry") && !err.contains("leak-8"), "{err}");
    let out = berth()
        .args(["demo", "--registry", "nacos://berth:leak-9-password@127.0.0.1:notaport"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("--registry") && err.contains("berth:***@") && !err.contains("leak-9"), "{err}");
}
