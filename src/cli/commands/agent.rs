//! `pacup agent`: a host agent in the foreground until SIGTERM/SIGINT.

use super::region::{printer, product, region_config, RuntimeArgs};
use super::{connect, Shutdown};
use crate::agent::{Agent, AgentConfig};
use crate::cli::args::*;
use crate::cli::output::outln;
use crate::cli::{GlobalArgs, MetricsArgs};
use crate::error::{Error, ExitCode};
use crate::metrics::Metrics;
use crate::names::{HostName, PacName, RegionName};
use crate::psor::{Pac, StartType};
use anyhow::Context as _;
use clap::{Args, ValueEnum};

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
    /// A path whose free disk space the host record reports, for a plan's `host_checks`
    /// (repeatable; absolute). The temp directory's writability is always reported.
    #[arg(long = "check-path", value_name = "PATH")]
    pub check_paths: Vec<std::path::PathBuf>,
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

pub(super) async fn agent(g: &GlobalArgs, a: AgentArgs, m: &Metrics) -> anyhow::Result<ExitCode> {
    let mut names: Vec<&str> = a.regions.iter().map(|(r, _)| r.as_str()).collect();
    names.sort();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::invalid("--region", w[0], "each region once").into());
    }
    if let Some(p) = a.check_paths.iter().find(|p| !p.is_absolute()) {
        return Err(Error::invalid("--check-path", p.display(), "an absolute path").into());
    }
    let prod = product(&a.product_version, &a.os, a.bitness);
    let mut template = region_config(
        a.regions[0].0.clone(),
        a.host.clone(),
        prod.clone(),
        StartType::Warm,
        &a.runtime,
    )?;
    template.metrics = m.clone();
    let cfg = AgentConfig {
        pac: a.pac.clone(),
        host: a.host.clone(),
        product: prod,
        regions: a.regions.clone(),
        autostart: match a.autostart {
            Autostart::Cold => Some(StartType::Cold),
            Autostart::Warm => Some(StartType::Warm),
            Autostart::Upgrade => Some(StartType::Upgrade),
            Autostart::None => None,
        },
        host_ttl: a.runtime.heartbeat_ttl,
        region_defaults: template,
        check_paths: a.check_paths.clone(),
    };
    let shutdown = Shutdown::register().context("installing signal handlers")?;
    let pac = Pac::new(connect(g).await?.with_metrics(m.clone()), a.pac.clone());
    let agent = Agent::new(pac, cfg, printer(g.json, a.host.to_string()))
        .await
        .with_context(|| format!("host agent {} cannot start", a.host))?;
    if !g.json {
        outln!(
            "Host agent {} ready for PAC {} (product {}, regions {})",
            a.host,
            a.pac,
            agent.product_version(),
            names.join(", ")
        );
    }
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.wait().await;
        let _ = tx.send(true);
    });
    agent.run(rx).await?;
    Ok(ExitCode::Ok)
}
