//! The command line of both binaries.
//!
//! `pacup` is parsed by clap from the structs here and beside each command's
//! implementation in [`commands`] (`commands/pac.rs` holds `PacCommand` and what it does,
//! and so on); `caspac` (the vendor's legacy syntax) is translated by [`caspac`] into the
//! very same structs, so both binaries run one implementation and share exit codes and
//! output. The argument enums are the command line's own; it maps them to the library's
//! types, which know nothing of clap.

mod args;
pub mod caspac;
pub mod commands;
mod output;
pub mod vendor;

use crate::error::ExitCode;
use args::{actor, durability_arg, duration, metrics_addr, pac_name};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

pub use args::rate;
pub use commands::{exit_code_of, init_tracing, run};
pub use commands::{
    AgentArgs, Autostart, ClientsCommand, DemoArgs, DemoFlip, HostCommand, JobsCommand, LeaseArgs,
    ListenerArg, OnOff, PacCommand, RegionCommand, RegionRunArgs, RolloutCommand, RuntimeArgs,
    SetModeArg, StartTypeArg, UntilArg,
};

/// `--metrics-addr` of the long-running commands.
#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics at http://IP:PORT/metrics while the command runs
    /// (bound before it starts; see docs/metrics.md).
    #[arg(long, value_parser = metrics_addr, value_name = "IP:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl Command {
    /// The `--metrics-addr` of the command, with the command's name for `pacup_info`.
    pub fn metrics_addr(&self) -> Option<(std::net::SocketAddr, &'static str)> {
        let (m, name) = match self {
            Command::Agent(a) => (&a.metrics, "agent"),
            Command::Region(RegionCommand::Run(a)) => (&a.metrics, "region run"),
            Command::Rollout(RolloutCommand::Run { metrics, .. }) => (metrics, "rollout run"),
            Command::Rollout(RolloutCommand::Resume { metrics, .. }) => (metrics, "rollout resume"),
            _ => return None,
        };
        m.metrics_addr.map(|a| (a, name))
    }
}

/// `pacup --help`: what it is, then the exit-code table built from [`ExitCode::ALL`], so
/// the table cannot drift from the codes the binaries use.
fn long_about() -> String {
    let mut s = String::from(
        "Rolling-upgrade coordinator for PAC regions sharing a Redis PSOR.\n\n\
         Every command, and caspac, exits with one of these codes.\n\nExit codes:\n",
    );
    for c in ExitCode::ALL {
        s.push_str(&format!("  {}  {}\n", c.code(), c.meaning()));
    }
    s
}

/// pacup: safe, resumable rolling upgrades of PAC regions sharing a Redis PSOR.
#[derive(Debug, Parser)]
#[command(
    name = "pacup",
    version,
    about = "Rolling-upgrade coordinator for PAC regions sharing a Redis PSOR",
    long_about = long_about(),
    after_help = "Examples:\n  pacup --psor redis://127.0.0.1:6379 pac init MyPAC\n  \
        pacup pac check-compat MyPAC --product-version 2.0.0\n  \
        pacup region run REGION1 --pac MyPAC --host host1 --product-version 1.0.0 --start-type cold\n  \
        pacup pac status MyPAC --json"
)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes. Listed under their own heading, after each command's
/// own options.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// PSOR URL: redis://[user:pass@]host:port, rediss://host:port (TLS),
    /// redis+sentinel://h1:p1,h2:p2/<master>, redis+cluster://h1:p1,h2:p2, unix:///path.
    #[arg(
        long,
        global = true,
        env = "PACUP_PSOR",
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379"
    )]
    pub psor: String,
    /// Redis that holds the coordinator's own state (its lease and fencing epoch, the
    /// rollout journal, history and rollout events), so a site can keep pacup's keys
    /// out of the vendor's PSOR; same URL forms as --psor (password in the URL, else env
    /// PACUP_STATE_PASSWORD; the TLS options and timeouts are shared). Default: the
    /// PSOR. Only for plans with `driver.kind: command`, whose templates still reach the
    /// PSOR through {psor}, {psor_host} and {psor_port}.
    // Its own id: `state` is also an argument of commands (`region listener ... on`).
    #[arg(
        id = "state_url",
        long = "state",
        global = true,
        env = "PACUP_STATE",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub state_url: Option<String>,
    /// File holding the PSOR password, used when the URL has none (else env
    /// PACUP_PSOR_PASSWORD). A password in the URL wins over both.
    #[arg(long, global = true, value_name = "FILE")]
    pub psor_password_file: Option<PathBuf>,
    /// PEM CA certificate to trust for rediss:// (default: the system's roots).
    #[arg(
        long,
        global = true,
        env = "PACUP_TLS_CA",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate for mutual TLS.
    #[arg(
        long,
        global = true,
        env = "PACUP_TLS_CERT",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM client key for mutual TLS.
    #[arg(
        long,
        global = true,
        env = "PACUP_TLS_KEY",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub tls_key: Option<PathBuf>,
    /// Bound on connecting to the PSOR.
    #[arg(long, global = true, value_parser = duration, default_value = "5s", value_name = "DURATION")]
    pub connect_timeout: Duration,
    /// Bound on one PSOR command's answer.
    #[arg(long, global = true, value_parser = duration, default_value = "10s", value_name = "DURATION")]
    pub command_timeout: Duration,
    /// What acknowledging a critical write (journal, lease, jobs, transactions, stores,
    /// modes) waits for: none (the master applied it), replica (WAIT: one replica has
    /// it) or aof (WAITAOF: fsynced; Redis 7.2+). Default: replica when the PSOR reports
    /// connected replicas, else none.
    #[arg(
        long,
        global = true,
        env = "PACUP_DURABILITY",
        value_parser = durability_arg,
        value_name = "none|replica|aof"
    )]
    pub durability: Option<crate::conn::Durability>,
    /// Machine output: exactly one JSON document on stdout (streams: one object per line).
    #[arg(long, global = true)]
    pub json: bool,
    /// More diagnostics on stderr (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Who to record in the audit trail (events, stores, rollout history); default:
    /// user@host from the operating system.
    #[arg(long, global = true, env = "PACUP_BY", value_parser = actor, value_name = "WHO")]
    pub by: Option<String>,
    /// Set when the command came through the `caspac` syntax: its actions are labelled
    /// caspac and its messages do not suggest pacup flags.
    #[arg(skip)]
    pub caspac: bool,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
// Parsed once per process: boxing the agent's arguments would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Administer a PAC in the PSOR (the caspac actions and more).
    #[command(subcommand)]
    #[command(
        after_help = "Examples:\n  pacup pac status MyPAC\n  pacup --psor redis://psor1:6379 pac list --json"
    )]
    Pac(PacCommand),
    /// Run a region, or act on one through its host agent.
    #[command(subcommand)]
    #[command(
        after_help = "Examples:\n  pacup region run REGION1 --pac MyPAC --host host1 --product-version 1.0.0 --start-type cold\n  pacup region stop REGION1 --pac MyPAC --timeout 2m"
    )]
    Region(RegionCommand),
    /// Run a host agent: hosts several regions and obeys control commands via the PSOR.
    #[command(
        after_help = "Examples:\n  pacup agent --pac MyPAC --host host1 --product-version 1.0.0 --region REGION1=127.0.0.1:7001 --region REGION1B --autostart cold"
    )]
    Agent(AgentArgs),
    /// Act on a host through its agent.
    #[command(subcommand)]
    #[command(
        after_help = "Examples:\n  pacup host update host1 --pac MyPAC --product-version 2.0.0"
    )]
    Host(HostCommand),
    /// Submit batch jobs and audit them.
    #[command(subcommand)]
    #[command(
        after_help = "Examples:\n  pacup jobs submit MyPAC --count 100\n  pacup jobs stats MyPAC --json"
    )]
    Jobs(JobsCommand),
    /// Drive client transactions like a load balancer.
    #[command(subcommand)]
    #[command(after_help = "Examples:\n  pacup clients run MyPAC --duration 1m --rate 20/s")]
    Clients(ClientsCommand),
    /// Plan, run and steer a rolling upgrade.
    #[command(subcommand)]
    #[command(
        after_help = "Examples:\n  pacup rollout plan fixtures/plans/two-host-incompatible.json\n  pacup rollout run fixtures/plans/two-host-incompatible.json --reason 'ES 2.0 upgrade'\n  pacup rollout status MyPAC --watch"
    )]
    Rollout(RolloutCommand),
    /// Show a PAC's audit events (rollout steps, store and region changes).
    #[command(
        after_help = "Examples:\n  pacup events MyPAC\n  pacup events MyPAC --follow --json"
    )]
    Events {
        /// PAC name.
        #[arg(value_parser = pac_name)]
        pac: crate::names::PacName,
        /// Keep waiting for new events.
        #[arg(long)]
        follow: bool,
    },
    /// The whole story on this machine: a private Redis, two hosts, a full incompatible
    /// rollout 1.0.0 -> 2.0.0 under job and client load, a summary and an HTML report of
    /// the rollout (--report). Needs redis-server.
    #[command(
        after_help = "Examples:\n  pacup demo\n  pacup demo --mode-flip after-all-waves --job-rate 100/s"
    )]
    Demo(DemoArgs),
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every command teaches by example, and lists the global options after its own.
    #[test]
    fn every_command_has_examples() {
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for sub in c.get_subcommands() {
                let p = format!("{path} {}", sub.get_name());
                let ex = sub
                    .get_after_help()
                    .is_some_and(|h| h.to_string().contains("Examples:"));
                if !ex && sub.get_name() != "help" {
                    missing.push(p.clone());
                }
                walk(sub, &p, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "pacup", &mut missing);
        assert!(missing.is_empty(), "no examples in --help: {missing:?}");
    }

    #[test]
    fn rates() {
        assert_eq!(rate("50/s").unwrap(), 50.0);
        assert_eq!(rate("120/m").unwrap(), 2.0);
        assert_eq!(rate("5").unwrap(), 5.0);
        for bad in ["0", "-1/s", "x/s", "5/h", "inf"] {
            assert!(rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_counts_and_durations_are_usage_errors() {
        for args in [
            &["pacup", "jobs", "submit", "P", "--count", "0"][..],
            &["pacup", "jobs", "submit", "P", "--count", "-3"],
            &[
                "pacup",
                "jobs",
                "submit",
                "P",
                "--rate",
                "5/s",
                "--duration",
                "soon",
            ],
            &[
                "pacup", "clients", "run", "P", "--count", "5", "--rate", "0",
            ],
            &[
                "pacup",
                "agent",
                "--pac",
                "P",
                "--host",
                "h",
                "--product-version",
                "1.0.0",
                "--region",
                "R=notanaddr",
            ],
        ] {
            let e = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn bad_names_are_usage_errors() {
        let e = Cli::try_parse_from(["pacup", "pac", "init", "TOOLONGNAME"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("PAC name"), "{e}");
    }
}
