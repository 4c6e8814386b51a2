//! The rollout coordinator: one command for a whole compatible or incompatible upgrade.
//!
//! A plan ([`plan`]) expands into steps ([`steps`]); the coordinator runs them in order,
//! journaling each step's outcome in the PSOR together with its event, fenced by the
//! epoch of its lease, so that:
//! - `rollout resume` continues after a crash at any instant: the step that was running is
//!   run again, and every step first observes the real state and does only what is missing;
//! - a coordinator that lost its lease (paused past it, cut off) cannot change anything:
//!   every journal write, store change and agent command it makes carries its epoch and is
//!   refused once a newer coordinator took over; it notices and exits 4;
//! - a failed step or gate applies the plan's `on_failure`: pause (exit 6), rollback
//!   (exit 7) or abort (exit 1).

pub mod driver;
pub mod plan;
pub mod preflight_wait;
pub mod progress;
pub mod status;
pub mod steps;

use crate::compat::{self, Verdict};
use crate::error::{Error, ExitCode, Result};
use crate::names::Product;
use crate::psor::rollout::Lease;
use crate::psor::{now_ms, Mode, Pac, Snapshot};
use crate::region::StartType;
use driver::Driver;
use plan::{DriverSpec, ModeFlip, OnFailure, Plan, Strategy};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use steps::{Action, Process, Step, StepOutcome};
use tokio::sync::watch;

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
}

impl Outcome {
    /// The documented exit code.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Outcome::Done | Outcome::RolledBackOnRequest(_) => ExitCode::Ok,
            Outcome::Paused(_) => ExitCode::Paused,
            Outcome::Held(_) => ExitCode::Held,
            Outcome::Aborted(_) => ExitCode::Refused,
            Outcome::RolledBack(_) => ExitCode::RolledBack,
        }
    }
}

/// How many times the coordinator's process was asked to stop (SIGINT/SIGTERM): the
/// first request pauses the rollout once the step in hand has finished; the second
/// gives up the step at once (as a crash would: the step is re-run on resume, and every
/// step observes before it acts) and pauses.
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

/// Everything a step needs.
pub struct Ctx<'a> {
    /// The PAC.
    pub pac: &'a Pac,
    /// The plan.
    pub plan: &'a Plan,
    /// The decided process.
    pub process: Process,
    /// Our fencing epoch.
    pub epoch: u64,
    /// How to act on regions.
    pub driver: &'a Driver,
    /// The version being moved to (the target; the old version during a rollback).
    pub version: String,
    /// Who we are, for the PSOR's audit fields.
    pub actor: String,
}

impl Ctx<'_> {
    /// The target as a product (OS and bitness of the running store).
    pub fn target_product(&self, snap: &Snapshot) -> Product {
        let base = snap.newest_running().and_then(|s| s.product());
        Product {
            version: semver::Version::parse(&self.version)
                .unwrap_or_else(|_| semver::Version::new(0, 0, 0)),
            os: base
                .as_ref()
                .map(|b| b.os.clone())
                .unwrap_or_else(crate::names::default_os),
            bitness: base
                .map(|b| b.bitness)
                .unwrap_or_else(crate::names::default_bitness),
        }
    }

    /// Regions a wave's health gate waits for.
    pub fn gate_regions(&self, wave: usize) -> Vec<(String, String)> {
        self.plan.wave_regions(wave)
    }
}

/// CheckCompat of `product` against the newest running store.
pub fn verdict(snap: &Snapshot, product: &Product) -> Result<Verdict> {
    let store = snap
        .newest_running()
        .and_then(|s| s.product())
        .ok_or_else(|| Error::refused(format!("PAC {} has no running store", snap.pac)))?;
    Ok(compat::check(product, &store, None))
}

/// What `rollout plan` shows and `run` starts from.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    /// Decided process.
    pub process: Process,
    /// Why (the compatibility verdict's reasons).
    pub reasons: Vec<String>,
    /// Version of the running store now.
    pub from_version: String,
    /// Product version of each plan host now (what a rollback returns to).
    pub host_versions: BTreeMap<String, String>,
    /// The steps.
    pub steps: Vec<Step>,
    /// Preflight problems (empty when the rollout may start).
    pub problems: Vec<String>,
}

fn driver_of(plan: &Plan, psor_url: &str) -> Driver {
    match &plan.driver {
        DriverSpec::Agent => Driver::Agent,
        DriverSpec::Command { templates, timeout } => Driver::Command {
            templates: templates.clone(),
            timeout: *timeout,
            psor: crate::conn::redact_url(psor_url).replace(":***@", "@"),
        },
    }
}

/// Preflight: decides the process and lists every failed check (read-only).
pub async fn preview(pac: &Pac, plan: &Plan, allow_downtime: bool) -> Result<Preview> {
    let snap = pac.snapshot().await?;
    if !snap.exists {
        return Err(Error::NoSuchPac(pac.name().to_string()));
    }
    let mut problems = Vec::new();
    let running: Vec<_> = snap
        .stores
        .iter()
        .filter(|s| s.mode == Mode::Running)
        .collect();
    if running.len() != 1 {
        problems.push(format!(
            "the PAC must have exactly one running store, it has {} ({})",
            running.len(),
            snap.stores
                .iter()
                .map(|s| format!("{} {}", s.version, s.mode))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(u) = snap.upgrade_store() {
        problems.push(format!(
            "store {} is already in upgrade mode (an unfinished upgrade?)",
            u.version
        ));
    }
    let target = plan.target.version.to_string();
    let base = snap.newest_running().and_then(|s| s.product());
    let from_version = base
        .as_ref()
        .map(|b| b.version.to_string())
        .unwrap_or_default();
    let product = Product {
        version: plan.target.version.clone(),
        os: base
            .as_ref()
            .map(|b| b.os.clone())
            .unwrap_or_else(crate::names::default_os),
        bitness: base
            .as_ref()
            .map(|b| b.bitness)
            .unwrap_or_else(crate::names::default_bitness),
    };
    let v = base.as_ref().map(|b| compat::check(&product, b, None));
    let compatible = v.as_ref().is_some_and(|v| v.compatible);
    let process = match plan.strategy {
        Strategy::Auto if compatible => Process::Compatible,
        Strategy::Auto => Process::Incompatible,
        Strategy::Compatible => {
            if v.is_some() && !compatible {
                problems.push(format!(
                    "strategy compatible, but {target} is incompatible with the running store {from_version}"
                ));
            }
            Process::Compatible
        }
        Strategy::Incompatible => {
            if compatible {
                problems.push(format!(
                    "strategy incompatible, but {target} is compatible with the running store {from_version} \
                     (an upgrade start would be refused)"
                ));
            }
            Process::Incompatible
        }
    };
    if base
        .as_ref()
        .is_some_and(|b| b.version == plan.target.version)
    {
        problems.push(format!("the running store is already at {target}"));
    }
    let mut host_versions = BTreeMap::new();
    for hp in &plan.hosts {
        let h = hp.name.as_str();
        let hi = snap.hosts.iter().find(|x| x.name == h);
        if plan.driver == DriverSpec::Agent {
            match hi {
                None => problems.push(format!("host {h}: no host agent has registered")),
                Some(x) if !x.alive => problems.push(format!("host {h}: its agent is not alive")),
                Some(x) => {
                    for r in &hp.regions {
                        if !x.regions.iter().any(|xr| xr == r.as_str()) {
                            problems.push(format!("host {h}: its agent does not host region {r}"));
                        }
                    }
                }
            }
        }
        let mut hv = hi.map(|x| x.product_version.clone()).unwrap_or_default();
        for r in &hp.regions {
            match snap.region(r.as_str()) {
                Some(ri) if ri.alive => {
                    if hv.is_empty() {
                        hv = ri.product_version.clone();
                    }
                    if snap.store(&ri.store).map(|s| s.mode) != Some(Mode::Running) {
                        problems.push(format!(
                            "region {r}: in store {} which is not running",
                            ri.store
                        ));
                    }
                }
                _ => problems.push(format!("region {r}: not live")),
            }
        }
        host_versions.insert(h.to_string(), hv);
    }
    if !allow_downtime {
        problems.extend(capacity_problems(plan, process, &snap));
    }
    Ok(Preview {
        process,
        reasons: v.map(|v| v.reasons).unwrap_or_default(),
        from_version,
        host_versions,
        steps: steps::steps(plan, process),
        problems,
    })
}

/// Waves during which no region would take batch work or serve clients.
fn capacity_problems(plan: &Plan, process: Process, snap: &Snapshot) -> Vec<String> {
    let in_plan: HashSet<String> = plan.all_regions().into_iter().map(|(_, r)| r).collect();
    let others = snap
        .regions
        .iter()
        .filter(|r| r.alive && !in_plan.contains(&r.name))
        .filter(|r| {
            snap.store(&r.store)
                .is_some_and(|s| s.mode == Mode::Running)
        })
        .count();
    let n = plan.waves.len();
    let size = |w: usize| plan.wave_regions(w).len();
    let mut out = Vec::new();
    for k in 0..n {
        let (batch, clients) = match (process, plan.mode_flip) {
            (Process::Compatible, _) => {
                let c: usize = (0..n).filter(|&w| w != k).map(size).sum();
                (c, c)
            }
            (Process::Incompatible, ModeFlip::AfterFirstWave) if k == 0 => {
                let c: usize = (1..n).map(size).sum();
                (c, c)
            }
            (Process::Incompatible, ModeFlip::AfterFirstWave) => {
                let before: usize = (0..k).map(size).sum();
                let after: usize = (k + 1..n).map(size).sum();
                (before, before + after)
            }
            (Process::Incompatible, ModeFlip::AfterAllWaves) => {
                let after: usize = (k + 1..n).map(size).sum();
                (after, after)
            }
        };
        let hosts = plan.waves[k]
            .iter()
            .map(|h| h.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        if batch + others == 0 {
            out.push(format!(
                "wave {} ({hosts}) would leave no region taking batch work; add waves or pass --allow-downtime",
                k + 1
            ));
        }
        if clients + others == 0 {
            out.push(format!(
                "wave {} ({hosts}) would leave no listener serving clients; add waves or pass --allow-downtime",
                k + 1
            ));
        }
    }
    out
}

fn is_active(state: &str) -> bool {
    matches!(state, "running" | "paused" | "held" | "rolling_back")
}

/// A coordinator holding the lease of one PAC.
pub struct Coordinator {
    pac: Pac,
    lease: Lease,
    lost: watch::Receiver<bool>,
    renew: tokio::task::JoinHandle<()>,
    opts: RunOptions,
    id: String,
    seq: u64,
    started: Instant,
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
            seq: 0,
            started: Instant::now(),
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

    /// Journals fields and emits an event, atomically and fenced.
    async fn journal(
        &mut self,
        state: &[(&str, String)],
        ev: Option<(&Step, &str, &str, u64)>,
        history: Option<&str>,
    ) -> Result<()> {
        let mut fields: Vec<(&str, String)> = state.to_vec();
        fields.push(("updated_at_ms", now_ms().to_string()));
        let mut event_fields = Vec::new();
        let mut event = None;
        if let Some((step, status, detail, elapsed)) = ev {
            self.seq += 1;
            fields.push(("seq", self.seq.to_string()));
            let e = Event {
                ts: crate::psor::rfc3339(now_ms()),
                rollout: self.id.clone(),
                seq: self.seq,
                step: step.n,
                action: step.action.name().into(),
                host: step.host.clone(),
                region: step.region.clone(),
                status: status.into(),
                detail: detail.into(),
                elapsed_ms: elapsed,
            };
            event_fields = vec![
                ("rollout", e.rollout.clone()),
                ("seq", e.seq.to_string()),
                ("step", e.step.to_string()),
                ("action", e.action.clone()),
                ("host", e.host.clone().unwrap_or_default()),
                ("region", e.region.clone().unwrap_or_default()),
                ("status", e.status.clone()),
                ("detail", e.detail.clone()),
                ("elapsed_ms", e.elapsed_ms.to_string()),
                ("by", self.opts.by.clone()),
            ];
            event = Some(e);
        }
        self.pac
            .rollout_write(self.lease.epoch, &fields, &event_fields, history)
            .await?;
        self.opts.metrics.rollout_journaled(state, event.as_ref());
        if let Some(e) = event {
            (self.opts.emit)(&e);
        }
        Ok(())
    }

    /// What a step needs, moving the PAC to `version`.
    fn ctx<'a>(
        &'a self,
        plan: &'a Plan,
        process: Process,
        driver: &'a Driver,
        version: String,
    ) -> Ctx<'a> {
        Ctx {
            pac: &self.pac,
            plan,
            process,
            epoch: self.lease.epoch,
            driver,
            version,
            actor: self.opts.by.clone(),
        }
    }

    fn marker(&self, n: usize, action: Action) -> Step {
        Step {
            n,
            action,
            host: None,
            region: None,
            wave: None,
        }
    }

    /// `rollout run`: preflight, journal, steps.
    pub async fn run(mut self, plan: Plan) -> Result<Outcome> {
        let r = self.run_inner(plan).await;
        self.release().await;
        r
    }

    async fn run_inner(&mut self, plan: Plan) -> Result<Outcome> {
        let cur = self.pac.rollout_current().await?;
        if let Some(state) = cur.get("state").filter(|s| is_active(s)) {
            return Err(Error::refused(format!(
                "rollout {} of PAC {} is {state}; `pacup rollout resume {}` or `pacup rollout abort {}` it first",
                cur.get("id").map(String::as_str).unwrap_or("?"),
                self.pac.name(),
                self.pac.name(),
                self.pac.name()
            )));
        }
        let t0 = Instant::now();
        let pv = preview(&self.pac, &plan, self.opts.allow_downtime).await?;
        if !pv.problems.is_empty() {
            return Err(Error::refused(format!(
                "preflight failed:\n  - {}",
                pv.problems.join("\n  - ")
            )));
        }
        self.id = format!("{}-{:x}", self.pac.name(), now_ms());
        self.seq = 0;
        self.started = Instant::now();
        let pre = self.marker(0, Action::Preflight);
        let detail = format!(
            "{} upgrade {} -> {} ({} steps): {}",
            serde_json::to_string(&pv.process)
                .unwrap_or_default()
                .trim_matches('"'),
            pv.from_version,
            plan.target.version,
            pv.steps.len(),
            pv.reasons.join("; ")
        );
        let state = vec![
            ("id", self.id.clone()),
            ("pac", self.pac.name().to_string()),
            (
                "plan",
                serde_json::to_string(&plan).expect("plan serialises"),
            ),
            (
                "process",
                serde_json::to_string(&pv.process)
                    .expect("serialises")
                    .trim_matches('"')
                    .to_string(),
            ),
            (
                "steps",
                serde_json::to_string(&pv.steps).expect("serialises"),
            ),
            ("from_version", pv.from_version.clone()),
            (
                "host_versions",
                serde_json::to_string(&pv.host_versions).expect("serialises"),
            ),
            ("target", plan.target.version.to_string()),
            ("state", "running".into()),
            ("next_step", "1".into()),
            ("started_at_ms", now_ms().to_string()),
            ("reason", self.opts.reason.clone()),
            ("by", self.opts.by.clone()),
            ("error", String::new()),
            ("pause_requested", String::new()),
            ("abort_requested", String::new()),
            ("released", String::new()),
        ];
        self.journal(
            &state,
            Some((&pre, "done", &detail, t0.elapsed().as_millis() as u64)),
            None,
        )
        .await?;
        self.execute(&plan, pv.process, 1).await
    }

    /// `rollout resume`: continues the journaled rollout from its next step (a held
    /// rollout is released; a rollback in progress goes on).
    pub async fn resume(mut self) -> Result<Outcome> {
        let r = self.resume_inner().await;
        self.release().await;
        r
    }

    async fn load(&mut self) -> Result<(HashMap<String, String>, Plan, Process)> {
        let cur = self.pac.rollout_current().await?;
        let plan: Plan = cur
            .get("plan")
            .and_then(|p| serde_json::from_str(p).ok())
            .ok_or_else(|| {
                Error::refused(format!("PAC {} has no rollout to act on", self.pac.name()))
            })?;
        let process = if cur.get("process").map(String::as_str) == Some("compatible") {
            Process::Compatible
        } else {
            Process::Incompatible
        };
        self.id = cur.get("id").cloned().unwrap_or_default();
        self.seq = cur.get("seq").and_then(|s| s.parse().ok()).unwrap_or(0);
        Ok((cur, plan, process))
    }

    async fn resume_inner(&mut self) -> Result<Outcome> {
        let (cur, plan, process) = self.load().await?;
        let state = cur.get("state").cloned().unwrap_or_default();
        if !is_active(&state) {
            return Err(Error::refused(format!(
                "rollout {} of PAC {} is {state}; nothing to resume",
                self.id,
                self.pac.name()
            )));
        }
        if state == "rolling_back" {
            let why = cur
                .get("error")
                .cloned()
                .unwrap_or_else(|| "resumed".into());
            let requested = cur.get("rollback_requested").is_some_and(|v| v == "1");
            return self
                .rollback_inner(&cur, &plan, process, &why, requested)
                .await;
        }
        let next: usize = cur
            .get("next_step")
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        let mut fields = vec![
            ("state", "running".to_string()),
            ("pause_requested", String::new()),
        ];
        if state == "held" {
            fields.push(("released", next.to_string()));
        }
        self.journal(&fields, None, None).await?;
        self.execute(&plan, process, next).await
    }

    /// `rollout rollback`: back to the old version (any time before `remove_old`).
    pub async fn rollback(mut self) -> Result<Outcome> {
        let r = async {
            let (cur, plan, process) = self.load().await?;
            let state = cur.get("state").cloned().unwrap_or_default();
            if !is_active(&state) && state != "aborted" && state != "failed" {
                return Err(Error::refused(format!(
                    "rollout {} of PAC {} is {state}; nothing to roll back",
                    self.id,
                    self.pac.name()
                )));
            }
            self.rollback_inner(&cur, &plan, process, "requested by an operator", true)
                .await
        }
        .await;
        self.release().await;
        r
    }

    /// `rollout abort` when no coordinator is running it.
    pub async fn abort(mut self) -> Result<Outcome> {
        let r = async {
            let (cur, plan, _) = self.load().await?;
            let state = cur.get("state").cloned().unwrap_or_default();
            if !is_active(&state) {
                return Err(Error::refused(format!(
                    "rollout {} is {state}; nothing to abort",
                    self.id
                )));
            }
            self.finish(&plan, "aborted", "aborted by an operator", Action::Done)
                .await?;
            Ok(Outcome::Aborted("aborted by an operator".into()))
        }
        .await;
        self.release().await;
        r
    }

    async fn finish(&mut self, plan: &Plan, state: &str, why: &str, action: Action) -> Result<()> {
        let cur = self.pac.rollout_current().await?;
        let started_ms = cur.get("started_at_ms").and_then(|s| s.parse::<u64>().ok());
        let finished_ms = now_ms();
        let summary = serde_json::json!({
            "id": self.id,
            "pac": self.pac.name(),
            "from_version": cur.get("from_version"),
            "target": plan.target.version.to_string(),
            "process": cur.get("process"),
            "result": state,
            "detail": why,
            "started_at": started_ms.map(crate::psor::rfc3339),
            "finished_at": crate::psor::rfc3339(finished_ms),
            "duration_ms": started_ms.map(|s| finished_ms.saturating_sub(s)),
            "reason": cur.get("reason"),
            "by": cur.get("by"),
            "plan": plan,
        })
        .to_string();
        let step = self.marker(
            cur.get("next_step")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            action,
        );
        // A completed rollback did what it set out to do, whoever asked for it; the
        // rollout's result ("rolled_back") says that the upgrade did not happen.
        let status = if state == "done" || state == "rolled_back" {
            "done"
        } else {
            "failed"
        };
        let elapsed = self.started.elapsed().as_millis() as u64;
        self.journal(
            &[
                ("state", state.into()),
                (
                    "error",
                    if state == "done" {
                        String::new()
                    } else {
                        why.into()
                    },
                ),
            ],
            Some((&step, status, why, elapsed)),
            Some(&summary),
        )
        .await
    }

    async fn execute(&mut self, plan: &Plan, process: Process, from: usize) -> Result<Outcome> {
        let all = steps::steps(plan, process);
        let driver = driver_of(plan, &self.opts.psor_url);
        let target = plan.target.version.to_string();
        for step in all.iter().skip(from) {
            self.check_lease()?;
            if self.opts.interrupt.count() > 0 {
                return self.interrupted(step.n, false).await;
            }
            let cur = self.pac.rollout_current().await?;
            if cur.get("abort_requested").is_some_and(|v| !v.is_empty()) {
                self.finish(plan, "aborted", "aborted by an operator", Action::Done)
                    .await?;
                return Ok(Outcome::Aborted(format!(
                    "aborted by an operator before step {}",
                    step.n
                )));
            }
            if cur.get("pause_requested").is_some_and(|v| !v.is_empty()) {
                let why = format!("paused by an operator before step {}", step.n);
                let p = self.marker(step.n, Action::Pause);
                self.journal(
                    &[
                        ("state", "paused".into()),
                        ("pause_requested", String::new()),
                        ("error", why.clone()),
                    ],
                    Some((&p, "done", &why, 0)),
                    None,
                )
                .await?;
                return Ok(Outcome::Paused(why));
            }
            let finalizing = matches!(step.action, Action::SetModeQuiesce | Action::RemoveOld);
            // Each finalising step is held once; `rollout resume` releases that step only.
            let released =
                cur.get("released").and_then(|v| v.parse::<usize>().ok()) == Some(step.n);
            if plan.hold_finalization && finalizing && !released {
                let why = format!(
                    "held before {} (hold_finalization); check the new store, then `pacup rollout resume {}`",
                    step.action,
                    self.pac.name()
                );
                let p = self.marker(step.n, Action::Pause);
                self.journal(
                    &[
                        ("state", "held".into()),
                        ("error", why.clone()),
                        ("next_step", step.n.to_string()),
                    ],
                    Some((&p, "done", &why, 0)),
                    None,
                )
                .await?;
                return Ok(Outcome::Held(why));
            }
            let mut fields = vec![("next_step", step.n.to_string())];
            fields.extend(current_step_fields(step, plan, false));
            self.journal(&fields, Some((step, "started", "", 0)), None)
                .await?;
            let t = Instant::now();
            let intr = self.opts.interrupt.clone();
            let r = {
                let ctx = self.ctx(plan, process, &driver, target.clone());
                tokio::select! {
                    r = tokio::time::timeout(plan.progress_deadline, steps::run(&ctx, step)) => Some(r),
                    () = intr.at_least(2) => None,
                }
            };
            let Some(r) = r else {
                return self.interrupted(step.n, false).await;
            };
            let r = match r {
                Ok(r) => r,
                Err(_) => Err(Error::refused(format!(
                    "no progress within the progress deadline {}",
                    crate::names::format_duration(plan.progress_deadline)
                ))),
            };
            let ms = t.elapsed().as_millis() as u64;
            match r {
                Ok(StepOutcome::Done(d)) => {
                    self.journal(
                        &[("next_step", (step.n + 1).to_string())],
                        Some((step, "done", &d, ms)),
                        None,
                    )
                    .await?
                }
                Ok(StepOutcome::Skipped(d)) => {
                    self.journal(
                        &[("next_step", (step.n + 1).to_string())],
                        Some((step, "skipped", &d, ms)),
                        None,
                    )
                    .await?
                }
                Err(e @ (Error::Fenced { .. } | Error::LeaseHeld { .. })) => return Err(e),
                Err(e) => {
                    let why = format!("step {} ({}) failed: {e}", step.n, step.action);
                    self.journal(
                        &[("error", why.clone()), ("failed_step", step.n.to_string())],
                        Some((step, "failed", &e.to_string(), ms)),
                        None,
                    )
                    .await?;
                    return self.on_failure(plan, process, why).await;
                }
            }
        }
        self.finish(
            plan,
            "done",
            &format!("every region runs {target}"),
            Action::Done,
        )
        .await?;
        Ok(Outcome::Done)
    }

    async fn on_failure(&mut self, plan: &Plan, process: Process, why: String) -> Result<Outcome> {
        match plan.on_failure {
            OnFailure::Pause => {
                let n: usize = self
                    .pac
                    .rollout_current()
                    .await?
                    .get("failed_step")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let p = self.marker(n, Action::Pause);
                self.journal(
                    &[("state", "paused".into())],
                    Some((&p, "done", &why, 0)),
                    None,
                )
                .await?;
                Ok(Outcome::Paused(format!(
                    "{why}; fix it, then `pacup rollout resume {}` retries the step",
                    self.pac.name()
                )))
            }
            OnFailure::Abort => {
                self.finish(plan, "aborted", &why, Action::Done).await?;
                Ok(Outcome::Aborted(why))
            }
            OnFailure::Rollback => {
                let cur = self.pac.rollout_current().await?;
                self.rollback_inner(&cur, plan, process, &why, false).await
            }
        }
    }

    async fn event(
        &mut self,
        n: usize,
        action: Action,
        host: Option<&str>,
        region: Option<&str>,
        r: &Result<StepOutcome>,
        ms: u64,
    ) -> Result<()> {
        let step = Step {
            n,
            action,
            host: host.map(String::from),
            region: region.map(String::from),
            wave: None,
        };
        let (status, detail) = match r {
            Ok(StepOutcome::Done(d)) => ("done", format!("rollback: {d}")),
            Ok(StepOutcome::Skipped(d)) => ("skipped", format!("rollback: {d}")),
            Err(e) => ("failed", format!("rollback: {e}")),
        };
        self.journal(&[], Some((&step, status, &detail, ms)), None)
            .await
    }

    /// Moves every host back to its old version, wave by wave in reverse, keeping the
    /// other hosts serving; the new store goes last. Each action observes first, so a
    /// rollback can itself be resumed.
    async fn rollback_inner(
        &mut self,
        cur: &HashMap<String, String>,
        plan: &Plan,
        process: Process,
        why: &str,
        requested: bool,
    ) -> Result<Outcome> {
        let from = cur.get("from_version").cloned().unwrap_or_default();
        let host_versions: BTreeMap<String, String> = cur
            .get("host_versions")
            .and_then(|h| serde_json::from_str(h).ok())
            .unwrap_or_default();
        let target = plan.target.version.to_string();
        let snap = self.pac.snapshot().await?;
        if process == Process::Incompatible && snap.store(&from).is_none() {
            return Err(Error::refused(format!(
                "the old store {from} is gone (remove_old ran); rollout {} cannot be rolled back",
                self.id
            )));
        }
        let base = all_steps_len(plan, process);
        let mk = |n: usize| Step {
            n,
            action: Action::Rollback,
            host: None,
            region: None,
            wave: None,
        };
        self.journal(
            &[
                ("state", "rolling_back".into()),
                ("error", why.into()),
                (
                    "rollback_requested",
                    if requested { "1" } else { "" }.into(),
                ),
            ],
            Some((
                &mk(base),
                "started",
                &format!("rolling back to {from}: {why}"),
                0,
            )),
            None,
        )
        .await?;
        let driver = driver_of(plan, &self.opts.psor_url);
        let mut n = base;
        if process == Process::Incompatible {
            self.check_lease()?;
            let t = Instant::now();
            let r = self
                .pac
                .unquiesce(&from, &self.opts.by, self.lease.epoch)
                .await
                .map(|_| StepOutcome::Done(format!("store {from} running")));
            n += 1;
            self.event(
                n,
                Action::SetModeRunning,
                None,
                None,
                &r,
                t.elapsed().as_millis() as u64,
            )
            .await?;
            r?;
        }
        for w in (0..plan.waves.len()).rev() {
            for h in plan.waves[w].clone() {
                let h = h.to_string();
                let old = host_versions
                    .get(&h)
                    .cloned()
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| from.clone());
                let regions: Vec<(String, String)> = plan
                    .host(&h)
                    .map(|hp| {
                        hp.regions
                            .iter()
                            .map(|r| (h.clone(), r.to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                let ctx = self.ctx(plan, process, &driver, old.clone());
                let snap = ctx.pac.snapshot().await?;
                let needs: Vec<(String, String)> = regions
                    .iter()
                    .filter(|(_, r)| {
                        snap.region(r)
                            .is_none_or(|ri| !ri.alive || ri.product_version != old)
                    })
                    .cloned()
                    .collect();
                let host_old = snap
                    .hosts
                    .iter()
                    .any(|x| x.name == h && x.product_version == old);
                if needs.is_empty() && (host_old || plan.driver != DriverSpec::Agent) {
                    continue;
                }
                let mut acts: Vec<(Action, Option<String>)> = Vec::new();
                for (_, r) in &regions {
                    if snap
                        .region(r)
                        .is_some_and(|ri| ri.alive && ri.product_version != old)
                    {
                        acts.push((Action::ListenerOff, Some(r.clone())));
                        acts.push((Action::Stop, Some(r.clone())));
                    }
                }
                acts.push((Action::ApplyUpdate, None));
                for (_, r) in &needs {
                    acts.push((Action::StartWarm, Some(r.clone())));
                }
                acts.push((Action::HealthGate, None));
                for (_, r) in &regions {
                    acts.push((Action::ListenerOn, Some(r.clone())));
                }
                for (a, r) in acts {
                    self.check_lease()?;
                    if self.opts.interrupt.count() > 0 {
                        return self.interrupted(n + 1, true).await;
                    }
                    let s = Step {
                        n: n + 1,
                        action: a,
                        host: Some(h.clone()),
                        region: r.clone(),
                        wave: None,
                    };
                    self.journal(&current_step_fields(&s, plan, true), None, None)
                        .await?;
                    let t = Instant::now();
                    let intr = self.opts.interrupt.clone();
                    let res = {
                        let ctx = self.ctx(plan, process, &driver, old.clone());
                        let work = async {
                            match a {
                                Action::ApplyUpdate => steps::apply(&ctx, &h, &old).await,
                                Action::HealthGate => steps::gate(&ctx, &needs, &old).await,
                                Action::StartWarm => {
                                    steps::StartRegion(StartType::Warm).run(&ctx, &s).await
                                }
                                _ => steps::run(&ctx, &s).await,
                            }
                        };
                        tokio::select! {
                            r = work => Some(r),
                            () = intr.at_least(2) => None,
                        }
                    };
                    let Some(res) = res else {
                        return self.interrupted(n + 1, true).await;
                    };
                    n += 1;
                    self.event(
                        n,
                        a,
                        Some(&h),
                        r.as_deref(),
                        &res,
                        t.elapsed().as_millis() as u64,
                    )
                    .await?;
                    if let Err(e) = res {
                        if matches!(e, Error::Fenced { .. }) {
                            return Err(e);
                        }
                        self.journal(&[("error", format!("rollback failed: {e}"))], None, None)
                            .await?;
                        return Err(Error::refused(format!(
                            "rollback failed at {a} on {h}: {e}; fix it, then `pacup rollout resume {}` continues the rollback",
                            self.pac.name()
                        )));
                    }
                }
            }
        }
        if process == Process::Incompatible {
            self.check_lease()?;
            let t = Instant::now();
            let r = if self.pac.snapshot().await?.store(&target).is_some() {
                self.pac
                    .remove_store(&target, &self.opts.by, self.lease.epoch)
                    .await
                    .map(|k| StepOutcome::Done(format!("store {target} deleted ({k} keys)")))
            } else {
                Ok(StepOutcome::Skipped(format!("store {target} already gone")))
            };
            n += 1;
            self.event(
                n,
                Action::RemoveOld,
                None,
                None,
                &r,
                t.elapsed().as_millis() as u64,
            )
            .await?;
            r?;
        }
        let detail = format!("rolled back to {from}: {why}");
        self.finish(plan, "rolled_back", &detail, Action::Rollback)
            .await?;
        Ok(if requested {
            Outcome::RolledBackOnRequest(detail)
        } else {
            Outcome::RolledBack(detail)
        })
    }

    /// The process was asked to stop (Ctrl-C, SIGTERM): journal a pause before step `n`
    /// so that `rollout resume` continues there. A rollback stays `rolling_back` (resume
    /// continues the rollback).
    async fn interrupted(&mut self, n: usize, rollback: bool) -> Result<Outcome> {
        let pac = self.pac.name().to_string();
        let (state, why) = if rollback {
            (
                "rolling_back",
                format!("rollback interrupted before step {n}; `pacup rollout resume {pac}` continues the rollback"),
            )
        } else {
            (
                "paused",
                format!("interrupted before step {n}; `pacup rollout resume {pac}` continues"),
            )
        };
        let p = self.marker(n, Action::Pause);
        let mut fields = vec![("error", why.clone())];
        if !rollback {
            fields.push(("state", state.into()));
            fields.push(("next_step", n.to_string()));
        }
        self.journal(&fields, Some((&p, "done", &why, 0)), None)
            .await?;
        Ok(Outcome::Paused(why))
    }
}

/// Journal fields that make `step` the current step (see [`progress`]), clearing the
/// previous step's gate and command details.
fn current_step_fields(step: &Step, plan: &Plan, rollback: bool) -> Vec<(&'static str, String)> {
    let cur = progress::CurrentStep {
        n: step.n,
        action: step.action.name().to_string(),
        host: step.host.clone(),
        region: step.region.clone(),
        started_ms: now_ms(),
        bound_ms: plan.progress_deadline.as_millis() as u64,
        rollback,
    };
    vec![
        (progress::field::STEP, step.n.to_string()),
        (
            progress::field::CURRENT,
            serde_json::to_string(&cur).expect("serialises"),
        ),
        (progress::field::GATE, String::new()),
        (progress::field::COMMAND, String::new()),
    ]
}

fn all_steps_len(plan: &Plan, process: Process) -> usize {
    steps::steps(plan, process).len()
}
