//! A command-driver rollout through the production plan's own `stop` and `start`
//! templates.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::{Site, PAC, UP_TIMEOUT};
use crate::support::wait_until;

/// The production plan's `stop` and `start` templates, unchanged, drive a full
/// incompatible rollout of live pacup regions under load: an `ssh` stand-in on the
/// coordinator's PATH runs the remote command locally (and logs which host it was for),
/// and `casstop`/`casstart` reach each region through its host agent.
#[test]
fn production_stop_and_start_templates_run_a_rollout_through_casstop_and_casstart() {
    let mut site = Site::new();
    site.agent("host1", "1.0.0", &["REGION1", "REGION1B"], "cold");
    site.agent("host2", "1.0.0", &["REGION2"], "warm");
    wait_until(UP_TIMEOUT, "every region serving", || {
        ["REGION1", "REGION1B", "REGION2"].iter().all(|r| {
            let h = site.region(r);
            h["alive"] == "1" && h.get("listener").map(String::as_str) == Some("on")
        })
    });

    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/plans/enterprise-server.json"),
        )
        .expect("fixture"),
    )
    .expect("fixture JSON");
    let prod = &fixture["driver"]["templates"];
    let (stop, start) = (
        prod["stop"].as_str().unwrap(),
        prod["start"].as_str().unwrap(),
    );
    assert!(
        stop.contains("casstop") && start.contains("casstart"),
        "{prod}"
    );

    let shim_dir = site.dir.path().join("bin");
    std::fs::create_dir(&shim_dir).expect("mkdir");
    let ssh_log = site.dir.path().join("ssh.log");
    write_ssh_shim(&shim_dir.join("ssh"));
    let bins = Path::new(env!("CARGO_BIN_EXE_casstart"))
        .parent()
        .expect("dir");
    let path = format!(
        "{}:{}:{}",
        shim_dir.display(),
        bins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let plan = json!({
        "pac": PAC, "target": {"version": "2.0.0"},
        "hosts": [{"name": "host1", "regions": ["REGION1", "REGION1B"]},
                  {"name": "host2", "regions": ["REGION2"]}],
        "strategy": "auto", "waves": [["host1"], ["host2"]], "mode_flip": "after_first_wave",
        "drain_timeout": "5s", "stop_timeout": "20s",
        "health": {"min_healthy": "500ms", "deadline": "20s"},
        "progress_deadline": "1m", "on_failure": "pause", "hold_finalization": false,
        "driver": {"kind": "command", "timeout": "30s", "templates": {
            "listener_off": "pacup --psor {psor} region listener {region} off --pac {pac}",
            "listener_on": "pacup --psor {psor} region listener {region} on --pac {pac}",
            "stop": stop,
            "apply_update": "pacup --psor {psor} host update {host} --pac {pac} --product-version {version}",
            "start": start,
            "region_state": prod["region_state"],
            "check_compat": "PACUP_PRODUCT_VERSION={version} caspac -aCheckCompat={pac} -sredis,{psor_host}:{psor_port}",
            "set_mode_running": "caspac -aSetMode=Running -sredis,{psor_host}:{psor_port}",
            "set_mode_quiesce": "caspac -aSetMode=Quiesce -sredis,{psor_host}:{psor_port}",
            "remove_old": "caspac -aRemOldPAC={pac} -sredis,{psor_host}:{psor_port}",
        }},
    });
    let plan_path = site.dir.path().join("plan.json");
    std::fs::write(&plan_path, plan.to_string()).expect("write plan");

    let (jobs, clients) = site.start_load();
    let out = site
        .pacup()
        .env("PATH", &path)
        .env("PACUP_PSOR", site.url())
        .env("SSH_LOG", &ssh_log)
        .args(["rollout", "run", plan_path.to_str().unwrap(), "--json"])
        .timeout(Duration::from_secs(120))
        .run();
    out.success();
    let evs: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect();
    let detail = |action: &str, region: &str| -> String {
        evs.iter()
            .rev()
            .find(|e| e["action"] == action && e["region"] == region && e["status"] == "done")
            .and_then(|e| e["detail"].as_str())
            .unwrap_or_else(|| panic!("no done {action} of {region}: {evs:#?}"))
            .to_string()
    };
    let render = |tpl: &str, host: &str, region: &str, letter: &str| {
        tpl.replace("{host}", host)
            .replace("{region}", region)
            .replace("{start_letter}", letter)
            // The incompatible process: not the compatible one's start.
            .replace("{min_comp_check}", "NO")
    };
    let mut want_log = Vec::new();
    for (host, region, letter, action) in [
        ("host1", "REGION1", "u", "start_upgrade"),
        ("host1", "REGION1B", "w", "start_warm"),
        ("host2", "REGION2", "w", "start_warm"),
    ] {
        let d = detail("stop", region);
        assert!(
            d.contains(&format!("`{}` exit 0", render(stop, host, region, ""))),
            "{d}"
        );
        assert!(d.contains(&format!("region {region} stopped")), "{d}");
        let d = detail(action, region);
        assert!(
            d.contains(&format!("`{}` exit 0", render(start, host, region, letter))),
            "{d}"
        );
        assert!(
            d.contains(&format!("region {region} started in store 2.0.0")),
            "{d}"
        );
        want_log.push(format!("{host} {region} stop"));
        want_log.push(format!("{host} {region} start"));
    }
    // Each region's stop and start went to its own host.
    let log = std::fs::read_to_string(&ssh_log).expect("ssh log");
    let mut seen: Vec<String> = log
        .lines()
        .filter_map(|l| {
            let host = l.split(' ').next()?;
            let what = if l.contains("casstop") {
                "stop"
            } else if l.contains("casstart") {
                "start"
            } else {
                return None;
            };
            let region = ["REGION1B", "REGION1", "REGION2"]
                .into_iter()
                .find(|r| l.contains(r))?;
            Some(format!("{host} {region} {what}"))
        })
        .collect();
    seen.sort();
    want_log.sort();
    assert_eq!(seen, want_log, "{log}");

    // Every region at 2.0.0, the old store gone, the load intact.
    site.assert_upgraded_with_nothing_lost(jobs, clients);
}

/// `ssh HOST COMMAND...` that runs COMMAND here, after logging `HOST COMMAND` to
/// `$SSH_LOG`: the templates stay exactly as production has them.
fn write_ssh_shim(path: &PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(
        path,
        "#!/bin/sh\nhost=$1\nshift\necho \"$host $*\" >> \"$SSH_LOG\"\nexec sh -c \"$*\"\n",
    )
    .expect("write ssh shim");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A vendor's PSOR holds no pacup record: preflight of a command plan with
/// `store_state` takes the PAC's stores from that template alone, so `rollout plan`
/// against an empty Redis passes (the running store and the process are the template's
/// answer) and reports the template's stores when they are wrong, or its failure
/// beside the region probes' problems; without
/// `store_state` the coordinator looks for pacup's records and finds no PAC. Nothing is
/// written either way.
#[test]
fn preflight_of_a_command_plan_reads_the_stores_through_store_state() {
    let site = Site::new();
    let mut plan = json!({
        "pac": PAC, "target": {"version": "2.0.0"},
        "hosts": [{"name": "host1", "regions": ["REGION1"]},
                  {"name": "host2", "regions": ["REGION2"]}],
        "waves": [["host1"], ["host2"]],
        "driver": {"kind": "command", "templates": {
            "listener_off": "true", "listener_on": "true", "stop": "true",
            "apply_update": "true", "start": "true", "region_state": "echo running",
            "store_state": "echo 1.0.0 running",
        }},
    });
    let write = |plan: &Value| {
        let p = site.dir.path().join("plan.json");
        std::fs::write(&p, plan.to_string()).expect("write plan");
        p.display().to_string()
    };
    let out = site
        .pacup()
        .args(["rollout", "plan", &write(&plan), "--json"])
        .run();
    out.success();
    let pv = out.json();
    assert_eq!(pv["from_version"], "1.0.0", "{pv}");
    assert_eq!(pv["problems"], json!([]), "{pv}");

    plan["driver"]["templates"]["store_state"] = json!("printf '1.0.0 running\\n1.5.0 running\\n'");
    let out = site.pacup().args(["rollout", "plan", &write(&plan)]).run();
    out.code(1);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("exactly one running store, it has 2 (1.0.0 running, 1.5.0 running)"),
        "{text}"
    );

    // A failing `store_state` is one preflight problem among the probes'.
    plan["driver"]["templates"]["store_state"] = json!("echo no route to psor >&2; exit 3");
    plan["driver"]["templates"]["region_state"] = json!("echo stopped");
    let out = site.pacup().args(["rollout", "plan", &write(&plan)]).run();
    out.code(1);
    let text = format!("{}{}", out.stdout, out.stderr);
    for want in [
        "the PSOR as the templates reach it: store_state failed",
        "no route to psor",
        "region REGION2 on host2: region_state says stopped, not running",
    ] {
        assert!(text.contains(want), "no {want:?} in {text}");
    }
    assert!(!text.contains("exactly one running store"), "{text}");

    plan["driver"]["templates"]
        .as_object_mut()
        .unwrap()
        .remove("store_state");
    let out = site.pacup().args(["rollout", "plan", &write(&plan)]).run();
    out.code(1);
    out.stderr_contains("PAC MyPAC does not exist in the PSOR");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut site.server.conn())
        .expect("KEYS");
    assert!(keys.is_empty(), "preflight wrote {keys:?}");
}
