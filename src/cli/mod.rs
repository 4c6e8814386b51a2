//! The command line of both binaries.
//!
//! `pacup` is parsed by clap from the structs below; `caspac` (the vendor's legacy
//! syntax) is translated by [`caspac`] into the very same structs, so both binaries run
//! one implementation ([`commands`]) and share exit codes and output.

pub mod caspac;
pub mod commands;
mod output;

use crate::names::{self, HostName, PacName, RegionName};
use crate::region::StartType;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

pub use commands::{exit_code_of, init_tracing, run};

fn pac_name(s: &str) -> Result<PacName, String> {
    PacName::new(s).map_err(|e| e.to_string())
}
fn region_name(s: &str) -> Result<RegionName, String> {
    RegionName::new(s).map_err(|e| e.to_string())
}
fn host_name(s: &str) -> Result<HostName, String> {
    HostName::new(s).map_err(|e| e.to_string())
}
fn version(s: &str) -> Result<semver::Version, String> {
    names::parse_version("product version", s).map_err(|e| e.to_string())
}
fn os(s: &str) -> Result<String, String> {
    names::parse_os("OS", s).map_err(|e| e.to_string())
}
fn bitness(s: &str) -> Result<u8, String> {
    names::parse_bitness("bitness", s).map_err(|e| e.to_string())
}
fn duration(s: &str) -> Result<Duration, String> {
    names::parse_duration("duration", s).map_err(|e| e.to_string())
}

/// pacup: safe, resumable rolling upgrades of PAC regions sharing a Redis PSOR.
#[derive(Debug, Parser)]
#[command(
    name = "pacup",
    version,
    about = "Rolling-upgrade coordinator for PAC regions sharing a Redis PSOR",
    long_about = "Rolling-upgrade coordinator for PAC regions sharing a Redis PSOR.\n\n\
        Exit codes: 0 success (check-compat: compatible), 1 refused because of the PAC's state, \
        2 invalid input, 3 incompatible, 4 another coordinator holds the lease, \
        5 PSOR unreachable or authentication failed, 6 rollout paused, 7 rolled back.",
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

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// PSOR URL: redis://[user:pass@]host:port, rediss://host:port (TLS),
    /// redis+sentinel://h1:p1,h2:p2/<master>, unix:///path.
    #[arg(long, global = true, env = "PACUP_PSOR", hide_env_values = true,
          default_value = "redis://127.0.0.1:6379")]
    pub psor: String,
    /// File holding the PSOR password (else env PACUP_PSOR_PASSWORD, else the URL's).
    #[arg(long, global = true, value_name = "FILE")]
    pub psor_password_file: Option<PathBuf>,
    /// PEM CA certificate to trust for rediss:// (default: the system's roots).
    #[arg(long, global = true, env = "PACUP_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate for mutual TLS.
    #[arg(long, global = true, env = "PACUP_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM client key for mutual TLS.
    #[arg(long, global = true, env = "PACUP_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Bound on connecting to the PSOR.
    #[arg(long, global = true, value_parser = duration, default_value = "5s", value_name = "DURATION")]
    pub connect_timeout: Duration,
    /// Bound on one PSOR command's answer.
    #[arg(long, global = true, value_parser = duration, default_value = "10s", value_name = "DURATION")]
    pub command_timeout: Duration,
    /// Machine output: exactly one JSON document on stdout (streams: one object per line).
    #[arg(long, global = true)]
    pub json: bool,
    /// More diagnostics on stderr (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Administer a PAC in the PSOR (the caspac actions and more).
    #[command(subcommand)]
    Pac(PacCommand),
    /// Run a region.
    #[command(subcommand)]
    Region(RegionCommand),
}

/// Store modes an operator may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SetModeArg {
    /// The store in upgrade mode starts taking batch work.
    Running,
    /// Running stores older than the newest stop taking new batch work.
    Quiesce,
}

/// `pacup pac ...`
#[derive(Debug, Subcommand)]
pub enum PacCommand {
    /// Wipe and initialise a PAC (keeps its datastore). Refused while a region is alive.
    Init {
        /// PAC name (1-8 of A-Z a-z 0-9 _ -).
        #[arg(value_parser = pac_name)]
        pac: PacName,
        /// Initialise even while regions are alive (they lose their stores and stop).
        #[arg(long)]
        force: bool,
    },
    /// Is a product compatible with the PAC's newest running store? Exit 0 yes, 3 no.
    CheckCompat {
        /// PAC name.
        #[arg(value_parser = pac_name)]
        pac: PacName,
        /// Product version to check (semver, e.g. 2.0.0).
        #[arg(long, value_parser = version)]
        product_version: semver::Version,
        /// Product OS (default: this kernel, e.g. linux-6).
        #[arg(long, value_parser = os)]
        os: Option<String>,
        /// Product bitness, 32 or 64 (default: this build's).
        #[arg(long, value_parser = bitness)]
        bitness: Option<u8>,
        /// Compatibility matrix file (JSON list of {from, to, compatible, note}).
        #[arg(long, value_name = "FILE")]
        matrix: Option<PathBuf>,
    },
    /// Set store modes: `running` flips the upgrade store; `quiesce` quiesces older running stores.
    SetMode {
        /// PAC name.
        #[arg(value_parser = pac_name)]
        pac: PacName,
        /// running or quiesce.
        #[arg(value_enum)]
        mode: SetModeArg,
    },
    /// Delete every store older than the newest (RemOldPAC). Refused while a live region is in one.
    RemoveOld {
        /// PAC name.
        #[arg(value_parser = pac_name)]
        pac: PacName,
        /// Remove even while live regions are members (they stop when they notice).
        #[arg(long)]
        force: bool,
    },
    /// Stores, modes, members and regions of a PAC.
    Status {
        /// PAC name.
        #[arg(value_parser = pac_name)]
        pac: PacName,
    },
    /// Every PAC in the PSOR.
    List,
    /// Save every persistent key of a PAC to a file.
    Backup {
        /// PAC name.
        #[arg(value_parser = pac_name)]
        pac: PacName,
        /// File to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Restore a PAC from a backup file (refused over existing data without --force).
    Restore {
        /// PAC name (keys are renamed if the backup is of another PAC).
        #[arg(value_parser = pac_name)]
        pac: PacName,
        /// Backup file to read.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Replace the PAC's existing data.
        #[arg(long)]
        force: bool,
    },
}

/// `pacup region ...`
#[derive(Debug, Subcommand)]
pub enum RegionCommand {
    /// Run one region in the foreground until SIGTERM/SIGINT (graceful stop).
    Run(RegionRunArgs),
}

/// Arguments of `pacup region run`.
#[derive(Debug, Clone, Args)]
pub struct RegionRunArgs {
    /// Region name (1-32 of A-Z a-z 0-9 _ -).
    #[arg(value_parser = region_name)]
    pub region: RegionName,
    /// PAC the region belongs to.
    #[arg(long, value_parser = pac_name)]
    pub pac: PacName,
    /// Host the region runs on.
    #[arg(long, value_parser = host_name)]
    pub host: HostName,
    /// Installed product version.
    #[arg(long, value_parser = version)]
    pub product_version: semver::Version,
    /// cold (initialise the PAC), warm (join it), upgrade (new store for an incompatible version).
    #[arg(long, value_enum)]
    pub start_type: StartType,
    /// Product OS (default: this kernel, e.g. linux-6).
    #[arg(long, value_parser = os)]
    pub os: Option<String>,
    /// Product bitness, 32 or 64.
    #[arg(long, value_parser = bitness)]
    pub bitness: Option<u8>,
    /// Resource definitions to load into a store this region creates (default: built-in set).
    #[arg(long, value_name = "FILE")]
    pub resources: Option<PathBuf>,
    /// Compatibility matrix for start decisions.
    #[arg(long, value_name = "FILE")]
    pub matrix: Option<PathBuf>,
    /// Heartbeat interval.
    #[arg(long, value_parser = duration, default_value = "1s", value_name = "DURATION")]
    pub heartbeat_interval: Duration,
    /// Heartbeat TTL: past it without a heartbeat the region counts as dead.
    #[arg(long, value_parser = duration, default_value = "3s", value_name = "DURATION")]
    pub heartbeat_ttl: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bad_names_are_usage_errors() {
        let e = Cli::try_parse_from(["pacup", "pac", "init", "TOOLONGNAME"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("PAC name"), "{e}");
    }
}
