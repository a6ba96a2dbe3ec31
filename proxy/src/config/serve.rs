//! The admin listener and the registry: the options `berth proxy` and `berth gateway` share,
//! defined once, under the "Listeners and registry" heading of both `--help`s.
//!
//! The sidecar's `--advertise` (the address it registers) sits between the two in its help;
//! the flattened slot `A` keeps it there, and the gateway, which registers nothing, fills it
//! with [`NoAdvertise`]. The help texts are the sidecar's; the gateway says its own with
//! `mut_arg` (see `GatewayArgs`).

use std::net::{Ipv4Addr, SocketAddr};

use berth_core::defaults;
use berth_core::registry::RegistryUrl;
use clap::Args;

use super::NoEcho;

/// `--admin`, then `A`'s options, then `--registry`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs<A: Args = NoAdvertise> {
    /// Where the sidecar answers probes, metrics and drain requests.
    #[arg(
        long,
        help_heading = "Listeners and registry",
        env = "BERTH_ADMIN",
        value_name = "ADDR",
        default_value_t = SocketAddr::from((Ipv4Addr::UNSPECIFIED, defaults::ADMIN_PORT))
    )]
    pub admin: SocketAddr,

    /// What the program registers itself as, if it does.
    #[command(flatten)]
    pub advertise: A,

    /// The registry: `nacos://[user:password@]host:port[?namespace=NS&group=GROUP&grpc_port=P]`
    /// or `dir:///path` (default: a directory under the user's data directory).
    #[arg(
        long,
        help_heading = "Listeners and registry",
        env = "BERTH_REGISTRY",
        value_name = "URL",
        hide_env_values = true,
        value_parser = NoEcho::<RegistryUrl>::new()
    )]
    pub registry: Option<RegistryUrl>,
}

/// The sidecar's `--advertise`.
#[derive(Debug, Clone, Args)]
pub struct Advertise {
    /// The ip:port put in the registry (default: $POD_IP and the inbound port; 127.0.0.1 when
    /// POD_IP is unset and the inbound address is unspecified).
    #[arg(
        long = "advertise",
        help_heading = "Listeners and registry",
        env = "BERTH_ADVERTISE",
        value_name = "IP:PORT"
    )]
    pub addr: Option<SocketAddr>,
}

/// Nothing registered: the gateway's slot.
#[derive(Debug, Clone, Copy, Args)]
pub struct NoAdvertise {}

#[cfg(test)]
mod tests {
    use clap::{Arg, Command};

    use super::*;
    use crate::config::ProxyArgs;
    use crate::gateway::GatewayArgs;

    /// The long names under "Listeners and registry", in `--help` order.
    fn listeners(cmd: &Command) -> Vec<&str> {
        let mut args: Vec<&Arg> =
            cmd.get_arguments().filter(|a| a.get_help_heading() == Some("Listeners and registry")).collect();
        args.sort_by_key(|a| a.get_display_order());
        args.iter().filter_map(|a| a.get_long()).collect()
    }

    #[test]
    fn the_gateway_takes_admin_and_registry_as_the_sidecar_does_in_its_own_words() {
        let proxy = ProxyArgs::augment_args(Command::new("proxy"));
        let gateway = GatewayArgs::augment_args(Command::new("gateway"));
        assert_eq!(listeners(&proxy), ["inbound", "admin", "advertise", "registry", "outbound", "workers"]);
        assert_eq!(listeners(&gateway), ["listen", "admin", "registry"]);
        for id in ["admin", "registry"] {
            let find = |cmd: &Command| cmd.get_arguments().find(|a| a.get_id() == id).cloned().unwrap();
            let (p, g) = (find(&proxy), find(&gateway));
            assert_eq!(p.get_env(), g.get_env(), "{id}");
            assert_eq!(p.get_default_values(), g.get_default_values(), "{id}");
            assert_eq!(p.get_value_names(), g.get_value_names(), "{id}");
            assert_eq!(p.is_hide_env_values_set(), g.is_hide_env_values_set(), "{id}");
            let help = |a: &Arg| a.get_help().map(ToString::to_string).unwrap_or_default();
            assert!(help(&p).contains("sidecar") || help(&p).contains("default:"), "{}", help(&p));
            assert!(help(&g).contains("gateway") || help(&g).contains("(required)"), "{}", help(&g));
        }
    }
}
