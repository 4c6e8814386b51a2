//! `pacup region ...`, `pacup agent`, `pacup host ...`.

use super::{actor, connect, print_json, Shutdown};
use crate::agent::{Agent, AgentConfig};
use crate::cli::output;
use crate::cli::output::outln;
use crate::cli::{
    AgentArgs, Autostart, GlobalArgs, HostCommand, OnOff, RegionCommand, RegionRunArgs, RuntimeArgs,
};
use crate::compat::Matrix;
use crate::error::{Error, ExitCode};
use crate::metrics::Metrics;
use crate::names::{HostName, PacName, Product, RegionName};
use crate::psor::control::ControlAction;
use crate::psor::{self, Pac};
use crate::region::{Observer, Region, RegionConfig, RegionControl, RegionEvent, StartType};
use crate::resources::Resources;
use anyhow::Context as _;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

fn product(version: &semver::Version, os: &Option<String>, bitness: Option<u8>) -> Product {
    Product {
        version: version.clone(),
        os: os.clone().unwrap_or_else(crate::names::default_os),
        bitness: bitness.unwrap_or_else(crate::names::default_bitness),
    }
}

/// Builds a region configuration from the shared runtime flags (files validated here,
/// before anything connects).
fn region_config(
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
    cfg.listener_start = rt.listener;
    cfg.advertise_host = rt.advertise_host.clone();
    Ok(cfg)
}

/// Prints region events: one line each for a person, one JSON object per line with --json.
fn printer(json_out: bool, host: String) -> Observer {
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
                    start_type,
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

/// The live host agent that hosts `region`: the host recorded in the region's record, or
/// a live agent listing it.
pub(crate) async fn host_of(pac: &Pac, region: &str) -> crate::Result<String> {
    // Agents publish their host records before any region initialises the PAC (a cold
    // start through an agent creates it), so the PAC record need not exist yet.
    let snap = pac.snapshot().await?;
    let listed: Vec<&psor::HostInfo> = snap
        .hosts
        .iter()
        .filter(|h| h.regions.iter().any(|r| r == region))
        .collect();
    let recorded = snap
        .region(region)
        .map(|r| r.host.clone())
        .filter(|h| !h.is_empty());
    // A live agent that lists the region wins over a recorded host whose agent is gone.
    let host = listed
        .iter()
        .find(|h| h.alive && recorded.as_deref().is_none_or(|r| r == h.name))
        .or_else(|| listed.iter().find(|h| h.alive))
        .map(|h| h.name.clone())
        .or(recorded)
        .or_else(|| listed.first().map(|h| h.name.clone()));
    let Some(host) = host else {
        if !snap.exists {
            return Err(Error::NoSuchPac(pac.name().to_string()));
        }
        return Err(Error::refused(format!(
            "region {region} is not known in PAC {}: no host agent lists it",
            pac.name()
        )));
    };
    match snap.hosts.iter().find(|h| h.name == host) {
        Some(h) if h.alive => Ok(host),
        _ => Err(Error::refused(format!(
            "the host agent of {host} (which hosts region {region}) is not alive"
        ))),
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
    let host = host_of(&p, region.as_str()).await?;
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
            let snap = p.snapshot().await?;
            match snap.hosts.iter().find(|h| h.name == host.as_str()) {
                Some(h) if h.alive => {}
                Some(_) => {
                    return Err(
                        Error::refused(format!("the host agent of {host} is not alive")).into(),
                    )
                }
                None if !snap.exists => return Err(Error::NoSuchPac(pac.to_string()).into()),
                None => {
                    return Err(
                        Error::refused(format!("host {host} is not known in PAC {pac}")).into(),
                    )
                }
            }
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
        a.start_type,
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

pub(super) async fn agent(g: &GlobalArgs, a: AgentArgs, m: &Metrics) -> anyhow::Result<ExitCode> {
    let mut names: Vec<&str> = a.regions.iter().map(|(r, _)| r.as_str()).collect();
    names.sort();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::invalid("--region", w[0], "each region once").into());
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
            a.product_version,
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
