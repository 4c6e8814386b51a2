//! `pacup rollout ...` and `pacup events`.

use super::interrupt::Interrupts;
use super::{actor, connect, connect_pac, hints, pac_with_state, print_json};
use crate::cli::args::*;
use crate::cli::output::outln;
use crate::cli::{GlobalArgs, MetricsArgs};
use crate::coordinator::journal::Trigger;
use crate::coordinator::plan::Plan;
use crate::coordinator::{
    self, Coordinator, Emitter, Event, Interrupt, Outcome, Precheck, RunOptions,
};
use crate::error::{Error, ExitCode};
use crate::metrics::Metrics;
use crate::names::PacName;
use crate::psor::Pac;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Lease options of the commands that take the coordinator lease.
#[derive(Debug, Clone, Args)]
pub struct LeaseArgs {
    /// Wait for another coordinator to finish instead of exiting 4.
    #[arg(long)]
    pub wait_lock: bool,
    /// Lease TTL; the coordinator renews it every third of it.
    #[arg(long, value_parser = duration, default_value = "5s", value_name = "DURATION")]
    pub lease_ttl: Duration,
}

/// `pacup rollout ...`
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Print the exact steps and the chosen strategy; writes nothing.
    #[command(
        after_help = "Examples:\n  pacup rollout plan plan.json\n  pacup --json rollout plan plan.json"
    )]
    Plan {
        /// Plan file (JSON, see fixtures/plans/).
        plan: PathBuf,
        /// Accept waves that leave no batch or client capacity.
        #[arg(long)]
        allow_downtime: bool,
        /// Accept a compatible plan that leaves out live regions of the PAC.
        #[arg(long)]
        allow_partial: bool,
        /// Also show every command each step would run, placeholders filled, with its
        /// timeout, and the plan's settings (nothing is run but preflight's probes).
        #[arg(long)]
        show_commands: bool,
    },
    /// Run a rollout. Exit 0 done, 1 failed/aborted, 4 lease held, 6 paused, 7 rolled back.
    #[command(
        after_help = "Examples:\n  pacup rollout run plan.json --reason 'CHG-1234 ES 2.0'\n  pacup rollout run plan.json --preflight-wait 2m --wait-lock"
    )]
    Run {
        /// Plan file (JSON, see fixtures/plans/).
        plan: PathBuf,
        /// Accept waves that leave no batch or client capacity.
        #[arg(long)]
        allow_downtime: bool,
        /// Accept a compatible plan that leaves out live regions of the PAC (the
        /// incompatible process always moves every region).
        #[arg(long)]
        allow_partial: bool,
        /// Why (kept in the rollout history).
        #[arg(long, default_value = "")]
        reason: String,
        /// Retry a failing preflight (agents still starting, regions not yet live) for up
        /// to this long before refusing; for pipelines that start everything at once.
        #[arg(long, value_parser = duration, value_name = "DURATION")]
        preflight_wait: Option<Duration>,
        /// Lease options.
        #[command(flatten)]
        lease: LeaseArgs,
        /// Metrics endpoint.
        #[command(flatten)]
        metrics: MetricsArgs,
    },
    /// Continue a paused, held or interrupted rollout from its next step.
    #[command(after_help = "Examples:\n  pacup rollout resume MyPAC")]
    Resume {
        /// PAC name.
        #[arg(value_parser = pac_name)]
        pac: PacName,
        /// Continue with this corrected plan: it may differ from the rollout's only in
        /// templates, timeouts and health settings (anything else: exit 2).
        #[arg(long, value_name = "FILE")]
        plan: Option<PathBuf>,
        /// Lease options.
        #[command(flatten)]
        lease: LeaseArgs,
        /// Metrics endpoint.
        #[command(flatten)]
        metrics: MetricsArgs,
    },
    /// Current step, per-region state, why it is blocked.
    #[command(
        after_help = "Examples:\n  pacup rollout status MyPAC\n  pacup rollout status MyPAC --watch --timeout 30m\n  pacup rollout status MyPAC --watch --until held,paused --wait-new\n  pacup --json rollout status MyPAC"
    )]
    Status {
        /// PAC name.
        #[arg(value_parser = pac_name)]
        pac: PacName,
        /// Follow the rollout until it ends (through pauses and resumes), then exit with
        /// its end state's code: 0 done, 1 aborted or failed, 7 rolled back. Waits for a
        /// rollout to exist first. Redraws in place on a terminal; elsewhere prints one
        /// line per change (with --json: one document per change).
        #[arg(long)]
        watch: bool,
        /// With --watch: also stop at these states (comma-separated), exiting 6 for
        /// paused, 8 for held, 0 for done.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            requires = "watch",
            value_name = "STATE"
        )]
        until: Vec<UntilArg>,
        /// With --watch: give up after this long, exiting 9.
        #[arg(long, value_parser = duration, requires = "watch", value_name = "DURATION")]
        timeout: Option<Duration>,
        /// With --watch: if the rollout had already ended when the watch began, wait for
        /// it to change (the next rollout starts, or this one is rolled back) instead of
        /// reporting that end at once; for a pipeline that starts `rollout run` and the
        /// watch at the same time.
        #[arg(long, requires = "watch")]
        wait_new: bool,
    },
    /// Ask the running coordinator to pause after the current step.
    #[command(after_help = "Examples:\n  pacup rollout pause MyPAC")]
    Pause {
        /// PAC name.
        #[arg(value_parser = pac_name)]
        pac: PacName,
    },
    /// Stop the rollout where it is (after the current step if a coordinator runs it).
    #[command(
        after_help = "Examples:\n  pacup rollout abort MyPAC\n  pacup rollout rollback MyPAC   # afterwards, to go back to the old version"
    )]
    Abort {
        /// PAC name.
        #[arg(value_parser = pac_name)]
        pac: PacName,
    },
    /// Roll back to the old version (any time before remove_old).
    #[command(
        after_help = "Examples:\n  pacup rollout pause MyPAC && pacup rollout rollback MyPAC --wait-lock\n  pacup rollout rollback MyPAC\n  pacup rollout rollback MyPAC --fast   # incident: every host at once"
    )]
    Rollback {
        /// PAC name.
        #[arg(value_parser = pac_name)]
        pac: PacName,
        /// Incident mode: every host at once, no min_healthy waits (still fenced,
        /// listeners still off until the regions are live).
        #[arg(long)]
        fast: bool,
        /// Lease options.
        #[command(flatten)]
        lease: LeaseArgs,
    },
    /// Finished rollouts: from and to version, start, duration, result, who and why.
    #[command(
        after_help = "Examples:\n  pacup rollout history MyPAC\n  pacup --json rollout history MyPAC"
    )]
    History {
        /// PAC name.
        #[arg(value_parser = pac_name)]
        pac: PacName,
    },
    /// Write a picture of a rollout: one self-contained HTML file (timeline per region,
    /// the stores' modes, jobs and client requests per second, summary). Exit 2 for an
    /// id that is not of the form <PAC>-<hex>, 1 when the PAC has no such rollout.
    #[command(
        after_help = "Examples:\n  pacup rollout report MyPAC --out upgrade.html\n  pacup rollout report MyPAC MyPAC-1a233f22d67 --out old.html --json"
    )]
    Report {
        /// PAC name.
        #[arg(value_parser = pac_name)]
        pac: PacName,
        /// Rollout id, as `rollout history` lists them (default: the latest rollout).
        rollout: Option<String>,
        /// HTML file to write (replaced if it exists).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

/// States `rollout status --watch --until` can stop at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UntilArg {
    /// Paused, waiting for an operator (exit 6).
    Paused,
    /// Held before finalisation (exit 8).
    Held,
    /// Done (exit 0); every end state stops the watch anyway.
    Done,
}

/// One readable line per event.
pub(crate) fn event_line(e: &Event) -> String {
    let what = match (&e.region, &e.host) {
        (Some(r), Some(h)) => format!(" {r} on {h}"),
        (None, Some(h)) => format!(" {h}"),
        (Some(r), None) => format!(" {r}"),
        _ => String::new(),
    };
    let ts = e.ts.get(11..19).unwrap_or(&e.ts);
    let detail = if e.detail.is_empty() {
        String::new()
    } else {
        format!(": {}", e.detail)
    };
    let took = if e.status == "started" {
        String::new()
    } else {
        format!(" ({}ms)", e.elapsed_ms)
    };
    format!(
        "{ts} step {:>2} {}{what} {}{took}{detail}",
        e.step, e.action, e.status
    )
}

/// Prints events: JSON lines with --json; readable lines (and a progress bar on a
/// terminal) otherwise.
pub(crate) fn emitter(json_out: bool, total: Option<u64>) -> Emitter {
    if json_out {
        return Arc::new(|e: &Event| outln!("{}", serde_json::to_string(e).unwrap_or_default()));
    }
    let bar = total.filter(|_| std::io::stdout().is_terminal()).map(|t| {
        let pb = indicatif::ProgressBar::new(t);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30.cyan/blue} {pos}/{len} steps [{elapsed}, ETA {eta}] {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        // Redraw twice a second, so the elapsed time and the label of a long step (a
        // health gate, a drain) move while no event arrives.
        pb.enable_steady_tick(Duration::from_millis(500));
        pb
    });
    Arc::new(move |e: &Event| match &bar {
        Some(pb) => {
            pb.println(event_line(e));
            if e.status == "started" {
                // The label names the step in hand, not the one just finished.
                let mut what = format!("step {} {}", e.step, e.action);
                if let Some(r) = e.region.as_ref().or(e.host.as_ref()) {
                    what.push_str(&format!(" {r}"));
                }
                pb.set_message(what);
            } else {
                pb.set_position(e.step as u64 + 1);
                pb.set_message(format!("step {} {} {}", e.step, e.action, e.status));
            }
            if e.action == "done" || e.action == "rollback" && e.status != "started" {
                pb.finish_and_clear();
            }
        }
        None => outln!("{}", event_line(e)),
    })
}

fn run_options(
    g: &GlobalArgs,
    lease: Option<&LeaseArgs>,
    reason: String,
    emit: Emitter,
    allow_downtime: bool,
    interrupt: Interrupt,
) -> RunOptions {
    RunOptions {
        allow_downtime,
        allow_partial: false,
        reason,
        by: actor(g),
        wait_lock: lease.is_some_and(|l| l.wait_lock),
        lease_ttl: lease.map(|l| l.lease_ttl).unwrap_or(Duration::from_secs(5)),
        psor_url: g.psor.clone(),
        emit,
        interrupt,
        metrics: Metrics::disabled(),
    }
}

fn finish(g: &GlobalArgs, pac: &PacName, o: Outcome) -> anyhow::Result<ExitCode> {
    let text = match &o {
        Outcome::Done => format!("Rollout of PAC {pac} finished"),
        Outcome::Paused(w) => format!("Rollout of PAC {pac} paused: {w}"),
        Outcome::Held(w) => format!("Rollout of PAC {pac} held before finalisation: {w}"),
        Outcome::Aborted(w) => format!(
            "Rollout of PAC {pac} aborted: {w}\n{}",
            hints::rollback_hint(pac, None, None)
        ),
        Outcome::RolledBack(w) => format!("Rollout of PAC {pac} rolled back: {w}"),
        Outcome::RolledBackOnRequest(w) => format!("Rollout of PAC {pac} rolled back: {w}"),
        Outcome::AlreadyDone(w) => format!("Rollout of PAC {pac}: {w}"),
    };
    let success = o.exit_code() == ExitCode::Ok;
    if g.json || !success {
        // With --json the event lines were the output; the outcome is the last event.
        eprintln!("{text}");
    } else {
        outln!("{text}");
    }
    Ok(o.exit_code())
}

pub(super) async fn rollout(
    g: &GlobalArgs,
    cmd: RolloutCommand,
    m: &Metrics,
) -> anyhow::Result<ExitCode> {
    // A mistyped PAC is an error (exit 1), not "no rollout" or an empty history.
    if let RolloutCommand::Status { pac, .. }
    | RolloutCommand::Pause { pac, .. }
    | RolloutCommand::Abort { pac, .. }
    | RolloutCommand::History { pac, .. } = &cmd
    {
        connect_pac(g, pac.clone()).await?.require().await?;
    }
    match cmd {
        RolloutCommand::Plan {
            plan,
            allow_downtime,
            allow_partial,
            show_commands,
        } => {
            let plan = Plan::load(&plan)?;
            let state_apart = super::state_options(g)?.is_some();
            if state_apart {
                coordinator::apart::check_driver(&plan)?;
            }
            // Plans read the PSOR only: the coordinator's state is not consulted.
            let pac = Pac::new(connect(g).await?, plan.pac.clone());
            let allow = coordinator::Allow {
                downtime: allow_downtime,
                partial: allow_partial,
            };
            let pv = coordinator::preview_with(&pac, &plan, allow).await?;
            if state_apart {
                coordinator::apart::check(&pv.plan, &pv.steps)?;
            }
            let dry = show_commands.then(|| {
                coordinator::dryrun::dry_run(&pv.plan, pv.process, &pv.steps, pac.psor().options())
            });
            if g.json {
                let mut v = serde_json::to_value(&pv)?;
                if let Some(d) = &dry {
                    v["commands"] = serde_json::to_value(d)?;
                }
                print_json(&v);
            } else {
                outln!(
                    "PAC {}: {} -> {}, {} process ({} steps)",
                    plan.pac,
                    pv.from_version,
                    plan.target.version,
                    serde_json::to_string(&pv.process)?.trim_matches('"'),
                    pv.steps.len()
                );
                for r in &pv.reasons {
                    outln!("  {r}");
                }
                match &dry {
                    Some(d) => d.lines().iter().for_each(|l| outln!("{l}")),
                    None => pv.steps.iter().for_each(|s| outln!("{s}")),
                }
                for p in &pv.problems {
                    outln!("preflight would refuse: {p}");
                }
            }
            if pv.problems.is_empty() {
                Ok(ExitCode::Ok)
            } else {
                Ok(ExitCode::Refused)
            }
        }
        RolloutCommand::Run {
            plan,
            allow_downtime,
            allow_partial,
            reason,
            preflight_wait,
            lease,
            metrics: _,
        } => {
            let plan = Plan::load(&plan)?;
            let psor = connect(g).await?.with_metrics(m.clone());
            let pac = pac_with_state(g, psor, plan.pac.clone()).await?;
            if let Some(w) = preflight_wait {
                coordinator::preflight_wait::wait_preflight(
                    &pac,
                    &plan,
                    coordinator::Allow {
                        downtime: allow_downtime,
                        partial: allow_partial,
                    },
                    w,
                )
                .await?;
            }
            let total = coordinator::steps::steps(&plan, coordinator::steps::Process::Incompatible)
                .len() as u64;
            let mut sig = Interrupts::new();
            let mut opts = run_options(
                g,
                Some(&lease),
                reason,
                emitter(g.json, Some(total)),
                allow_downtime,
                sig.interrupt.clone(),
            );
            opts.metrics = m.clone();
            opts.allow_partial = allow_partial;
            let allow = coordinator::Allow {
                downtime: allow_downtime,
                partial: allow_partial,
            };
            coordinator::precheck(&pac, Trigger::Run, Some((&plan, allow))).await?;
            let c = Coordinator::acquire(pac, opts).await?;
            sig.listen(&plan.pac)?;
            let name = plan.pac.clone();
            let o = c.run(plan).await?;
            finish(g, &name, o)
        }
        RolloutCommand::Resume {
            pac, lease, plan, ..
        } => {
            let psor = connect(g).await?.with_metrics(m.clone());
            let p = pac_with_state(g, psor, pac.clone()).await?;
            // A refused amendment is refused before the lease is taken: nothing written.
            let fixed = match plan {
                Some(path) => {
                    let fixed = Plan::load(&path)?;
                    let j = coordinator::journal::Journal::decode(&p.rollout_current().await?)?;
                    coordinator::amend::check(&j, pac.as_str(), &fixed)?;
                    Some(fixed)
                }
                None => None,
            };
            let mut sig = Interrupts::new();
            let mut opts = run_options(
                g,
                Some(&lease),
                String::new(),
                emitter(g.json, None),
                true,
                sig.interrupt.clone(),
            );
            opts.metrics = m.clone();
            if let Precheck::AlreadyDone(o) =
                coordinator::precheck(&p, Trigger::Resume, None).await?
            {
                return finish(g, &pac, o);
            }
            let c = Coordinator::acquire(p, opts).await?;
            sig.listen(&pac)?;
            let o = c.resume_with(fixed).await?;
            finish(g, &pac, o)
        }
        RolloutCommand::Rollback { pac, fast, lease } => {
            let p = connect_pac(g, pac.clone()).await?;
            let mut sig = Interrupts::new();
            let opts = run_options(
                g,
                Some(&lease),
                String::new(),
                emitter(g.json, None),
                true,
                sig.interrupt.clone(),
            );
            coordinator::precheck(&p, Trigger::Rollback, None).await?;
            let c = Coordinator::acquire(p, opts).await?;
            sig.listen(&pac)?;
            let o = c.rollback(fast).await?;
            finish(g, &pac, o)
        }
        RolloutCommand::Pause { pac } => {
            let p = connect_pac(g, pac.clone()).await?;
            let cur = p.rollout_current().await?;
            if !matches!(
                cur.get("state").map(String::as_str),
                Some("running" | "rolling_back")
            ) {
                return Err(Error::refused(format!(
                    "PAC {pac} has no running rollout (state: {})",
                    cur.get("state").map(String::as_str).unwrap_or("none")
                ))
                .into());
            }
            p.rollout_request("pause_requested", "1").await?;
            if g.json {
                print_json(&json!({"pac": pac, "rollout": cur.get("id"), "pause_requested": true}));
            } else {
                outln!(
                    "Pause requested: the coordinator pauses rollout {} after its current step",
                    cur.get("id").map(String::as_str).unwrap_or("?")
                );
            }
            Ok(ExitCode::Ok)
        }
        RolloutCommand::Abort { pac } => {
            let p = connect_pac(g, pac.clone()).await?;
            let cur = p.rollout_current().await?;
            let state = cur.get("state").cloned().unwrap_or_default();
            if !matches!(
                state.as_str(),
                "running" | "paused" | "held" | "rolling_back"
            ) {
                return Err(Error::refused(format!(
                    "PAC {pac} has no active rollout (state: {state})"
                ))
                .into());
            }
            if p.lease_holder().await?.is_some() {
                p.rollout_request("abort_requested", "1").await?;
                if g.json {
                    print_json(
                        &json!({"pac": pac, "rollout": cur.get("id"), "abort_requested": true}),
                    );
                } else {
                    outln!(
                        "Abort requested: the coordinator stops after its current step; \
                         then `pacup rollout rollback {pac}` returns the PAC to {}",
                        cur.get("from_version")
                            .map_or("its old version", String::as_str)
                    );
                }
                return Ok(ExitCode::Ok);
            }
            let opts = run_options(
                g,
                None,
                String::new(),
                emitter(g.json, None),
                true,
                Interrupt::never(),
            );
            let o = Coordinator::acquire(p, opts).await?.abort().await?;
            if !g.json {
                outln!(
                    "Rollout {} aborted\n{}",
                    cur.get("id").map(String::as_str).unwrap_or("?"),
                    hints::rollback_hint(
                        &pac,
                        cur.get("id").map(String::as_str),
                        cur.get("from_version").map(String::as_str)
                    )
                );
            }
            let _ = o;
            Ok(ExitCode::Ok)
        }
        RolloutCommand::Status {
            pac,
            watch,
            until,
            timeout,
            wait_new,
        } => {
            let p = connect_pac(g, pac.clone()).await?;
            let w = watch.then_some(super::status::Watch {
                until,
                timeout,
                wait_new,
            });
            super::status::status(g, &pac, &p, w).await
        }
        RolloutCommand::Report { pac, rollout, out } => {
            super::report::report(g, pac, rollout, out).await
        }
        RolloutCommand::History { pac } => super::history::history(g, pac).await,
    }
}
