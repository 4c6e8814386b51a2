//! `pacup region ...` and `pacup host ...`: a region in the foreground, or an action on
//! a region or host through its host agent.

use super::{actor, connect, print_json, Shutdown};
use crate::cli::args::*;
use crate::cli::output;
use crate::cli::output::outln;
use crate::cli::{GlobalArgs, MetricsArgs};
use crate::compat::Matrix;
use crate::error::{Error, ExitCode};
use crate::metrics::Metrics;
use crate::names::{HostName, PacName, Product, RegionName};
use crate::psor::control::ControlAction;
use crate::psor::{self, Pac};
use crate::region::{
    ListenerStart, Observer, Region, RegionConfig, RegionControl, RegionEvent, StartType,
};
use crate::resources::Resources;
use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
        start_type: StartTypeArg,
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

/// `--start-type` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StartTypeArg {
    /// Wipe and initialise the PAC (becomes warm if another region is alive).
    Cold,
    /// Join the running PAC.
    Warm,
    /// Start a new store for an incompatible product version beside the old one.
    Upgrade,
}

impl From<StartTypeArg> for StartType {
    fn from(a: StartTypeArg) -> StartType {
        match a {
            StartTypeArg::Cold => StartType::Cold,
            StartTypeArg::Warm => StartType::Warm,
            StartTypeArg::Upgrade => StartType::Upgrade,
        }
    }
}

/// `--listener` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListenerArg {
    /// On if the joined store is running, off in upgrade mode.
    Auto,
    /// Always on.
    On,
    /// Always off (turned on later by `region listener on`).
    Off,
}

impl From<ListenerArg> for ListenerStart {
    fn from(a: ListenerArg) -> ListenerStart {
        match a {
            ListenerArg::Auto => ListenerStart::Auto,
            ListenerArg::On => ListenerStart::On,
            ListenerArg::Off => ListenerStart::Off,
        }
    }
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
    pub listener: ListenerArg,
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
    pub start_type: StartTypeArg,
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

pub(super) fn product(
    version: &semver::Version,
    os: &Option<String>,
    bitness: Option<u8>,
) -> Product {
    Product {
        version: version.clone(),
        os: os.clone().unwrap_or_else(crate::names::default_os),
        bitness: bitness.unwrap_or_else(crate::names::default_bitness),
    }
}

/// Builds a region configuration from the shared runtime flags (files validated here,
/// before anything connects).
pub(super) fn region_config(
    region: RegionName,
    host: HostName,
    product: Product,
    start_type: StartType,
    rt: &RuntimeArgs,
) -> anyhow::Result<RegionConfig> {
    if rt.heartbeat_ttl <= rt.heartbeat_interval {
        return Err(Error::invalid(
            "--heartbeat-ttl",
            crate::names::format_duration(rt.heartbeat_ttl),
            "a TTL longer than --heartbeat-interval",
        )
        .into());
    }
    let mut cfg = RegionConfig::new(region, host, product, start_type);
    cfg.resources = match &rt.resources {
        Some(p) => Resources::load(p)?,
        None => Resources::default_set(),
    };
    cfg.matrix = rt.matrix.as_deref().map(Matrix::load).transpose()?;
    cfg.heartbeat_interval = rt.heartbeat_interval;
    cfg.heartbeat_ttl = rt.heartbeat_ttl;
    cfg.job_time = rt.job_time;
    cfg.reclaim_idle = rt.reclaim_idle.unwrap_or(rt.heartbeat_ttl * 2);
    cfg.listener_start = rt.listener.into();
    cfg.advertise_host = rt.advertise_host.clone();
    Ok(cfg)
}

/// Prints region events: one line each for a person, one JSON object per line with --json.
pub(super) fn printer(json_out: bool, host: String) -> Observer {
    Arc::new(move |name: &str, ev: &RegionEvent| {
        let (kind, text, extra) = match ev {
            RegionEvent::Started {
                start_type,
                store,
                mode,
                warning,
            } => {
                if let Some(w) = warning {
                    eprintln!("warning: {w}");
                }
                (
                    "started",
                    format!("Region {name} started ({start_type}) in store {store}, mode {mode}"),
                    json!({"start_type": start_type, "store": store, "mode": mode, "warning": warning}),
                )
            }
            RegionEvent::ModeChanged { from, to } => (
                "mode_changed",
                format!("Region {name}: store mode changed from {from} to {to}"),
                json!({"from": from, "to": to}),
            ),
            RegionEvent::Listener { on, endpoint } => (
                "listener",
                format!(
                    "Region {name}: listener {}{}",
                    if *on { "on" } else { "off" },
                    if endpoint.is_empty() {
                        String::new()
                    } else {
                        format!(" ({endpoint})")
                    }
                ),
                json!({"on": on, "endpoint": endpoint}),
            ),
            RegionEvent::Lost(why) => (
                "lost",
                format!("Region {name} lost: {why}"),
                json!({"reason": why}),
            ),
            RegionEvent::Stopped { forced } => (
                "stopped",
                format!(
                    "Region {name} stopped{}",
                    if *forced { " (forced)" } else { "" }
                ),
                json!({"forced": forced}),
            ),
        };
        if json_out {
            let mut v = json!({"ts": output::rfc3339(psor::now_ms()), "host": host, "region": name, "event": kind});
            if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                o.extend(e.clone());
            }
            print_json(&v);
        } else {
            outln!("{text}");
        }
    })
}

pub(super) async fn region(
    g: &GlobalArgs,
    cmd: RegionCommand,
    m: &Metrics,
) -> anyhow::Result<ExitCode> {
    match cmd {
        RegionCommand::Run(a) => region_run(g, *a, m).await,
        RegionCommand::Start {
            region,
            pac,
            start_type,
            wait,
        } => {
            control(
                g,
                pac,
                &region,
                ControlAction::Start {
                    region: region.to_string(),
                    start_type: start_type.into(),
                    listener: None,
                },
                wait,
            )
            .await
        }
        RegionCommand::Stop {
            region,
            pac,
            timeout,
            drain_timeout,
            force,
        } => {
            let action = ControlAction::Stop {
                region: region.to_string(),
                drain_timeout_ms: drain_timeout.as_millis() as u64,
                stop_timeout_ms: timeout.as_millis() as u64,
                force,
            };
            // The agent needs up to the stop timeout itself; wait a little longer.
            control(g, pac, &region, action, timeout + Duration::from_secs(10)).await
        }
        RegionCommand::Listener {
            region,
            state,
            pac,
            wait,
        } => {
            let action = ControlAction::Listener {
                region: region.to_string(),
                on: state == OnOff::On,
            };
            control(g, pac, &region, action, wait).await
        }
        RegionCommand::Crash { region, pac, wait } => {
            control(
                g,
                pac,
                &region,
                ControlAction::Crash {
                    region: region.to_string(),
                },
                wait,
            )
            .await
        }
    }
}

/// `--pac` of the region commands: as given, else the only PAC in the PSOR.
async fn region_pac(psor: &crate::conn::Psor, given: Option<PacName>) -> anyhow::Result<PacName> {
    super::pac_or_only(psor, given, "--pac (or env PACUP_PAC)").await
}

async fn control(
    g: &GlobalArgs,
    pac: Option<PacName>,
    region: &RegionName,
    action: ControlAction,
    wait: Duration,
) -> anyhow::Result<ExitCode> {
    let psor = connect(g).await?;
    let pac = region_pac(&psor, pac).await?;
    let p = Pac::new(psor, pac.clone());
    let host = p.agent_of(region.as_str()).await?;
    let r = p
        .control(&host, action, wait, &actor(g), None)
        .await
        .with_context(|| format!("host {host} did not carry out the command"))?;
    if g.json {
        print_json(
            &json!({"pac": pac, "host": host, "region": region, "ok": r.ok, "message": r.message, "id": r.id}),
        );
    } else {
        outln!("{}", r.message);
    }
    Ok(ExitCode::Ok)
}

pub(super) async fn host(g: &GlobalArgs, cmd: HostCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        HostCommand::Update {
            host,
            pac,
            product_version,
            wait,
        } => {
            let p = Pac::new(connect(g).await?, pac.clone());
            p.snapshot().await?.live_agent(host.as_str())?;
            let r = p
                .control(
                    host.as_str(),
                    ControlAction::ApplyUpdate {
                        version: product_version.to_string(),
                    },
                    wait,
                    &actor(g),
                    None,
                )
                .await
                .with_context(|| format!("host {host} was not updated"))?;
            if g.json {
                print_json(&json!({"pac": pac, "host": host, "ok": r.ok, "message": r.message}));
            } else {
                outln!("{}", r.message);
            }
            Ok(ExitCode::Ok)
        }
    }
}

async fn region_run(g: &GlobalArgs, a: RegionRunArgs, m: &Metrics) -> anyhow::Result<ExitCode> {
    let mut cfg = region_config(
        a.region.clone(),
        a.host.clone(),
        product(&a.product_version, &a.os, a.bitness),
        a.start_type.into(),
        &a.runtime,
    )?;
    if let Some(l) = a.listen {
        cfg.listen = l;
    }
    cfg.metrics = m.clone();
    let shutdown = Shutdown::register().context("installing signal handlers")?;
    let psor = connect(g).await?.with_metrics(m.clone());
    let pac = Pac::new(psor.clone(), region_pac(&psor, a.pac).await?);
    let region = Region::start(pac, cfg, printer(g.json, a.host.to_string()))
        .await
        .with_context(|| format!("region {} cannot start", a.region))?;
    let handle = region.spawn();
    let ctl = handle.control.clone();
    let (drain, timeout) = (a.drain_timeout, a.stop_timeout);
    tokio::spawn(async move {
        shutdown.wait().await;
        let (tx, _rx) = tokio::sync::oneshot::channel();
        let _ = ctl
            .send(RegionControl::Stop {
                drain,
                timeout,
                force: false,
                reply: tx,
            })
            .await;
    });
    handle.task.await.context("region task")??;
    Ok(ExitCode::Ok)
}
