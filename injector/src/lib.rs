//! berth's injector: adds the sidecar to pods, as a mutating admission webhook
//! (`berth injector`) or offline to YAML manifests (`berth inject`).
//!
//! A request flows like this: the API server POSTs an `AdmissionReview` over HTTPS to
//! [`webhook`] (TLS from [`tls`], whose certificate is re-read when its files change); [`review`]
//! reads it with kube's types and hands the pod to [`mutate`], which decides — namespace and
//! pod opt-in, exclusions, already injected, `hostNetwork` — reads the pod's `berth.io/`
//! [`annotations`] over the [`config`] defaults, and builds a JSON Patch that adds the
//! [`sidecar`] (native or first container, probes, downward-API env, hardened security
//! context), each app container's preStop drain hook, the grace period, and the annotations.
//! [`review`] wraps the patch (or the denial, or the warning) in a response echoing the uid;
//! [`metrics`] counts every outcome. `berth inject` runs the same [`mutate`] over each pod
//! template found by [`manifests`].

pub mod annotations;
pub mod config;
pub mod manifests;
pub mod metrics;
pub mod mutate;
pub mod review;
pub mod sidecar;
pub mod tls;
pub mod webhook;

use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;

pub use config::{EXIT_CONFIG, InjectArgs, InjectConfig, InjectorArgs};

/// Exit code when the injector could not start (the port in use) or `berth inject` could not
/// inject (unreadable input, a refused manifest).
pub const EXIT_FAILURE: u8 = 1;

/// `berth injector`: validates the configuration, serves the webhook until SIGTERM or SIGINT.
pub fn main(args: InjectorArgs) -> ExitCode {
    let config = match InjectConfig::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    if args.tls_reload_interval.is_zero() {
        return config_error(&"invalid value '0s' for '--tls-reload-interval': must be longer than zero");
    }
    let certificates = match tls::Certificates::load(&args.tls_cert, &args.tls_key) {
        Ok(c) => Arc::new(c),
        Err(e) => return config_error(&format!("--tls-cert/--tls-key: {e}")),
    };
    let tls_config = match certificates.server_config() {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let metrics = metrics::Metrics::new();
    let webhook = Arc::new(webhook::Webhook { config, own_namespace: args.namespace.clone(), metrics });
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(addr = %args.listen, error = %e, "cannot listen");
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        let addr = listener.local_addr().unwrap_or(args.listen);
        tracing::info!(
            addr = %addr, native_sidecar = webhook.config.native_sidecar, image = %webhook.config.image,
            namespace = args.namespace.as_deref().unwrap_or(""), "berth injector listening"
        );
        tokio::spawn(certificates.watch(args.tls_reload_interval, webhook.metrics.clone()));
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config));
        webhook::serve(listener, acceptor, webhook, shutdown_signal()).await;
        tracing::info!("berth injector stopped");
        ExitCode::SUCCESS
    })
}

/// `berth inject`: reads the manifests, writes them injected to stdout, notes to stderr.
pub fn inject_main(args: InjectArgs) -> ExitCode {
    let config = match InjectConfig::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    let mut input = String::new();
    let read = if args.file.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut input).map(drop)
    } else {
        std::fs::read_to_string(&args.file).map(|s| input = s)
    };
    if let Err(e) = read {
        eprintln!("error: cannot read {}: {e}", args.file.display());
        return ExitCode::from(EXIT_FAILURE);
    }
    let mut token_error = None;
    let token = || {
        sidecar::DrainToken::random().unwrap_or_else(|e| {
            token_error = Some(e);
            sidecar::DrainToken::fixed("")
        })
    };
    let result = manifests::inject(&input, &config, token);
    if let Some(e) = token_error {
        eprintln!("error: cannot make a drain token: {e}");
        return ExitCode::from(EXIT_FAILURE);
    }
    match result {
        Ok(injected) => {
            for note in &injected.notes {
                eprintln!("berth inject: {note}");
            }
            print!("{}", injected.yaml);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}: {e}", args.file.display());
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn config_error(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(EXIT_CONFIG)
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let signal = berth_core::shutdown::requested().await;
    tracing::info!(signal, "shutting down");
}
