//! The `--config` TOML file, turned into arguments that sit underneath flags and environment.

use std::ffi::OsString;
use std::path::Path;

use super::ConfigError;

/// Reads `path` and returns `--key=value` arguments for every key that neither `raw_args` nor
/// the environment (`BERTH_KEY`) sets, so that a parse of `file args + raw args` gives flags,
/// then environment, then file, then defaults.
pub(super) fn args_from_file(
    cmd: &clap::Command,
    path: &Path,
    raw_args: &[OsString],
) -> Result<Vec<OsString>, ConfigError> {
    let file_err = |detail: String| ConfigError::File { path: path.to_owned(), detail };
    let text = std::fs::read_to_string(path).map_err(|e| file_err(format!("cannot read it: {e}")))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| file_err(e.to_string()))?;
    let mut out = Vec::new();
    for (key, value) in table {
        let arg =
            cmd.get_arguments().find(|a| a.get_long() == Some(key.as_str()) && key != "config").ok_or_else(
                || file_err(format!("unknown key `{key}`; keys are the long flag names, e.g. `drain-min`")),
            )?;
        let given_on_command_line = raw_args.iter().any(|a| {
            let a = a.to_string_lossy();
            a == format!("--{key}") || a.starts_with(&format!("--{key}="))
        });
        let given_in_env = arg.get_env().is_some_and(|var| std::env::var_os(var).is_some());
        if given_on_command_line || given_in_env {
            continue;
        }
        let values = match value {
            toml::Value::Array(items) => items,
            one => vec![one],
        };
        for v in values {
            // A switch (`no-lifecycle = true`) is its bare flag; clap takes no value for it.
            if !arg.get_action().takes_values() {
                match v {
                    toml::Value::Boolean(true) => out.push(OsString::from(format!("--{key}"))),
                    toml::Value::Boolean(false) => {}
                    other => return Err(file_err(format!("`{key}` must be true or false, not {other}"))),
                }
                continue;
            }
            let text = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => return Err(file_err(format!("`{key}` must be a string or a number, not {other}"))),
            };
            out.push(OsString::from(format!("--{key}={text}")));
        }
    }
    Ok(out)
}
