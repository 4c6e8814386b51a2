//! The monitoring hold (plan field `monitor`): the site's health monitoring is suspended
//! before a run's first step (so planned stops do not trigger a failover) and resumed
//! when the rollout ends (done, aborted, rolled back) and, unless
//! `monitor.keep_suspended_on_pause`, when it pauses or is held. Both outcomes are events
//! (`monitor_suspend`, `monitor_resume`). A failing suspend fails the run before any
//! region is touched; a failing resume is reported loudly (a `failed` event, an error in
//! the log) but undoes nothing.

use super::driver::run_command;
use super::plan::Plan;
use super::steps::Action;
use super::templates::{render, split_credentials, Vars};
use super::{Coordinator, Head};
use crate::error::Result;
use std::time::{Duration, Instant};

/// Bound on one monitoring command.
const MONITOR_TIMEOUT: Duration = Duration::from_secs(60);

/// Which way the hold goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hold {
    /// Before the steps.
    Suspend,
    /// After them.
    Resume,
}

/// Why monitoring is resumed: a pause keeps it suspended when the plan asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    /// Done, aborted, rolled back.
    Final,
    /// Paused, held, interrupted.
    Pause,
}

impl Coordinator {
    /// Runs the plan's suspend or resume command, if it has one, journaling its outcome
    /// as an event numbered `n`: `Some(why)` for a failing suspend (the run must not go
    /// on); a failing resume is logged, not returned. `Err` is the journal's.
    pub(super) async fn monitor(
        &self,
        plan: &Plan,
        hold: Hold,
        n: usize,
    ) -> Result<Option<String>> {
        let (cmd, action) = match hold {
            Hold::Suspend => (&plan.monitor.suspend, Action::MonitorSuspend),
            Hold::Resume => (&plan.monitor.resume, Action::MonitorResume),
        };
        let Some(tpl) = cmd else {
            return Ok(None);
        };
        let opts = self.pac.psor().options();
        let (url, user, password) = split_credentials(&opts.url);
        let vars = Vars {
            pac: self.pac.name().to_string(),
            version: plan.target.version.to_string(),
            psor: url,
            psor_user: user.clone(),
            ..Vars::default()
        };
        let mut env = Vec::new();
        if !user.is_empty() {
            env.push(("PACUP_PSOR_USER", user));
        }
        if let Some(p) = password.or_else(|| opts.password.clone()) {
            env.push(("PACUP_PSOR_PASSWORD", p));
        }
        let t = Instant::now();
        let r = run_command(&render(tpl, &vars), MONITOR_TIMEOUT, &env, None).await;
        let ms = t.elapsed().as_millis() as u64;
        let (ok, detail) = match r {
            Ok((0, _, d)) => (true, d),
            Ok((_, _, d)) => (false, d),
            Err(e) => (false, e.to_string()),
        };
        let status = if ok { "done" } else { "failed" };
        self.journal(
            super::journal::Write::new(),
            Some((Head::marker(n, action), status, &detail, ms)),
            None,
        )
        .await?;
        match (ok, hold) {
            (true, _) => Ok(None),
            (false, Hold::Suspend) => Ok(Some(format!("monitor.suspend failed: {detail}"))),
            (false, Hold::Resume) => {
                tracing::error!(
                    "monitoring was NOT resumed (monitor.resume failed: {detail}); resume it \
                     by hand"
                );
                Ok(None)
            }
        }
    }

    /// Resumes monitoring at the end of a run, unless the plan keeps it suspended while
    /// paused.
    pub(super) async fn monitor_end(&self, plan: &Plan, ending: Ending, n: usize) -> Result<()> {
        if ending == Ending::Pause && plan.monitor.keep_suspended_on_pause {
            return Ok(());
        }
        self.monitor(plan, Hold::Resume, n).await.map(|_| ())
    }
}

/// `backup`: saves the PAC before a store is created or deleted: through the plan's
/// `backup` template (command driver; its output should name the file), or, for the
/// agent driver, every persistent key of the PAC into a new file in `backup.dir`, of
/// which the newest `backup.keep` of this PAC are kept. Never skipped: a re-run after a
/// crash takes a fresh backup.
pub(super) async fn backup(
    ctx: &super::actions::Ctx<'_>,
    phase: super::steps::BackupPhase,
) -> Result<super::actions::StepOutcome> {
    use super::actions::StepOutcome;
    let target = ctx.target();
    if let Some(r) = ctx
        .driver
        .pac_command(ctx.pac, ctx.epoch, "backup", &target)
        .await
    {
        return r.map(StepOutcome::Done);
    }
    let Some(spec) = &ctx.plan.backup else {
        return Ok(StepOutcome::Skipped("the plan configures no backup".into()));
    };
    let b = ctx.pac.backup().await?;
    let pac = ctx.pac.name().as_str();
    let file = spec.dir.join(format!(
        "{pac}-{:013}-{}.json",
        crate::psor::now_ms(),
        phase.as_str()
    ));
    let io = |what: &str, e: std::io::Error| crate::Error::Io {
        context: format!("backup: cannot {what}"),
        source: e,
    };
    std::fs::create_dir_all(&spec.dir)
        .map_err(|e| io(&format!("create {}", spec.dir.display()), e))?;
    // Written aside and renamed, so a crash never leaves a truncated file under the
    // name a restore would pick.
    let part = file.with_extension("json.part");
    let text = serde_json::to_string(&b).map_err(|e| crate::Error::refused(e.to_string()))?;
    std::fs::write(&part, text).map_err(|e| io(&format!("write {}", part.display()), e))?;
    std::fs::rename(&part, &file).map_err(|e| io(&format!("rename to {}", file.display()), e))?;
    let removed = prune(&spec.dir, pac, spec.keep);
    Ok(StepOutcome::Done(format!(
        "PAC {pac}: {} keys saved to {} (keeping the newest {}{})",
        b.keys.len(),
        file.display(),
        spec.keep,
        if removed.is_empty() {
            String::new()
        } else {
            format!("; removed {}", removed.join(", "))
        }
    )))
}

/// Deletes all but the newest `keep` backup files of `pac` in `dir` (their names sort by
/// time); returns the names removed. A file that cannot be removed stays, logged.
fn prune(dir: &std::path::Path, pac: &str, keep: usize) -> Vec<String> {
    let prefix = format!("{pac}-");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| {
                    n.starts_with(&prefix)
                        && n.ends_with(".json")
                        && n[prefix.len()..]
                            .split('-')
                            .next()
                            .is_some_and(|t| t.len() == 13 && t.bytes().all(|b| b.is_ascii_digit()))
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let n = names.len().saturating_sub(keep);
    let mut removed = Vec::new();
    for name in names.into_iter().take(n) {
        match std::fs::remove_file(dir.join(&name)) {
            Ok(()) => removed.push(name),
            Err(e) => tracing::warn!("backup: cannot remove old backup {name}: {e}"),
        }
    }
    removed
}

/// `host_check` before a later wave: every host of the wave passes the plan's host
/// checks, as its agent measured them (agent driver) or as its `host_check` template
/// says (command driver, all hosts at once). A failure names host, path and numbers.
pub(super) async fn host_check(
    ctx: &super::actions::Ctx<'_>,
    wave: usize,
) -> Result<super::actions::StepOutcome> {
    let hosts: Vec<&str> = ctx.plan.waves[wave].iter().map(|h| h.as_str()).collect();
    let mut problems = Vec::new();
    if ctx.driver.probes() {
        let answers = futures_util::future::join_all(
            hosts
                .iter()
                .map(|h| ctx.driver.check(ctx.pac, "host_check", h)),
        )
        .await;
        for (h, a) in hosts.iter().zip(answers) {
            if let Some(Err(e)) = a {
                problems.push(format!("host {h}: host_check failed: {e}"));
            }
        }
    } else if let Some(c) = &ctx.plan.host_checks {
        for hi in ctx.pac.hosts(&hosts).await? {
            problems.extend(crate::hostcheck::problems(
                &hi.name,
                hi.checks.as_ref(),
                &c.paths,
                c.min_free,
            ));
        }
    }
    if problems.is_empty() {
        Ok(super::actions::StepOutcome::Done(format!(
            "host checks passed on {}",
            hosts.join(", ")
        )))
    } else {
        Err(crate::Error::refused(format!(
            "host checks failed: {}",
            problems.join("; ")
        )))
    }
}
