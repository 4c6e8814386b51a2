//! `pacup rollout status [--watch]`: rendering the library's status document, and the
//! watch loop whose exit code a pipeline branches on.

use super::print_json;
use crate::cli::output::{self, out, outln};
use crate::cli::{GlobalArgs, UntilArg};
use crate::coordinator::status::{self, RolloutStatus, State};
use crate::error::{Error, ExitCode};
use crate::names::{format_duration, PacName};
use crate::psor::Pac;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often the watch re-reads the PSOR.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

fn ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format_duration(Duration::from_secs(ms / 1000))
    }
}

/// The status for a person: the headline, then what the coordinator waits for, then the
/// regions and stores.
pub(crate) fn status_text(d: &RolloutStatus) -> String {
    let Some(state) = d.state else {
        return format!("PAC {} has no rollout\n", d.pac);
    };
    let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    let mut out = format!(
        "Rollout {} of PAC {}: {} ({} {} -> {}), step {}/{}",
        opt(&d.rollout),
        d.pac,
        state.as_str(),
        opt(&d.process),
        opt(&d.from_version),
        opt(&d.target),
        d.next_step,
        d.steps_total
    );
    if let (Some(c), None) = (&d.current, &d.step) {
        out.push_str(&format!(", next: {c}"));
    }
    out.push('\n');
    out.push_str(&detail_text(d));
    if let (State::Aborted, Ok(pac)) = (state, PacName::new(&d.pac)) {
        out.push_str(&format!(
            "next: {}\n",
            super::hints::rollback_hint(&pac, d.rollout.as_deref(), d.from_version.as_deref())
        ));
    }
    for r in &d.regions {
        out.push_str(&format!(
            "  {:<10} on {:<8} {:<8} version {:<8} store {:<8} listener {}\n",
            r.region,
            r.host,
            r.state,
            r.version.as_deref().unwrap_or("-"),
            r.store.as_deref().filter(|s| !s.is_empty()).unwrap_or("-"),
            r.listener.as_deref().unwrap_or("-"),
        ));
    }
    for st in &d.stores {
        out.push_str(&format!(
            "  store {} {}\n",
            st["version"].as_str().unwrap_or("?"),
            st["mode"].as_str().unwrap_or("?")
        ));
    }
    out
}

/// What the coordinator is doing and waiting for (empty when nothing is in hand).
fn detail_text(d: &RolloutStatus) -> String {
    let mut out = String::new();
    if let Some(s) = &d.step {
        let mut what = s.action.clone();
        if let Some(r) = &s.region {
            what.push_str(&format!(" {r}"));
        }
        if let Some(h) = &s.host {
            what.push_str(&format!(" on {h}"));
        }
        out.push_str(&format!(
            "{} step {}: {what}, running for {} (bound {})\n",
            if s.rollback { "rollback" } else { "current" },
            s.n,
            ms(s.elapsed_ms),
            ms(s.bound_ms)
        ));
    }
    if let Some(g) = &d.gate {
        out.push_str(&format!(
            "health gate: each region healthy for {}; fails in {}\n",
            ms(g.min_healthy_ms),
            ms(g.deadline_in_ms)
        ));
        for r in &g.regions {
            let how = match (r.dead, r.healthy_for_ms) {
                (true, _) => "DEAD (heartbeat expired)".to_string(),
                (false, Some(t)) => format!(
                    "healthy for {} of {}{}",
                    ms(t),
                    ms(g.min_healthy_ms),
                    if t >= g.min_healthy_ms { " (ok)" } else { "" }
                ),
                (false, None) => "not healthy".to_string(),
            };
            out.push_str(&format!("  {:<10} {how}\n", r.region));
        }
        if let Some(p) = &g.problem {
            out.push_str(&format!("  waiting: {p}\n"));
        }
    }
    if let Some(c) = &d.command {
        out.push_str(&format!(
            "running `{}` (pid {}) for {} (timeout {})\n",
            c.command,
            c.pid,
            ms(c.elapsed_ms),
            ms(c.timeout_ms)
        ));
    }
    if let Some(p) = &d.pending {
        out.push_str(&format!(
            "{p} requested: the coordinator acts on it after the step in hand\n"
        ));
    }
    if let Some(b) = &d.blocking {
        out.push_str(&format!("blocked: {b}\n"));
    }
    out
}

/// One line for a log that is not a terminal: enough to tell what changed.
fn status_line(d: &RolloutStatus) -> String {
    let Some(state) = d.state else {
        return format!("PAC {}: no rollout yet", d.pac);
    };
    let mut line = format!(
        "rollout {} {}",
        d.rollout.as_deref().unwrap_or("?"),
        state.as_str()
    );
    if let Some(s) = &d.step {
        line.push_str(&format!(" step {} {}", s.n, s.action));
        if let Some(r) = s.region.as_ref().or(s.host.as_ref()) {
            line.push_str(&format!(" {r}"));
        }
    }
    if let Some(g) = &d.gate {
        let ok = g
            .regions
            .iter()
            .filter(|r| r.healthy_for_ms.is_some_and(|t| t >= g.min_healthy_ms))
            .count();
        line.push_str(&format!(" gate {ok}/{} healthy", g.regions.len()));
        let dead: Vec<&str> = g
            .regions
            .iter()
            .filter(|r| r.dead)
            .map(|r| r.region.as_str())
            .collect();
        if !dead.is_empty() {
            line.push_str(&format!(" dead: {}", dead.join(",")));
        }
    }
    if let Some(c) = &d.command {
        line.push_str(&format!(" running `{}`", c.command));
    }
    if let Some(p) = &d.pending {
        line.push_str(&format!(" ({p} requested)"));
    }
    if let Some(b) = &d.blocking {
        line.push_str(&format!(": {b}"));
    }
    line
}

/// What identifies a change worth a new line: the text without running times.
fn change_key(d: &RolloutStatus) -> String {
    let mut k = status_line(d);
    if let Some(g) = &d.gate {
        // A region reaching min_healthy is a change; its clock ticking is not.
        k.push_str(&format!("{:?}", g.problem));
    }
    k
}

/// The watch's options.
pub(crate) struct Watch {
    pub until: Vec<UntilArg>,
    pub timeout: Option<Duration>,
    pub wait_new: bool,
}

fn stops_at(state: State, until: &[UntilArg]) -> Option<ExitCode> {
    if state.is_final() {
        return state.exit_code();
    }
    let asked = match state {
        State::Paused => until.contains(&UntilArg::Paused),
        State::Held => until.contains(&UntilArg::Held),
        _ => false,
    };
    asked.then(|| state.exit_code()).flatten()
}

pub(crate) async fn status(
    g: &GlobalArgs,
    pac: &PacName,
    p: &Pac,
    watch: Option<Watch>,
) -> anyhow::Result<ExitCode> {
    let Some(w) = watch else {
        let d = status::status(p).await?;
        if g.json {
            print_json(&serde_json::to_value(&d)?);
        } else {
            out!("{}", status_text(&d));
        }
        if d.state.is_none() {
            return Err(Error::refused(format!("PAC {pac} has no rollout")).into());
        }
        return Ok(ExitCode::Ok);
    };
    let start = Instant::now();
    let tty = !g.json && std::io::stdout().is_terminal();
    let first = status::status(p).await?;
    // With --wait-new, a rollout that had already ended is the past: the watch waits for
    // it to change (a new rollout, or this one rolled back).
    let ignore = first
        .state
        .filter(|s| w.wait_new && s.is_final())
        .map(|s| (first.rollout.clone(), s));
    let mut d = first;
    let mut last_key = String::new();
    let mut drawn_lines = 0usize;
    loop {
        let current = d.rollout.is_some()
            && (ignore.is_none() || d.state.map(|s| (d.rollout.clone(), s)) != ignore);
        if g.json {
            let k = change_key(&d);
            if k != last_key {
                print_json(&serde_json::to_value(&d)?);
                last_key = k;
            }
        } else if tty {
            let text = if current {
                status_text(&d)
            } else {
                format!("PAC {pac}: waiting for a rollout to start\n")
            };
            // Redraw in place: up over the previous frame, clear to the end.
            if drawn_lines > 0 {
                out!("\x1b[{drawn_lines}A\x1b[J");
            }
            out!("{text}");
            drawn_lines = text.lines().count();
        } else {
            let k = change_key(&d);
            if k != last_key {
                let line = if current {
                    status_line(&d)
                } else {
                    format!("PAC {pac}: waiting for a rollout to start")
                };
                outln!("{line}");
                last_key = k;
            }
        }
        if current {
            if let Some(code) = d.state.and_then(|s| stops_at(s, &w.until)) {
                return Ok(code);
            }
        }
        if output::stdout_closed() {
            return Ok(ExitCode::Ok);
        }
        if let Some(t) = w.timeout {
            if start.elapsed() >= t {
                let what = match (current, d.state) {
                    (true, Some(s)) => format!(
                        "rollout {} is {}",
                        d.rollout.as_deref().unwrap_or("?"),
                        s.as_str()
                    ),
                    _ => "no rollout started".to_string(),
                };
                eprintln!(
                    "pacup: rollout status --watch timed out after {}: {what}",
                    format_duration(t)
                );
                return Ok(ExitCode::WatchTimeout);
            }
        }
        tokio::time::sleep(WATCH_INTERVAL).await;
        d = status::status(p).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_stops_at_end_states_and_at_what_it_was_asked() {
        assert_eq!(stops_at(State::Done, &[]), Some(ExitCode::Ok));
        assert_eq!(stops_at(State::Aborted, &[]), Some(ExitCode::Refused));
        assert_eq!(stops_at(State::RolledBack, &[]), Some(ExitCode::RolledBack));
        assert_eq!(stops_at(State::Paused, &[]), None);
        assert_eq!(stops_at(State::Held, &[]), None);
        assert_eq!(stops_at(State::Running, &[UntilArg::Paused]), None);
        assert_eq!(
            stops_at(State::Paused, &[UntilArg::Paused]),
            Some(ExitCode::Paused)
        );
        assert_eq!(
            stops_at(State::Held, &[UntilArg::Held, UntilArg::Done]),
            Some(ExitCode::Held)
        );
        assert_eq!(stops_at(State::Held, &[UntilArg::Paused]), None);
    }
}
