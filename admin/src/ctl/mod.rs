//! `berth ctl`: the admin API from the command line.
//!
//! Each command is one API call ([`client`]); its answer is printed as a table for people
//! ([`output`]) or, with `-o json`, as the API's JSON for scripts. Exit codes: `0` done, `1`
//! the API refused (the message shows its `error` and `detail`) or could not be reached (the
//! message names the server), `64` bad usage (arguments, an unreadable input file).

pub mod client;
pub mod output;
pub mod wait;

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use berth_core::Symbol;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use self::client::{Client, CtlError};

/// Exit code when the API refused or could not be reached.
pub const EXIT_FAILED: u8 = 1;
/// Exit code for bad usage.
pub const EXIT_USAGE: u8 = 64;

/// `berth ctl`: the admin API's command-line client.
#[derive(Debug, Clone, Args)]
#[command(
    about = "Call the admin API: services, weights, rules, symbols, promote, roll back, retire (--wait: until applied)"
)]
pub struct CtlArgs {
    /// The admin API's base URL.
    #[arg(
        long,
        env = "BERTH_SERVER",
        value_name = "URL",
        default_value = "http://127.0.0.1:15080",
        hide_env_values = true,
        global = true
    )]
    pub server: String,

    /// The API token (a `read` token may only read). Never printed.
    #[arg(long, env = "BERTH_TOKEN", value_name = "TOKEN", hide_env_values = true, global = true)]
    pub token: Option<Secret>,

    /// A PEM file of CA certificates to trust for an https server, besides the system's.
    #[arg(long, env = "BERTH_CA_CERT", value_name = "FILE", global = true)]
    pub ca_cert: Option<PathBuf>,

    /// How to print answers: `table` for people, `json` (the API's own answer) for scripts.
    #[arg(short, long, value_enum, default_value = "table", global = true)]
    pub output: Output,

    /// For a change: the policy version it is based on (sent as `If-Match`); the change is
    /// refused if the policy has moved on since.
    #[arg(long, value_name = "VERSION", global = true)]
    pub if_version: Option<u64>,

    /// For a change: return only once every consumer sidecar of the service routes by the new
    /// policy version (for `retire`, also once the symbol's instances have left the registry);
    /// exit 1 naming those that have not within TIMEOUT (`--wait` alone: 60s).
    #[arg(long, value_name = "TIMEOUT", num_args = 0..=1, require_equals = true, default_missing_value = "60s", value_parser = crate::config::duration, global = true)]
    pub wait: Option<Duration>,

    /// How long to wait for the server's answer.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::config::duration, global = true)]
    pub timeout: Duration,

    #[command(subcommand)]
    pub command: CtlCommand,
}

/// The commands.
#[derive(Debug, Clone, Subcommand)]
pub enum CtlCommand {
    /// List services with their instance counts by symbol.
    Services,
    /// Show a service: its instances by symbol, its policy and the policy's version.
    Show { service: String },
    /// Print a service's whole policy (JSON), or replace it with `--file`.
    Policy {
        service: String,
        /// A policy JSON file to write (`-` reads standard input).
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Set the weighted split: `weights users stable=90 canary=10` (they sum to 100; no pair
    /// sends everything to the default symbol).
    Weights {
        service: String,
        #[arg(value_name = "SYMBOL=PERCENT", value_parser = weight)]
        weights: Vec<(Symbol, u32)>,
    },
    /// Replace the header and cookie rules with a JSON array: inline, from `--file`, or none
    /// with `--clear`.
    Rules {
        service: String,
        /// The rules as JSON, e.g. '[{"match":[{"header":"x-beta","exact":"1"}],"symbol":"canary"}]'.
        #[arg(value_name = "JSON", conflicts_with_all = ["file", "clear"], required_unless_present_any = ["file", "clear"])]
        json: Option<String>,
        /// A file holding the rules (`-` reads standard input).
        #[arg(long, value_name = "FILE", conflicts_with = "clear")]
        file: Option<PathBuf>,
        /// Remove every rule.
        #[arg(long)]
        clear: bool,
    },
    /// Override the symbol of the instance at ADDRESS (ip:port); `-` removes the override.
    Symbol { service: String, address: String, symbol: String },
    /// Make SYMBOL the default, with 100% of the traffic.
    Promote { service: String, symbol: Symbol },
    /// Go back to the previous policy version (or `--to VERSION`), written as a new version.
    Rollback {
        service: String,
        #[arg(long, value_name = "VERSION")]
        to: Option<u64>,
    },
    /// Take SYMBOL out of service: out of the weights (its share goes to the default symbol) and
    /// the rules. Refused for the default symbol. Says which of its instances are still
    /// registered; with `--wait`, waits until none is.
    Retire { service: String, symbol: Symbol },
    /// Past policy versions: who, when, what changed.
    History { service: String },
    /// Registered instances that refuse connections or fail health.
    Zombies { service: String },
}

/// How answers are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// A token: printed as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(Secret(s.trim().to_owned()))
    }
}

/// `SYMBOL=PERCENT`.
fn weight(s: &str) -> Result<(Symbol, u32), String> {
    let (symbol, percent) = s.split_once('=').ok_or("expected SYMBOL=PERCENT, e.g. canary=10")?;
    let symbol = symbol.parse::<Symbol>().map_err(|e| e.to_string())?;
    let percent = percent.parse().map_err(|_| format!("`{percent}` is not a whole percent from 0 to 100"))?;
    Ok((symbol, percent))
}

/// The path of a service's route.
fn service_path(service: &str, rest: &str) -> String {
    format!("/api/v1/services/{}{rest}", client::encode(service))
}

/// Reads a JSON input file (`-` is standard input).
fn read_json(path: &PathBuf) -> Result<Value, CtlError> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|e| CtlError::Usage(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| CtlError::Usage(format!("{} is not JSON: {e}", path.display())))
}

/// `berth ctl`: runs one command and returns the exit code.
pub fn main(args: CtlArgs) -> ExitCode {
    let Some(runtime) = crate::runtime(&mut tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::from(EXIT_FAILED);
    };
    match runtime.block_on(run(args)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(CtlError::NotApplied { written, detail }) => {
            print!("{written}");
            eprintln!("error: {detail}");
            ExitCode::from(EXIT_FAILED)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(if matches!(e, CtlError::Usage(_)) { EXIT_USAGE } else { EXIT_FAILED })
        }
    }
}

/// Runs the command; returns what to print.
pub async fn run(args: CtlArgs) -> Result<String, CtlError> {
    let client = Client::new(&args)?;
    let (format, command) = (args.output, args.command);
    let answer = call(&client, &command).await?;
    let mut text = match format {
        Output::Json => format!("{}\n", serde_json::to_string_pretty(&answer).unwrap_or_default()),
        Output::Table => output::render(&command, &answer),
    };
    if let (Some(timeout), Some(service)) = (args.wait, command.changes()) {
        let retired = match &command {
            CtlCommand::Retire { symbol, .. } => Some(symbol),
            _ => None,
        };
        let version = answer["version"].as_u64().unwrap_or(0);
        let goal = wait::Goal { service, version, retired };
        match wait::until_applied(&client, goal, timeout).await {
            // Scripts reading JSON get the API's answer alone.
            Ok(done) if format == Output::Table => text += &done,
            Ok(_) => {}
            Err(detail) => return Err(CtlError::NotApplied { written: text, detail }),
        }
    }
    Ok(text)
}

/// The one API call of a command, and its answer.
async fn call(client: &Client, command: &CtlCommand) -> Result<Value, CtlError> {
    Ok(match command {
        CtlCommand::Services => client.get("/api/v1/services").await?,
        CtlCommand::Show { service } => client.get(&service_path(service, "")).await?,
        CtlCommand::Policy { service, file: None } => client.get(&service_path(service, "/policy")).await?,
        CtlCommand::Policy { service, file: Some(f) } => {
            client.put(&service_path(service, "/policy"), read_json(f)?).await?
        }
        CtlCommand::Weights { service, weights } => {
            let body: serde_json::Map<String, Value> =
                weights.iter().map(|(s, w)| (s.to_string(), json!(w))).collect();
            client.put(&service_path(service, "/weights"), Value::Object(body)).await?
        }
        CtlCommand::Rules { service, json, file, clear } => {
            let rules = match (json, file) {
                _ if *clear => json!([]),
                (Some(inline), _) => serde_json::from_str(inline)
                    .map_err(|e| CtlError::Usage(format!("the rules are not JSON: {e}")))?,
                (None, Some(f)) => read_json(f)?,
                (None, None) => {
                    return Err(CtlError::Usage("give the rules as JSON, --file or --clear".into()));
                }
            };
            client.put(&service_path(service, "/rules"), rules).await?
        }
        CtlCommand::Symbol { service, address, symbol } => {
            let symbol = match symbol.as_str() {
                "-" => Value::Null,
                s => json!(s.parse::<Symbol>().map_err(|e| CtlError::Usage(e.to_string()))?),
            };
            let path = service_path(service, &format!("/symbols/{}", client::encode(address)));
            client.put(&path, json!({ "symbol": symbol })).await?
        }
        CtlCommand::Promote { service, symbol } => {
            client.post(&service_path(service, "/promote"), json!({ "symbol": symbol })).await?
        }
        CtlCommand::Rollback { service, to } => {
            let body = to.map_or_else(|| json!({}), |v| json!({ "version": v }));
            client.post(&service_path(service, "/rollback"), body).await?
        }
        CtlCommand::Retire { service, symbol } => {
            let path = service_path(service, &format!("/symbols/{}/retire", client::encode(symbol.as_str())));
            client.post(&path, json!({})).await?
        }
        CtlCommand::History { service } => client.get(&service_path(service, "/history")).await?,
        CtlCommand::Zombies { service } => client.get(&service_path(service, "/zombies")).await?,
    })
}

impl CtlCommand {
    /// The service a change command changes; `None` for reads.
    fn changes(&self) -> Option<&str> {
        match self {
            CtlCommand::Policy { service, file: Some(_) }
            | CtlCommand::Weights { service, .. }
            | CtlCommand::Rules { service, .. }
            | CtlCommand::Symbol { service, .. }
            | CtlCommand::Promote { service, .. }
            | CtlCommand::Rollback { service, .. }
            | CtlCommand::Retire { service, .. } => Some(service),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_parse_symbol_and_percent() {
        assert_eq!(weight("canary=10").unwrap(), ("canary".parse().unwrap(), 10));
        assert!(weight("canary").unwrap_err().contains("SYMBOL=PERCENT"));
        assert!(weight("canary=ten").unwrap_err().contains("whole percent"));
        assert!(weight("canary=-1").unwrap_err().contains("whole percent"));
        assert!(weight("Canary=1").unwrap_err().contains("lower-case"));
    }

    #[test]
    fn the_token_is_never_debug_printed() {
        assert_eq!(format!("{:?}", Secret("0123456789abcdef".into())), "***");
    }
}
