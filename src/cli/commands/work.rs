//! `pacup jobs ...` and `pacup clients run`: drive and audit work.

use super::{connect, print_json};
use crate::cli::args::*;
use crate::cli::output::outln;
use crate::cli::GlobalArgs;
use crate::error::{Error, ExitCode};
use crate::load;
use crate::names::PacName;
use crate::psor::Pac;
use clap::Subcommand;
use serde_json::json;
use std::time::Duration;

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

pub(super) async fn jobs(g: &GlobalArgs, cmd: JobsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        JobsCommand::Submit {
            pac,
            count,
            rate,
            duration,
        } => {
            let p = Pac::new(connect(g).await?, pac.clone());
            // No stop signal: the command ends by count or duration.
            let (_stop_tx, stop) = tokio::sync::watch::channel(false);
            let load::Submitted {
                count: done,
                first,
                last,
            } = load::submit_jobs(&p, count.unwrap_or(u64::MAX), rate, duration, stop).await?;
            if g.json {
                print_json(
                    &json!({"pac": pac, "submitted": done, "first_job": first, "last_job": last}),
                );
            } else {
                outln!("PAC {pac}: {done} jobs submitted (ids {first}..={last})");
            }
            Ok(ExitCode::Ok)
        }
        JobsCommand::Stats { pac } => {
            let p = Pac::new(connect(g).await?, pac.clone());
            p.require().await?;
            let s = p.work_stats().await?;
            if g.json {
                let mut v = serde_json::to_value(&s)?;
                v["pac"] = json!(pac);
                print_json(&v);
            } else {
                outln!(
                    "PAC {pac}: submitted {}, completed {}, pending {}, duplicates {}, longest completion gap {}ms",
                    s.submitted, s.completed, s.pending, s.duplicates, s.max_completion_gap_ms
                );
                for (r, n) in &s.by_region {
                    outln!("  {r}: {n}");
                }
                outln!(
                    "client transactions: {} recorded, {} repeated",
                    s.transactions,
                    s.transaction_duplicates
                );
            }
            Ok(ExitCode::Ok)
        }
    }
}

pub(super) async fn clients(g: &GlobalArgs, cmd: ClientsCommand) -> anyhow::Result<ExitCode> {
    let ClientsCommand::Run {
        pac,
        count,
        duration,
        rate,
        tx_timeout,
    } = cmd;
    let p = Pac::new(connect(g).await?, pac.clone());
    p.require().await?;
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let report = load::run_clients(p, rate, count, duration, tx_timeout, stop).await;
    if g.json {
        let mut v = serde_json::to_value(&report)?;
        v["pac"] = json!(pac);
        print_json(&v);
    } else {
        outln!(
            "PAC {pac}: {} transactions sent, {} ok, {} failed, {} retried in {}ms",
            report.sent,
            report.ok,
            report.failed,
            report.retried,
            report.elapsed_ms
        );
        for (r, n) in &report.by_region {
            outln!("  {r}: {n}");
        }
    }
    if report.failed > 0 {
        return Err(Error::refused(format!(
            "{} client transactions could not be served",
            report.failed
        ))
        .into());
    }
    Ok(ExitCode::Ok)
}
