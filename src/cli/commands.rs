//! What each command does, and the one place errors become exit codes.

use super::output;
use super::{Cli, Command, GlobalArgs, PacCommand, RegionCommand, RegionRunArgs, SetModeArg};
use crate::compat::{self, Matrix};
use crate::conn::{Psor, PsorOptions};
use crate::error::{Error, ExitCode};
use crate::names::Product;
use crate::psor::{self, Mode, Pac};
use crate::region::{Region, RegionConfig, RegionEvent};
use crate::resources::Resources;
use anyhow::Context as _;
use serde_json::json;
use std::sync::Arc;

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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("pacup={level},caspac={level}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Maps any error chain to the SPEC exit code: the first library [`Error`] in the chain
/// decides; anything else is a refusal/failure (1).
pub fn exit_code_of(e: &anyhow::Error) -> ExitCode {
    for cause in e.chain() {
        if let Some(err) = cause.downcast_ref::<Error>() {
            return err.exit_code();
        }
        if let Some(err) = cause.downcast_ref::<clap::Error>() {
            return if err.exit_code() == 0 { ExitCode::Ok } else { ExitCode::InvalidInput };
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
        None => std::env::var("PACUP_PSOR_PASSWORD").ok().filter(|p| !p.is_empty()),
    };
    o.tls_ca = g.tls_ca.clone();
    o.tls_cert = g.tls_cert.clone();
    o.tls_key = g.tls_key.clone();
    o.connect_timeout = g.connect_timeout;
    o.command_timeout = g.command_timeout;
    // Refuse a malformed URL before anything else (exit 2), even for commands that
    // would fail later for another reason.
    crate::conn::PsorTarget::parse(&o.url)?;
    Ok(o)
}

async fn connect(g: &GlobalArgs) -> anyhow::Result<Psor> {
    let o = psor_options(g)?;
    Ok(Psor::connect(&o).await?)
}

fn actor() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "operator".into());
    format!("{user} (pacup {})", env!("CARGO_PKG_VERSION"))
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string(v).unwrap_or_default());
}

/// Runs a parsed command line; returns the exit code for a completed command. Errors
/// carry their own code (see [`exit_code_of`]).
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = &cli.global;
    match cli.command {
        Command::Pac(cmd) => pac(g, cmd).await,
        Command::Region(RegionCommand::Run(args)) => region_run(g, args).await,
    }
}

async fn pac(g: &GlobalArgs, cmd: PacCommand) -> anyhow::Result<ExitCode> {
    // Validate local files before connecting, so bad input is exit 2 even when the
    // PSOR is down, and nothing is written.
    let matrix = match &cmd {
        PacCommand::CheckCompat { matrix: Some(m), .. } => Some(Matrix::load(m)?),
        _ => None,
    };
    let backup = match &cmd {
        PacCommand::Restore { input, .. } => {
            let text = std::fs::read_to_string(input).map_err(|e| Error::BadFile {
                what: "backup".into(),
                path: input.display().to_string(),
                reason: e.to_string(),
            })?;
            Some(serde_json::from_str::<psor::Backup>(&text).map_err(|e| Error::BadFile {
                what: "backup".into(),
                path: input.display().to_string(),
                reason: e.to_string(),
            })?)
        }
        _ => None,
    };
    let psor = connect(g).await?;
    match cmd {
        PacCommand::Init { pac, force } => {
            let p = Pac::new(psor, pac.clone());
            let removed = p
                .init(force, &actor(), None)
                .await
                .with_context(|| format!("cannot initialise PAC {pac}"))?;
            if g.json {
                print_json(&json!({"pac": pac, "initialized": true, "keys_removed": removed}));
            } else {
                println!("PAC {pac} initialised ({removed} store keys removed)");
            }
            Ok(ExitCode::Ok)
        }
        PacCommand::CheckCompat {
            pac,
            product_version,
            os,
            bitness,
            ..
        } => {
            let product = Product {
                version: product_version,
                os: os.unwrap_or_else(crate::names::default_os),
                bitness: bitness.unwrap_or_else(crate::names::default_bitness),
            };
            let snap = Pac::new(psor, pac.clone()).snapshot().await?;
            if !snap.exists {
                return Err(Error::NoSuchPac(pac.to_string()).into());
            }
            let Some(store) = snap.newest_running().and_then(|s| s.product()) else {
                return Err(Error::refused(format!(
                    "PAC {pac} has no running store to check against"
                ))
                .into());
            };
            let v = compat::check(&product, &store, matrix.as_ref());
            if g.json {
                print_json(&json!({
                    "pac": pac,
                    "compatible": v.compatible,
                    "product": v.product,
                    "store": v.store,
                    "reasons": v.reasons,
                }));
            } else {
                println!(
                    "{} {} with PAC {pac} (running store {})",
                    product,
                    if v.compatible { "is COMPATIBLE" } else { "is INCOMPATIBLE" },
                    store
                );
                for r in &v.reasons {
                    println!("  - {r}");
                }
                if !v.compatible {
                    println!("Use the incompatible upgrade process (start the first upgraded region with --start-type upgrade).");
                }
            }
            Ok(if v.compatible { ExitCode::Ok } else { ExitCode::Incompatible })
        }
        PacCommand::SetMode { pac, mode } => {
            let m = match mode {
                SetModeArg::Running => Mode::Running,
                SetModeArg::Quiesce => Mode::Quiesce,
            };
            let changed = Pac::new(psor, pac.clone())
                .set_mode(m, &actor(), None)
                .await
                .with_context(|| format!("cannot set PAC {pac} to {m}"))?;
            if g.json {
                print_json(&json!({"pac": pac, "mode": m, "stores": changed}));
            } else {
                println!("PAC {pac}: store {} now {m}", changed.join(", "));
            }
            Ok(ExitCode::Ok)
        }
        PacCommand::RemoveOld { pac, force } => {
            let r = Pac::new(psor, pac.clone())
                .remove_old(force, &actor(), None)
                .await
                .with_context(|| format!("cannot remove old stores of PAC {pac}"))?;
            if g.json {
                print_json(&json!({"pac": pac, "stores_removed": r.stores_removed, "keys_removed": r.keys_removed}));
            } else if r.stores_removed.is_empty() {
                println!("PAC {pac} has no old store; nothing removed");
            } else {
                println!(
                    "PAC {pac}: removed store {} ({} keys)",
                    r.stores_removed.join(", "),
                    r.keys_removed
                );
            }
            Ok(ExitCode::Ok)
        }
        PacCommand::Status { pac } => {
            let snap = Pac::new(psor, pac.clone()).snapshot().await?;
            if g.json {
                print_json(&serde_json::to_value(&snap)?);
            } else {
                print!("{}", output::status_text(&snap));
            }
            if !snap.exists {
                return Err(Error::NoSuchPac(pac.to_string()).into());
            }
            Ok(ExitCode::Ok)
        }
        PacCommand::List => {
            let pacs = psor::list_pacs(&psor).await?;
            if g.json {
                print_json(&json!({"pacs": pacs}));
            } else {
                print!("{}", output::list_text(&pacs));
            }
            Ok(ExitCode::Ok)
        }
        PacCommand::Backup { pac, out } => {
            let b = Pac::new(psor, pac.clone()).backup().await?;
            if b.keys.is_empty() {
                return Err(Error::NoSuchPac(pac.to_string()).into());
            }
            let text = serde_json::to_string(&b)?;
            std::fs::write(&out, text).map_err(|e| Error::Io {
                context: format!("cannot write backup {}", out.display()),
                source: e,
            })?;
            if g.json {
                print_json(&json!({"pac": pac, "keys": b.keys.len(), "file": out}));
            } else {
                println!("PAC {pac}: {} keys saved to {}", b.keys.len(), out.display());
            }
            Ok(ExitCode::Ok)
        }
        PacCommand::Restore { pac, force, input } => {
            let b = backup.expect("read above");
            let n = Pac::new(psor, pac.clone())
                .restore(&b, force)
                .await
                .with_context(|| format!("cannot restore PAC {pac} from {}", input.display()))?;
            if g.json {
                print_json(&json!({"pac": pac, "keys": n, "from_pac": b.pac}));
            } else {
                println!("PAC {pac}: {n} keys restored from {} (backup of {})", input.display(), b.pac);
            }
            Ok(ExitCode::Ok)
        }
    }
}

async fn region_run(g: &GlobalArgs, a: RegionRunArgs) -> anyhow::Result<ExitCode> {
    if a.heartbeat_ttl <= a.heartbeat_interval {
        return Err(Error::invalid(
            "--heartbeat-ttl",
            crate::names::format_duration(a.heartbeat_ttl),
            "a TTL longer than --heartbeat-interval",
        )
        .into());
    }
    let resources = match &a.resources {
        Some(p) => Resources::load(p)?,
        None => Resources::default_set(),
    };
    let matrix = a.matrix.as_deref().map(Matrix::load).transpose()?;
    let product = Product {
        version: a.product_version.clone(),
        os: a.os.clone().unwrap_or_else(crate::names::default_os),
        bitness: a.bitness.unwrap_or_else(crate::names::default_bitness),
    };
    let mut cfg = RegionConfig::new(a.region.clone(), a.host.clone(), product, a.start_type);
    cfg.resources = resources;
    cfg.matrix = matrix;
    cfg.heartbeat_interval = a.heartbeat_interval;
    cfg.heartbeat_ttl = a.heartbeat_ttl;
    let psor = connect(g).await?;
    let pac = Pac::new(psor, a.pac.clone());
    let json_out = g.json;
    let name = a.region.to_string();
    let observer: Arc<dyn Fn(&RegionEvent) + Send + Sync> = Arc::new(move |ev: &RegionEvent| {
        let (kind, text, extra) = match ev {
            RegionEvent::Started { start_type, store, mode, warning } => {
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
            RegionEvent::Lost(why) => ("lost", format!("Region {name} lost: {why}"), json!({"reason": why})),
            RegionEvent::Stopped => ("stopped", format!("Region {name} stopped"), json!({})),
        };
        if json_out {
            let mut v = json!({"ts": output::rfc3339(psor::now_ms()), "region": name, "event": kind});
            if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                o.extend(e.clone());
            }
            print_json(&v);
        } else {
            println!("{text}");
        }
    });
    let region = Region::start(pac, cfg, observer)
        .await
        .with_context(|| format!("region {} cannot start", a.region))?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = tx.send(true);
    });
    region.run(rx).await?;
    Ok(ExitCode::Ok)
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
