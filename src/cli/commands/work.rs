//! `pacup jobs ...` and `pacup clients run`: drive and audit work.

use super::{connect, print_json};
use crate::cli::output::outln;
use crate::cli::{ClientsCommand, GlobalArgs, JobsCommand};
use crate::error::{Error, ExitCode};
use crate::load;
use crate::psor::Pac;
use serde_json::json;

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
