//! Live progress of the step in hand, for `rollout status` in another process.
//!
//! The coordinator owns these journal fields; `rollout status` only reads them. They say
//! what the coordinator is waiting for right now (which step since when, a health gate's
//! per-region healthy time, the command template it is running), so an operator sees
//! why a rollout is slow without reading events. Writes are fenced like every journal
//! write, made only on transitions (a step starts, a region's health changes, a command
//! starts or ends), never per poll, so they cost nothing next to the step itself.

use crate::psor::{now_ms, Pac};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Journal fields written here (the rest of the journal is the coordinator's).
pub mod field {
    /// Step number of the step in hand.
    pub const STEP: &str = "current_step";
    /// JSON [`super::CurrentStep`].
    pub const CURRENT: &str = "current";
    /// JSON [`super::GateProgress`] of the health gate in hand, or empty.
    pub const GATE: &str = "gate";
    /// JSON [`super::CommandProgress`] of the command template in hand, or empty.
    pub const COMMAND: &str = "command";
}

/// The step in hand (or the parallel group of steps `n..=last`): what it is, since
/// when, and its bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentStep {
    /// Step number (rollback steps continue the forward numbering); of a group, its first.
    pub n: usize,
    /// The last step of the parallel group in hand (absent for a single step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<usize>,
    /// Action name.
    pub action: String,
    /// Host, if the step has one.
    pub host: Option<String>,
    /// Region, if the step has one.
    pub region: Option<String>,
    /// When it started (ms since the epoch).
    pub started_ms: u64,
    /// How long it may take (the plan's progress deadline), in ms.
    pub bound_ms: u64,
    /// Whether it is a step of a rollback.
    pub rollback: bool,
}

/// A health gate in hand: since when each region has been healthy without interruption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateProgress {
    /// The gate's start (ms since the epoch).
    pub started_ms: u64,
    /// `health.deadline` in ms.
    pub deadline_ms: u64,
    /// `health.min_healthy` in ms.
    pub min_healthy_ms: u64,
    /// Per region: healthy since (ms since the epoch), or `None` while unhealthy.
    pub healthy_since: BTreeMap<String, Option<u64>>,
    /// Why the gate is not yet passed, if a region is unhealthy.
    pub problem: Option<String>,
}

/// A command template in hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandProgress {
    /// The command, credentials redacted.
    pub command: String,
    /// Its process id (the process group leader).
    pub pid: u32,
    /// When it started (ms since the epoch).
    pub started_ms: u64,
    /// Its bound, in ms.
    pub timeout_ms: u64,
}

/// The command templates in hand (several run at once in a parallel group): the journal
/// shows the oldest still running.
#[derive(Debug, Clone, Default)]
pub struct InHand(Arc<Mutex<Vec<CommandProgress>>>);

impl InHand {
    fn update(&self, f: impl FnOnce(&mut Vec<CommandProgress>)) -> Option<CommandProgress> {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut v);
        v.first().cloned()
    }
}

/// Writes progress fields of one PAC's rollout, fenced by the coordinator's epoch.
#[derive(Clone)]
pub struct Progress<'a> {
    pac: &'a Pac,
    epoch: u64,
    in_hand: InHand,
}

impl<'a> Progress<'a> {
    /// Progress of the rollout whose coordinator holds `epoch`.
    pub fn new(pac: &'a Pac, epoch: u64) -> Self {
        Progress {
            pac,
            epoch,
            in_hand: InHand::default(),
        }
    }

    /// Progress that shares the commands in hand with the other steps of a rollout.
    pub fn with_commands(pac: &'a Pac, epoch: u64, in_hand: InHand) -> Self {
        Progress {
            pac,
            epoch,
            in_hand,
        }
    }

    /// Best effort: progress is for people; a write that fails (PSOR gone, lease lost)
    /// must not fail the step, and the next journal write reports the real problem.
    async fn write(&self, fields: &[(&str, String)]) {
        if let Err(e) = self.pac.rollout_write(self.epoch, fields, &[], None).await {
            tracing::debug!("progress not journaled: {e}");
        }
    }

    /// A step starts: it becomes the current step, and the previous step's gate and
    /// command details are cleared.
    pub async fn step(&self, cur: &CurrentStep) {
        self.write(&[
            (field::STEP, cur.n.to_string()),
            (field::CURRENT, to_json(cur)),
            (field::GATE, String::new()),
            (field::COMMAND, String::new()),
        ])
        .await
    }

    /// The health gate's view changed.
    pub async fn gate(&self, g: &GateProgress) {
        self.write(&[(field::GATE, to_json(g))]).await
    }

    /// A command template started.
    pub async fn command_started(&self, c: &CommandProgress) {
        let oldest = self.in_hand.update(|v| v.push(c.clone()));
        self.write(&[(
            field::COMMAND,
            oldest.as_ref().map(to_json).unwrap_or_default(),
        )])
        .await
    }

    /// The command template with process id `pid` ended.
    pub async fn command_ended(&self, pid: u32) {
        let oldest = self.in_hand.update(|v| v.retain(|c| c.pid != pid));
        self.write(&[(
            field::COMMAND,
            oldest.as_ref().map(to_json).unwrap_or_default(),
        )])
        .await
    }
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("progress records serialise")
}

/// Reads a progress record from the journal (`None` when absent, empty or unreadable:
/// a journal written by an older pacup has none).
pub fn read<T: for<'de> Deserialize<'de>>(
    journal: &std::collections::HashMap<String, String>,
    name: &str,
) -> Option<T> {
    journal
        .get(name)
        .filter(|s| !s.is_empty())
        .and_then(|s| serde_json::from_str(s).ok())
}

/// Credentials removed from a command line for display: every `scheme://user:pass@`
/// URL inside it, and the value of `--password`/`--pass`-like options.
pub fn redact_command(cmd: &str) -> String {
    let mut hide_next = false;
    cmd.split(' ')
        .map(|w| {
            if std::mem::take(&mut hide_next) {
                return "***".to_string();
            }
            let lower = w.to_ascii_lowercase();
            if let Some((k, _)) = w.split_once('=').filter(|(k, _)| is_secret_flag(k)) {
                return format!("{k}=***");
            }
            if is_secret_flag(&lower) {
                hide_next = true;
                return w.to_string();
            }
            match w.find("://") {
                Some(i) => {
                    let start = w[..i]
                        .rfind(|c: char| !(c.is_ascii_alphanumeric() || "+-.".contains(c)))
                        .map_or(0, |j| j + 1);
                    let end = w[i..]
                        .find(|c: char| c.is_whitespace() || "'\"".contains(c))
                        .map_or(w.len(), |j| i + j);
                    format!(
                        "{}{}{}",
                        &w[..start],
                        crate::conn::redact_url(&w[start..end]),
                        &w[end..]
                    )
                }
                None => w.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn is_secret_flag(w: &str) -> bool {
    let w = w.trim_start_matches('-').to_ascii_lowercase();
    (w.contains("password") || w == "pass" || w.ends_with("secret")) && !w.ends_with("-file")
}

/// Now, for progress records.
pub fn now() -> u64 {
    now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_redacted() {
        let c = "ssh host1 caspac -aInitPac=P -s redis://u:secret@h:1 --password hunter2 --pass=x";
        let r = redact_command(c);
        assert!(!r.contains("secret") && !r.contains("hunter2"), "{r}");
        assert!(!r.contains("--pass=x"), "{r}");
        assert!(r.contains("redis://u:***@h:1"), "{r}");
        assert_eq!(
            redact_command("casstart /rREGION1 /s:w"),
            "casstart /rREGION1 /s:w"
        );
        let quoted = redact_command("sh -c 'x rediss://:pw@h:2/0'");
        assert!(!quoted.contains("pw@"), "{quoted}");
    }
}
