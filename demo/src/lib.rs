//! berth's demo and its sample app.
//!
//! [`sample_app`] is a small HTTP/1.1 and HTTP/2 (h2c) server with the routes a rollout needs
//! to be observed. [`rollout`] is `berth demo`: it starts a service of sample apps behind
//! sidecars ([`fleet`]), a consumer under steady load ([`load`]) and `berth admin`, runs a
//! scripted rollout, and prints what happened ([`report`]).

pub mod fleet;
pub mod http;
pub mod lanes;
pub mod load;
pub mod report;
pub mod rollout;
pub mod sample_app;

use std::process::ExitCode;

pub use rollout::DemoArgs;

/// The runtime `berth demo` and `berth sample-app` run on; the error is reported.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

/// `berth demo`: exit 0 only when no request failed.
pub fn main(args: DemoArgs) -> ExitCode {
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let scratch = std::env::temp_dir().join(format!("berth-demo-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&scratch) {
        eprintln!("error: cannot create {}: {e}", scratch.display());
        return ExitCode::FAILURE;
    }
    if args.lanes {
        return lanes_main(&runtime, args.registry, &scratch);
    }
    let json = args.json;
    let outcome = runtime.block_on(async {
        tokio::select! {
            r = rollout::run(args, scratch.clone()) => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    // Every process of the demo is killed as its handle drops; wait for that before cleaning up.
    drop(runtime);
    let _ = std::fs::remove_dir_all(&scratch);
    match outcome {
        None => {
            eprintln!("interrupted");
            ExitCode::from(130)
        }
        Some(Err(e)) => {
            eprintln!("error: the demo could not run: {e}");
            ExitCode::FAILURE
        }
        Some(Ok(summary)) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
            } else {
                print!("{}", report::summary(&summary));
            }
            if summary.failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
    }
}

/// `berth demo --lanes`: exit 0 only when every request took the path its case wants.
fn lanes_main(
    runtime: &tokio::runtime::Runtime,
    registry: Option<String>,
    scratch: &std::path::Path,
) -> ExitCode {
    let outcome = runtime.block_on(async {
        tokio::select! {
            r = lanes::run(registry, scratch) => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    let _ = std::fs::remove_dir_all(scratch);
    match outcome {
        None => ExitCode::from(130),
        Some(Err(e)) => {
            eprintln!("error: the demo could not run: {e}");
            ExitCode::FAILURE
        }
        Some(Ok(true)) => ExitCode::SUCCESS,
        Some(Ok(false)) => ExitCode::from(1),
    }
}
