//! The rollout's steps as data: what a plan expands to, what a rollback generates from the
//! journal and the observed state, and how consecutive steps form parallel groups.
//!
//! A [`Step`] is a number and a [`StepKind`] whose variant holds exactly what it acts on
//! (a host, a region, a wave, a store), so nothing is re-checked at run time. In the
//! journal and in `rollout plan --json` a step keeps the flat record
//! `{n, action, host, region, wave}` (rollback steps on a store add `store`), so journals
//! written by earlier versions read back unchanged. Running a step is [`super::actions`].

use super::plan::{DriverSpec, ModeFlip, Plan};
use crate::psor::RegionInfo;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

mod action;
pub use action::{Action, BackupPhase};

/// A region of the plan and its host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct On {
    /// Host.
    pub host: String,
    /// Region.
    pub region: String,
}

/// Which regions a health gate waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateScope {
    /// The regions of one wave.
    Wave(usize),
    /// Every region of the plan (a fast rollback's single gate).
    All,
}

/// What a step does, with exactly what it acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    /// Journaled when the rollout starts.
    Preflight,
    /// Listener off.
    ListenerOff(On),
    /// Wait for the region's clients to leave.
    Drain(On),
    /// Graceful stop.
    Stop(On),
    /// Install the version on the host.
    ApplyUpdate {
        /// Host.
        host: String,
    },
    /// Confirm the target is incompatible.
    CheckCompat,
    /// Upgrade start (creates the new store).
    StartUpgrade(On),
    /// Warm start.
    StartWarm(On),
    /// Health gate.
    HealthGate(GateScope),
    /// The target's store runs.
    SetModeRunning,
    /// Rollback: a quiesced store runs again.
    Unquiesce {
        /// Store version.
        store: String,
    },
    /// Listener on.
    ListenerOn(On),
    /// Older running stores quiesce.
    SetModeQuiesce,
    /// Check the end state.
    Verify,
    /// Delete the old stores.
    RemoveOld,
    /// Rollback: delete one store (the new one).
    RemoveStore {
        /// Store version.
        store: String,
    },
    /// Save the PAC before a store change.
    Backup(BackupPhase),
    /// Check the hosts of a wave before it starts.
    HostCheck(usize),
}

impl StepKind {
    /// Its action name.
    pub fn action(&self) -> Action {
        match self {
            StepKind::Preflight => Action::Preflight,
            StepKind::ListenerOff(_) => Action::ListenerOff,
            StepKind::Drain(_) => Action::Drain,
            StepKind::Stop(_) => Action::Stop,
            StepKind::ApplyUpdate { .. } => Action::ApplyUpdate,
            StepKind::CheckCompat => Action::CheckCompat,
            StepKind::StartUpgrade(_) => Action::StartUpgrade,
            StepKind::StartWarm(_) => Action::StartWarm,
            StepKind::HealthGate(_) => Action::HealthGate,
            StepKind::SetModeRunning | StepKind::Unquiesce { .. } => Action::SetModeRunning,
            StepKind::ListenerOn(_) => Action::ListenerOn,
            StepKind::SetModeQuiesce => Action::SetModeQuiesce,
            StepKind::Verify => Action::Verify,
            StepKind::RemoveOld | StepKind::RemoveStore { .. } => Action::RemoveOld,
            StepKind::Backup(_) => Action::Backup,
            StepKind::HostCheck(_) => Action::HostCheck,
        }
    }

    fn on(&self) -> Option<&On> {
        match self {
            StepKind::ListenerOff(o)
            | StepKind::Drain(o)
            | StepKind::Stop(o)
            | StepKind::StartUpgrade(o)
            | StepKind::StartWarm(o)
            | StepKind::ListenerOn(o) => Some(o),
            _ => None,
        }
    }
}

/// One step: its number and what it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Position (0 = preflight; a rollback's steps follow the plan's).
    pub n: usize,
    /// What.
    pub kind: StepKind,
}

impl Step {
    /// Its action name.
    pub fn action(&self) -> Action {
        self.kind.action()
    }

    /// The host it acts on, if any.
    pub fn host(&self) -> Option<&str> {
        match &self.kind {
            StepKind::ApplyUpdate { host } => Some(host),
            k => k.on().map(|o| o.host.as_str()),
        }
    }

    /// The region it acts on, if any.
    pub fn region(&self) -> Option<&str> {
        self.kind.on().map(|o| o.region.as_str())
    }

    /// The wave of a health gate.
    pub fn wave(&self) -> Option<usize> {
        match self.kind {
            StepKind::HealthGate(GateScope::Wave(w)) | StepKind::HostCheck(w) => Some(w),
            _ => None,
        }
    }

    /// The store a rollback step acts on.
    pub fn store(&self) -> Option<&str> {
        match &self.kind {
            StepKind::Unquiesce { store } | StepKind::RemoveStore { store } => Some(store),
            _ => None,
        }
    }

    /// Whether it may finalise the rollout (held by `hold_finalization`). The backup
    /// before `remove_old` is held in its place, so that it is taken after the hold.
    pub fn finalizing(&self) -> bool {
        matches!(
            self.kind,
            StepKind::SetModeQuiesce
                | StepKind::RemoveOld
                | StepKind::Backup(BackupPhase::BeforeRemoveOld)
        )
    }

    /// The phase of a `backup` step.
    pub fn phase(&self) -> Option<BackupPhase> {
        match self.kind {
            StepKind::Backup(p) => Some(p),
            _ => None,
        }
    }
}

/// The journal's flat form of a step.
#[derive(Serialize, Deserialize)]
struct Record {
    n: usize,
    action: Action,
    host: Option<String>,
    region: Option<String>,
    wave: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    store: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    phase: Option<BackupPhase>,
}

impl Serialize for Step {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Record {
            n: self.n,
            action: self.action(),
            host: self.host().map(String::from),
            region: self.region().map(String::from),
            wave: self.wave(),
            store: self.store().map(String::from),
            phase: self.phase(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = Record::deserialize(d)?;
        let missing = |what: &str| {
            serde::de::Error::custom(format!("step {} ({}) has no {what}", r.n, r.action))
        };
        let on = || -> Result<On, D::Error> {
            Ok(On {
                host: r.host.clone().ok_or_else(|| missing("host"))?,
                region: r.region.clone().ok_or_else(|| missing("region"))?,
            })
        };
        let kind = match r.action {
            Action::Preflight => StepKind::Preflight,
            Action::ListenerOff => StepKind::ListenerOff(on()?),
            Action::Drain => StepKind::Drain(on()?),
            Action::Stop => StepKind::Stop(on()?),
            Action::ApplyUpdate => StepKind::ApplyUpdate {
                host: r.host.clone().ok_or_else(|| missing("host"))?,
            },
            Action::CheckCompat => StepKind::CheckCompat,
            Action::StartUpgrade => StepKind::StartUpgrade(on()?),
            Action::StartWarm => StepKind::StartWarm(on()?),
            Action::HealthGate => StepKind::HealthGate(match r.wave {
                Some(w) => GateScope::Wave(w),
                None => GateScope::All,
            }),
            Action::SetModeRunning => match r.store.clone() {
                Some(store) => StepKind::Unquiesce { store },
                None => StepKind::SetModeRunning,
            },
            Action::ListenerOn => StepKind::ListenerOn(on()?),
            Action::SetModeQuiesce => StepKind::SetModeQuiesce,
            Action::Verify => StepKind::Verify,
            Action::RemoveOld => match r.store.clone() {
                Some(store) => StepKind::RemoveStore { store },
                None => StepKind::RemoveOld,
            },
            Action::Backup => StepKind::Backup(r.phase.ok_or_else(|| missing("phase"))?),
            Action::HostCheck => StepKind::HostCheck(r.wave.ok_or_else(|| missing("wave"))?),
            a @ (Action::Rollback
            | Action::Pause
            | Action::Done
            | Action::MonitorSuspend
            | Action::MonitorResume
            | Action::Amend) => {
                return Err(serde::de::Error::custom(format!(
                    "step {}: {a} is an event, not a step",
                    r.n
                )))
            }
        };
        Ok(Step { n: r.n, kind })
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>3}. {}", self.n, self.action())?;
        if let Some(s) = self.store() {
            write!(f, " store {s}")?;
        }
        if let Some(p) = self.phase() {
            write!(f, " ({})", p.as_str())?;
        }
        if let Some(r) = self.region() {
            write!(f, " {r}")?;
        }
        if let Some(h) = self.host() {
            write!(f, " on {h}")?;
        }
        match self.kind {
            StepKind::HealthGate(GateScope::Wave(w)) => write!(f, " (wave {})", w + 1)?,
            StepKind::HealthGate(GateScope::All) => write!(f, " (every region)")?,
            StepKind::HostCheck(w) => write!(f, " (wave {})", w + 1)?,
            _ => {}
        }
        Ok(())
    }
}

/// Which process the rollout follows (after `auto` is decided).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Process {
    /// Rolling restart into the same store.
    Compatible,
    /// New store beside the old one.
    Incompatible,
}

impl Process {
    /// The journal's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Process::Compatible => "compatible",
            Process::Incompatible => "incompatible",
        }
    }
}

struct Builder {
    steps: Vec<Step>,
    first: usize,
}

impl Builder {
    fn new(first: usize) -> Self {
        Builder {
            steps: Vec::new(),
            first,
        }
    }
    fn push(&mut self, kind: StepKind) {
        let n = self.first + self.steps.len();
        self.steps.push(Step { n, kind });
    }
    fn each(&mut self, regions: &[On], f: impl Fn(On) -> StepKind) {
        for o in regions {
            self.push(f(o.clone()));
        }
    }
}

fn ons(pairs: Vec<(String, String)>) -> Vec<On> {
    pairs
        .into_iter()
        .map(|(host, region)| On { host, region })
        .collect()
}

/// Expands a plan into its steps.
pub fn steps(plan: &Plan, process: Process) -> Vec<Step> {
    let mut b = Builder::new(0);
    b.push(StepKind::Preflight);
    let last = plan.waves.len() - 1;
    for w in 0..plan.waves.len() {
        let regions = ons(plan.wave_regions(w));
        // Preflight checked every host; a later wave's hosts are checked again first.
        if w > 0 && plan.checks_hosts() {
            b.push(StepKind::HostCheck(w));
        }
        b.each(&regions, StepKind::ListenerOff);
        b.each(&regions, StepKind::Drain);
        b.each(&regions, StepKind::Stop);
        for h in &plan.waves[w] {
            b.push(StepKind::ApplyUpdate {
                host: h.to_string(),
            });
        }
        match process {
            Process::Compatible => {
                b.each(&regions, StepKind::StartWarm);
                b.push(StepKind::HealthGate(GateScope::Wave(w)));
                b.each(&regions, StepKind::ListenerOn);
            }
            Process::Incompatible => {
                if w == 0 {
                    b.push(StepKind::CheckCompat);
                }
                for (i, o) in regions.iter().enumerate() {
                    if w == 0 && i == 0 && plan.backs_up() {
                        b.push(StepKind::Backup(BackupPhase::BeforeUpgrade));
                    }
                    b.push(if w == 0 && i == 0 {
                        StepKind::StartUpgrade(o.clone())
                    } else {
                        StepKind::StartWarm(o.clone())
                    });
                }
                b.push(StepKind::HealthGate(GateScope::Wave(w)));
                match plan.mode_flip {
                    ModeFlip::AfterFirstWave if w == 0 => {
                        b.push(StepKind::SetModeRunning);
                        b.each(&regions, StepKind::ListenerOn);
                        b.push(StepKind::SetModeQuiesce);
                    }
                    ModeFlip::AfterFirstWave => b.each(&regions, StepKind::ListenerOn),
                    ModeFlip::AfterAllWaves if w == last => {
                        b.push(StepKind::SetModeRunning);
                        b.each(&ons(plan.all_regions()), StepKind::ListenerOn);
                        b.push(StepKind::SetModeQuiesce);
                    }
                    ModeFlip::AfterAllWaves => {}
                }
            }
        }
    }
    b.push(StepKind::Verify);
    if process == Process::Incompatible {
        if plan.backs_up() {
            b.push(StepKind::Backup(BackupPhase::BeforeRemoveOld));
        }
        b.push(StepKind::RemoveOld);
    }
    b.steps
}

/// What a rollback starts from: the rollout's journal and the PSOR as it is now.
pub struct RollbackInput<'a> {
    /// The plan.
    pub plan: &'a Plan,
    /// The process the rollout followed.
    pub process: Process,
    /// The version the PAC ran before (the old store's).
    pub from: &'a str,
    /// The version it moved to (the new store's, incompatible process).
    pub target: &'a str,
    /// Each host's version when the rollout started.
    pub host_versions: &'a BTreeMap<String, String>,
    /// The plan's regions as the PSOR shows them now.
    pub regions: &'a [RegionInfo],
    /// Each plan host's installed version as its agent publishes it (agent driver).
    pub hosts: &'a BTreeMap<String, String>,
    /// Incident mode: every host at once, one gate.
    pub fast: bool,
    /// Command driver: the hosts the rollout's steps reached, each with whether its
    /// update may have run (real hosts write no record saying what they run); `None` for
    /// the agent driver, which reads its records.
    pub touched: Option<&'a BTreeMap<String, bool>>,
    /// Number of the first rollback step.
    pub first: usize,
}

impl RollbackInput<'_> {
    /// The version host `h` goes back to.
    pub fn version_of(&self, h: &str) -> String {
        old_version(self.host_versions, self.from, h)
    }
}

/// The version host `h` had when the rollout started (the old store's, if unknown).
pub fn old_version(host_versions: &BTreeMap<String, String>, from: &str, h: &str) -> String {
    host_versions
        .get(h)
        .filter(|v| !v.is_empty())
        .cloned()
        .unwrap_or_else(|| from.to_string())
}

/// The steps that move every host back to the version it had: waves in reverse order
/// (or, `fast`, every host at once), each as a forward wave is (listeners off, drains,
/// stops, updates, warm starts with the listener off, one gate, listeners on), only for
/// the hosts not already back; for the incompatible process the old store runs again
/// first and the new store goes last. Every step still observes before it acts.
pub fn rollback_steps(i: &RollbackInput<'_>) -> Vec<Step> {
    let mut b = Builder::new(i.first);
    if i.process == Process::Incompatible {
        b.push(StepKind::Unquiesce {
            store: i.from.to_string(),
        });
    }
    let waves: Vec<(GateScope, Vec<String>)> = if i.fast {
        let all = i.plan.waves.iter().flatten().map(|h| h.to_string());
        vec![(GateScope::All, all.collect())]
    } else {
        (0..i.plan.waves.len())
            .rev()
            .map(|w| {
                let hosts = i.plan.waves[w].iter().map(|h| h.to_string()).collect();
                (GateScope::Wave(w), hosts)
            })
            .collect()
    };
    let agent = i.plan.driver == DriverSpec::Agent;
    for (scope, hosts) in waves {
        let mut stop = Vec::new();
        let mut update = Vec::new();
        let mut start = Vec::new();
        let mut back_on = Vec::new();
        for h in &hosts {
            let old = i.version_of(h);
            let on_host: Vec<On> = i
                .plan
                .host(h)
                .map(|hp| {
                    hp.regions
                        .iter()
                        .map(|r| On {
                            host: h.clone(),
                            region: r.to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            if !agent {
                // Real regions write no record saying where they are: every region of a
                // host the rollout reached goes through stop, update and start, each
                // observing its state through `region_state` first (and skipping what is
                // done).
                let Some(updated) = i.touched.and_then(|t| t.get(h)) else {
                    continue;
                };
                stop.extend(on_host.iter().cloned());
                if *updated {
                    update.push(h.clone());
                }
                start.extend(on_host.iter().cloned());
                back_on.extend(on_host);
                continue;
            }
            let info = |r: &str| i.regions.iter().find(|x| x.name == r);
            let at_old =
                |o: &On| info(&o.region).is_some_and(|x| x.alive && x.product_version == old);
            let host_old = !agent || i.hosts.get(h).is_some_and(|v| *v == old);
            if host_old && on_host.iter().all(at_old) {
                continue;
            }
            let elsewhere: Vec<On> = on_host
                .iter()
                .filter(|o| info(&o.region).is_some_and(|x| x.alive && x.product_version != old))
                .cloned()
                .collect();
            if !host_old || !elsewhere.is_empty() {
                update.push(h.clone());
            }
            stop.extend(elsewhere);
            start.extend(on_host.iter().filter(|o| !at_old(o)).cloned());
            back_on.extend(on_host);
        }
        if back_on.is_empty() {
            continue;
        }
        b.each(&stop, StepKind::ListenerOff);
        b.each(&stop, StepKind::Drain);
        b.each(&stop, StepKind::Stop);
        for host in update {
            b.push(StepKind::ApplyUpdate { host });
        }
        b.each(&start, StepKind::StartWarm);
        b.push(StepKind::HealthGate(scope));
        b.each(&back_on, StepKind::ListenerOn);
    }
    if i.process == Process::Incompatible {
        if i.plan.backs_up() {
            b.push(StepKind::Backup(BackupPhase::BeforeRemoveNew));
        }
        b.push(StepKind::RemoveStore {
            store: i.target.to_string(),
        });
    }
    b.steps
}

/// The parallel groups of a step list, as ranges of indices: consecutive steps of one
/// parallel action (listeners, drains, stops, updates, warm starts) form one group; every
/// other step is a group of its own.
pub fn groups(steps: &[Step]) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        match out.last_mut() {
            Some(g)
                if s.action().parallel() && steps[g.start].action() == s.action() && g.end == i =>
            {
                g.end = i + 1
            }
            _ => out.push(i..i + 1),
        }
    }
    out
}

#[cfg(test)]
#[path = "steps_tests.rs"]
mod tests;
