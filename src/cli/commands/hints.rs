//! Advice printed under an error: which name was meant, what to run instead.
//!
//! The library's errors carry the facts (who holds a lease and since when, which PAC was
//! not found); only the command line knows its commands and flags, so the advice is added
//! here, once, for both binaries. Commands that came through the caspac syntax get the
//! facts and the close names, but no pacup flags.

use crate::cli::{Command, GlobalArgs, RolloutCommand};
use crate::error::{Advice, Error};
use crate::names::{self, PacName};
use crate::psor;
use crate::psor::StartType;
use std::fmt;

/// An error with advice: shown as the error, then one `hint:` line per piece of advice.
#[derive(Debug)]
pub struct Hinted {
    /// The error as the command returned it (it decides the exit code).
    pub error: anyhow::Error,
    /// One line each.
    pub hints: Vec<String>,
}

impl fmt::Display for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.error)?;
        for h in &self.hints {
            write!(f, "\nhint: {h}")?;
        }
        Ok(())
    }
}

// No `source`: the wrapped chain is already part of the text, and `exit_code_of` looks
// inside explicitly.
impl std::error::Error for Hinted {}

/// The rollout command that failed, as far as advice goes.
#[derive(Debug, Clone)]
pub(super) enum Scope {
    /// `rollout run` (its PAC is in the plan file; errors name it).
    Run,
    /// `rollout resume P`.
    Resume(PacName),
    /// `rollout rollback P`.
    Rollback,
    /// `rollout pause P` or `rollout abort P`.
    Steer(PacName),
    /// Anything else.
    Other,
}

impl Scope {
    pub(super) fn of(cmd: &Command) -> Scope {
        match cmd {
            Command::Rollout(RolloutCommand::Run { .. }) => Scope::Run,
            Command::Rollout(RolloutCommand::Resume { pac, .. }) => Scope::Resume(pac.clone()),
            Command::Rollout(RolloutCommand::Rollback { .. }) => Scope::Rollback,
            Command::Rollout(RolloutCommand::Pause { pac, .. })
            | Command::Rollout(RolloutCommand::Abort { pac, .. }) => Scope::Steer(pac.clone()),
            _ => Scope::Other,
        }
    }
}

/// Adds what a person can do next to `e`; `e` itself (and so the exit code) is unchanged.
pub(super) async fn attach(g: &GlobalArgs, scope: &Scope, e: anyhow::Error) -> anyhow::Error {
    let err = e.chain().find_map(|c| c.downcast_ref::<Error>());
    let mut hints: Vec<String> = match err {
        Some(Error::NoSuchPac(name)) => close_pacs(g, name).await.into_iter().collect(),
        Some(Error::RegionAlive { .. }) if !g.caspac => {
            vec!["or use --force: its live regions lose their stores and stop".into()]
        }
        Some(Error::LeaseHeld { pac, rollout, .. }) if !g.caspac => {
            lease_hints(scope, pac, rollout.is_some())
        }
        Some(Error::Refused(_)) if !g.caspac => match scope {
            Scope::Resume(p) | Scope::Steer(p) => aborted_hint(g, p).await.into_iter().collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    if let Some(a) = err.and_then(Error::advice).filter(|_| !g.caspac) {
        hints.push(advice_hint(a));
    }
    if hints.is_empty() {
        e
    } else {
        anyhow::Error::new(Hinted { error: e, hints })
    }
}

/// A refusal's next step in pacup's syntax.
fn advice_hint(a: &Advice) -> String {
    match a {
        Advice::StartType {
            start_type: StartType::Cold,
        } => "cold start a region first (--start-type cold)".into(),
        Advice::StartType {
            start_type: StartType::Warm,
        } => "use --start-type warm (an upgrade start is for incompatible versions)".into(),
        Advice::StartType {
            start_type: StartType::Upgrade,
        } => "start the region of the new version with --start-type upgrade to create a store \
              for that version"
            .into(),
        Advice::Force { to } => format!("{to} with --force"),
        Advice::FinishRemoval { pac } => {
            format!("run `pacup pac remove-old {pac}` to finish it")
        }
        Advice::Rollback { pac } => format!("to go back, use `pacup rollout rollback {pac}`"),
    }
}

/// "did you mean MyPAC?", else the PACs there are. Best effort: a PSOR that cannot be
/// asked again gives no hint rather than a second error.
async fn close_pacs(g: &GlobalArgs, name: &str) -> Option<String> {
    let psor = super::connect(g).await.ok()?;
    let known: Vec<String> = psor::pac_names(&psor)
        .await
        .ok()?
        .iter()
        .map(ToString::to_string)
        .collect();
    let close = names::close_names(name, &known);
    Some(if !close.is_empty() {
        format!("did you mean {}?", close.join(" or "))
    } else if known.is_empty() {
        "this PSOR holds no PAC".to_string()
    } else {
        format!("PACs in this PSOR: {}", known.join(", "))
    })
}

fn lease_hints(scope: &Scope, pac: &str, drives_rollout: bool) -> Vec<String> {
    let watch = format!("follow it with `pacup rollout status --watch {pac}`");
    match scope {
        Scope::Rollback if drives_rollout => vec![
            format!(
                "to roll back the rollout it drives, `pacup rollout pause {pac}` first, then \
                 run `pacup rollout rollback {pac}` again once it has paused"
            ),
            watch,
            "or add --wait-lock to roll back once it lets go of the lease".into(),
        ],
        Scope::Run | Scope::Resume(_) | Scope::Rollback => vec![
            watch,
            "or add --wait-lock to wait until it lets go of the lease, then go on".into(),
        ],
        _ => vec![watch],
    }
}

/// For a refused resume/pause/abort of an aborted rollout: rolling back is what is left.
async fn aborted_hint(g: &GlobalArgs, pac: &PacName) -> Option<String> {
    let p = super::connect_pac(g, pac.clone()).await.ok()?;
    let cur = p.rollout_current().await.ok()?;
    (cur.get("state").map(String::as_str) == Some("aborted")).then(|| {
        rollback_hint(
            pac,
            cur.get("id").map(String::as_str),
            cur.get("from_version").map(String::as_str),
        )
    })
}

/// What is left after an abort: "`pacup rollout rollback P` returns PAC P to 1.0.0".
pub(super) fn rollback_hint(pac: &PacName, rollout: Option<&str>, from: Option<&str>) -> String {
    let what = match rollout {
        Some(id) => format!("rollout {id} was aborted with its regions where they were"),
        None => "the regions stay where they are".to_string(),
    };
    let to = from
        .filter(|v| !v.is_empty())
        .map_or("its old version".to_string(), str::to_string);
    format!("{what}; `pacup rollout rollback {pac}` returns PAC {pac} to {to}")
}
