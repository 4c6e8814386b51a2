//! `pacup rollout ...` and `pacup events`.

use super::{actor, connect, print_json};
use crate::cli::{GlobalArgs, LeaseArgs, RolloutCommand};
use crate::coordinator::plan::Plan;
use crate::coordinator::{self, Coordinator, Emitter, Event, Outcome, RunOptions};
use crate::error::{Error, ExitCode};
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
        return Arc::new(|e: &Event| println!("{}", serde_json::to_string(e).unwrap_or_default()));
    }
    let bar = total.filter(|_| std::io::stdout().is_terminal()).map(|t| {
        let pb = indicatif::ProgressBar::new(t);
        pb.set_style(
            indicatif::ProgressStyle::with_template("{bar:40.cyan/blue} {pos}/{len} steps {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb
    });
    Arc::new(move |e: &Event| match &bar {
        Some(pb) => {
            pb.println(event_line(e));
            if e.status != "started" {
                pb.set_position(e.step as u64 + 1);
            }
            pb.set_message(e.action.clone());
            if e.action == "done" || e.action == "rollback" && e.status != "started" {
                pb.finish_and_clear();
            }
        }
        None => println!("{}", event_line(e)),
    })
}

fn run_options(
    g: &GlobalArgs,
    lease: Option<&LeaseArgs>,
    reason: String,
    emit: Emitter,
    allow_downtime: bool,
) -> RunOptions {
    RunOptions {
        allow_downtime,
        reason,
        by: actor(),
        wait_lock: lease.is_some_and(|l| l.wait_lock),
        lease_ttl: lease.map(|l| l.lease_ttl).unwrap_or(Duration::from_secs(5)),
        psor_url: g.psor.clone(),
        emit,
    }
}

fn finish(g: &GlobalArgs, pac: &PacName, o: Outcome) -> anyhow::Result<ExitCode> {
    let (result, text) = match &o {
        Outcome::Done => ("done", format!("Rollout of PAC {pac} finished")),
        Outcome::Paused(w) => ("paused", format!("Rollout of PAC {pac} paused: {w}")),
        Outcome::Aborted(w) => ("aborted", format!("Rollout of PAC {pac} aborted: {w}")),
        Outcome::RolledBack(w) => (
            "rolled_back",
            format!("Rollout of PAC {pac} rolled back: {w}"),
        ),
    };
    if g.json {
        // The event lines were the output; the outcome is the last event. Diagnostics only.
        eprintln!("{text}");
    } else if result == "done" {
        println!("{text}");
    } else {
        eprintln!("{text}");
    }
    Ok(o.exit_code())
}

pub(super) async fn rollout(g: &GlobalArgs, cmd: RolloutCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RolloutCommand::Plan {
            plan,
            allow_downtime,
        } => {
            let plan = Plan::load(&plan)?;
            let pac = Pac::new(connect(g).await?, plan.pac.clone());
            let pv = coordinator::preview(&pac, &plan, allow_downtime).await?;
            if g.json {
                print_json(&serde_json::to_value(&pv)?);
            } else {
                println!(
                    "PAC {}: {} -> {}, {} process ({} steps)",
                    plan.pac,
                    pv.from_version,
                    plan.target.version,
                    serde_json::to_string(&pv.process)?.trim_matches('"'),
                    pv.steps.len()
                );
                for r in &pv.reasons {
                    println!("  {r}");
                }
                for s in &pv.steps {
                    println!("{s}");
                }
                for p in &pv.problems {
                    println!("preflight would refuse: {p}");
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
            reason,
            preflight_wait,
            lease,
        } => {
            let plan = Plan::load(&plan)?;
            let pac = Pac::new(connect(g).await?, plan.pac.clone());
            if let Some(w) = preflight_wait {
                let end = std::time::Instant::now() + w;
                loop {
                    let problems = match coordinator::preview(&pac, &plan, allow_downtime).await {
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
            let opts = run_options(
                g,
                Some(&lease),
                reason,
                emitter(g.json, Some(total)),
                allow_downtime,
            );
            let c = Coordinator::acquire(pac, opts).await?;
            let name = plan.pac.clone();
            let o = c.run(plan).await?;
            finish(g, &name, o)
        }
        RolloutCommand::Resume { pac, lease } => {
            let p = Pac::new(connect(g).await?, pac.clone());
            let opts = run_options(g, Some(&lease), String::new(), emitter(g.json, None), true);
            let o = Coordinator::acquire(p, opts).await?.resume().await?;
            finish(g, &pac, o)
        }
        RolloutCommand::Rollback { pac, lease } => {
            let p = Pac::new(connect(g).await?, pac.clone());
            let opts = run_options(g, Some(&lease), String::new(), emitter(g.json, None), true);
            let o = Coordinator::acquire(p, opts).await?.rollback().await?;
            finish(g, &pac, o)
        }
        RolloutCommand::Pause { pac } => {
            let p = Pac::new(connect(g).await?, pac.clone());
            let cur = p.rollout_current().await?;
            if cur.get("state").map(String::as_str) != Some("running") {
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
                println!(
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
                    println!("Abort requested: the coordinator stops after its current step");
                }
                return Ok(ExitCode::Ok);
            }
            let opts = run_options(g, None, String::new(), emitter(g.json, None), true);
            let o = Coordinator::acquire(p, opts).await?.abort().await?;
            if !g.json {
                println!(
                    "Rollout {} aborted",
                    cur.get("id").map(String::as_str).unwrap_or("?")
                );
            }
            let _ = o;
            Ok(ExitCode::Ok)
        }
        RolloutCommand::Status { pac, watch } => {
            let p = Pac::new(connect(g).await?, pac.clone());
            loop {
                let doc = status_doc(&p).await?;
                if g.json {
                    print_json(&doc);
                } else {
                    print!("{}", status_text(&doc));
                }
                let state = doc["state"].as_str().unwrap_or("");
                if !watch || !matches!(state, "running" | "rolling_back") {
                    if doc["state"].is_null() {
                        return Err(Error::refused(format!("PAC {pac} has no rollout")).into());
                    }
                    return Ok(ExitCode::Ok);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                if !g.json {
                    println!();
                }
            }
        }
        RolloutCommand::Report { pac, rollout, out } => {
            super::report::report(g, pac, rollout, out).await
        }
        RolloutCommand::History { pac } => {
            let p = Pac::new(connect(g).await?, pac.clone());
            let h: Vec<serde_json::Value> = p
                .rollout_history()
                .await?
                .iter()
                .filter_map(|s| serde_json::from_str(s).ok())
                .collect();
            if g.json {
                print_json(&json!({"pac": pac, "rollouts": h}));
            } else if h.is_empty() {
                println!("PAC {pac} has no finished rollout");
            } else {
                for r in &h {
                    println!(
                        "{}  {}  -> {}  {}  by {}{}",
                        r["finished_at"].as_str().unwrap_or("?"),
                        r["id"].as_str().unwrap_or("?"),
                        r["target"].as_str().unwrap_or("?"),
                        r["result"].as_str().unwrap_or("?"),
                        r["by"].as_str().unwrap_or("?"),
                        r["reason"]
                            .as_str()
                            .filter(|s| !s.is_empty())
                            .map(|s| format!(" ({s})"))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(ExitCode::Ok)
        }
    }
}

async fn status_doc(p: &Pac) -> crate::Result<serde_json::Value> {
    let cur = p.rollout_current().await?;
    let snap = p.snapshot().await?;
    let holder = p.lease_holder().await?;
    let steps: Vec<coordinator::steps::Step> = cur
        .get("steps")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let next: usize = cur
        .get("next_step")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let plan: Option<Plan> = cur.get("plan").and_then(|s| serde_json::from_str(s).ok());
    let regions: Vec<serde_json::Value> = plan
        .as_ref()
        .map(|pl| {
            pl.all_regions()
                .iter()
                .map(|(h, r)| {
                    let ri = snap.region(r);
                    json!({
                        "host": h,
                        "region": r,
                        "state": ri.map(|x| x.effective_state().to_string()).unwrap_or_else(|| "unknown".into()),
                        "version": ri.map(|x| x.product_version.clone()),
                        "store": ri.map(|x| x.store.clone()),
                        "listener": ri.map(|x| x.listener.clone()),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let state = cur.get("state").cloned();
    let blocking = match state.as_deref() {
        Some("paused") | Some("held") => cur.get("error").cloned(),
        Some("running") if holder.is_none() => Some(
            "no coordinator holds the lease (it crashed or was killed); `pacup rollout resume` continues".to_string(),
        ),
        _ => None,
    };
    Ok(json!({
        "pac": p.name(),
        "rollout": cur.get("id"),
        "state": state,
        "process": cur.get("process"),
        "from_version": cur.get("from_version"),
        "target": cur.get("target"),
        "next_step": next,
        "steps_total": steps.len(),
        "current": steps.get(next).map(|s| s.to_string().trim().to_string()),
        "blocking": blocking,
        "lease_holder": holder,
        "reason": cur.get("reason"),
        "regions": regions,
        "stores": snap.stores.iter().map(|s| json!({"version": s.version, "mode": s.mode, "live_members": s.live_members})).collect::<Vec<_>>(),
    }))
}

fn status_text(d: &serde_json::Value) -> String {
    if d["state"].is_null() {
        return format!("PAC {} has no rollout\n", d["pac"].as_str().unwrap_or("?"));
    }
    let s = |k: &str| d[k].as_str().unwrap_or("-").to_string();
    let mut out = format!(
        "Rollout {} of PAC {}: {} ({} {} -> {}), step {}/{}",
        s("rollout"),
        s("pac"),
        s("state"),
        s("process"),
        s("from_version"),
        s("target"),
        d["next_step"],
        d["steps_total"]
    );
    if let Some(c) = d["current"].as_str() {
        out.push_str(&format!(", next: {c}"));
    }
    out.push('\n');
    if let Some(b) = d["blocking"].as_str() {
        out.push_str(&format!("blocked: {b}\n"));
    }
    for r in d["regions"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {:<10} on {:<8} {:<8} version {:<8} store {:<8} listener {}\n",
            r["region"].as_str().unwrap_or("?"),
            r["host"].as_str().unwrap_or("?"),
            r["state"].as_str().unwrap_or("?"),
            r["version"].as_str().unwrap_or("-"),
            r["store"].as_str().filter(|s| !s.is_empty()).unwrap_or("-"),
            r["listener"].as_str().unwrap_or("-"),
        ));
    }
    for st in d["stores"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  store {} {}\n",
            st["version"].as_str().unwrap_or("?"),
            st["mode"].as_str().unwrap_or("?")
        ));
    }
    out
}

/// Renders a stored event as the SPEC's JSON object (numbers as numbers, empty host and
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
        if batch.is_empty() && !follow {
            break;
        }
        for (id, fields) in batch {
            let v = event_json(&id, &fields);
            if follow && g.json {
                print_json(&v);
            } else if follow {
                println!("{}", human_event(&v));
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
            println!("{}", human_event(v));
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
