//! `pacup rollout report`: a rollout as one self-contained HTML page (docs/report.md).
//!
//! Three stages, so that everything but the first is a pure function with unit tests:
//! [`collect()`] reads the PSOR into [`Inputs`]; [`build`] turns them into a [`Report`]
//! (timeline lanes and bars, the stores' modes over time, per-second counts, summary);
//! [`render`] writes the page (inline CSS and SVG; no script, no external asset).

mod build;
mod collect;
mod html;
mod stores;
mod svg;

pub use build::build;
pub use collect::{collect, write, Written};
pub use html::render;

use crate::coordinator::plan::Plan;
use crate::coordinator::steps::Step;
use crate::error::{Error, Result};
use crate::names::PacName;
use crate::psor::series::SeriesPoint;
use serde::Serialize;

/// Step kinds in rollout order: action name, legend label, colour.
pub const KINDS: &[(&str, &str, &str)] = &[
    ("preflight", "preflight", "#b8b8b8"),
    ("listener_off", "listener off", "#e8743b"),
    ("drain", "drain", "#f2c14e"),
    ("stop", "stop", "#9c6644"),
    ("apply_update", "update", "#7b4fc9"),
    ("check_compat", "compatibility check", "#8d99ae"),
    ("start_upgrade", "start (upgrade)", "#1d5fa8"),
    ("start_warm", "start (warm)", "#4aa3df"),
    ("health_gate", "health gate", "#2e9e44"),
    ("set_mode_running", "new store running", "#0b6e4f"),
    ("listener_on", "listener on", "#19b3b1"),
    ("set_mode_quiesce", "old stores quiesced", "#c9a227"),
    ("verify", "verify", "#6c757d"),
    ("remove_old", "remove old store", "#495057"),
    ("rollback", "rollback", "#d63384"),
    ("pause", "pause", "#adb5bd"),
    ("done", "done", "#212529"),
];

/// The colour of a step kind (grey for one this version does not know).
pub fn colour(action: &str) -> &'static str {
    KINDS
        .iter()
        .find(|k| k.0 == action)
        .map(|k| k.2)
        .unwrap_or("#999999")
}

/// Actions that mark an instant of the rollout rather than a step with a duration (the
/// `done` and `rollback` events' elapsed time is the whole rollout's).
fn is_mark(action: &str) -> bool {
    matches!(action, "pause" | "done" | "rollback")
}

/// One event of the PAC's stream: a rollout's (with `rollout`) or a script's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ev {
    /// PSOR time, ms.
    pub ts_ms: u64,
    /// Rollout id; empty for the scripts' own events.
    pub rollout: String,
    /// Step number.
    pub step: usize,
    /// Action name.
    pub action: String,
    /// Host ("" for none).
    pub host: String,
    /// Region ("" for none).
    pub region: String,
    /// `started`, `done`, `failed` or `skipped`.
    pub status: String,
    /// What happened.
    pub detail: String,
    /// Time the step took.
    pub elapsed_ms: u64,
}

impl Ev {
    /// From a stream entry's fields.
    pub fn from_fields(fields: &[(String, String)]) -> Ev {
        let mut e = Ev::default();
        for (k, v) in fields {
            match k.as_str() {
                "ts_ms" => e.ts_ms = v.parse().unwrap_or(0),
                "rollout" => e.rollout = v.clone(),
                "step" => e.step = v.parse().unwrap_or(0),
                "action" => e.action = v.clone(),
                "host" => e.host = v.clone(),
                "region" => e.region = v.clone(),
                "status" => e.status = v.clone(),
                "detail" => e.detail = v.clone(),
                "elapsed_ms" => e.elapsed_ms = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        e
    }
}

/// What the journal or the history knows of the rollout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// PAC name.
    pub pac: String,
    /// Rollout id.
    pub id: String,
    /// Version before.
    pub from_version: String,
    /// Target version.
    pub target: String,
    /// `compatible` or `incompatible`.
    pub process: String,
    /// State or result (`done`, `rolled_back`, `aborted`, `paused`, `running`, ...).
    pub result: String,
    /// Why it ended (or is blocked) as it did.
    pub detail: String,
    /// Who started it.
    pub by: String,
    /// Why it was started.
    pub reason: String,
    /// Start, ms (coordinator clock).
    pub started_ms: Option<u64>,
    /// End, ms, once it ended.
    pub finished_ms: Option<u64>,
}

/// Everything a report is built from.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// The rollout.
    pub meta: Meta,
    /// Its plan, when still recorded.
    pub plan: Option<Plan>,
    /// Its steps (to place a wave's health gate on the wave's regions).
    pub steps: Vec<Step>,
    /// The PAC's whole event stream, oldest first.
    pub events: Vec<Ev>,
    /// The rollout's `jobs` series.
    pub jobs: Vec<SeriesPoint>,
    /// The rollout's `clients` series.
    pub clients: Vec<SeriesPoint>,
    /// When the report is made, ms.
    pub now_ms: u64,
}

/// A timeline lane: the PAC's own (index 0) or one region's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lane {
    /// Region name, or `PAC <name>` for lane 0.
    pub name: String,
    /// The region's host.
    pub host: Option<String>,
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BarStatus {
    /// Did its work.
    Done,
    /// Found it already done.
    Skipped,
    /// Failed.
    Failed,
    /// Still running when the report was made.
    Running,
    /// Started, never ended (its coordinator died; the step was run again or not).
    Interrupted,
}

impl BarStatus {
    /// The word shown.
    pub fn word(self) -> &'static str {
        match self {
            BarStatus::Done => "done",
            BarStatus::Skipped => "skipped",
            BarStatus::Failed => "failed",
            BarStatus::Running => "running",
            BarStatus::Interrupted => "interrupted",
        }
    }
}

/// One step drawn on one lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bar {
    /// Lane index.
    pub lane: usize,
    /// Action name.
    pub action: String,
    /// Step number.
    pub step: usize,
    /// Start, ms.
    pub start_ms: u64,
    /// End, ms.
    pub end_ms: u64,
    /// Outcome.
    pub status: BarStatus,
    /// The event's host and region, as `REGION on host`.
    pub target: String,
    /// The event's detail.
    pub detail: String,
}

/// An instant on the PAC lane (pause, done, rollback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// When, ms.
    pub ts_ms: u64,
    /// Action name.
    pub action: String,
    /// Status.
    pub status: String,
    /// Detail.
    pub detail: String,
}

/// A store in one mode for a while.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// From, ms.
    pub start_ms: u64,
    /// To, ms.
    pub end_ms: u64,
    /// `upgrade`, `running` or `quiesce`.
    pub mode: String,
}

/// One store's modes during the rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreTrack {
    /// Store version.
    pub version: String,
    /// Its modes, in time order.
    pub segments: Vec<Segment>,
}

/// Step events by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Did their work.
    pub done: usize,
    /// Already done.
    pub skipped: usize,
    /// Failed.
    pub failed: usize,
    /// Started and never ended.
    pub unfinished: usize,
}

/// A failed step, for the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// When, ms.
    pub ts_ms: u64,
    /// Step number.
    pub step: usize,
    /// Action name.
    pub action: String,
    /// `REGION on host`, `host` or "".
    pub target: String,
    /// The error.
    pub detail: String,
}

/// What the page shows.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The rollout.
    pub meta: Meta,
    /// When the rollout's first step started, ms (times are shown relative to it).
    pub origin_ms: u64,
    /// Time window shown, ms.
    pub t0: u64,
    /// End of the window, ms.
    pub t1: u64,
    /// Timeline lanes (0 = the PAC's own steps).
    pub lanes: Vec<Lane>,
    /// Steps.
    pub bars: Vec<Bar>,
    /// Instants.
    pub marks: Vec<Mark>,
    /// Intervals the rollout stood paused or held.
    pub paused: Vec<(u64, u64)>,
    /// The stores' modes.
    pub stores: Vec<StoreTrack>,
    /// Jobs completed: (second, store, count).
    pub jobs: Vec<SeriesPoint>,
    /// Client requests ended: (second, `ok`|`failed`, count).
    pub clients: Vec<SeriesPoint>,
    /// Step outcomes.
    pub counts: Counts,
    /// Failed steps.
    pub failures: Vec<Failure>,
    /// The rollout's events found in the stream.
    pub events: usize,
    /// When the report was made, ms.
    pub generated_ms: u64,
}

impl Report {
    /// Total of a series' counts with `label` (any label when `None`).
    pub fn total(series: &[SeriesPoint], label: Option<&str>) -> u64 {
        series
            .iter()
            .filter(|p| label.is_none_or(|l| p.1 == l))
            .map(|p| p.2)
            .sum()
    }
}

/// Refuses an id that cannot be one of PAC `pac`'s rollouts: they are `<PAC>-<hex>`.
pub fn check_id(pac: &PacName, id: &str) -> Result<()> {
    let ok = id
        .strip_prefix(pac.as_str())
        .and_then(|r| r.strip_prefix('-'))
        .is_some_and(|hex| {
            !hex.is_empty() && hex.len() <= 16 && hex.chars().all(|c| c.is_ascii_hexdigit())
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "rollout id",
            id,
            format!(
                "{pac}-<hex digits>, as `pacup rollout history {pac}` lists the rollouts of PAC {pac}"
            ),
        ))
    }
}

/// Escapes text for HTML and SVG (element content and attribute values).
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A duration for people: `850 ms`, `12.3 s`, `2 min 5 s`, `1 h 2 min`.
pub(crate) fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    match ms {
        m if m < 1000 => format!("{m} ms"),
        m if m < 60_000 => format!("{:.1} s", m as f64 / 1000.0),
        m if m < 3_600_000 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests;
