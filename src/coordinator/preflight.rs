//! Preflight: decides the process and lists every reason a plan may not start (read-only;
//! `rollout plan` shows it, `rollout run` refuses on any problem).

use super::driver::Driver;
use super::plan::{DriverSpec, ModeFlip, Plan, Strategy};
use super::progress::InHand;
use super::steps::{self, Process, Step};
use super::templates::split_credentials;
use crate::compat;
use crate::conn::PsorOptions;
use crate::error::{Error, Result};
use crate::names::Product;
use crate::psor::{Mode, Pac, Snapshot};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};

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
    /// The plan as it will run: waves derived from `max_unavailable` are derived again
    /// against the PAC's region count.
    #[serde(skip)]
    pub plan: Plan,
}

/// Options of a preflight.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allow {
    /// Accept waves that leave no batch or client capacity.
    pub downtime: bool,
    /// Accept a compatible plan that leaves out live regions of the PAC.
    pub partial: bool,
}

/// The coordinator's hands for `plan` following `process`, reaching the PSOR of `psor`.
/// The templates' `{psor}` carries no credentials: user and password go to the commands
/// through their environment only.
pub fn driver_of(plan: &Plan, psor: &PsorOptions, process: Process) -> Driver {
    match &plan.driver {
        DriverSpec::Agent => Driver::Agent,
        DriverSpec::Command { templates, timeout } => {
            let (url, user, password) = split_credentials(&psor.url);
            Driver::Command {
                templates: templates.clone(),
                timeout: *timeout,
                psor: url,
                psor_user: user,
                psor_password: password.or_else(|| psor.password.clone()),
                compatible: process == Process::Compatible,
                checks: plan
                    .host_checks
                    .as_ref()
                    .map(|c| {
                        let paths: Vec<String> =
                            c.paths.iter().map(|p| p.display().to_string()).collect();
                        (paths.join(" "), c.min_free.to_string())
                    })
                    .unwrap_or_default(),
                in_hand: InHand::default(),
            }
        }
    }
}

/// Preflight (reads the whole PAC once).
pub async fn preview(pac: &Pac, plan: &Plan, allow: Allow) -> Result<Preview> {
    let probes = matches!(plan.driver, DriverSpec::Command { .. });
    // The command driver's regions write no pacup record: only the stores are read
    // (through `store_state` when the plan has it), and the regions are probed through
    // the plan's templates below. Reading the stores does not depend on the process.
    // A failing `store_state` (it reaches the PSOR with the templates' credentials) is
    // one problem among the probes', not an error that hides them.
    let mut unread = None;
    let snap = if probes {
        let driver = driver_of(plan, pac.psor().options(), Process::Incompatible);
        let target = plan.target.version.to_string();
        match super::store_steps::pac_stores(pac, &driver, &target).await {
            Ok(s) => stores_only(pac, s),
            Err(e) if plan.reads_stores_by_template() => {
                unread = Some(format!("the PSOR as the templates reach it: {e}"));
                stores_only(pac, crate::psor::views::Stores::default_present())
            }
            Err(e) => return Err(e),
        }
    } else {
        pac.snapshot().await?
    };
    if !snap.exists {
        return Err(Error::NoSuchPac(pac.name().to_string()));
    }
    let mut plan = plan.clone();
    let in_plan: HashSet<String> = plan.all_regions().into_iter().map(|(_, r)| r).collect();
    let others: Vec<_> = snap
        .regions
        .iter()
        .filter(|r| r.alive && !in_plan.contains(&r.name))
        .collect();
    if plan.waves_derived {
        // A percentage is of the PAC's regions, not only the plan's.
        plan.derive_waves(in_plan.len() + others.len());
    }
    let mut problems: Vec<String> = unread.iter().cloned().collect();
    let running: Vec<_> = snap
        .stores
        .iter()
        .filter(|s| s.mode == Mode::Running)
        .collect();
    if running.len() != 1 && unread.is_none() {
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
    problems.extend(partial_problems(&others, process, allow.partial));
    for (w, n, limit) in plan.oversized_waves(in_plan.len() + others.len()) {
        problems.push(format!(
            "wave {} ({}) has {n} regions, more than max_unavailable {} allows ({limit}); \
             a host is never split across waves",
            w + 1,
            plan.waves[w]
                .iter()
                .map(|h| h.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            plan.max_unavailable
                .map(|m| m.to_string())
                .unwrap_or_default(),
        ));
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
                    if let Some(c) = &plan.host_checks {
                        problems.extend(crate::hostcheck::problems(
                            h,
                            x.checks.as_ref(),
                            &c.paths,
                            c.min_free,
                        ));
                    }
                }
            }
        }
        let mut hv = hi.map(|x| x.product_version.clone()).unwrap_or_default();
        if probes {
            host_versions.insert(h.to_string(), from_version.clone());
            continue;
        }
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
    if probes {
        let driver = driver_of(&plan, pac.psor().options(), process);
        problems.extend(super::probed::preflight_problems(pac, &plan, &driver).await);
    }
    if !allow.downtime {
        problems.extend(capacity_problems(&plan, process, &snap));
    }
    Ok(Preview {
        process,
        reasons: v.map(|v| v.reasons).unwrap_or_default(),
        from_version,
        host_versions,
        steps: steps::steps(&plan, process),
        problems,
        plan,
    })
}

/// The PAC's stores alone, as a snapshot without region or host records.
fn stores_only(pac: &Pac, s: crate::psor::views::Stores) -> Snapshot {
    Snapshot {
        pac: pac.name().to_string(),
        exists: s.exists,
        gen: s.gen,
        epoch: 0,
        created_at_ms: 0,
        resetting_since_ms: None,
        stores: s.stores,
        regions: Vec::new(),
        hosts: Vec::new(),
        removing: s.removing,
    }
}

/// Live regions of the PAC the plan leaves out. The incompatible process moves every
/// region to the new store and then removes the old one, so a region left out would
/// split the PAC across two stores: always refused. A compatible rolling restart may
/// upgrade part of the PAC, when asked to.
fn partial_problems(
    others: &[&crate::psor::RegionInfo],
    process: Process,
    allow_partial: bool,
) -> Vec<String> {
    if others.is_empty() || (process == Process::Compatible && allow_partial) {
        return Vec::new();
    }
    let names = others
        .iter()
        .map(|r| format!("{} on {}", r.name, r.host))
        .collect::<Vec<_>>()
        .join(", ");
    match process {
        Process::Incompatible => vec![format!(
            "the plan leaves out live regions of the PAC: {names}; the incompatible process \
             moves every region to the new store and removes the old one, so add them to the \
             plan{}",
            if allow_partial {
                " (--allow-partial applies to the compatible process only)"
            } else {
                ""
            }
        )],
        Process::Compatible => vec![format!(
            "the plan leaves out live regions of the PAC: {names}; add them to the plan, or pass \
             --allow-partial to upgrade only the plan's regions"
        )],
    }
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
