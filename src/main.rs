//! `berth`: one binary, a subcommand per program. Each hands over to its crate.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// berth makes rollouts of Nacos-registered services lossless.
#[derive(Parser, Debug)]
#[command(name = "berth", version, propagate_version = true, args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
// Parsed once at start: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Command {
    Proxy(berth_proxy::config::ProxyArgs),
    Gateway(berth_proxy::gateway::GatewayArgs),
    Injector(berth_injector::InjectorArgs),
    Inject(berth_injector::InjectArgs),
    Admin(berth_admin::AdminArgs),
    Ctl(berth_admin::ctl::CtlArgs),
    SampleApp(berth_demo::sample_app::SampleAppArgs),
    Demo(berth_demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => ExitCode::from(2),
                _ => ExitCode::from(berth_core::options::EXIT_CONFIG),
            };
        }
    };
    init_logging();
    match cli.command {
        Command::Proxy(args) => berth_proxy::main(args),
        Command::Gateway(args) => berth_proxy::gateway::main(args),
        Command::Injector(args) => berth_injector::main(args),
        Command::Inject(args) => berth_injector::inject_main(args),
        Command::Admin(args) => berth_admin::main(args),
        Command::Ctl(args) => berth_admin::ctl::main(args),
        Command::SampleApp(args) => berth_demo::sample_app::main(args),
        Command::Demo(args) => berth_demo::main(args),
    }
}

/// Logs to stderr; `BERTH_LOG` sets the filter (default `info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,nacos_sdk=off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}
