//! The executor: runs a step list (a forward rollout's or a rollback's) group by group.
//!
//! Before each group it checks the lease, Ctrl-C, the operator's pause and abort
//! requests (one `HMGET`) and, going forward, `hold_finalization`. A group's steps run
//! concurrently, at most `max_parallel` at once, each bounded by `progress_deadline`, each
//! with its own `started` and `done`/`skipped`/`failed` journal entry (`ended:<n>`), so a
//! resume after a crash inside a group runs exactly the steps that had not ended. The
//! journal's `next_step` moves past a group once all its steps ended.

use super::actions::{self, Ctx, Moving, StepOutcome};
use super::journal::{field, Ended, Journal, Trigger, Write};
use super::plan::{OnFailure, Plan};
use super::preflight::driver_of;
use super::progress::CurrentStep;
use super::safety::{Ending, Hold};
use super::steps::{self, Action, Process, RollbackInput, Step};
use super::{Coordinator, Head, Outcome};
use crate::error::{Error, Result};
use crate::psor::now_ms;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::time::Instant;

/// How a run of the executor ended.
enum End {
    /// Every step ended.
    Completed,
    /// Ctrl-C: stopped before step `n`.
    Interrupted(usize),
    /// An operator's pause, before step `n`.
    PauseRequested(usize),
    /// An operator's abort, before step `n`.
    AbortRequested(usize),
    /// `hold_finalization`, before finalising step `n`.
    Held(usize),
    /// Step `n` failed (the lowest-numbered failure of its group), with the error.
    Failed(usize, String),
}

impl End {
    /// The step it ended before, if not after the last.
    fn step(&self) -> Option<usize> {
        match self {
            End::Completed => None,
            End::Interrupted(n)
            | End::PauseRequested(n)
            | End::AbortRequested(n)
            | End::Held(n)
            | End::Failed(n, _) => Some(*n),
        }
    }
}

/// How one step of a group ended.
enum StepEnd {
    Ended,
    Cancelled,
    Failed(String),
}

/// What one run of the executor works on.
struct Job<'a> {
    plan: &'a Plan,
    process: Process,
    moving: Moving,
    steps: &'a [Step],
    ended: &'a BTreeMap<usize, Ended>,
}

impl Job<'_> {
    fn rollback(&self) -> bool {
        matches!(self.moving, Moving::Back { .. })
    }
}

impl Coordinator {
    /// Runs the forward steps from `from` and applies what the run ended with.
    pub(super) async fn forward(&mut self, j: &Journal, from: usize) -> Result<Outcome> {
        let plan = j.plan(self.pac.name().as_str())?;
        let process = j.process.unwrap_or(Process::Incompatible);
        // Steps before `from` ended in an earlier run (a journal of an earlier version
        // has no per-step entries).
        let rest: Vec<Step> = j.steps.iter().filter(|s| s.n >= from).cloned().collect();
        let job = Job {
            plan,
            process,
            moving: Moving::Forward,
            steps: &rest,
            ended: &j.ended,
        };
        let end = match self.monitor(plan, Hold::Suspend, from).await? {
            None => self.execute(&job).await?,
            Some(why) => End::Failed(from, why),
        };
        let pac = self.pac.name().to_string();
        let ending = match end {
            End::Completed | End::AbortRequested(_) => Some(Ending::Final),
            End::Failed(..) if plan.on_failure == OnFailure::Abort => Some(Ending::Final),
            // A rollback resumes it when it ends.
            End::Failed(..) if plan.on_failure == OnFailure::Rollback => None,
            _ => Some(Ending::Pause),
        };
        if let Some(e) = ending {
            self.monitor_end(plan, e, end.step().unwrap_or(j.steps.len()))
                .await?;
        }
        match end {
            End::Completed => {
                let target = plan.target.version.to_string();
                let n = j.steps.len();
                self.finish(
                    Trigger::Finish,
                    &format!("every region runs {target}"),
                    Some(n),
                )
                .await?;
                Ok(Outcome::Done)
            }
            End::Interrupted(n) => {
                let why =
                    format!("interrupted before step {n}; `pacup rollout resume {pac}` continues");
                self.pause(n, &why, Trigger::Pause).await?;
                Ok(Outcome::Paused(why))
            }
            End::PauseRequested(n) => {
                let why = format!("paused by an operator before step {n}");
                self.pause(n, &why, Trigger::Pause).await?;
                Ok(Outcome::Paused(why))
            }
            End::AbortRequested(n) => {
                self.finish(Trigger::Abort, "aborted by an operator", Some(n))
                    .await?;
                Ok(Outcome::Aborted(format!(
                    "aborted by an operator before step {n}"
                )))
            }
            End::Held(n) => {
                let action = j.step(n).map(Step::action).unwrap_or(Action::Pause);
                let why = format!(
                    "held before {action} (hold_finalization); check the new store, then \
                     `pacup rollout resume {pac}`"
                );
                self.pause(n, &why, Trigger::Hold).await?;
                Ok(Outcome::Held(why))
            }
            End::Failed(n, why) => match plan.on_failure {
                OnFailure::Pause => {
                    self.pause(n, &why, Trigger::Pause).await?;
                    Ok(Outcome::Paused(format!(
                        "{why}; fix it, then `pacup rollout resume {pac}` retries the step"
                    )))
                }
                OnFailure::Abort => {
                    self.finish(Trigger::Abort, &why, Some(n)).await?;
                    Ok(Outcome::Aborted(why))
                }
                OnFailure::Rollback => self.start_rollback(j, &why, false, false).await,
            },
        }
    }

    /// A pause marker before step `n` with the new state (`paused`, `held`, or still
    /// `rolling_back` for a rollback), so `rollout resume` continues at `n`.
    async fn pause(&mut self, n: usize, why: &str, trigger: Trigger) -> Result<()> {
        let w = Write::new().error(why).next_step(n).clear_pause_request();
        let head = Head::marker(n, Action::Pause);
        self.transition(trigger, w, Some((head, "done", why, 0)), None)
            .await?;
        Ok(())
    }

    /// Generates the rollback's steps from the journal and the PSOR as it is now,
    /// journals them with the `rolling_back` state, and runs them.
    pub(super) async fn start_rollback(
        &mut self,
        j: &Journal,
        why: &str,
        requested: bool,
        fast: bool,
    ) -> Result<Outcome> {
        let plan = j.plan(self.pac.name().as_str())?;
        let process = j.process.unwrap_or(Process::Incompatible);
        let target = plan.target.version.to_string();
        let from = j.from_version.clone();
        let driver = driver_of(plan, self.pac.psor().options(), process);
        let stores = super::store_steps::pac_stores(&self.pac, &driver, &target).await?;
        if process == Process::Incompatible && stores.store(&from).is_none() {
            return Err(Error::refused(format!(
                "the old store {from} is gone (remove_old ran); rollout {} cannot be rolled back",
                self.id
            )));
        }
        let all = plan.all_regions();
        let names: Vec<&str> = all.iter().map(|(_, r)| r.as_str()).collect();
        let host_names: Vec<&str> = plan.hosts.iter().map(|h| h.name.as_str()).collect();
        // The command driver's regions and hosts have no pacup records to read: its
        // rollback moves every host, each step observing through the templates.
        let agent = plan.driver == super::plan::DriverSpec::Agent;
        let (regions, hosts) = if agent {
            let regions = self.pac.regions(&names).await?;
            let hosts: BTreeMap<String, String> = self
                .pac
                .hosts(&host_names)
                .await?
                .into_iter()
                .map(|h| (h.name, h.product_version))
                .collect();
            (regions, hosts)
        } else {
            (Vec::new(), BTreeMap::new())
        };
        // The hosts the rollout's steps reached (those before the next or failed step,
        // that step, any that ended), and whether an update may have run on each: its
        // `apply_update` was reached and did not fail (a failed template installed
        // nothing, by the templates' contract).
        // Read now: `j` may be the journal as this run found it, before its steps ran.
        let mut touched: BTreeMap<String, bool> = BTreeMap::new();
        if !agent {
            let now = super::journal::Journal::decode(&self.pac.rollout_current().await?)?;
            let reached = now
                .failed_step
                .map_or(now.next_step, |f| f.max(now.next_step));
            for s in now.steps.iter().chain(&now.rollback_steps) {
                if s.n > reached && !now.ended.contains_key(&s.n) {
                    continue;
                }
                let Some(h) = s.host() else { continue };
                // Ended (before `next_step`, or recorded), or in hand when the run
                // stopped: it may have installed; only the step that failed did not.
                let ended = s.n < now.next_step || now.ended.contains_key(&s.n);
                let updated =
                    s.action() == Action::ApplyUpdate && (ended || now.failed_step != Some(s.n));
                *touched.entry(h.to_string()).or_default() |= updated;
            }
        }
        // Numbered after the plan's steps and after any earlier rollback of this rollout;
        // the `rollback` event takes the number before the first rollback step.
        let marker = j
            .rollback_steps
            .last()
            .map_or(j.steps.len(), |s| s.n + 1)
            .max(j.steps.len());
        let steps = steps::rollback_steps(&RollbackInput {
            plan,
            process,
            from: &from,
            target: &target,
            host_versions: &j.host_versions,
            regions: &regions,
            hosts: &hosts,
            fast,
            touched: (!agent).then_some(&touched),
            first: marker + 1,
        });
        let w = Write::new()
            .error(why)
            .rollback(&steps, requested, fast)
            .next_step(marker + 1);
        let detail = format!(
            "rolling back to {from}{}: {why}",
            if fast { " (fast)" } else { "" }
        );
        let head = Head::marker(marker, Action::Rollback);
        self.transition(
            Trigger::Rollback,
            w,
            Some((head, "started", &detail, 0)),
            None,
        )
        .await?;
        let mut j = j.clone();
        j.rollback_steps = steps;
        j.rollback_requested = requested;
        j.fast = fast;
        j.error = why.to_string();
        self.backward(&j, marker + 1).await
    }

    /// Runs the rollback's steps from `from` and applies what the run ended with.
    pub(super) async fn backward(&mut self, j: &Journal, from: usize) -> Result<Outcome> {
        let plan = j.plan(self.pac.name().as_str())?;
        let rest: Vec<Step> = j
            .rollback_steps
            .iter()
            .filter(|s| s.n >= from)
            .cloned()
            .collect();
        let job = Job {
            plan,
            process: j.process.unwrap_or(Process::Incompatible),
            moving: Moving::Back {
                from: j.from_version.clone(),
                host_versions: j.host_versions.clone(),
                fast: j.fast,
            },
            steps: &rest,
            ended: &j.ended,
        };
        let end = match self.monitor(plan, Hold::Suspend, from).await? {
            None => self.execute(&job).await?,
            Some(why) => End::Failed(from, why),
        };
        let ending = match end {
            End::Completed | End::AbortRequested(_) => Ending::Final,
            _ => Ending::Pause,
        };
        let last = j.rollback_steps.last().map_or(from, |s| s.n + 1);
        self.monitor_end(plan, ending, end.step().unwrap_or(last))
            .await?;
        let pac = self.pac.name().to_string();
        let why = if j.error.is_empty() {
            "requested by an operator".to_string()
        } else {
            j.error.clone()
        };
        match end {
            End::Completed => {
                let detail = format!("rolled back to {}: {why}", j.from_version);
                let n = j.rollback_steps.last().map_or(from, |s| s.n + 1);
                self.finish(Trigger::Finish, &detail, Some(n)).await?;
                Ok(if j.rollback_requested {
                    Outcome::RolledBackOnRequest(detail)
                } else {
                    Outcome::RolledBack(detail)
                })
            }
            End::Interrupted(n) | End::PauseRequested(n) | End::Held(n) => {
                let how = if matches!(end, End::Interrupted(_)) {
                    "interrupted"
                } else {
                    "paused by an operator"
                };
                let w = format!(
                    "rollback {how} before step {n}; `pacup rollout resume {pac}` continues the rollback"
                );
                self.pause(n, &w, Trigger::Pause).await?;
                Ok(Outcome::Paused(w))
            }
            End::AbortRequested(n) => {
                self.finish(Trigger::Abort, "aborted by an operator", Some(n))
                    .await?;
                Ok(Outcome::Aborted(format!(
                    "rollback aborted by an operator before step {n}"
                )))
            }
            End::Failed(n, e) => {
                let w = Write::new()
                    .error(&format!("rollback failed: {e}"))
                    .next_step(n);
                self.transition(Trigger::Fail, w, None, None).await?;
                let at = j
                    .step(n)
                    .map(|s| {
                        let mut t = s.action().name().to_string();
                        if let Some(h) = s.host() {
                            t.push_str(&format!(" on {h}"));
                        }
                        t
                    })
                    .unwrap_or_default();
                Err(Error::refused(format!(
                    "rollback failed at {at}: {e}; fix it, then `pacup rollout resume {pac}` continues the rollback"
                )))
            }
        }
    }

    /// Runs `job`'s steps, group by group, from its first step not yet ended.
    async fn execute(&self, job: &Job<'_>) -> Result<End> {
        self.outages.set_bound(job.plan.progress_deadline);
        let driver = driver_of(job.plan, self.pac.psor().options(), job.process);
        let ctx = Ctx {
            pac: &self.pac,
            plan: job.plan,
            process: job.process,
            epoch: self.lease.epoch,
            driver: &driver,
            moving: &job.moving,
            actor: &self.opts.by,
        };
        for g in steps::groups(job.steps) {
            let members: Vec<&Step> = job.steps[g.clone()]
                .iter()
                .filter(|s| !job.ended.contains_key(&s.n))
                .collect();
            let Some(first) = members.first().map(|s| s.n) else {
                continue;
            };
            let after = job
                .steps
                .get(g.end)
                .map_or(job.steps[g.end - 1].n + 1, |s| s.n);
            self.check_lease()?;
            if self.opts.interrupt.count() > 0 {
                return Ok(End::Interrupted(first));
            }
            let flags = self
                .ride_out("reading operator requests", || {
                    self.pac.rollout_fields(&[
                        field::ABORT_REQUESTED,
                        field::PAUSE_REQUESTED,
                        field::RELEASED,
                    ])
                })
                .await?;
            let set = |i: usize| flags[i].as_deref().is_some_and(|v| !v.is_empty());
            if set(0) {
                return Ok(End::AbortRequested(first));
            }
            if set(1) {
                return Ok(End::PauseRequested(first));
            }
            // Each finalising step is held once; `rollout resume` releases that step only.
            let released_step: Option<usize> = flags[2].as_deref().and_then(|v| v.parse().ok());
            // The backup before `remove_old` is held in its place: releasing it releases
            // the removal that follows it too.
            let released = released_step == Some(first)
                || (members[0].action() == Action::RemoveOld
                    && job.plan.backs_up()
                    && released_step.is_some_and(|r| r + 1 == first));
            if !job.rollback() && job.plan.hold_finalization && members[0].finalizing() && !released
            {
                return Ok(End::Held(first));
            }
            let single = members.len() == 1;
            if !single {
                let cur = self.current(job, &members);
                self.journal(Write::new().next_step(first).current(&cur), None, None)
                    .await?;
            }
            let bound = job.plan.parallel_bound().min(members.len());
            let mut runs = futures_util::stream::iter(members.iter().map(|s| {
                let ctx = &ctx;
                async move { self.run_step(ctx, job, s, single, after).await }
            }))
            .buffer_unordered(bound);
            let mut failed: Option<(usize, String)> = None;
            let mut cancelled = None;
            while let Some((n, r)) = runs.next().await {
                match r? {
                    StepEnd::Ended => {}
                    StepEnd::Cancelled => {
                        cancelled = Some(cancelled.map_or(n, |c: usize| c.min(n)))
                    }
                    StepEnd::Failed(why) => {
                        if failed.as_ref().is_none_or(|(m, _)| n < *m) {
                            failed = Some((n, why));
                        }
                    }
                }
            }
            if let Some((n, why)) = failed {
                // Resume at the first step of the group that did not end.
                return Ok(End::Failed(cancelled.map_or(n, |c| c.min(n)), why));
            }
            if let Some(n) = cancelled {
                return Ok(End::Interrupted(n));
            }
            if !single {
                self.journal(Write::new().next_step(after), None, None)
                    .await?;
            }
        }
        Ok(End::Completed)
    }

    /// The progress record of the steps in hand.
    fn current(&self, job: &Job<'_>, members: &[&Step]) -> CurrentStep {
        let (a, z) = (members[0], members[members.len() - 1]);
        let same_host = members.iter().all(|s| s.host() == a.host());
        CurrentStep {
            n: a.n,
            last: (members.len() > 1).then_some(z.n),
            action: a.action().name().to_string(),
            host: same_host.then(|| a.host().map(String::from)).flatten(),
            region: (members.len() == 1)
                .then(|| a.region().map(String::from))
                .flatten(),
            started_ms: now_ms(),
            bound_ms: job.plan.progress_deadline.as_millis() as u64,
            rollback: job.rollback(),
        }
    }

    /// One step: its `started` entry, the step bounded by the progress deadline (given
    /// up at a second Ctrl-C), its end entry. A single step also moves `next_step`.
    async fn run_step(
        &self,
        ctx: &Ctx<'_>,
        job: &Job<'_>,
        s: &Step,
        single: bool,
        after: usize,
    ) -> (usize, Result<StepEnd>) {
        (s.n, self.run_step_inner(ctx, job, s, single, after).await)
    }

    async fn run_step_inner(
        &self,
        ctx: &Ctx<'_>,
        job: &Job<'_>,
        s: &Step,
        single: bool,
        after: usize,
    ) -> Result<StepEnd> {
        let intr = &self.opts.interrupt;
        if intr.count() >= 2 {
            return Ok(StepEnd::Cancelled);
        }
        self.outages
            .on(format!("step {} ({})", s.n, s.action().name()));
        let mut w = Write::new();
        if single {
            w = w.next_step(s.n).current(&self.current(job, &[s]));
        }
        self.journal(w, Some((Head::step(s), "started", "", 0)), None)
            .await?;
        let t = Instant::now();
        let deadline = job.plan.progress_deadline;
        // A PSOR outage pauses the step (it is re-run once the PSOR is back: it observes
        // before it acts); one outlasting the progress deadline ends the run with exit 5.
        let step = self.ride_out("the step", || actions::run(ctx, s));
        let r = tokio::select! {
            r = tokio::time::timeout(deadline, step) => r,
            () = intr.at_least(2) => return Ok(StepEnd::Cancelled),
        };
        let r = match r {
            Ok(r) => r,
            Err(_) if self.outages.ongoing() => {
                return Err(self.outages.gave_up(Error::Unreachable {
                    target: self.pac.psor().target().to_string(),
                    reason: "out of reach".into(),
                }))
            }
            Err(_) => Err(Error::refused(format!(
                "no progress within the progress deadline {}",
                crate::names::format_duration(deadline)
            ))),
        };
        let ms = t.elapsed().as_millis() as u64;
        let prefix = if job.rollback() { "rollback: " } else { "" };
        let (how, status, detail) = match r {
            Ok(StepOutcome::Done(d)) => (Ended::Done, "done", d),
            Ok(StepOutcome::Skipped(d)) => (Ended::Skipped, "skipped", d),
            Err(e @ (Error::Fenced { .. } | Error::LeaseHeld { .. })) => return Err(e),
            // Only an outage past the deadline gets here; nothing can be journaled.
            Err(e) if e.is_outage() => return Err(e),
            Err(e) => {
                let why = format!("step {} ({}) failed: {e}", s.n, s.action());
                let w = Write::new().error(&why).failed_step(s.n);
                let detail = format!("{prefix}{e}");
                self.journal(w, Some((Head::step(s), "failed", &detail, ms)), None)
                    .await?;
                return Ok(StepEnd::Failed(why));
            }
        };
        let mut w = Write::new().ended(&self.id, s.n, how);
        if single {
            w = w.next_step(after);
        }
        let detail = format!("{prefix}{detail}");
        self.journal(w, Some((Head::step(s), status, &detail, ms)), None)
            .await?;
        Ok(StepEnd::Ended)
    }
}
