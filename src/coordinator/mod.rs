//! The rollout coordinator: one command for a whole compatible or incompatible upgrade,
//! and its rollback.
//!
//! A plan ([`plan`]) expands into steps ([`steps`]); a rollback generates its steps from
//! the journal and the observed state. Both run through one executor ([`exec`]): steps in
//! order, consecutive steps of one parallel action (listeners, drains, stops, updates,
//! warm starts) at once, each journaled in the PSOR with its event ([`journal`]), fenced
//! by the epoch of the lease, so that:
//! - `rollout resume` continues after a crash at any instant: the steps not journaled as
//!   ended are run again, and every step first observes the real state and does only
//!   what is missing ([`actions`]);
//! - a coordinator that lost its lease (paused past it, cut off) cannot change anything:
//!   every journal write, store change and agent command it makes carries its epoch and is
//!   refused once a newer coordinator took over; it notices and exits 4;
//! - a failed step or gate applies the plan's `on_failure`: pause (exit 6), rollback
//!   (exit 7) or abort (exit 1).

pub mod actions;
pub mod amend;
pub mod apart;
pub mod driver;
pub mod dryrun;
mod exec;
mod gate;
pub mod journal;
mod observe;
mod outage;
pub mod plan;
pub mod preflight;
pub mod preflight_wait;
pub mod probe;
mod probed;
pub mod progress;
mod safety;
pub mod status;
pub mod steps;
mod store_steps;
pub mod templates;
mod writer;

use crate::error::{Error, ExitCode, Result};
use crate::psor::rollout::Lease;
use crate::psor::{now_ms, Pac};
use journal::{Journal, RolloutState, Trigger, Write};
use plan::Plan;
pub use preflight::{preview as preview_with, Allow, Preview};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use steps::{Action, Process};
use tokio::sync::watch;
use writer::{Head, Queued};

/// One rollout event (fields and actions: docs/reference.md#events).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Event {
    /// RFC 3339 time.
    pub ts: String,
    /// Rollout id.
    pub rollout: String,
    /// Sequence number within the rollout.
    pub seq: u64,
    /// Step number.
    pub step: usize,
    /// Action name.
    pub action: String,
    /// Host, if any.
    pub host: Option<String>,
    /// Region, if any.
    pub region: Option<String>,
    /// `started`, `done`, `failed` or `skipped`.
    pub status: String,
    /// What happened.
    pub detail: String,
    /// Time since the step (or the rollout, for `done`) started.
    pub elapsed_ms: u64,
}

/// Receives every event as it is journaled (the CLI prints them).
pub type Emitter = Arc<dyn Fn(&Event) + Send + Sync>;

/// How a rollout command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Finished.
    Done,
    /// Paused (failure with `on_failure: pause`, an operator's pause, or an interrupted
    /// coordinator), with the reason.
    Paused(String),
    /// Held before a finalising step, as the plan's `hold_finalization` asks.
    Held(String),
    /// Aborted where it stood.
    Aborted(String),
    /// Failed and rolled back by the plan's `on_failure: rollback`.
    RolledBack(String),
    /// Rolled back because an operator asked (`rollout rollback`): the command did
    /// what it was asked, so it succeeds.
    RolledBackOnRequest(String),
    /// `rollout resume` of a rollout that had already finished (a coordinator killed
    /// after its last write): nothing left to do, which is success.
    AlreadyDone(String),
}

impl Outcome {
    /// The documented exit code.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Outcome::Done | Outcome::RolledBackOnRequest(_) | Outcome::AlreadyDone(_) => {
                ExitCode::Ok
            }
            Outcome::Paused(_) => ExitCode::Paused,
            Outcome::Held(_) => ExitCode::Held,
            Outcome::Aborted(_) => ExitCode::Refused,
            Outcome::RolledBack(_) => ExitCode::RolledBack,
        }
    }
}

/// How many times the coordinator's process was asked to stop (SIGINT/SIGTERM): the
/// first request pauses the rollout once the steps in hand have finished; the second
/// gives them up at once (as a crash would: they are re-run on resume, and every step
/// observes before it acts) and pauses.
#[derive(Clone, Debug)]
pub struct Interrupt(watch::Receiver<u32>);

impl Interrupt {
    /// A counter fed by the caller (the CLI's signal handler).
    pub fn new(rx: watch::Receiver<u32>) -> Self {
        Interrupt(rx)
    }

    /// Never interrupted.
    pub fn never() -> Self {
        // The sender is dropped at once; `changed()` then fails, which `at_least` treats
        // as "never".
        Interrupt(watch::channel(0).1)
    }

    /// Requests so far.
    pub fn count(&self) -> u32 {
        *self.0.borrow()
    }

    /// Resolves once at least `n` requests arrived; never, if no one can send them.
    pub async fn at_least(&self, n: u32) {
        let mut rx = self.0.clone();
        if rx.wait_for(|c| *c >= n).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Options of `rollout run` / `resume` / `rollback`.
#[derive(Clone)]
pub struct RunOptions {
    /// Accept a plan that leaves no batch or client capacity during some wave.
    pub allow_downtime: bool,
    /// Accept a compatible plan that leaves out live regions of the PAC.
    pub allow_partial: bool,
    /// Why (kept in the history).
    pub reason: String,
    /// Who (kept in the history).
    pub by: String,
    /// Wait for the lease instead of exiting 4.
    pub wait_lock: bool,
    /// Lease TTL (renewed every third of it).
    pub lease_ttl: Duration,
    /// PSOR URL without password, for command templates.
    pub psor_url: String,
    /// Event sink.
    pub emit: Emitter,
    /// Stop requests (Ctrl-C) from the caller.
    pub interrupt: Interrupt,
    /// Rollout state, current step and step durations are reported here.
    pub metrics: crate::metrics::Metrics,
}

/// Preflight with `--allow-downtime` only (see [`preview_with`]).
pub async fn preview(pac: &Pac, plan: &Plan, allow_downtime: bool) -> Result<Preview> {
    preflight::preview(
        pac,
        plan,
        Allow {
            downtime: allow_downtime,
            partial: false,
        },
    )
    .await
}

/// What a rollout command found before taking the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precheck {
    /// The command applies: take the lease and run it.
    Proceed,
    /// `rollout resume` of a finished rollout: report it, take nothing.
    AlreadyDone(Outcome),
}

/// Checks, before the lease is taken, that `trigger` applies to the PAC's rollout (and,
/// for `rollout run`, that the plan passes preflight), so a refused command writes
/// nothing: no lease, no epoch bump. The coordinator checks again once it holds the
/// lease (the state may have moved in between).
pub async fn precheck(
    pac: &Pac,
    trigger: Trigger,
    plan: Option<(&Plan, Allow)>,
) -> Result<Precheck> {
    if let (true, Some((plan, _))) = (pac.state_apart(), plan) {
        apart::check_driver(plan)?;
    }
    // A vendor's PSOR holds no pacup PAC record: `store_state` answers for the PAC, and
    // with the state apart the coordinator reads nothing of the PSOR.
    let by_template = plan.is_some_and(|(p, _)| p.reads_stores_by_template());
    if !(by_template || pac.state_apart()) {
        pac.require().await?;
    }
    // A live coordinator's rollout is judged once its lease is ours (`--wait-lock`), or
    // the lease refusal (exit 4) says who holds it: taking nothing either way.
    if pac.lease_holder().await?.is_some() {
        return Ok(Precheck::Proceed);
    }
    let j = Journal::decode(&pac.rollout_current().await?)?;
    let name = pac.name().as_str();
    if trigger == Trigger::Resume && j.state == Some(RolloutState::Done) {
        return Ok(Precheck::AlreadyDone(Outcome::AlreadyDone(format!(
            "rollout {} of PAC {name} is done; nothing to resume",
            j.id
        ))));
    }
    if RolloutState::next(j.state, trigger).is_none() {
        let doing = match trigger {
            Trigger::Run => {
                format!("`pacup rollout resume {name}` or `pacup rollout abort {name}` it first")
            }
            Trigger::Rollback => "nothing to roll back".into(),
            Trigger::Abort => "nothing to abort".into(),
            _ => "nothing to resume".into(),
        };
        return Err(Error::refused(format!(
            "rollout {} of PAC {name} is {}; {doing}",
            j.id,
            j.state.map_or("not started", |s| s.as_str())
        )));
    }
    if matches!(trigger, Trigger::Resume | Trigger::Rollback) {
        let plan = j.plan(name)?;
        if pac.state_apart() {
            apart::check(plan, &j.steps)?;
        }
    }
    if let Some((plan, allow)) = plan {
        let pv = preflight::preview(pac, plan, allow).await?;
        if pac.state_apart() {
            apart::check(&pv.plan, &pv.steps)?;
        }
        if !pv.problems.is_empty() {
            return Err(preflight_refusal(&pv.problems));
        }
    }
    Ok(Precheck::Proceed)
}

fn preflight_refusal(problems: &[String]) -> Error {
    Error::refused(format!(
        "preflight failed:\n  - {}",
        problems.join("\n  - ")
    ))
}

/// A coordinator holding the lease of one PAC.
pub struct Coordinator {
    pac: Pac,
    lease: Lease,
    lost: watch::Receiver<bool>,
    renew: tokio::task::JoinHandle<()>,
    opts: RunOptions,
    /// The rollout in hand.
    id: String,
    /// Its state as this coordinator last journaled or read it.
    state: Option<RolloutState>,
    /// Event numbers, held by the one writer of the journal at a time, so events are
    /// numbered in the order they are written, also when concurrent steps write.
    seq: tokio::sync::Mutex<u64>,
    /// Journal writes waiting for the writer (see [`Coordinator::journal`]).
    queue: std::sync::Mutex<Vec<Queued>>,
    started: Instant,
    /// A PSOR outage in progress, and how long one may last.
    outages: outage::Outages,
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.renew.abort();
    }
}

impl Coordinator {
    /// Takes the PAC's lease (waiting for it with `wait_lock`) and starts renewing it.
    pub async fn acquire(pac: Pac, opts: RunOptions) -> Result<Coordinator> {
        let holder = crate::psor::rollout::LeaseHolder::this_process(&opts.by);
        let lease = loop {
            match pac.acquire_lease(&holder, opts.lease_ttl).await {
                Ok(l) => break l,
                Err(Error::LeaseHeld { .. }) if opts.wait_lock => {
                    tokio::time::sleep(Duration::from_millis(500)).await
                }
                Err(e) => return Err(e),
            }
        };
        let (tx, rx) = watch::channel(false);
        let (p, l, ttl) = (pac.clone(), lease.clone(), opts.lease_ttl);
        let renew = tokio::spawn(async move {
            let mut tick = tokio::time::interval(ttl / 3);
            loop {
                tick.tick().await;
                match p.renew_lease(&l, ttl).await {
                    Ok(true) => {}
                    Ok(false) => {
                        let _ = tx.send(true);
                        return;
                    }
                    Err(e) => tracing::warn!("lease renewal failed: {e}"),
                }
            }
        });
        Ok(Coordinator {
            pac,
            lease,
            lost: rx,
            renew,
            opts,
            id: String::new(),
            state: None,
            seq: tokio::sync::Mutex::new(0),
            queue: std::sync::Mutex::new(Vec::new()),
            started: Instant::now(),
            outages: outage::Outages::new(),
        })
    }

    /// Our fencing epoch.
    pub fn epoch(&self) -> u64 {
        self.lease.epoch
    }

    async fn release(&self) {
        self.renew.abort();
        let _ = self.pac.release_lease(&self.lease).await;
    }

    fn check_lease(&self) -> Result<()> {
        if *self.lost.borrow() {
            return Err(Error::Fenced {
                ours: self.lease.epoch,
                current: self.lease.epoch + 1,
            });
        }
        Ok(())
    }

    /// Where `trigger` takes the rollout, or the refusal naming its state.
    fn next_state(&self, trigger: Trigger, doing: &str) -> Result<RolloutState> {
        RolloutState::next(self.state, trigger).ok_or_else(|| {
            Error::refused(format!(
                "rollout {} of PAC {} is {}; {doing}",
                self.id,
                self.pac.name(),
                self.state.map_or("not started", |s| s.as_str())
            ))
        })
    }

    /// Moves the rollout by `trigger` (the table decides where), with the other fields
    /// of `w` and an event, in one fenced write.
    async fn transition(
        &mut self,
        trigger: Trigger,
        w: Write,
        ev: Option<(Head<'_>, &str, &str, u64)>,
        history: Option<&str>,
    ) -> Result<RolloutState> {
        let to = self.next_state(trigger, "that cannot happen now")?;
        self.journal(w.state(to), ev, history).await?;
        self.state = Some(to);
        Ok(to)
    }

    /// Reads the journal and takes over its rollout's id, state and event numbering.
    async fn load(&mut self) -> Result<Journal> {
        let j = Journal::decode(&self.pac.rollout_current().await?)?;
        self.id = j.id.clone();
        self.state = j.state;
        *self.seq.lock().await = j.seq;
        Ok(j)
    }

    /// `rollout run`: preflight, journal, steps.
    pub async fn run(mut self, plan: Plan) -> Result<Outcome> {
        let r = self.run_inner(plan).await;
        self.release().await;
        r
    }

    async fn run_inner(&mut self, plan: Plan) -> Result<Outcome> {
        self.load().await?;
        let pac = self.pac.name().to_string();
        self.next_state(
            Trigger::Run,
            &format!("`pacup rollout resume {pac}` or `pacup rollout abort {pac}` it first"),
        )?;
        let t0 = Instant::now();
        let allow = Allow {
            downtime: self.opts.allow_downtime,
            partial: self.opts.allow_partial,
        };
        let pv = preflight::preview(&self.pac, &plan, allow).await?;
        if !pv.problems.is_empty() {
            return Err(preflight_refusal(&pv.problems));
        }
        let plan = pv.plan.clone();
        self.id = format!("{pac}-{:x}", now_ms());
        *self.seq.lock().await = 0;
        self.started = Instant::now();
        let detail = format!(
            "{} upgrade {} -> {} ({} steps): {}",
            pv.process.as_str(),
            pv.from_version,
            plan.target.version,
            pv.steps.len(),
            pv.reasons.join("; ")
        );
        let j = Journal {
            id: self.id.clone(),
            pac: pac.clone(),
            plan: Some(plan.clone()),
            process: Some(pv.process),
            steps: pv.steps.clone(),
            from_version: pv.from_version.clone(),
            host_versions: pv.host_versions.clone(),
            target: plan.target.version.to_string(),
            next_step: 1,
            reason: self.opts.reason.clone(),
            by: self.opts.by.clone(),
            started_at_ms: Some(now_ms()),
            ..Journal::default()
        };
        let w = Write::fresh(&j);
        let head = Head::marker(0, Action::Preflight);
        let ms = t0.elapsed().as_millis() as u64;
        self.transition(Trigger::Run, w, Some((head, "done", &detail, ms)), None)
            .await?;
        self.forward(&j, 1).await
    }

    /// `rollout resume`: continues the journaled rollout from its next step (a held
    /// rollout is released; a rollback in progress goes on).
    pub async fn resume(self) -> Result<Outcome> {
        self.resume_with(None).await
    }

    /// `rollout resume --plan`: [`Coordinator::resume`] with the journaled plan amended
    /// to `fixed` first (templates, timeouts and health settings only; see [`amend`]).
    pub async fn resume_with(mut self, fixed: Option<Plan>) -> Result<Outcome> {
        let r = self.resume_inner(fixed).await;
        self.release().await;
        r
    }

    async fn resume_inner(&mut self, fixed: Option<Plan>) -> Result<Outcome> {
        let mut j = self.load().await?;
        j.plan(self.pac.name().as_str())?;
        let was = self.state;
        if was == Some(RolloutState::Done) {
            return Ok(Outcome::AlreadyDone(format!(
                "rollout {} of PAC {} is done; nothing to resume",
                self.id,
                self.pac.name()
            )));
        }
        self.next_state(Trigger::Resume, "nothing to resume")?;
        if let Some(f) = fixed {
            self.amend(&mut j, f).await?;
        }
        let mut w = Write::new().clear_pause_request();
        if was == Some(RolloutState::Held) {
            w = w.released(j.next_step);
        }
        if was != Some(RolloutState::RollingBack) {
            self.transition(Trigger::Resume, w, None, None).await?;
            return self.forward(&j, j.next_step.max(1)).await;
        }
        let Some(first) = j.rollback_steps.first().map(|s| s.n) else {
            // Journaled by an earlier version: generate the rollback's steps now.
            self.transition(Trigger::Resume, w, None, None).await?;
            let why = if j.error.is_empty() {
                "resumed"
            } else {
                &j.error
            };
            return self
                .start_rollback(&j, why, j.rollback_requested, false)
                .await;
        };
        let detail = format!(
            "resuming the rollback to {} at step {}",
            j.from_version, j.next_step
        );
        let head = Head::marker(first - 1, Action::Rollback);
        self.transition(
            Trigger::Resume,
            w,
            Some((head, "started", &detail, 0)),
            None,
        )
        .await?;
        self.backward(&j, j.next_step).await
    }

    /// `rollout rollback`: back to the old version (any time before `remove_old`);
    /// `fast` (incident mode) skips the `min_healthy` waits and moves every host at once.
    pub async fn rollback(mut self, fast: bool) -> Result<Outcome> {
        let r = async {
            let j = self.load().await?;
            j.plan(self.pac.name().as_str())?;
            self.next_state(Trigger::Rollback, "nothing to roll back")?;
            self.start_rollback(&j, "requested by an operator", true, fast)
                .await
        }
        .await;
        self.release().await;
        r
    }

    /// `rollout abort` when no coordinator is running it.
    pub async fn abort(mut self) -> Result<Outcome> {
        let r = async {
            let j = self.load().await?;
            self.next_state(Trigger::Abort, "nothing to abort")?;
            if let Ok(plan) = j.plan(self.pac.name().as_str()) {
                self.monitor_end(plan, safety::Ending::Final, j.next_step)
                    .await?;
            }
            self.finish(Trigger::Abort, "aborted by an operator", None)
                .await?;
            Ok(Outcome::Aborted("aborted by an operator".into()))
        }
        .await;
        self.release().await;
        r
    }

    /// Ends the rollout (`done`, `aborted` or `rolled_back`, as `trigger` decides from its
    /// state), with its last event and its history entry.
    async fn finish(&mut self, trigger: Trigger, why: &str, step: Option<usize>) -> Result<()> {
        let to = self.next_state(trigger, "it cannot end so")?;
        let current = self
            .ride_out("reading the journal", || self.pac.rollout_current())
            .await?;
        let j = Journal::decode(&current)?;
        let plan = j.plan(self.pac.name().as_str())?;
        let finished_ms = now_ms();
        let summary = serde_json::json!({
            "id": self.id,
            "pac": self.pac.name(),
            "from_version": j.from_version,
            "target": plan.target.version.to_string(),
            "process": j.process.map(Process::as_str),
            "result": to.as_str(),
            "detail": why,
            "started_at": j.started_at_ms.map(crate::psor::rfc3339),
            "finished_at": crate::psor::rfc3339(finished_ms),
            "duration_ms": j.started_at_ms.map(|s| finished_ms.saturating_sub(s)),
            "reason": j.reason,
            "by": j.by,
            "plan": plan,
            "amendments": j.amendments,
        })
        .to_string();
        let action = match to {
            RolloutState::RolledBack => Action::Rollback,
            _ => Action::Done,
        };
        // A completed rollback did what it set out to do, whoever asked for it; the
        // rollout's result ("rolled_back") says that the upgrade did not happen.
        let status = match to {
            RolloutState::Done | RolloutState::RolledBack => "done",
            _ => "failed",
        };
        let elapsed = self.started.elapsed().as_millis() as u64;
        let head = Head::marker(step.unwrap_or(j.next_step), action);
        let error = if to == RolloutState::Done { "" } else { why };
        self.transition(
            trigger,
            Write::new().error(error),
            Some((head, status, why, elapsed)),
            Some(&summary),
        )
        .await?;
        Ok(())
    }
}
