//! `pacup rollout report P [ROLLOUT] --out FILE`.

use super::print_json;
use crate::cli::GlobalArgs;
use crate::error::ExitCode;
use crate::names::PacName;
use crate::report::{self, Written};
use std::path::PathBuf;

/// One line for a person.
pub(super) fn written_line(w: &Written) -> String {
    format!(
        "Wrote {}: rollout {} of PAC {} ({}; {} regions, {} steps done, {} skipped, {} failed)",
        w.path.display(),
        w.rollout,
        w.pac,
        if w.result.is_empty() { "?" } else { &w.result },
        w.regions,
        w.steps.done,
        w.steps.skipped,
        w.steps.failed
    )
}

pub(super) async fn report(
    g: &GlobalArgs,
    pac: PacName,
    rollout: Option<String>,
    out: PathBuf,
) -> anyhow::Result<ExitCode> {
    // A malformed id is refused before anything is read (exit 2).
    if let Some(id) = &rollout {
        report::check_id(&pac, id)?;
    }
    let p = super::connect_pac(g, pac).await?;
    let w = report::write(&p, rollout.as_deref(), &out).await?;
    if g.json {
        print_json(&serde_json::to_value(&w)?);
    } else {
        println!("{}", written_line(&w));
    }
    Ok(ExitCode::Ok)
}
