//! The command line of both binaries.
//!
//! `pacup` is parsed by clap from the structs below; `caspac` (the vendor's legacy
//! syntax) is translated by [`caspac`] into the very same structs, so both binaries run
//! one implementation ([`commands`]) and share exit codes and output.

pub mod caspac;
pub mod commands;
mod output;

use crate::error::ExitCode;
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
fn actor(s: &str) -> Result<String, String> {
    names::parse_actor("--by", s).map_err(|e| e.to_string())
}
fn duration(s: &str) -> Result<Duration, String> {
    names::parse_duration("duration", s).map_err(|e| e.to_string())
}
fn metrics_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    match s.parse::<std::net::SocketAddr>() {
        Ok(a) if a.port() != 0 => Ok(a),
        _ => Err(format!(
            "invalid metrics address {s:?}: expected IP:PORT with a port from 1 to 65535, \
             such as 127.0.0.1:9187 or [::1]:9187"
        )),
    }
}

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
    /// redis+sentinel://h1:p1,h2:p2/<master>, unix:///path.
    #[arg(
        long,
        global = true,
        env = "PACUP_PSOR",
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379"
    )]
    pub psor: String,
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
        pac: PacName,
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

/// Lease options of the commands that take the coordinator lease.
#[derive(Debug, Clone, Args)]
pub struct LeaseArgs {
    /// Wait for another coordinator to finish instead of exiting 4.
    #[arg(long)]
    pub wait_lock: bool,
    /// Lease TTL; the coordinator renews it every third of it.
    #[arg(long, value_parser = duration, default_value = "5s", value_name = "DURATION")]
    pub lease_ttl: Duration,
}

/// `pacup rollout ...`
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Print the exact steps and the chosen strategy; writes nothing.
    #[command(
        after_help = "Examples:\n  pacup rollout plan plan.json\n  pacup --json rollout plan plan.json"
    )]
    Plan {
        /// Plan file (JSON, see fixtures/plans/).
        plan: PathBuf,
        /// Accept waves that leave no batch or client capacity.
        #[arg(long)]
        allow_downtime: bool,
        /// Accept a compatible plan that leaves out live regions of the PAC.
        #[arg(long)]
        allow_partial: bool,
    },
    /// Run a rollout. Exit 0 done, 1 failed/aborted, 4 lease held, 6 paused, 7 rolled back.
    #[command(
        after_help = "Examples:\n  pacup rollout run plan.json --reason 'CHG-1234 ES 2.0'\n  pacup rollout run plan.json --preflight-wait 2m --wait-lock"
    )]
    Run {
        /// Plan file (JSON, see fixtures/plans/).
        plan: PathBuf,
        /// Accept waves that leave no batch or client capacity.
        #[arg(long)]
        allow_downtime: bool,
        /// Accept a compatible plan that leaves out live regions of the PAC (the
        /// incompatible process always moves every region).
        #[arg(long)]
        allow_partial: bool,
        /// Why (kept in the rollout history).
        #[arg(long, default_value = "")]
        reason: String,
        /// Retry a failing preflight (agents still starting, regions not yet live) for up
        /// to this long before refusing; for pipelines that start everything at once.
        #[arg(long, value_parser = duration, value_name = "DURATION")]
        preflight_wait: Option<Duration>,
        /// Lease options.
        #[command(flatten)]
        lease: LeaseArgs,
        /// Metrics endpoint.
        #[command(flatten)]
        metrics: MetricsArgs,
    },
    /// Continue a paused, held or interrupted rollout from its next step.
    #[command(after_help = "Examples:\n  pacup rollout resume MyPAC")]
    Resume {
        /// PAC name.
        #[arg(value_parser = pac_name)]
        pac: PacName,
        /// Lease options.
        #[command(flatten)]
        lease: LeaseArgs,
        /// Metrics endpoint.
        #[command(flatten)]
        metrics: MetricsArgs,
    },
    /// Current step, per-region state, why it is blocked.
    #[command(
        after_help = "Examples:\n  pacup rollout status MyPAC\n  pacup rollout status MyPAC --watch --timeout 30m\n  pacup rollout status MyPAC --watch --until held,paused --wait-new\n  pacup --json rollout status MyPAC"
    )]
    Status {
        /// PAC name.
        #[arg(value_parser = pac_name)]
        pac: PacName,
        /// Follow the rollout until it ends (through pauses and resumes), then exit with
        /// its end state's code: 0 done, 1 aborted or failed, 7 rolled back. Waits for a
        /// rollout to exist first. Redraws in place on a terminal; elsewhere prints one
        /// line per change (with --json: one document per change).
        #[arg(long)]
        watch: bool,
        /// With --watch: also stop at these states (comma-separated), exiting 6 for
        /// paused, 8 for held, 0 for done.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            requires = "watch",
            value_name = "STATE"
        )]
        until: Vec<UntilArg>,
        /// With --watch: give up after this long, exiting 9.
        #[arg(long, value_parser = duration, requires = "watch", value_name = "DURATION")]
        timeout: Option<Duration>,
        /// With --watch: if the rollout had already ended when the watch began, wait for
        /// it to change (the next rollout starts, or this one is rolled back) instead of
        /// reporting that end at once; for a pipeline that starts `rollout run` and the
        /// watch at the same time.
        #[arg(long, requires = "watch")]
        wait_new: bool,
    },
    /// Ask the running coordinator to pause after the current step.
    #[command(after_help = "Examples:\n  pacup rollout pause MyPAC")]
    Pause {
        /// PAC name.
        #[arg(value_parser = pac_name)]
        pac: PacName,
    },
    /// Stop the rollout where it is (after the current step if a coordinator runs it).
    #[command(
        after_help = "Examples:\n  pacup rollout abort MyPAC\n  pacup rollout rollback MyPAC   # afterwards, to go back to the old version"
    )]
    Abort {
        /// PAC name.
        #[arg(value_parser = pac_name)]
        pac: PacName,
    },
    /// Roll back to the old version (any time before remove_old).
    #[command(
        after_help = "Examples:\n  pacup rollout pause MyPAC && pacup rollout rollback MyPAC --wait-lock\n  pacup rollout rollback MyPAC\n  pacup rollout rollback MyPAC --fast   # incident: every host at once"
    )]
    Rollback {
        /// PAC name.
        #[arg(value_parser = pac_name)]
        pac: PacName,
        /// Incident mode: every host at once, no min_healthy waits (still fenced,
        /// listeners still off until the regions are live).
        #[arg(long)]
        fast: bool,
        /// Lease options.
        #[command(flatten)]
        lease: LeaseArgs,
    },
    /// Finished rollouts: from and to version, start, duration, result, who and why.
    #[command(
        after_help = "Examples:\n  pacup rollout history MyPAC\n  pacup --json rollout history MyPAC"
    )]
    History {
        /// PAC name.
        #[arg(value_parser = pac_name)]
        pac: PacName,
    },
    /// Write a picture of a rollout: one self-contained HTML file (timeline per region,
    /// the stores' modes, jobs and client requests per second, summary). Exit 2 for an
    /// id that is not of the form <PAC>-<hex>, 1 when the PAC has no such rollout.
    Report {
        /// PAC name.
        #[arg(value_parser = pac_name)]
        pac: PacName,
        /// Rollout id, as `rollout history` lists them (default: the latest rollout).
        rollout: Option<String>,
        /// HTML file to write (replaced if it exists).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

/// States `rollout status --watch --until` can stop at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UntilArg {
    /// Paused, waiting for an operator (exit 6).
    Paused,
    /// Held before finalisation (exit 8).
    Held,
    /// Done (exit 0); every end state stops the watch anyway.
    Done,
}

/// Arguments of `pacup demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// redis-server executable to run privately.
    #[arg(long, default_value = "redis-server", value_name = "PATH")]
    pub redis_server: PathBuf,
    /// Batch jobs per second during the rollout.
    #[arg(long, value_parser = rate, default_value = "40/s")]
    pub job_rate: f64,
    /// Client transactions per second during the rollout.
    #[arg(long, value_parser = rate, default_value = "40/s")]
    pub client_rate: f64,
    /// Mode flip of the demo plan.
    #[arg(long, value_enum, default_value = "after-first-wave")]
    pub mode_flip: DemoFlip,
    /// Where to write the rollout's HTML report (`rollout report`); the default is a
    /// file in the current directory.
    #[arg(long, value_name = "FILE", default_value = "pacup-demo-report.html")]
    pub report: PathBuf,
}

/// `pacup demo --mode-flip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DemoFlip {
    /// The new store runs as soon as the first wave is healthy.
    AfterFirstWave,
    /// The documented order (a batch gap while the last wave upgrades).
    AfterAllWaves,
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
    #[command(
        after_help = "Examples:\n  pacup pac init MyPAC\n  pacup --psor redis://psor1:6379 pac init MyPAC --force"
    )]
    Init {
        /// PAC name (1-8 of A-Z a-z 0-9 _ -).
        #[arg(value_parser = pac_name)]
        pac: PacName,
        /// Initialise even while regions are alive (they lose their stores and stop).
        #[arg(long)]
        force: bool,
    },
    /// Is a product compatible with the PAC's newest running store? Exit 0 yes, 3 no.
    #[command(
        after_help = "Examples:\n  pacup pac check-compat MyPAC --product-version 2.0.0\n  pacup pac check-compat MyPAC --product-version 2.1.0 --matrix compat.json --json"
    )]
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
    #[command(
        after_help = "Examples:\n  pacup pac set-mode MyPAC running\n  pacup pac set-mode MyPAC quiesce"
    )]
    SetMode {
        /// PAC name.
        #[arg(value_parser = pac_name)]
        pac: PacName,
        /// running or quiesce.
        #[arg(value_enum)]
        mode: SetModeArg,
    },
    /// Delete every store older than the newest (RemOldPAC). Refused while a live region is in one.
    #[command(after_help = "Examples:\n  pacup pac remove-old MyPAC")]
    RemoveOld {
        /// PAC name.
        #[arg(value_parser = pac_name)]
        pac: PacName,
        /// Remove even while live regions are members (they stop when they notice).
        #[arg(long)]
        force: bool,
    },
    /// Stores, modes, members and regions of a PAC.
    #[command(after_help = "Examples:\n  pacup pac status MyPAC\n  pacup --json pac status MyPAC")]
    Status {
        /// PAC name.
        #[arg(value_parser = pac_name)]
        pac: PacName,
    },
    /// Every PAC in the PSOR.
    #[command(after_help = "Examples:\n  pacup pac list\n  pacup --json pac list")]
    List,
    /// Save every persistent key of a PAC to a file.
    #[command(after_help = "Examples:\n  pacup pac backup MyPAC --out mypac-before-2.0.json")]
    Backup {
        /// PAC name.
        #[arg(value_parser = pac_name)]
        pac: PacName,
        /// File to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Restore a PAC from a backup file (refused over existing data without --force).
    #[command(
        after_help = "Examples:\n  pacup pac restore MyPAC --in mypac-before-2.0.json\n  pacup pac restore MyPAC --in mypac-before-2.0.json --force"
    )]
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
    #[command(
        after_help = "Examples:\n  pacup region run REGION1 --pac MyPAC --host host1 --product-version 1.0.0 --start-type cold\n  pacup region run REGION2 --pac MyPAC --host host2 --product-version 2.0.0 --start-type upgrade --listen 127.0.0.1:7002"
    )]
    Run(Box<RegionRunArgs>),
    /// Start a region through its host agent and wait for the outcome.
    #[command(
        after_help = "Examples:\n  pacup region start REGION1 --pac MyPAC --start-type warm"
    )]
    Start {
        /// Region name.
        #[arg(value_parser = region_name)]
        region: RegionName,
        /// PAC the region belongs to (default: the only PAC in the PSOR).
        #[arg(long, env = "PACUP_PAC", hide_env_values = true, value_parser = pac_name)]
        pac: Option<PacName>,
        /// cold, warm or upgrade.
        #[arg(long, value_enum)]
        start_type: StartType,
        /// How long to wait for the agent's answer.
        #[arg(long, value_parser = duration, default_value = "30s", value_name = "DURATION")]
        wait: Duration,
    },
    /// Stop a region through its host agent: listener off, drain clients, finish the job
    /// in hand, leave the store; forced past --timeout.
    #[command(
        after_help = "Examples:\n  pacup region stop REGION1 --pac MyPAC\n  pacup region stop REGION1 --pac MyPAC --timeout 2m --drain-timeout 30s\n  pacup region stop REGION1 --pac MyPAC --force"
    )]
    Stop {
        /// Region name.
        #[arg(value_parser = region_name)]
        region: RegionName,
        /// PAC the region belongs to (default: the only PAC in the PSOR).
        #[arg(long, env = "PACUP_PAC", hide_env_values = true, value_parser = pac_name)]
        pac: Option<PacName>,
        /// Past this the stop is forced (clients cut, job in hand reclaimed later).
        #[arg(long, value_parser = duration, default_value = "60s", value_name = "DURATION")]
        timeout: Duration,
        /// How long existing clients may take to leave.
        #[arg(long, value_parser = duration, default_value = "30s", value_name = "DURATION")]
        drain_timeout: Duration,
        /// Stop at once (cut clients, abandon the job in hand).
        #[arg(long)]
        force: bool,
    },
    /// Turn a region's client listener on or off through its host agent.
    #[command(
        after_help = "Examples:\n  pacup region listener REGION1 off --pac MyPAC\n  pacup region listener REGION1 on --pac MyPAC"
    )]
    Listener {
        /// Region name.
        #[arg(value_parser = region_name)]
        region: RegionName,
        /// on or off.
        #[arg(value_enum)]
        state: OnOff,
        /// PAC the region belongs to (default: the only PAC in the PSOR).
        #[arg(long, env = "PACUP_PAC", hide_env_values = true, value_parser = pac_name)]
        pac: Option<PacName>,
        /// How long to wait for the agent's answer.
        #[arg(long, value_parser = duration, default_value = "30s", value_name = "DURATION")]
        wait: Duration,
    },
    /// Kill a region abruptly through its host agent, as a crash would (fault drills).
    #[command(after_help = "Examples:\n  pacup region crash REGION1 --pac MyPAC")]
    Crash {
        /// Region name.
        #[arg(value_parser = region_name)]
        region: RegionName,
        /// PAC the region belongs to (default: the only PAC in the PSOR).
        #[arg(long, env = "PACUP_PAC", hide_env_values = true, value_parser = pac_name)]
        pac: Option<PacName>,
        /// How long to wait for the agent's answer.
        #[arg(long, value_parser = duration, default_value = "30s", value_name = "DURATION")]
        wait: Duration,
    },
}

/// A listener state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    /// Accept new client connections.
    On,
    /// Refuse new client connections (open ones finish).
    Off,
}

/// `pacup host ...`
#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Install another product version on a host (refused while any of its regions runs).
    #[command(
        after_help = "Examples:\n  pacup host update host1 --pac MyPAC --product-version 2.0.0"
    )]
    Update {
        /// Host name.
        #[arg(value_parser = host_name)]
        host: HostName,
        /// PAC the host serves.
        #[arg(long, env = "PACUP_PAC", hide_env_values = true, value_parser = pac_name)]
        pac: PacName,
        /// Version to install.
        #[arg(long, value_parser = version)]
        product_version: semver::Version,
        /// How long to wait for the agent's answer.
        #[arg(long, value_parser = duration, default_value = "30s", value_name = "DURATION")]
        wait: Duration,
    },
}

fn region_spec(s: &str) -> Result<(RegionName, Option<std::net::SocketAddr>), String> {
    match s.split_once('=') {
        Some((r, a)) => Ok((
            region_name(r)?,
            Some(a.parse().map_err(|_| {
                format!("invalid listener address {a:?} for region {r}: expected IP:PORT such as 127.0.0.1:7001")
            })?),
        )),
        None => Ok((region_name(s)?, None)),
    }
}

/// Arguments of `pacup agent`.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// PAC the host's regions belong to.
    #[arg(long, env = "PACUP_PAC", hide_env_values = true, value_parser = pac_name)]
    pub pac: PacName,
    /// This host's name.
    #[arg(long, value_parser = host_name)]
    pub host: HostName,
    /// Installed product version.
    #[arg(long, value_parser = version)]
    pub product_version: semver::Version,
    /// Product OS (default: this kernel, e.g. linux-6).
    #[arg(long, value_parser = os)]
    pub os: Option<String>,
    /// Product bitness, 32 or 64.
    #[arg(long, value_parser = bitness)]
    pub bitness: Option<u8>,
    /// A region this host runs, optionally with its listener address: R or R=127.0.0.1:7001.
    #[arg(long = "region", value_parser = region_spec, required = true, value_name = "R[=ADDR]")]
    pub regions: Vec<(RegionName, Option<std::net::SocketAddr>)>,
    /// Start every region at agent start with this start type.
    #[arg(long, value_enum, default_value = "none")]
    pub autostart: Autostart,
    /// Runtime settings shared with `region run`.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Metrics endpoint.
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// `--autostart` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Autostart {
    /// Cold start (the first region initialises the PAC; the rest become warm).
    Cold,
    /// Warm start.
    Warm,
    /// Upgrade start.
    Upgrade,
    /// Start nothing; wait for commands.
    None,
}

/// Region runtime settings (heartbeat, jobs, listener) shared by `region run` and `agent`.
#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// Heartbeat interval.
    #[arg(long, value_parser = duration, default_value = "1s", value_name = "DURATION")]
    pub heartbeat_interval: Duration,
    /// Heartbeat TTL: past it without a heartbeat a region (or host) counts as dead.
    #[arg(long, value_parser = duration, default_value = "3s", value_name = "DURATION")]
    pub heartbeat_ttl: Duration,
    /// Simulated duration of one batch job.
    #[arg(long, value_parser = duration, default_value = "20ms", value_name = "DURATION")]
    pub job_time: Duration,
    /// A job held this long by an unresponsive region is taken over (default: 2 x TTL).
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub reclaim_idle: Option<Duration>,
    /// Listener state at region start: auto (on unless the store is in upgrade mode), on, off.
    #[arg(long, value_enum, default_value = "auto")]
    pub listener: crate::region::ListenerStart,
    /// Host name clients use to reach the listeners (published as the endpoint's host),
    /// e.g. a container's name when the listener binds 0.0.0.0.
    #[arg(long, value_parser = advertise, value_name = "HOST")]
    pub advertise_host: Option<String>,
    /// Compatibility matrix for start decisions.
    #[arg(long, value_name = "FILE")]
    pub matrix: Option<PathBuf>,
    /// Resource definitions to load into a store a region creates (default: built-in set).
    #[arg(long, value_name = "FILE")]
    pub resources: Option<PathBuf>,
}

fn advertise(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:".contains(c));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("invalid host {s:?}: a DNS name or IP address"))
    }
}

fn count(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "invalid count {s:?}: a whole number greater than zero"
        )),
    }
}

/// Parses a rate `R/s`, `R/m` or a bare number per second; zero or negative is refused.
pub fn rate(s: &str) -> Result<f64, String> {
    let (num, per) = match s.split_once('/') {
        Some((n, "s")) => (n, 1.0),
        Some((n, "m")) => (n, 60.0),
        Some(_) => {
            return Err(format!(
                "invalid rate {s:?}: expected R/s or R/m, e.g. 50/s"
            ))
        }
        None => (s, 1.0),
    };
    match num.parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(r / per),
        _ => Err(format!(
            "invalid rate {s:?}: a number greater than zero, e.g. 50/s"
        )),
    }
}

/// `pacup jobs ...`
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Submit batch jobs to the PAC's shared datastore.
    #[command(
        after_help = "Examples:\n  pacup jobs submit MyPAC --count 500\n  pacup jobs submit MyPAC --rate 20/s --duration 5m"
    )]
    Submit {
        /// PAC name.
        #[arg(value_parser = pac_name)]
        pac: PacName,
        /// How many jobs (with --duration: at most this many).
        #[arg(long, value_parser = count, required_unless_present = "duration")]
        count: Option<u64>,
        /// Jobs per second (R/s or R/m); default: all at once.
        #[arg(long, value_parser = rate)]
        rate: Option<f64>,
        /// Keep submitting at --rate for this long.
        #[arg(long, value_parser = duration, requires = "rate", value_name = "DURATION")]
        duration: Option<Duration>,
    },
    /// Submitted, completed, pending, duplicates, per region, longest completion gap.
    #[command(after_help = "Examples:\n  pacup jobs stats MyPAC\n  pacup --json jobs stats MyPAC")]
    Stats {
        /// PAC name.
        #[arg(value_parser = pac_name)]
        pac: PacName,
    },
}

/// `pacup clients ...`
#[derive(Debug, Subcommand)]
pub enum ClientsCommand {
    /// Send transactions to live regions whose listener is on, retrying elsewhere.
    #[command(
        after_help = "Examples:\n  pacup clients run MyPAC --count 1000\n  pacup clients run MyPAC --duration 10m --rate 50/s"
    )]
    #[command(group(clap::ArgGroup::new("amount").required(true).args(["count", "duration"])))]
    Run {
        /// PAC name.
        #[arg(value_parser = pac_name)]
        pac: PacName,
        /// How many transactions (give this or --duration).
        #[arg(long, value_parser = count, conflicts_with = "duration")]
        count: Option<u64>,
        /// Send for this long (give this or --count).
        #[arg(long, value_parser = duration, value_name = "DURATION")]
        duration: Option<Duration>,
        /// Transactions per second (R/s or R/m).
        #[arg(long, value_parser = rate, default_value = "50/s")]
        rate: f64,
        /// A transaction no region could serve within this counts as failed.
        #[arg(long, value_parser = duration, default_value = "10s", value_name = "DURATION")]
        tx_timeout: Duration,
    },
}

/// Arguments of `pacup region run`.
#[derive(Debug, Clone, Args)]
pub struct RegionRunArgs {
    /// Region name (1-32 of A-Z a-z 0-9 _ -).
    #[arg(value_parser = region_name)]
    pub region: RegionName,
    /// PAC the region belongs to (default: the only PAC in the PSOR; a cold start of a new
    /// PAC must name it).
    #[arg(long, env = "PACUP_PAC", hide_env_values = true, value_parser = pac_name)]
    pub pac: Option<PacName>,
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
    /// Client listener address (default: an ephemeral port on 127.0.0.1).
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<std::net::SocketAddr>,
    /// On SIGTERM/SIGINT: how long existing clients may take to leave.
    #[arg(long, value_parser = duration, default_value = "30s", value_name = "DURATION")]
    pub drain_timeout: Duration,
    /// On SIGTERM/SIGINT: past this the stop is forced.
    #[arg(long, value_parser = duration, default_value = "60s", value_name = "DURATION")]
    pub stop_timeout: Duration,
    /// Runtime settings.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Metrics endpoint.
    #[command(flatten)]
    pub metrics: MetricsArgs,
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
