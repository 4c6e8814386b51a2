//! `pacup rollout ...` and `pacup events`.

use super::{actor, connect, hints, print_json};
use crate::cli::output::{self, outln};
use crate::cli::{GlobalArgs, LeaseArgs, RolloutCommand};
use crate::coordinator::plan::Plan;
use crate::coordinator::{self, Coordinator, Emitter, Event, Interrupt, Outcome, RunOptions};
use crate::error::{Error, ExitCode};
use crate::metrics::Metrics;
use crate::names::PacName;
use crate::psor::{self, Pac};
use serde_json::json;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

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

/// Ctrl-C (or SIGTERM) on a coordinator: the first asks it to pause after the step in
/// hand, the second to give the step up now. Both end in a journaled pause and exit 6,
/// with the command that continues. The handlers are installed only once the lease is
/// held ([`Interrupts::listen`]): before that a signal ends the process as usual, which
/// is safe because nothing has been written. The task ends when the guard is dropped.
pub(crate) struct Interrupts {
    pub interrupt: Interrupt,
    tx: Option<tokio::sync::watch::Sender<u32>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Interrupts {
    pub fn new() -> Interrupts {
        let (tx, rx) = tokio::sync::watch::channel(0u32);
        Interrupts {
            interrupt: Interrupt::new(rx),
            tx: Some(tx),
            task: None,
        }
    }

    /// Installs the handlers.
    pub fn listen(&mut self, pac: &PacName) -> anyhow::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let Some(tx) = self.tx.take() else {
            return Ok(());
        };
        let pac = pac.to_string();
        self.task = Some(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                tx.send_modify(|c| *c += 1);
                if *tx.borrow() == 1 {
                    eprintln!(
                        "pacup: stopping: the rollout pauses once the step in hand is done \
                         (press Ctrl-C again to stop now)"
                    );
                } else {
                    eprintln!("pacup: stopping now");
                    // If even the pause cannot be journaled promptly (the PSOR is gone),
                    // do not hang: the journal still says where to continue.
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    eprintln!(
                        "Rollout of PAC {pac} interrupted; `pacup rollout resume {pac}` continues"
                    );
                    std::process::exit(ExitCode::Paused.code());
                }
            }
        }));
        Ok(())
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
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
        Pac::new(connect(g).await?, pac.clone()).require().await?;
    }
    match cmd {
        RolloutCommand::Plan {
            plan,
            allow_downtime,
            allow_partial,
        } => {
            let plan = Plan::load(&plan)?;
            let pac = Pac::new(connect(g).await?, plan.pac.clone());
            let allow = coordinator::Allow {
                downtime: allow_downtime,
                partial: allow_partial,
            };
            let pv = coordinator::preview_with(&pac, &plan, allow).await?;
            if g.json {
                print_json(&serde_json::to_value(&pv)?);
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
                for s in &pv.steps {
                    outln!("{s}");
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
            let pac = Pac::new(connect(g).await?.with_metrics(m.clone()), plan.pac.clone());
            if let Some(w) = preflight_wait {
                let end = std::time::Instant::now() + w;
                loop {
                    let allow = coordinator::Allow {
                        downtime: allow_downtime,
                        partial: allow_partial,
                    };
                    let problems = match coordinator::preview_with(&pac, &plan, allow).await {
                        Ok(pv) => pv.problems,
                        Err(e @ Error::NoSuchPac(_)) => vec![e.to_string()],
                        Err(e) => return Err(e.into()),
                    };
                    if problems.is_empty() || std::time::Instant::now() >= end {
                        break;
                    }
                    tracing::info!("preflight not yet passing: {}", problems.join("; "));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
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
            let c = Coordinator::acquire(pac, opts).await?;
            sig.listen(&plan.pac)?;
            let name = plan.pac.clone();
            let o = c.run(plan).await?;
            finish(g, &name, o)
        }
        RolloutCommand::Resume { pac, lease, .. } => {
            let p = Pac::new(connect(g).await?.with_metrics(m.clone()), pac.clone());
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
            let c = Coordinator::acquire(p, opts).await?;
            sig.listen(&pac)?;
            let o = c.resume().await?;
            finish(g, &pac, o)
        }
        RolloutCommand::Rollback { pac, fast, lease } => {
            let p = Pac::new(connect(g).await?, pac.clone());
            let mut sig = Interrupts::new();
            let opts = run_options(
                g,
                Some(&lease),
                String::new(),
                emitter(g.json, None),
                true,
                sig.interrupt.clone(),
            );
            let c = Coordinator::acquire(p, opts).await?;
            sig.listen(&pac)?;
            let o = c.rollback(fast).await?;
            finish(g, &pac, o)
        }
        RolloutCommand::Pause { pac } => {
            let p = Pac::new(connect(g).await?, pac.clone());
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
            let p = Pac::new(connect(g).await?, pac.clone());
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
            let p = Pac::new(connect(g).await?, pac.clone());
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

/// Renders a stored event as the documented JSON object (numbers as numbers, empty host and
/// region as null; admin events carry `by`).
fn event_json(id: &str, fields: &[(String, String)]) -> serde_json::Value {
    let mut o = serde_json::Map::new();
    for (k, v) in fields {
        let val = match k.as_str() {
            "ts_ms" => {
                o.insert("ts".into(), json!(psor::rfc3339(v.parse().unwrap_or(0))));
                continue;
            }
            "seq" | "step" | "elapsed_ms" => json!(v.parse::<u64>().unwrap_or(0)),
            "host" | "region" if v.is_empty() => serde_json::Value::Null,
            _ => json!(v),
        };
        o.insert(k.clone(), val);
    }
    o.insert("id".into(), json!(id));
    serde_json::Value::Object(o)
}

pub(super) async fn events(g: &GlobalArgs, pac: PacName, follow: bool) -> anyhow::Result<ExitCode> {
    let p = Pac::new(connect(g).await?, pac.clone());
    p.require().await?;
    let mut conn = p.psor().dedicated().await?;
    let mut after = "0".to_string();
    let mut all = Vec::new();
    loop {
        let block = if follow {
            Some(Duration::from_secs(1))
        } else {
            None
        };
        let batch = p.read_events(&mut conn, &after, 500, block).await?;
        if batch.is_empty() && !follow || output::stdout_closed() {
            break;
        }
        for (id, fields) in batch {
            let v = event_json(&id, &fields);
            if follow && g.json {
                print_json(&v);
            } else if follow {
                outln!("{}", human_event(&v));
            } else {
                all.push(v);
            }
            after = id;
        }
    }
    if g.json {
        print_json(&json!({"pac": pac, "events": all}));
    } else {
        for v in &all {
            outln!("{}", human_event(v));
        }
    }
    Ok(ExitCode::Ok)
}

fn human_event(v: &serde_json::Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let mut line = format!("{} {} {}", s("ts"), s("action"), s("status"));
    if let Some(n) = v["step"].as_u64() {
        line = format!("{} step {n} {} {}", s("ts"), s("action"), s("status"));
    }
    for k in ["region", "host"] {
        if let Some(x) = v[k].as_str() {
            line.push_str(&format!(" {k}={x}"));
        }
    }
    if !s("detail").is_empty() {
        line.push_str(&format!(": {}", s("detail")));
    }
    if !s("by").is_empty() {
        line.push_str(&format!(" [{}]", s("by")));
    }
    line
}
