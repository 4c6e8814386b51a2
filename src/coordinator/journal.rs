//! The rollout journal (`pac:{P}:rollout:current`, a hash) as a typed record, and the
//! rollout's states with their transition table (docs/rollout.md#states-of-a-rollout).
//!
//! This is the one place that names and encodes the journal's fields: [`Journal::decode`]
//! reads the hash (including journals written by earlier versions: absent fields take
//! their defaults; what cannot be understood is refused naming the field), and
//! [`Write`] builds the fields a write changes. Every state change goes through
//! [`RolloutState::next`], which is the table, encoded once.

use super::plan::Plan;
use super::progress::{CommandProgress, CurrentStep, GateProgress};
use super::steps::{Action, Process, Step};
use crate::error::{Error, ExitCode, Result};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// A rollout's lifecycle state as journaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// A coordinator runs it (or ran it and crashed: `rollout status` says so).
    Running,
    /// Waiting for an operator.
    Paused,
    /// Held before finalisation.
    Held,
    /// Rolling back (or a rollback stopped and waits for `rollout resume`).
    RollingBack,
    /// Finished.
    Done,
    /// Aborted where it stood.
    Aborted,
    /// Rolled back.
    RolledBack,
}

/// What moves a rollout from one state to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Trigger {
    /// `rollout run`, after preflight.
    Run,
    /// The last step finished.
    Finish,
    /// A failed step with `on_failure: pause`, `rollout pause`, Ctrl-C.
    Pause,
    /// `hold_finalization`, before a finalising step.
    Hold,
    /// `rollout resume`.
    Resume,
    /// `on_failure: abort`, `rollout abort`.
    Abort,
    /// `on_failure: rollback`, `rollout rollback`.
    Rollback,
    /// A rollback step failed.
    Fail,
}

impl Trigger {
    /// The name in the transition table of docs/rollout.md.
    pub fn name(self) -> &'static str {
        match self {
            Trigger::Run => "run",
            Trigger::Finish => "finish",
            Trigger::Pause => "pause",
            Trigger::Hold => "hold",
            Trigger::Resume => "resume",
            Trigger::Abort => "abort",
            Trigger::Rollback => "rollback",
            Trigger::Fail => "fail",
        }
    }
}

use RolloutState::*;

/// The transition table: (from, trigger, to); `None` is "no rollout yet". Nothing else
/// is a legal state change.
pub const TRANSITIONS: &[(Option<RolloutState>, Trigger, RolloutState)] = &[
    (None, Trigger::Run, Running),
    (Some(Done), Trigger::Run, Running),
    (Some(Aborted), Trigger::Run, Running),
    (Some(RolledBack), Trigger::Run, Running),
    (Some(Running), Trigger::Finish, Done),
    (Some(Running), Trigger::Pause, Paused),
    (Some(Running), Trigger::Hold, Held),
    (Some(Running), Trigger::Abort, Aborted),
    (Some(Running), Trigger::Rollback, RollingBack),
    (Some(Running), Trigger::Resume, Running),
    (Some(Paused), Trigger::Resume, Running),
    (Some(Paused), Trigger::Abort, Aborted),
    (Some(Paused), Trigger::Rollback, RollingBack),
    (Some(Held), Trigger::Resume, Running),
    (Some(Held), Trigger::Abort, Aborted),
    (Some(Held), Trigger::Rollback, RollingBack),
    (Some(Aborted), Trigger::Rollback, RollingBack),
    (Some(RollingBack), Trigger::Finish, RolledBack),
    (Some(RollingBack), Trigger::Fail, RollingBack),
    (Some(RollingBack), Trigger::Pause, RollingBack),
    (Some(RollingBack), Trigger::Resume, RollingBack),
    (Some(RollingBack), Trigger::Rollback, RollingBack),
    (Some(RollingBack), Trigger::Abort, Aborted),
];

impl RolloutState {
    /// Every state.
    pub const ALL: [RolloutState; 7] = [
        Running,
        Paused,
        Held,
        RollingBack,
        Done,
        Aborted,
        RolledBack,
    ];

    /// Where `trigger` takes a rollout in state `from`; `None` when it may not.
    pub fn next(from: Option<RolloutState>, trigger: Trigger) -> Option<RolloutState> {
        TRANSITIONS
            .iter()
            .find(|(f, t, _)| *f == from && *t == trigger)
            .map(|(_, _, to)| *to)
    }

    /// Parses a journaled state.
    pub fn parse(s: &str) -> Option<RolloutState> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The name used in the journal and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Running => "running",
            Paused => "paused",
            Held => "held",
            RollingBack => "rolling_back",
            Done => "done",
            Aborted => "aborted",
            RolledBack => "rolled_back",
        }
    }

    /// Whether the rollout is still going: a coordinator drives it or may resume it (a
    /// new `rollout run` is refused).
    pub fn is_active(self) -> bool {
        matches!(self, Running | Paused | Held | RollingBack)
    }

    /// Whether the rollout can change no more (resume refuses it).
    pub fn is_final(self) -> bool {
        RolloutState::next(Some(self), Trigger::Resume).is_none()
    }

    /// What `rollout status --watch` exits with when it stops in this state; `None` while
    /// a coordinator is (or should be) working on it.
    pub fn exit_code(self) -> Option<ExitCode> {
        match self {
            Running | RollingBack => None,
            Done => Some(ExitCode::Ok),
            Aborted => Some(ExitCode::Refused),
            Paused => Some(ExitCode::Paused),
            Held => Some(ExitCode::Held),
            RolledBack => Some(ExitCode::RolledBack),
        }
    }
}

impl std::fmt::Display for RolloutState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a journaled step ended (its own journal entry, so a resume inside a parallel group
/// runs only the steps not yet ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Done.
    Done,
    /// Skipped (already so).
    Skipped,
}

/// Field names of the journal hash.
pub mod field {
    pub const ID: &str = "id";
    pub const PAC: &str = "pac";
    pub const PLAN: &str = "plan";
    pub const PROCESS: &str = "process";
    pub const STEPS: &str = "steps";
    pub const ROLLBACK_STEPS: &str = "rollback_steps";
    pub const FROM_VERSION: &str = "from_version";
    pub const HOST_VERSIONS: &str = "host_versions";
    pub const TARGET: &str = "target";
    pub const STATE: &str = "state";
    pub const NEXT_STEP: &str = "next_step";
    pub const FAILED_STEP: &str = "failed_step";
    pub const ERROR: &str = "error";
    pub const REASON: &str = "reason";
    pub const BY: &str = "by";
    pub const STARTED_AT_MS: &str = "started_at_ms";
    pub const UPDATED_AT_MS: &str = "updated_at_ms";
    pub const SEQ: &str = "seq";
    pub const PAUSE_REQUESTED: &str = "pause_requested";
    pub const ABORT_REQUESTED: &str = "abort_requested";
    pub const RELEASED: &str = "released";
    pub const ROLLBACK_REQUESTED: &str = "rollback_requested";
    pub const FAST: &str = "fast";
    pub const AMENDMENTS: &str = "amendments";
    /// Prefix of the per-step entries: `ended:<n>` = `<rollout id> done|skipped`.
    pub const ENDED_PREFIX: &str = "ended:";
    pub use super::super::progress::field::{COMMAND, CURRENT, GATE, STEP as CURRENT_STEP};
}

/// The journal, typed.
#[derive(Debug, Clone, Default)]
pub struct Journal {
    /// Rollout id (`<PAC>-<hex>`).
    pub id: String,
    /// The PAC.
    pub pac: String,
    /// The plan as the rollout runs it.
    pub plan: Option<Plan>,
    /// The process decided at preflight.
    pub process: Option<Process>,
    /// The forward steps.
    pub steps: Vec<Step>,
    /// The rollback's steps, once one started.
    pub rollback_steps: Vec<Step>,
    /// The running store's version at the start.
    pub from_version: String,
    /// Each host's version at the start.
    pub host_versions: BTreeMap<String, String>,
    /// The target version.
    pub target: String,
    /// State (`None`: the PAC never had a rollout).
    pub state: Option<RolloutState>,
    /// The first step not known to have ended (forward or rollback numbering).
    pub next_step: usize,
    /// The step that failed last.
    pub failed_step: Option<usize>,
    /// Why the rollout is paused, held, aborted or rolling back.
    pub error: String,
    /// `rollout run --reason`.
    pub reason: String,
    /// Who started it.
    pub by: String,
    /// When it started (coordinator's clock).
    pub started_at_ms: Option<u64>,
    /// Last journal write.
    pub updated_at_ms: Option<u64>,
    /// Last event number.
    pub seq: u64,
    /// An operator asked for a pause.
    pub pause_requested: bool,
    /// An operator asked for an abort.
    pub abort_requested: bool,
    /// The finalising step a `rollout resume` released from its hold.
    pub released: Option<usize>,
    /// The rollback was an operator's request.
    pub rollback_requested: bool,
    /// The rollback is `--fast`.
    pub fast: bool,
    /// Steps of this rollout that ended, beyond `next_step` (a parallel group in hand).
    pub ended: BTreeMap<usize, Ended>,
    /// Progress: the step (or group) in hand.
    pub current: Option<CurrentStep>,
    /// Progress: the health gate in hand.
    pub gate: Option<GateProgress>,
    /// Progress: the command template in hand.
    pub command: Option<CommandProgress>,
    /// Plan amendments by `rollout resume --plan`, oldest first (kept in the history).
    pub amendments: Vec<Amendment>,
}

/// One `rollout resume --plan`: when, by whom, which fields changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Amendment {
    /// RFC 3339 time.
    pub at: String,
    /// Who resumed.
    pub by: String,
    /// The plan fields that changed (dotted paths).
    pub fields: Vec<String>,
}

fn json<T: for<'de> serde::Deserialize<'de>>(
    h: &HashMap<String, String>,
    name: &str,
) -> Result<Option<T>> {
    match h.get(name).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => serde_json::from_str(s)
            .map(Some)
            .map_err(|e| unreadable(name, e)),
    }
}

fn unreadable(name: &str, e: impl std::fmt::Display) -> Error {
    Error::refused(format!(
        "the rollout journal's field {name} cannot be read by this pacup ({e}); it was \
         written by an incompatible version: finish or abort the rollout with that version"
    ))
}

impl Journal {
    /// Whether the rollout is acting on `host` now: it is active and its next step lies
    /// between the host's first step and its last start (of the rollback's steps, while
    /// rolling back). A host agent restarted then leaves its regions to the coordinator
    /// instead of autostarting them; before and after that stretch it autostarts them.
    pub fn owns_host(&self, host: &str) -> bool {
        let steps = match self.state {
            Some(RolloutState::RollingBack) => &self.rollback_steps,
            Some(RolloutState::Running | RolloutState::Paused | RolloutState::Held) => &self.steps,
            _ => return false,
        };
        let mine = || steps.iter().filter(|s| s.host() == Some(host));
        let first = mine().map(|s| s.n).min();
        let last_start = mine()
            .filter(|s| matches!(s.action(), Action::StartUpgrade | Action::StartWarm))
            .map(|s| s.n)
            .max();
        match (first, last_start) {
            (Some(f), Some(l)) => (f..=l).contains(&self.next_step),
            _ => false,
        }
    }

    /// Reads the journal hash. Absent fields (journals of earlier versions) take their
    /// defaults; a field that is present but not understood is refused, naming it.
    pub fn decode(h: &HashMap<String, String>) -> Result<Journal> {
        let text = |k: &str| h.get(k).cloned().unwrap_or_default();
        let num = |k: &str| -> Result<Option<u64>> {
            match h.get(k).filter(|s| !s.is_empty()) {
                None => Ok(None),
                Some(s) => s.parse().map(Some).map_err(|e| unreadable(k, e)),
            }
        };
        let flag = |k: &str| h.get(k).is_some_and(|v| !v.is_empty());
        let state = match h.get(field::STATE).filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(
                RolloutState::parse(s)
                    .ok_or_else(|| unreadable(field::STATE, format!("unknown state {s:?}")))?,
            ),
        };
        let process = match h.get(field::PROCESS).map(String::as_str) {
            None | Some("") => None,
            Some("compatible") => Some(Process::Compatible),
            Some("incompatible") => Some(Process::Incompatible),
            Some(p) => return Err(unreadable(field::PROCESS, format!("unknown process {p:?}"))),
        };
        let id = text(field::ID);
        let mut ended = BTreeMap::new();
        for (k, v) in h {
            let Some(n) = k.strip_prefix(field::ENDED_PREFIX) else {
                continue;
            };
            // Entries of an earlier rollout in the same hash carry its id: not ours.
            let Some((of, how)) = v.split_once(' ').filter(|(of, _)| *of == id) else {
                continue;
            };
            let _ = of;
            let how = match how {
                "done" => Ended::Done,
                "skipped" => Ended::Skipped,
                _ => continue,
            };
            if let Ok(n) = n.parse() {
                ended.insert(n, how);
            }
        }
        Ok(Journal {
            plan: json(h, field::PLAN)?,
            process,
            steps: json(h, field::STEPS)?.unwrap_or_default(),
            rollback_steps: json(h, field::ROLLBACK_STEPS)?.unwrap_or_default(),
            pac: text(field::PAC),
            from_version: text(field::FROM_VERSION),
            host_versions: json(h, field::HOST_VERSIONS)?.unwrap_or_default(),
            target: text(field::TARGET),
            state,
            next_step: num(field::NEXT_STEP)?.unwrap_or(0) as usize,
            failed_step: num(field::FAILED_STEP)?.map(|n| n as usize),
            error: text(field::ERROR),
            reason: text(field::REASON),
            by: text(field::BY),
            started_at_ms: num(field::STARTED_AT_MS)?,
            updated_at_ms: num(field::UPDATED_AT_MS)?,
            seq: num(field::SEQ)?.unwrap_or(0),
            pause_requested: flag(field::PAUSE_REQUESTED),
            abort_requested: flag(field::ABORT_REQUESTED),
            released: num(field::RELEASED)?.map(|n| n as usize),
            rollback_requested: h.get(field::ROLLBACK_REQUESTED).is_some_and(|v| v == "1"),
            fast: h.get(field::FAST).is_some_and(|v| v == "1"),
            ended,
            // Progress is for people: an unreadable record shows as none.
            current: json(h, field::CURRENT).ok().flatten(),
            gate: json(h, field::GATE).ok().flatten(),
            command: json(h, field::COMMAND).ok().flatten(),
            amendments: json(h, field::AMENDMENTS)?.unwrap_or_default(),
            id,
        })
    }

    /// The plan, or the refusal for a PAC without a rollout.
    pub fn plan(&self, pac: &str) -> Result<&Plan> {
        self.plan
            .as_ref()
            .ok_or_else(|| Error::refused(format!("PAC {pac} has no rollout to act on")))
    }

    /// Forward and rollback steps, in number order.
    pub fn all_steps(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().chain(&self.rollback_steps)
    }

    /// The step numbered `n`.
    pub fn step(&self, n: usize) -> Option<&Step> {
        self.all_steps().find(|s| s.n == n)
    }
}

/// The fields one journal write changes, encoded.
#[derive(Debug, Clone, Default)]
pub struct Write(pub Vec<(String, String)>);

impl Write {
    /// Nothing yet.
    pub fn new() -> Self {
        Write::default()
    }

    fn put(mut self, k: impl Into<String>, v: String) -> Self {
        self.0.push((k.into(), v));
        self
    }

    /// The fields as the PSOR write takes them.
    pub fn fields(&self) -> Vec<(&str, String)> {
        self.0
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect()
    }

    /// Adds the fields of `other`.
    pub fn and(mut self, other: Write) -> Self {
        self.0.extend(other.0);
        self
    }

    /// Every field of a fresh rollout (a new `rollout run` overwrites the previous one's).
    pub fn fresh(j: &Journal) -> Self {
        let to_json = |v: &dyn erased::Json| v.json();
        Write::new()
            .put(field::ID, j.id.clone())
            .put(field::PAC, j.pac.clone())
            .put(
                field::PLAN,
                j.plan.as_ref().map(|p| to_json(p)).unwrap_or_default(),
            )
            .put(
                field::PROCESS,
                j.process
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_default(),
            )
            .put(field::STEPS, to_json(&j.steps))
            .put(field::ROLLBACK_STEPS, String::new())
            .put(field::FROM_VERSION, j.from_version.clone())
            .put(field::HOST_VERSIONS, to_json(&j.host_versions))
            .put(field::TARGET, j.target.clone())
            .put(field::REASON, j.reason.clone())
            .put(field::BY, j.by.clone())
            .put(
                field::STARTED_AT_MS,
                j.started_at_ms.map(|t| t.to_string()).unwrap_or_default(),
            )
            .next_step(j.next_step)
            .error("")
            .put(field::FAILED_STEP, String::new())
            .put(field::PAUSE_REQUESTED, String::new())
            .put(field::ABORT_REQUESTED, String::new())
            .put(field::RELEASED, String::new())
            .put(field::ROLLBACK_REQUESTED, String::new())
            .put(field::FAST, String::new())
            .put(field::AMENDMENTS, String::new())
    }

    /// An amended plan and the amendments so far.
    pub fn amended(self, plan: &Plan, amendments: &[Amendment]) -> Self {
        let to_json = |v: &dyn erased::Json| v.json();
        self.put(field::PLAN, to_json(plan))
            .put(field::AMENDMENTS, to_json(&amendments.to_vec()))
    }

    /// The state (callers take it from [`RolloutState::next`]).
    pub fn state(self, s: RolloutState) -> Self {
        self.put(field::STATE, s.as_str().into())
    }

    /// The next step.
    pub fn next_step(self, n: usize) -> Self {
        self.put(field::NEXT_STEP, n.to_string())
    }

    /// Why the rollout waits ("" clears it).
    pub fn error(self, e: &str) -> Self {
        self.put(field::ERROR, e.into())
    }

    /// The step that failed.
    pub fn failed_step(self, n: usize) -> Self {
        self.put(field::FAILED_STEP, n.to_string())
    }

    /// Clears an operator's pause request.
    pub fn clear_pause_request(self) -> Self {
        self.put(field::PAUSE_REQUESTED, String::new())
    }

    /// Releases the hold of finalising step `n`.
    pub fn released(self, n: usize) -> Self {
        self.put(field::RELEASED, n.to_string())
    }

    /// A rollback starts: its steps, whether an operator asked, whether `--fast`.
    pub fn rollback(self, steps: &[Step], requested: bool, fast: bool) -> Self {
        let flag = |b: bool| if b { "1" } else { "" }.to_string();
        self.put(
            field::ROLLBACK_STEPS,
            serde_json::to_string(steps).expect("steps serialise"),
        )
        .put(field::ROLLBACK_REQUESTED, flag(requested))
        .put(field::FAST, flag(fast))
    }

    /// Step `n` of rollout `id` ended.
    pub fn ended(self, id: &str, n: usize, how: Ended) -> Self {
        let how = match how {
            Ended::Done => "done",
            Ended::Skipped => "skipped",
        };
        self.put(format!("{}{n}", field::ENDED_PREFIX), format!("{id} {how}"))
    }

    /// The step (or group) in hand, clearing the previous step's gate and command.
    pub fn current(self, c: &CurrentStep) -> Self {
        self.put(field::CURRENT_STEP, c.n.to_string())
            .put(
                field::CURRENT,
                serde_json::to_string(c).expect("serialises"),
            )
            .put(field::GATE, String::new())
            .put(field::COMMAND, String::new())
    }
}

mod erased {
    /// JSON text of a journaled value.
    pub trait Json {
        fn json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> String {
            serde_json::to_string(self).expect("journal values serialise")
        }
    }
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
