//! `pacup pac ...`: the admin actions.

use super::{actor, connect, print_json};
use crate::cli::args::*;
use crate::cli::output;
use crate::cli::output::{out, outln};
use crate::cli::GlobalArgs;
use crate::compat::{self, Matrix};
use crate::error::{Error, ExitCode};
use crate::names::{HostName, PacName, Product};
use crate::psor::{self, Mode, Pac};
use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use serde_json::json;
use std::path::PathBuf;

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
        after_help = "Examples:\n  pacup pac check-compat MyPAC --product-version 2.0.0\n  pacup pac check-compat MyPAC --product-version 2.1.0 --matrix compat.json --json\n  pacup pac check-compat MyPAC --host host1   # the product installed on host1"
    )]
    CheckCompat {
        /// PAC name.
        #[arg(value_parser = pac_name)]
        pac: PacName,
        /// Product version to check (semver, e.g. 2.0.0).
        #[arg(long, value_parser = version, required_unless_present = "host")]
        product_version: Option<semver::Version>,
        /// Check the product installed on this host of the PAC (its version, OS and
        /// bitness, from the host's record) instead of --product-version.
        #[arg(long, value_parser = host_name, conflicts_with_all = ["product_version", "os", "bitness"])]
        host: Option<HostName>,
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

pub(super) async fn pac(g: &GlobalArgs, cmd: PacCommand) -> anyhow::Result<ExitCode> {
    // Validate local files before connecting, so bad input is exit 2 even when the
    // PSOR is down, and nothing is written.
    let matrix = match &cmd {
        PacCommand::CheckCompat {
            matrix: Some(m), ..
        } => Some(Matrix::load(m)?),
        _ => None,
    };
    let backup = match &cmd {
        PacCommand::Restore { input, .. } => {
            let text = std::fs::read_to_string(input).map_err(|e| Error::BadFile {
                what: "backup".into(),
                path: input.display().to_string(),
                reason: e.to_string(),
            })?;
            Some(
                serde_json::from_str::<psor::Backup>(&text).map_err(|e| Error::BadFile {
                    what: "backup".into(),
                    path: input.display().to_string(),
                    reason: e.to_string(),
                })?,
            )
        }
        _ => None,
    };
    let psor = connect(g).await?;
    match cmd {
        PacCommand::Init { pac, force } => {
            let p = Pac::new(psor, pac.clone());
            let removed = p
                .init(force, &actor(g), None)
                .await
                .with_context(|| format!("cannot initialise PAC {pac}"))?;
            if g.json {
                print_json(&json!({"pac": pac, "initialized": true, "keys_removed": removed}));
            } else {
                outln!("PAC {pac} initialised ({removed} store keys removed)");
            }
            Ok(ExitCode::Ok)
        }
        PacCommand::CheckCompat {
            pac,
            product_version,
            host,
            os,
            bitness,
            ..
        } => {
            let snap = Pac::new(psor, pac.clone()).snapshot().await?;
            if !snap.exists {
                return Err(Error::NoSuchPac(pac.to_string()).into());
            }
            let product = match (&host, product_version) {
                (Some(h), _) => installed_product(&snap, &pac, h)?,
                (None, Some(version)) => Product {
                    version,
                    os: os.unwrap_or_else(crate::names::default_os),
                    bitness: bitness.unwrap_or_else(crate::names::default_bitness),
                },
                (None, None) => unreachable!("clap requires --product-version or --host"),
            };
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
                outln!(
                    "{} {} with PAC {pac} (running store {})",
                    product,
                    if v.compatible {
                        "is COMPATIBLE"
                    } else {
                        "is INCOMPATIBLE"
                    },
                    store
                );
                for r in &v.reasons {
                    outln!("  - {r}");
                }
                if !v.compatible {
                    outln!("Use the incompatible upgrade process (start the first upgraded region with --start-type upgrade).");
                }
            }
            Ok(if v.compatible {
                ExitCode::Ok
            } else {
                ExitCode::Incompatible
            })
        }
        PacCommand::SetMode { pac, mode } => {
            let m = match mode {
                SetModeArg::Running => Mode::Running,
                SetModeArg::Quiesce => Mode::Quiesce,
            };
            let changed = Pac::new(psor, pac.clone())
                .set_mode(m, &actor(g), None)
                .await
                .with_context(|| format!("cannot set PAC {pac} to {m}"))?;
            if g.json {
                print_json(&json!({"pac": pac, "mode": m, "stores": changed}));
            } else {
                outln!("PAC {pac}: store {} now {m}", changed.join(", "));
            }
            Ok(ExitCode::Ok)
        }
        PacCommand::RemoveOld { pac, force } => {
            let r = Pac::new(psor, pac.clone())
                .remove_old(force, &actor(g), None)
                .await
                .with_context(|| format!("cannot remove old stores of PAC {pac}"))?;
            if g.json {
                print_json(
                    &json!({"pac": pac, "stores_removed": r.stores_removed, "keys_removed": r.keys_removed}),
                );
            } else if r.stores_removed.is_empty() {
                outln!("PAC {pac} has no old store; nothing removed");
            } else {
                outln!(
                    "PAC {pac}: removed store {} ({} keys)",
                    r.stores_removed.join(", "),
                    r.keys_removed
                );
            }
            Ok(ExitCode::Ok)
        }
        PacCommand::Status { pac } => {
            let snap = Pac::new(psor, pac.clone()).snapshot().await?;
            // --json keeps its one document (`"exists": false`); a person gets the error
            // once, on stderr, instead of the same sentence on both streams.
            if g.json {
                print_json(&serde_json::to_value(&snap)?);
            } else if snap.exists {
                out!("{}", output::status_text(&snap));
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
                out!("{}", output::list_text(&pacs));
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
                outln!(
                    "PAC {pac}: {} keys saved to {}",
                    b.keys.len(),
                    out.display()
                );
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
                outln!(
                    "PAC {pac}: {n} keys restored from {} (backup of {})",
                    input.display(),
                    b.pac
                );
            }
            Ok(ExitCode::Ok)
        }
    }
}

/// The product a host of the PAC has installed, from its record.
fn installed_product(
    snap: &crate::psor::model::Snapshot,
    pac: &PacName,
    host: &HostName,
) -> std::result::Result<Product, Error> {
    let Some(h) = snap.hosts.iter().find(|h| h.name == host.as_str()) else {
        return Err(Error::NoSuchHost {
            pac: pac.to_string(),
            host: host.to_string(),
        });
    };
    Product::parse(
        &h.product_version,
        Some(&h.os),
        Some(&h.bitness.to_string()),
    )
    .map_err(|e| Error::refused(format!("host {host}'s record names no valid product: {e}")))
}
