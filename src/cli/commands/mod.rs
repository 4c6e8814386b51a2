//! What each command does, and the one place errors become exit codes.

mod agent;
mod demo;
mod events;
mod hints;
mod history;
mod interrupt;
mod pac;
mod region;
mod report;
mod rollout;
mod status;
mod work;

pub use agent::{AgentArgs, Autostart};
pub use demo::{DemoArgs, DemoFlip};
pub use pac::{PacCommand, SetModeArg};
pub use region::{
    HostCommand, ListenerArg, OnOff, RegionCommand, RegionRunArgs, RuntimeArgs, StartTypeArg,
};
pub use rollout::{LeaseArgs, RolloutCommand, UntilArg};
pub use work::{ClientsCommand, JobsCommand};

use super::{Cli, Command, GlobalArgs};
use crate::cli::output::outln;
use crate::conn::{Psor, PsorOptions};
use crate::error::{Error, ExitCode};
use crate::metrics::{Metrics, MetricsListener};
use crate::names::PacName;
use crate::psor::Pac;

/// Sets up `tracing` on stderr from `-v`/`-q` (or `RUST_LOG`).
pub fn init_tracing(g: &GlobalArgs) {
    let level = if g.quiet {
        "error"
    } else {
        match g.verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("pacup={level},caspac={level}"))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Maps any error chain to its exit code: the first library [`Error`] in the chain
/// decides; anything else is a refusal/failure (1).
pub fn exit_code_of(e: &anyhow::Error) -> ExitCode {
    for cause in e.chain() {
        if let Some(h) = cause.downcast_ref::<hints::Hinted>() {
            return exit_code_of(&h.error);
        }
        if let Some(err) = cause.downcast_ref::<Error>() {
            return err.exit_code();
        }
        if let Some(err) = cause.downcast_ref::<clap::Error>() {
            return if err.exit_code() == 0 {
                ExitCode::Ok
            } else {
                ExitCode::InvalidInput
            };
        }
    }
    ExitCode::Refused
}

/// Builds connection options from the global arguments and the environment.
pub fn psor_options(g: &GlobalArgs) -> anyhow::Result<PsorOptions> {
    let mut o = PsorOptions::new(g.psor.clone());
    o.password = match &g.psor_password_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| Error::BadFile {
                    what: "PSOR password file".into(),
                    path: p.display().to_string(),
                    reason: e.to_string(),
                })?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
        ),
        None => std::env::var("PACUP_PSOR_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty()),
    };
    o.tls_ca = g.tls_ca.clone();
    o.tls_cert = g.tls_cert.clone();
    o.tls_key = g.tls_key.clone();
    o.connect_timeout = g.connect_timeout;
    o.command_timeout = g.command_timeout;
    o.durability = g.durability;
    // Refuse a malformed URL before anything else (exit 2), even for commands that
    // would fail later for another reason.
    crate::conn::PsorTarget::parse(&o.url)?;
    if let Some(url) = &g.state_url {
        parse_state_url(url)?;
    }
    Ok(o)
}

/// A `--state` URL has the forms of `--psor`; a malformed one is refused naming the flag.
fn parse_state_url(url: &str) -> Result<(), Error> {
    crate::conn::PsorTarget::parse(url)
        .map(|_| ())
        .map_err(|e| match e {
            Error::InvalidInput {
                value, expected, ..
            } => Error::invalid("--state", value, expected),
            e => e,
        })
}

pub(super) async fn connect(g: &GlobalArgs) -> anyhow::Result<Psor> {
    let o = psor_options(g)?;
    Ok(Psor::connect(&o).await?)
}

/// Connection options of `--state`, when it names a Redis other than the PSOR: the
/// PSOR's TLS options, timeouts and durability, its own password (in the URL, else env
/// PACUP_STATE_PASSWORD).
pub fn state_options(g: &GlobalArgs) -> anyhow::Result<Option<PsorOptions>> {
    let Some(url) = g.state_url.as_ref().filter(|u| **u != g.psor) else {
        return Ok(None);
    };
    let mut o = psor_options(g)?;
    o.url = url.clone();
    o.password = std::env::var("PACUP_STATE_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty());
    Ok(Some(o))
}

/// PAC `name` on `psor`, with the coordinator's state in the `--state` Redis when one
/// is named (connected now).
pub(super) async fn pac_with_state(
    g: &GlobalArgs,
    psor: Psor,
    name: PacName,
) -> anyhow::Result<Pac> {
    let pac = Pac::new(psor, name);
    Ok(match state_options(g)? {
        Some(o) => pac.with_state(Psor::connect(&o).await?),
        None => pac,
    })
}

/// [`pac_with_state`] on a new connection to the PSOR.
pub(super) async fn connect_pac(g: &GlobalArgs, name: PacName) -> anyhow::Result<Pac> {
    pac_with_state(g, connect(g).await?, name).await
}

/// The PAC a command named, else the only PAC in the PSOR (said at `-v`). With several
/// PACs or none the command is refused (exit 1), listing them and saying how to name one
/// (`how`, e.g. "--pac").
pub async fn pac_or_only(
    psor: &Psor,
    given: Option<PacName>,
    how: &str,
) -> anyhow::Result<PacName> {
    if let Some(p) = given {
        return Ok(p);
    }
    let names = crate::psor::pac_names(psor).await?;
    match names.as_slice() {
        [one] => {
            tracing::info!("no PAC named: using {one}, the only PAC in the PSOR");
            Ok(one.clone())
        }
        [] => Err(Error::refused(format!("the PSOR holds no PAC; name one with {how}")).into()),
        many => Err(Error::refused(format!(
            "the PSOR holds several PACs ({}); name one with {how}",
            many.iter()
                .map(PacName::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into()),
    }
}

/// Who acts, for the audit fields: `--by`, else `user@host` from the OS; actions that came
/// through the caspac syntax say so.
pub(super) fn actor(g: &GlobalArgs) -> String {
    let who = g.by.clone().unwrap_or_else(crate::names::default_actor);
    if g.caspac {
        format!("{who} (caspac)")
    } else {
        who
    }
}

pub(super) fn print_json(v: &serde_json::Value) {
    outln!("{}", serde_json::to_string(v).unwrap_or_default());
}

/// Runs a parsed command line; returns the exit code for a completed command. Errors
/// carry their own code (see [`exit_code_of`]).
///
/// With `--metrics-addr` the address is bound before the command does anything (an
/// address that cannot be used fails at once, exit 2, nothing written); the server runs
/// until the command has finished, its graceful stop included, and is joined before the
/// process exits.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let Some((addr, name)) = cli.command.metrics_addr() else {
        return dispatch(cli, &Metrics::disabled()).await;
    };
    let listener = MetricsListener::bind(addr).await?;
    let metrics = Metrics::new(name);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let server = listener.serve(metrics.clone(), stopped);
    let r = dispatch(cli, &metrics).await;
    let _ = stop.send(true);
    server.join().await;
    r
}

async fn dispatch(cli: Cli, m: &Metrics) -> anyhow::Result<ExitCode> {
    let g = &cli.global;
    let scope = hints::Scope::of(&cli.command);
    let r = match cli.command {
        Command::Pac(cmd) => pac::pac(g, cmd).await,
        Command::Region(cmd) => region::region(g, cmd, m).await,
        Command::Agent(args) => agent::agent(g, args, m).await,
        Command::Host(cmd) => region::host(g, cmd).await,
        Command::Jobs(cmd) => work::jobs(g, cmd).await,
        Command::Clients(cmd) => work::clients(g, cmd).await,
        Command::Rollout(cmd) => rollout::rollout(g, cmd, m).await,
        Command::Events { pac, follow } => events::events(g, pac, follow).await,
        Command::Demo(args) => demo::demo(g, args).await,
    };
    match r {
        Err(e) => Err(hints::attach(g, &scope, e).await),
        ok => ok,
    }
}

/// SIGTERM/SIGINT, registered when created: a signal that arrives while a region or
/// agent is still starting is not lost (and does not kill the process outright).
pub struct Shutdown {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Shutdown {
    /// Registers the handlers now.
    pub fn register() -> std::io::Result<Shutdown> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Shutdown {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Shutdown {})
    }

    /// Resolves on the first SIGTERM or SIGINT.
    pub async fn wait(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
