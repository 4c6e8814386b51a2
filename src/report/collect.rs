//! Reading a rollout's report inputs from the PSOR, and writing the report file.

use super::{build, render, Counts, Ev, Inputs, Meta, Report};
use crate::coordinator::plan::Plan;
use crate::coordinator::steps::{self, Process, Step};
use crate::error::{Error, Result};
use crate::psor::{now_ms, Pac};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What [`write`] wrote (`rollout report --json`, documented in docs/report.md).
#[derive(Debug, Clone, Serialize)]
pub struct Written {
    /// PAC.
    pub pac: String,
    /// Rollout id.
    pub rollout: String,
    /// The file, absolute.
    pub path: PathBuf,
    /// Its size.
    pub bytes: usize,
    /// The rollout's state or result.
    pub result: String,
    /// Region lanes drawn.
    pub regions: usize,
    /// The rollout's events found in the PSOR's stream.
    pub events: usize,
    /// Step events by outcome.
    pub steps: Counts,
    /// Jobs completed during the rollout (its `jobs` series).
    pub jobs_completed: u64,
    /// Client requests answered during the rollout.
    pub client_requests_ok: u64,
    /// Client requests given up during the rollout.
    pub client_requests_failed: u64,
}

fn num(h: &HashMap<String, String>, k: &str) -> Option<u64> {
    h.get(k).and_then(|v| v.parse().ok())
}

fn text(h: &HashMap<String, String>, k: &str) -> String {
    h.get(k).cloned().unwrap_or_default()
}

fn jtext(v: &serde_json::Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_string()
}

/// The start time encoded in a rollout id (`<PAC>-<ms, hex>`).
fn id_ms(id: &str) -> Option<u64> {
    u64::from_str_radix(id.rsplit_once('-')?.1, 16).ok()
}

/// "incompatible upgrade 1.0.0 -> 2.0.0 (25 steps): ..." (the preflight event) -> 1.0.0.
fn from_of_preflight(detail: &str) -> Option<String> {
    let (_, rest) = detail.split_once(" upgrade ")?;
    Some(rest.split_once(" -> ")?.0.to_string())
}

/// Reads rollout `id` of `pac` (the latest when `None`): [`Error::Refused`] (exit 1)
/// when the PAC has no such rollout, [`Error::NoSuchPac`] when the PAC does not exist.
pub async fn collect(pac: &Pac, id: Option<&str>) -> Result<Inputs> {
    let cur = pac.rollout_current().await?;
    let history: Vec<serde_json::Value> = pac
        .rollout_history()
        .await?
        .iter()
        .filter_map(|s| serde_json::from_str(s).ok())
        .collect();
    let name = pac.name().to_string();
    if !cur.contains_key("id") && history.is_empty() {
        if !pac.has_record().await? {
            return Err(Error::NoSuchPac(name));
        }
        if let Some(id) = id {
            return Err(Error::refused(format!(
                "PAC {name} has no rollout {id}: it has no rollout at all"
            )));
        }
        return Err(Error::refused(format!(
            "PAC {name} has no rollout to report on"
        )));
    }
    let id = match id {
        Some(i) => i.to_string(),
        None => cur
            .get("id")
            .cloned()
            .unwrap_or_else(|| jtext(&history[0], "id")),
    };
    let (mut meta, plan, steps) = if cur.get("id") == Some(&id) {
        from_journal(&cur, &name)
    } else if let Some(h) = history.iter().find(|h| h["id"].as_str() == Some(&id)) {
        from_history(h, &name)
    } else {
        let mut known: Vec<String> = cur.get("id").into_iter().cloned().collect();
        known.extend(history.iter().map(|h| jtext(h, "id")));
        known.dedup();
        known.truncate(5);
        return Err(Error::refused(format!(
            "PAC {name} has no rollout {id}; its latest: {} (`pacup rollout history {name}` lists them)",
            known.join(", ")
        )));
    };
    let events: Vec<Ev> = pac
        .all_events()
        .await?
        .iter()
        .map(|(_, f)| Ev::from_fields(f))
        .collect();
    if meta.from_version.is_empty() {
        meta.from_version = events
            .iter()
            .find(|e| e.rollout == id && e.action == "preflight")
            .and_then(|e| from_of_preflight(&e.detail))
            .unwrap_or_default();
    }
    Ok(Inputs {
        jobs: pac.series("jobs", &id).await?,
        clients: pac.series("clients", &id).await?,
        meta,
        plan,
        steps,
        events,
        now_ms: pac.server_time_ms().await.unwrap_or_else(|_| now_ms()),
    })
}

fn process_of(s: &str) -> Process {
    if s == "compatible" {
        Process::Compatible
    } else {
        Process::Incompatible
    }
}

fn from_journal(cur: &HashMap<String, String>, pac: &str) -> (Meta, Option<Plan>, Vec<Step>) {
    let state = text(cur, "state");
    let ended = !matches!(
        state.as_str(),
        "running" | "rolling_back" | "paused" | "held"
    );
    let plan: Option<Plan> = cur.get("plan").and_then(|p| serde_json::from_str(p).ok());
    let steps: Vec<Step> = cur
        .get("steps")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let meta = Meta {
        pac: pac.to_string(),
        id: text(cur, "id"),
        from_version: text(cur, "from_version"),
        target: text(cur, "target"),
        process: text(cur, "process"),
        result: state,
        detail: text(cur, "error"),
        by: text(cur, "by"),
        reason: text(cur, "reason"),
        started_ms: num(cur, "started_at_ms"),
        finished_ms: if ended {
            num(cur, "updated_at_ms")
        } else {
            None
        },
    };
    (meta, plan, steps)
}

fn from_history(h: &serde_json::Value, pac: &str) -> (Meta, Option<Plan>, Vec<Step>) {
    let plan: Option<Plan> = serde_json::from_value(h["plan"].clone()).ok();
    let process = jtext(h, "process");
    let steps = plan
        .as_ref()
        .map(|p| steps::steps(p, process_of(&process)))
        .unwrap_or_default();
    let id = jtext(h, "id");
    let meta = Meta {
        pac: pac.to_string(),
        started_ms: id_ms(&id),
        id,
        from_version: jtext(h, "from_version"),
        target: jtext(h, "target"),
        process,
        result: jtext(h, "result"),
        detail: jtext(h, "detail"),
        by: jtext(h, "by"),
        reason: jtext(h, "reason"),
        // The history keeps the end as text; the picture takes it from the last event.
        finished_ms: None,
    };
    (meta, plan, steps)
}

/// Writes `html` to `path` through a temporary file in the same directory and a rename,
/// so a reader never sees half a report and a failure leaves no partial file.
fn write_file(path: &Path, html: &str) -> Result<PathBuf> {
    let io = |context: String| move |source| Error::Io { context, source };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::invalid("--out", path.display(), "a file path"))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, html).map_err(io(format!("writing {}", tmp.display())))?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(format!("writing {}", path.display()))(e));
    }
    Ok(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()))
}

/// Collects, builds, renders and writes the report of rollout `id` (the latest when
/// `None`) to `path`. Nothing is written when the rollout cannot be read.
pub async fn write(pac: &Pac, id: Option<&str>, path: &Path) -> Result<Written> {
    let inputs = collect(pac, id).await?;
    let report: Report = build(&inputs);
    let html = render(&report);
    let abs = write_file(path, &html)?;
    Ok(Written {
        pac: report.meta.pac.clone(),
        rollout: report.meta.id.clone(),
        path: abs,
        bytes: html.len(),
        result: report.meta.result.clone(),
        regions: report.lanes.len().saturating_sub(1),
        events: report.events,
        steps: report.counts,
        jobs_completed: Report::total(&report.jobs, None),
        client_requests_ok: Report::total(&report.clients, Some("ok")),
        client_requests_failed: Report::total(&report.clients, Some("failed")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_and_preflight_parsing() {
        assert_eq!(id_ms("MyPAC-1a2b"), Some(0x1a2b));
        assert_eq!(id_ms("MY-PAC-ff"), Some(255));
        assert_eq!(
            from_of_preflight("incompatible upgrade 1.0.0 -> 2.0.0 (25 steps): x").as_deref(),
            Some("1.0.0")
        );
        assert_eq!(from_of_preflight("something else"), None);
    }

    #[test]
    fn a_failed_write_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no/such/dir/report.html");
        let e = write_file(&missing, "<html>").unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
        let ok = dir.path().join("r.html");
        let abs = write_file(&ok, "<html>").unwrap();
        assert_eq!(std::fs::read_to_string(&abs).unwrap(), "<html>");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "temporary file left behind");
    }
}
