//! `berth demo --lanes`: a lane across two services.
//!
//! Services `a` and `b` each run a `stable` and a `feature-x` instance, every app calling the
//! next through its own sidecar (`/call`); an edge sidecar sends requests to `a`, which calls
//! `b`. Each case sends the same requests and shows the path every one of them took: without
//! a lane everything stays on `stable`; a lane set at the edge (`x-berth-symbol`, or `baggage`
//! as an OpenTelemetry SDK would carry it) reaches `feature-x` of both services, even when the
//! app forwards nothing (its sidecar makes its own symbol the lane).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use berth_core::header::SYMBOL;
use http::{Method, StatusCode};

use crate::fleet::{FleetError, Proc, app_port, field};
use crate::http::Client;

/// Requests per case.
const PER_CASE: usize = 20;

/// One case: what the edge request carries, what the apps forward, the path wanted.
struct Case {
    headers: &'static [(&'static str, &'static str)],
    forward: &'static str,
    want: &'static str,
}

const CASES: [Case; 4] = [
    Case { headers: &[], forward: "baggage", want: "a-stable → b-stable" },
    Case { headers: &[(SYMBOL, "feature-x")], forward: "baggage", want: "a-feature-x → b-feature-x" },
    Case {
        headers: &[("baggage", "userId=7,berth.symbol=feature-x")],
        forward: "baggage",
        want: "a-feature-x → b-feature-x",
    },
    Case { headers: &[(SYMBOL, "feature-x")], forward: "none", want: "a-feature-x → b-feature-x" },
];

impl Case {
    /// What the edge request carries, as a header line.
    fn label(&self) -> String {
        self.headers.first().map_or_else(|| "no lane".to_owned(), |(k, v)| format!("{k}: {v}"))
    }
}

/// An app and its sidecar; the sidecar's outbound address.
struct Hop {
    _app: Proc,
    sidecar: Proc,
    outbound: SocketAddr,
    admin: SocketAddr,
}

fn failed(what: &str, detail: impl std::fmt::Display) -> FleetError {
    FleetError::Failed { what: what.to_owned(), detail: detail.to_string() }
}

async fn hop(http: &Client, registry: &str, service: &str, symbol: &str) -> Result<Hop, FleetError> {
    let name = format!("{service}-{symbol}");
    let app_args = ["sample-app", "--listen", "127.0.0.1:0", "--name", &name, "--symbol", symbol];
    let app = Proc::berth(&format!("app {name}"), &app_args.map(String::from))?;
    let port = app_port(&app).await?.to_string();
    let sidecar_args = [
        "proxy",
        "--service",
        service,
        "--symbol",
        symbol,
        "--app-port",
        &port,
        "--services",
        "a,b",
        "--inbound",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--outbound",
        "127.0.0.1:0",
        "--health-interval",
        "200ms",
        "--warmup",
        "0s",
    ];
    let sidecar =
        Proc::berth_with_registry(&format!("sidecar {name}"), &sidecar_args.map(String::from), registry)?;
    let line = sidecar.wait_line("berth proxy listening", Duration::from_secs(15)).await?;
    let (Some(outbound), Some(admin)) = (field(&line, "outbound"), field(&line, "admin")) else {
        return Err(failed(&name, format!("no addresses in {line:?}")));
    };
    let app_url = format!("http://127.0.0.1:{port}/outbound?addr={outbound}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    // The app learns its sidecar's outbound port once both are up; the sidecar is ready once
    // registered.
    while http.call(Method::POST, &app_url, &[], None).await.map(|(s, _)| s) != Ok(StatusCode::OK)
        || http.status(&format!("http://{admin}/ready")).await != Some(StatusCode::OK)
    {
        if tokio::time::Instant::now() > deadline {
            return Err(failed(&name, format!("not ready within 30s:\n{}", sidecar.tail(20))));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Hop { _app: app, sidecar, outbound, admin })
}

/// Waits until `hop`'s sidecar sees both instances of `a` and of `b`.
async fn sees_all(http: &Client, hop: &Hop) -> Result<(), FleetError> {
    let url = format!("http://{}/endpoints", hop.admin);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let doc = http.json(&url).await.unwrap_or_default();
        let count = |s: &str| doc["services"][s]["instances"].as_array().map_or(0, Vec::len);
        if count("a") == 2 && count("b") == 2 {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(failed(&hop.sidecar.name, format!("does not see a and b within 30s: {doc}")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The path one request took (`a-feature-x → b-feature-x`), or how it failed.
async fn path(http: &Client, edge: SocketAddr, case: &Case) -> String {
    let url = format!("http://{edge}/call?next=b&forward={}", case.forward);
    let mut headers = vec![("host", "a")];
    headers.extend_from_slice(case.headers);
    match http.call(Method::GET, &url, &headers, None).await {
        Ok((StatusCode::OK, body)) => {
            body.lines().filter_map(|l| l.split(' ').next()).collect::<Vec<_>>().join(" → ")
        }
        Ok((status, body)) => format!("{status}: {}", body.trim()),
        Err(e) => e,
    }
}

/// Runs the scenario; prints what each case did and returns whether every request took the
/// path its case wants.
pub async fn run(registry: Option<String>, scratch: &Path) -> Result<bool, FleetError> {
    let registry = registry.unwrap_or_else(|| format!("dir://{}", scratch.join("registry").display()));
    let http = Client::default();
    eprintln!("berth demo --lanes: services a and b, each with stable and feature-x instances; a calls b");
    let mut hops = Vec::new();
    for (service, symbol) in [("a", "stable"), ("a", "feature-x"), ("b", "stable"), ("b", "feature-x")] {
        hops.push(hop(&http, &registry, service, symbol).await?);
    }
    let edge = hop(&http, &registry, "edge", "stable").await?;
    for hop in hops.iter().chain([&edge]) {
        sees_all(&http, hop).await?;
    }
    println!("\nlanes (a → b, {PER_CASE} requests per case, sent by a stable client at the edge):");
    println!("  {:<42} {:<10} {:<32} result", "edge request carries", "apps copy", "path taken");
    let mut all_ok = true;
    for case in &CASES {
        let mut paths: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..PER_CASE {
            *paths.entry(path(&http, edge.outbound, case).await).or_default() += 1;
        }
        let ok = paths.get(case.want) == Some(&PER_CASE);
        all_ok &= ok;
        let taken: Vec<String> = paths.iter().map(|(p, n)| format!("{p} ({n})")).collect();
        let verdict = if ok { "as wanted".to_owned() } else { format!("WANTED {}", case.want) };
        println!("  {:<42} {:<10} {:<32} {verdict}", case.label(), case.forward, taken.join(", "));
    }
    drop((hops, edge));
    Ok(all_ok)
}
