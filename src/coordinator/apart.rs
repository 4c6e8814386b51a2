//! What a rollout needs when the coordinator keeps its state apart from the PSOR
//! (`--state`): it writes nothing to the PSOR, so the regions must be driven by
//! templates (the agent driver's commands go through the PSOR), the stores are read
//! through `store_state`, and every store change its steps make needs its template. Refused as bad input (exit 2) before anything is
//! written; at run time [`crate::Error::StateApart`] refuses any PSOR script that would
//! slip through.

use super::plan::{DriverSpec, Plan};
use super::steps::{Step, StepKind};
use crate::error::{Error, Result};

/// Templates that replace the coordinator's own writes to the PSOR, by the step that
/// needs them.
fn template_of(kind: &StepKind) -> Option<&'static str> {
    match kind {
        StepKind::SetModeRunning => Some("set_mode_running"),
        StepKind::SetModeQuiesce => Some("set_mode_quiesce"),
        StepKind::RemoveOld => Some("remove_old"),
        _ => None,
    }
}

/// Refuses a plan whose driver cannot run without reading or writing the PSOR: checked
/// before anything is read, since reading the PAC's stores needs `store_state`.
pub fn check_driver(plan: &Plan) -> Result<()> {
    match plan.driver {
        DriverSpec::Command { .. } if plan.reads_stores_by_template() => Ok(()),
        DriverSpec::Command { .. } => Err(missing_templates(&["store_state"])),
        DriverSpec::Agent => Err(Error::invalid(
            "--state",
            "(with driver.kind agent)",
            "a plan with driver.kind command: pacup's host agents take their commands \
             through the PSOR, so their coordinator keeps its state there (leave --state \
             out)",
        )),
    }
}

/// Refuses a plan whose `steps` change a store without a template for it.
pub fn check(plan: &Plan, steps: &[Step]) -> Result<()> {
    let DriverSpec::Command { templates, .. } = &plan.driver else {
        return check_driver(plan);
    };
    // The coordinator reads the PAC's stores through `store_state` alone: without it
    // they would be read from the PSOR.
    let mut missing: Vec<&str> = steps
        .iter()
        .filter_map(|s| template_of(&s.kind))
        .chain(["store_state"])
        .filter(|t| !templates.contains_key(*t))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    Err(missing_templates(&missing))
}

fn missing_templates(missing: &[&str]) -> Error {
    Error::invalid(
        "plan field driver.templates",
        format!("(missing {} with --state)", missing.join(", ")),
        "with --state the coordinator reads and writes nothing of the PSOR: the PAC's \
         stores are read through store_state and every store change of the rollout goes \
         through its template",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::steps::{steps, Process};
    use serde_json::json;

    fn plan(templates: serde_json::Value) -> Plan {
        let mut v = json!({
            "pac": "MyPAC", "target": {"version": "2.0.0"},
            "hosts": [{"name": "host1", "regions": ["REGION1"]}],
            "waves": [["host1"]],
            "driver": {"kind": "command", "templates": {
                "listener_off": "off {region}", "listener_on": "on {region}",
                "stop": "stop {region}", "apply_update": "update {host}",
                "start": "start {region}", "region_state": "state {region}",
            }},
        });
        for (k, t) in templates.as_object().unwrap() {
            v["driver"]["templates"][k] = t.clone();
        }
        Plan::parse(&v.to_string()).unwrap()
    }

    #[test]
    fn store_changes_need_their_templates() {
        let p = plan(json!({"set_mode_running": "run"}));
        let e = check(&p, &steps(&p, Process::Incompatible)).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::ExitCode::InvalidInput);
        assert!(
            e.to_string()
                .contains("(missing remove_old, set_mode_quiesce, store_state with --state)"),
            "{e}"
        );
        let full = plan(json!({
            "set_mode_running": "run", "set_mode_quiesce": "quiesce", "remove_old": "rm",
            "store_state": "stores",
        }));
        check(&full, &steps(&full, Process::Incompatible)).unwrap();
        let compatible = plan(json!({}));
        let e = check(&compatible, &steps(&compatible, Process::Compatible)).unwrap_err();
        assert!(
            e.to_string().contains("(missing store_state with --state)"),
            "{e}"
        );
    }

    #[test]
    fn the_agent_driver_keeps_its_state_in_the_psor() {
        let mut p = plan(json!({}));
        p.driver = DriverSpec::Agent;
        let e = check_driver(&p).unwrap_err();
        assert!(e.to_string().contains("driver.kind command"), "{e}");
    }
}
