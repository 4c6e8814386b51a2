//! `rollout resume P --plan fixed.json`: a stored plan corrected in place. Only what does
//! not change what the rollout has done or will do to which region may differ: the
//! templates, the timeouts and the health settings. Anything else (the PAC, the target,
//! the hosts and regions, the waves, the strategy, the failure policy, ...) is refused
//! with the differing fields named (exit 2) before anything is written.

use super::journal::{Amendment, Journal, Write};
use super::plan::Plan;
use super::steps::Action;
use super::{Coordinator, Head};
use crate::error::{Error, Result};
use serde_json::Value;

/// The plan fields an amendment may change (a field, or every field under it).
pub const AMENDABLE: [&str; 8] = [
    "driver.templates",
    "driver.timeout",
    "drain_timeout",
    "stop_timeout",
    "health",
    "progress_deadline",
    "monitor.suspend",
    "monitor.resume",
];

fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, x, out);
            }
        }
        _ => out.push((prefix.to_string(), v.clone())),
    }
}

fn leaves(p: &Plan) -> std::collections::BTreeMap<String, Value> {
    let mut out = Vec::new();
    flatten(
        "",
        &serde_json::to_value(p).expect("plans serialise"),
        &mut out,
    );
    out.into_iter().collect()
}

/// The fields in which `fixed` differs from `stored`: (those an amendment may not
/// change, those it may), as dotted paths. Waves that `fixed` derives are the stored
/// ones (the stored plan's were derived against the PAC when the rollout started).
pub fn diff(stored: &Plan, fixed: &mut Plan) -> (Vec<String>, Vec<String>) {
    if fixed.waves_derived {
        fixed.waves = stored.waves.clone();
    }
    let (a, b) = (leaves(stored), leaves(fixed));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let amendable = |k: &str| {
        AMENDABLE
            .iter()
            .any(|f| k == *f || k.starts_with(&format!("{f}.")))
    };
    let mut refused = Vec::new();
    let mut changed = Vec::new();
    for k in keys {
        if a.get(k) == b.get(k) {
            continue;
        }
        if amendable(k) {
            changed.push(k.clone());
        } else {
            refused.push(k.clone());
        }
    }
    (refused, changed)
}

/// The refusal of an amendment changing `refused`.
pub fn refusal(refused: &[String]) -> Error {
    Error::invalid(
        "--plan",
        format!("(changes {})", refused.join(", ")),
        format!(
            "a plan differing from the rollout's only in {}; start a new rollout to change \
             anything else",
            AMENDABLE.join(", ")
        ),
    )
}

/// Checks `fixed` against the rollout journaled in `j` (read-only): `Err` (exit 2) when
/// it changes anything an amendment may not.
pub fn check(j: &Journal, pac: &str, fixed: &Plan) -> Result<()> {
    let stored = j.plan(pac)?;
    let mut fixed = fixed.clone();
    let (refused, _) = diff(stored, &mut fixed);
    if refused.is_empty() {
        Ok(())
    } else {
        Err(refusal(&refused))
    }
}

impl Coordinator {
    /// Replaces the journaled plan of `j` by `fixed` (checked again under the lease),
    /// with an `amend` event naming the changed fields; `j` then carries it. Nothing is
    /// written when nothing differs.
    pub(super) async fn amend(&self, j: &mut Journal, mut fixed: Plan) -> Result<()> {
        let stored = j.plan(self.pac.name().as_str())?.clone();
        let (refused, changed) = diff(&stored, &mut fixed);
        if !refused.is_empty() {
            return Err(refusal(&refused));
        }
        if changed.is_empty() {
            return Ok(());
        }
        j.amendments.push(Amendment {
            at: crate::psor::rfc3339(crate::psor::now_ms()),
            by: self.opts.by.clone(),
            fields: changed.clone(),
        });
        let detail = format!("plan amended: {}", changed.join(", "));
        let head = Head::marker(j.next_step, Action::Amend);
        self.journal(
            Write::new().amended(&fixed, &j.amendments),
            Some((head, "done", &detail, 0)),
            None,
        )
        .await?;
        j.plan = Some(fixed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(extra: &str) -> Plan {
        Plan::parse(&format!(
            r#"{{"pac": "MyPAC", "target": {{"version": "2.0.0"}},
                "hosts": [{{"name": "host1", "regions": ["R1"]}}, {{"name": "host2", "regions": ["R2"]}}],
                "driver": {{"kind": "command", "templates": {{
                  "listener_off": "a", "listener_on": "b", "stop": "c {{region}}",
                  "apply_update": "d", "start": "e", "region_state": "f"}}}}{extra}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn templates_timeouts_and_health_may_change_nothing_else() {
        let stored = plan("");
        let mut fixed =
            plan(r#", "stop_timeout": "9m", "health": {"min_healthy": "1s", "deadline": "5m"}"#);
        if let super::super::plan::DriverSpec::Command { templates, .. } = &mut fixed.driver {
            templates.insert("stop".into(), "casstop -r{region}".into());
        }
        let (refused, changed) = diff(&stored, &mut fixed);
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(
            changed,
            [
                "driver.templates.stop",
                "health.deadline",
                "health.min_healthy",
                "stop_timeout"
            ]
        );
        let mut other = plan(r#", "on_failure": "rollback", "waves": [["host2"], ["host1"]]"#);
        other.target.version = semver::Version::new(3, 0, 0);
        let (refused, _) = diff(&stored, &mut other);
        assert_eq!(refused, ["on_failure", "target.version", "waves"]);
        let e = refusal(&refused);
        assert_eq!(e.exit_code().code(), 2);
        assert!(
            e.to_string().contains("on_failure, target.version, waves"),
            "{e}"
        );
    }
}
