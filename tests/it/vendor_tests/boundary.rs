//! A command-driver rollout across a real boundary: the regions are reached only through
//! the templates (the vendor-syntax tools, `casstate` as `region_state`, `pacup pac
//! status` as `store_state`). With two Redis servers, the site's PSOR where the stand-in
//! regions live and the coordinator's own (`--state`, see `apart.rs`), the full upgrade
//! under load, a failing probe and an amended resume leave nothing of the coordinator's
//! in the PSOR; with its state in the PSOR, `MONITOR` shows that the coordinator reads no
//! region or host record.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::apart::Boundary;
use super::{key, Site, PAC, UP_TIMEOUT};
use crate::support::monitor::Monitor;
use crate::support::{wait_until, Output};

const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(120);

/// PATH with the built binaries (`pacup`, `caspac`, `casstart`, `casstop`, `casstate`)
/// first.
fn path_with_bins() -> String {
    let bins = Path::new(env!("CARGO_BIN_EXE_casstate"))
        .parent()
        .expect("dir");
    format!(
        "{}:{}",
        bins.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// An incompatible two-wave plan to 2.0.0 whose every region action is a vendor-syntax
/// template, with the monitoring hold writing to `$MON_LOG`.
pub(super) fn plan(progress_deadline: &str, region_state: &str) -> Value {
    json!({
        "pac": PAC, "target": {"version": "2.0.0"},
        "hosts": [{"name": "host1", "regions": ["REGION1", "REGION1B"]},
                  {"name": "host2", "regions": ["REGION2"]}],
        "strategy": "incompatible", "waves": [["host1"], ["host2"]],
        "mode_flip": "after_first_wave",
        "drain_timeout": "5s", "stop_timeout": "20s",
        "health": {"min_healthy": "500ms", "deadline": "20s"},
        "progress_deadline": progress_deadline, "on_failure": "pause",
        "driver": {"kind": "command", "timeout": "30s", "templates": {
            "listener_off": "pacup --psor {psor} region listener {region} off --pac {pac}",
            "listener_on": "pacup --psor {psor} region listener {region} on --pac {pac}",
            "stop": "casstop -r{region}",
            "apply_update": "pacup --psor {psor} host update {host} --pac {pac} --product-version {version}",
            "start": "ES_PAC_MIN_COMP_CHECK={min_comp_check} casstart /r{region} /s:{start_letter}",
            "region_state": region_state,
            "check_compat": "PACUP_PRODUCT_VERSION={version} caspac -aCheckCompat={pac} -sredis,{psor_host}:{psor_port}",
            "set_mode_running": "caspac -aSetMode=Running -sredis,{psor_host}:{psor_port}",
            "set_mode_quiesce": "caspac -aSetMode=Quiesce -sredis,{psor_host}:{psor_port}",
            "remove_old": "caspac -aRemOldPAC={pac} -sredis,{psor_host}:{psor_port}",
            "store_state": "pacup --psor {psor} --json pac status {pac}",
            "host_check": "test -w \"${TMPDIR:-/tmp}\" && echo {host} ok",
            "backup": "pacup --psor {psor} pac backup {pac} --out \"$BACKUP_DIR/{pac}-$(date +%s%N).json\"",
        }},
        "monitor": {
            "suspend": "echo suspend {pac} >> \"$MON_LOG\"",
            "resume": "echo resume {pac} >> \"$MON_LOG\"",
        },
    })
}

pub(super) fn site() -> Site {
    let mut site = Site::new();
    site.agent("host1", "1.0.0", &["REGION1", "REGION1B"], "cold");
    site.agent("host2", "1.0.0", &["REGION2"], "warm");
    wait_until(UP_TIMEOUT, "every region serving", || {
        ["REGION1", "REGION1B", "REGION2"].iter().all(|r| {
            let h = site.region(r);
            h["alive"] == "1" && h.get("listener").map(String::as_str) == Some("on")
        })
    });
    site
}

/// `pacup rollout ...` with the templates' tools on PATH and their environment.
pub(super) fn rollout_cmd(site: &Site, args: &[&str]) -> crate::support::Cmd {
    rollout_cmd_on(&site.url(), site, args)
}

/// [`rollout_cmd`] with the coordinator given `psor` (the tools' PSOR stays the site's).
pub(super) fn rollout_cmd_on(psor: &str, site: &Site, args: &[&str]) -> crate::support::Cmd {
    crate::support::pacup()
        .args(["--psor", psor])
        .env("PATH", path_with_bins())
        .env("PACUP_PSOR", site.url())
        .env("ES_PAC", PAC)
        .env("MON_LOG", site.dir.path().join("monitor.log"))
        .env("BACKUP_DIR", site.dir.path())
        .arg("rollout")
        .args(args)
        .timeout(ROLLOUT_TIMEOUT)
}

/// `pacup rollout ...` keeping the coordinator's state in the PSOR.
fn rollout(site: &Site, args: &[&str]) -> Output {
    rollout_cmd(site, args).run()
}

pub(super) fn events(out: &Output) -> Vec<Value> {
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect()
}

pub(super) fn write_plan(site: &Site, name: &str, plan: &Value) -> String {
    let p = site.dir.path().join(name);
    std::fs::write(&p, plan.to_string()).expect("write plan");
    p.display().to_string()
}

/// The whole incompatible upgrade under job and client load, driven only through the
/// templates, with the coordinator's state in its own Redis: nothing lost, every region
/// at 2.0.0, the old store gone, the backups, host checks and monitoring hold where they
/// belong, and nothing of the coordinator's in the PSOR.
#[test]
fn command_rollout_keeps_its_state_out_of_the_psor() {
    let b = Boundary::new();
    let site = &b.site;
    let epoch = b.psor_epoch();
    let plan_path = write_plan(site, "plan.json", &plan("1m", "casstate /r{region} /j"));
    let (jobs, clients) = site.start_load();
    let out = b.rollout(&["run", &plan_path, "--json"]);
    out.success();
    let evs = events(&out);
    b.assert_apart(&epoch);
    // The state Redis is where status and history look.
    let st = b.json_of(&["rollout", "status", PAC]);
    assert_eq!(st["state"], "done", "{st}");
    let h = b.json_of(&["rollout", "history", PAC]);
    assert_eq!(h["rollouts"][0]["result"], "done", "{h}");
    // `pacup events` with the state reads the rollout's events, one per journaled event.
    let e = b.json_of(&["events", PAC]);
    let logged = e["events"].as_array().expect("events");
    assert_eq!(logged.len(), evs.len(), "{e}");
    assert!(
        logged.iter().all(|x| x["rollout"] == evs[0]["rollout"]),
        "{e}"
    );
    assert_eq!(
        rollout(site, &["history", PAC, "--json"]).json()["rollouts"],
        json!([]),
        "a history in the PSOR"
    );
    let host_check = evs
        .iter()
        .position(|e| e["action"] == "host_check" && e["status"] == "done")
        .unwrap_or_else(|| panic!("no host_check: {evs:#?}"));
    assert_eq!(evs[host_check]["detail"], "host checks passed on host2");
    let wave2 = evs
        .iter()
        .position(|e| e["action"] == "listener_off" && e["region"] == "REGION2")
        .expect("wave 2");
    assert!(host_check < wave2, "{evs:#?}");

    // Preflight probed, the probes drove the steps, the hold wrapped them.
    let pre = evs
        .iter()
        .find(|e| e["action"] == "preflight")
        .expect("preflight");
    assert_eq!(pre["status"], "done", "{pre}");
    let first_step = evs
        .iter()
        .position(|e| e["action"] == "listener_off")
        .expect("a listener_off");
    let suspend = evs
        .iter()
        .position(|e| e["action"] == "monitor_suspend")
        .expect("a monitor_suspend event");
    assert!(suspend < first_step, "{evs:#?}");
    assert_eq!(evs[suspend]["status"], "done", "{}", evs[suspend]);
    let n = evs.len();
    assert_eq!(
        (&evs[n - 2]["action"], &evs[n - 2]["status"]),
        (&json!("monitor_resume"), &json!("done")),
        "{evs:#?}"
    );
    assert_eq!(evs[n - 1]["action"], "done", "{evs:#?}");
    let log = std::fs::read_to_string(site.dir.path().join("monitor.log")).expect("hold log");
    assert_eq!(log, format!("suspend {PAC}\nresume {PAC}\n"));
    // The backup template ran before the upgrade start and before remove_old, its
    // output (naming the file) in the events.
    let backups: Vec<&Value> = evs
        .iter()
        .filter(|e| e["action"] == "backup" && e["status"] == "done")
        .collect();
    assert_eq!(backups.len(), 2, "{evs:#?}");
    let saved = format!("keys saved to {}/{PAC}-", site.dir.path().display());
    for bk in &backups {
        assert!(bk["detail"].as_str().unwrap().contains(&saved), "{bk}");
    }
    let gate = evs
        .iter()
        .find(|e| e["action"] == "health_gate" && e["status"] == "done")
        .expect("a passed gate");
    assert!(
        gate["detail"].as_str().unwrap().contains("(region_state)"),
        "{gate}"
    );
    let verify = evs
        .iter()
        .find(|e| e["action"] == "verify" && e["status"] == "done")
        .expect("verify");
    assert!(
        verify["detail"]
            .as_str()
            .unwrap()
            .contains("store 2.0.0 running (store_state)"),
        "{verify}"
    );
    let start = evs
        .iter()
        .find(|e| e["action"] == "start_upgrade" && e["status"] == "done")
        .expect("start_upgrade");
    assert!(
        start["detail"]
            .as_str()
            .unwrap()
            .contains("ES_PAC_MIN_COMP_CHECK=NO casstart /rREGION1 /s:u` exit 0"),
        "{start}"
    );

    site.assert_upgraded_with_nothing_lost(jobs, clients);
}

/// With the state in the PSOR (the default), the coordinator itself still never reads a
/// region or host record, shown by `MONITOR`: the connections that read the operator's
/// requests from the rollout's journal (the coordinator's) issue no command on a
/// `region:` or `host:` key.
#[test]
fn command_rollout_reads_regions_only_through_its_templates() {
    let site = site();
    let plan_path = write_plan(&site, "plan.json", &plan("1m", "casstate /r{region} /j"));
    let mon = Monitor::start(&site.server);
    let out = rollout(&site, &["run", &plan_path, "--json"]);
    let seen = mon.stop();
    out.success();
    // The coordinator's connections are the ones that read the operator's requests
    // from the rollout's journal before each group of steps (`HMGET`; a child such as
    // `pac backup` may read the whole journal, never so).
    let journal = key("rollout:current");
    let coordinator: HashSet<&str> = seen
        .iter()
        .filter(|c| c.source != "lua" && c.name() == "HMGET" && c.arg(1) == journal)
        .map(|c| c.source.as_str())
        .collect();
    assert!(!coordinator.is_empty(), "no coordinator connection seen");
    let records = [key("region:"), key("host:"), key("regions"), key("hosts")];
    let read: Vec<String> = seen
        .iter()
        .filter(|c| coordinator.contains(c.source.as_str()))
        .filter(|c| {
            c.args.iter().skip(1).any(|a| {
                let a = String::from_utf8_lossy(a);
                records.iter().any(|r| a.starts_with(r.as_str()))
            })
        })
        .map(|c| c.line())
        .collect();
    assert!(
        read.is_empty(),
        "the coordinator read region or host records: {read:#?}"
    );
}

/// A plan whose `region_state` of REGION2 fails (exit 9) once host1 was updated, until
/// the file `probe-broken` in the site's directory is removed.
pub(super) fn probe_breaking_after_host1(site: &Site) -> Value {
    let broken = site.dir.path().join("probe-broken");
    let probe = format!(
        "if [ {{region}} = REGION2 ] && [ -e {} ]; then echo probe cannot reach host2 >&2; \
         exit 9; fi; casstate /r{{region}} /j",
        broken.display()
    );
    let mut p = plan("10s", &probe);
    p["driver"]["templates"]["apply_update"] = json!(format!(
        "pacup --psor {{psor}} host update {{host}} --pac {{pac}} --product-version {{version}} \
         && if [ {{host}} = host1 ]; then touch {}; fi",
        broken.display()
    ));
    p
}

/// A region whose probe starts failing mid-rollout (the `region_state` template of
/// REGION2 fails once host1 was updated) pauses the rollout at that region's first step,
/// naming it and the probe's output, with REGION2 untouched; once the probe works again
/// `rollout resume` completes the upgrade.
#[test]
fn a_failing_region_probe_pauses_the_rollout_and_resume_completes_it() {
    let b = Boundary::new();
    let site = &b.site;
    let epoch = b.psor_epoch();
    let broken = site.dir.path().join("probe-broken");
    let plan_path = write_plan(site, "plan.json", &probe_breaking_after_host1(site));
    let out = b.rollout(&["run", &plan_path, "--json"]);
    out.code(6);
    let evs = events(&out);
    let failed = evs
        .iter()
        .find(|e| e["status"] == "failed")
        .unwrap_or_else(|| panic!("no failed step: {evs:#?}"));
    assert_eq!(
        (&failed["action"], &failed["region"]),
        (&json!("listener_off"), &json!("REGION2")),
        "{failed}"
    );
    let d = failed["detail"].as_str().unwrap();
    assert!(
        d.contains("region_state of REGION2 on host2 failed") && d.contains("exit 9"),
        "{d}"
    );
    assert!(d.contains("probe cannot reach host2"), "{d}");
    // Paused, monitoring resumed, REGION2 never touched.
    let n = evs.len();
    assert_eq!(evs[n - 2]["action"], "monitor_resume", "{evs:#?}");
    assert_eq!(evs[n - 1]["action"], "pause", "{evs:#?}");
    assert_eq!(site.field("REGION2", "store"), "1.0.0");
    assert_eq!(site.state("REGION2")["listener"], "on");

    std::fs::remove_file(&broken).expect("fix the probe");
    let out = b.rollout(&["resume", PAC, "--json"]);
    out.success();
    for r in ["REGION1", "REGION1B", "REGION2"] {
        assert_eq!(site.field(r, "store"), "2.0.0", "{r}");
    }
    let log = std::fs::read_to_string(site.dir.path().join("monitor.log")).expect("hold log");
    assert_eq!(
        log,
        format!("suspend {PAC}\nresume {PAC}\nsuspend {PAC}\nresume {PAC}\n")
    );
    b.assert_apart(&epoch);
}

/// Preflight runs every read-only template before anything stops: a `host_check` that
/// fails and a probe that fails are both reported (exit 1), naming host and region, and
/// nothing is written.
#[test]
fn preflight_runs_every_probe_before_any_region_stops() {
    let b = Boundary::new();
    let site = &b.site;
    let mut p = plan(
        "1m",
        "if [ {region} = REGION1B ]; then echo ssh: connect to host host1: refused >&2; \
         exit 255; fi; casstate /r{region} /j",
    );
    p["driver"]["templates"]["host_check"] =
        json!("if [ {host} = host2 ]; then echo /var/tmp: 10 MiB free, 500 MiB needed; exit 1; fi");
    let plan_path = write_plan(site, "plan.json", &p);
    let out = b.rollout(&["run", &plan_path]);
    out.code(1);
    out.stderr_contains("preflight failed");
    out.stderr_contains("region REGION1B on host1: region_state of REGION1B on host1 failed");
    out.stderr_contains("ssh: connect to host host1: refused");
    out.stderr_contains("host host2: host_check failed");
    out.stderr_contains("10 MiB free, 500 MiB needed");
    let state = Boundary::keys_of(&b.state);
    assert!(state.is_empty(), "a refused rollout wrote {state:?}");
    assert!(!site.exists(&key("rollout:current")));
    assert!(!site.dir.path().join("monitor.log").exists());
    for r in ["REGION1", "REGION1B", "REGION2"] {
        assert_eq!(site.state(r)["state"], "running", "{r}");
    }
}

/// Bad command plans are refused with exit 2, naming the field, before anything is
/// written: no `region_state`, a placeholder the action has no value for.
#[test]
fn command_plans_without_region_state_or_with_a_foreign_placeholder_are_exit_2() {
    let site = site();
    let mut no_probe = plan("1m", "casstate /r{region} /j");
    no_probe["driver"]["templates"]
        .as_object_mut()
        .unwrap()
        .remove("region_state");
    let mut foreign = plan("1m", "casstate /r{region} /j");
    foreign["driver"]["templates"]["stop"] = json!("casstop -r{region} # {version}");
    let mut monitor = plan("1m", "casstate /r{region} /j");
    monitor["monitor"]["resume"] = json!("resume {region}");
    for (name, p, want) in [
        (
            "no-probe.json",
            no_probe,
            "driver.templates \"(missing region_state)\"",
        ),
        (
            "foreign.json",
            foreign,
            "driver.templates.stop \"{version}\": a placeholder stop has a value for",
        ),
        ("monitor.json", monitor, "monitor.resume \"{region}\""),
    ] {
        let path = write_plan(&site, name, &p);
        for cmd in ["plan", "run"] {
            let out = rollout(&site, &[cmd, &path]);
            out.code(2);
            out.stderr_contains(want);
        }
    }
    assert!(!site.exists(&key("rollout:current")));
}

/// `rollout plan --show-commands` renders every command of every step (placeholders
/// filled, bound shown) and the plan's settings, as text and as JSON, and writes nothing.
#[test]
fn plan_show_commands_renders_every_template_of_every_step() {
    let site = site();
    let plan_path = write_plan(&site, "plan.json", &plan("1m", "casstate /r{region} /j"));
    let out = rollout(&site, &["plan", &plan_path, "--show-commands"]);
    out.success();
    let text = &out.stdout;
    for want in [
        "settings: strategy incompatible, process incompatible, waves [host1] [host2], \
         mode_flip after_first_wave, on_failure pause, hold_finalization false",
        "timeouts: drain 5s, stop 20s, health min_healthy 500ms within 20s, progress 1m, \
         driver command (each command within 30s)",
        "$ casstate /rREGION2 /j    [region_state, 30s]",
        "$ test -w \"${TMPDIR:-/tmp}\" && echo host2 ok    [host_check, 30s]",
        "$ echo suspend MyPAC >> \"$MON_LOG\"    [monitor.suspend, 60s]",
        "$ casstop -rREGION1B    [stop, 30s]",
        "$ ES_PAC_MIN_COMP_CHECK=NO casstart /rREGION1 /s:u    [start, 30s]",
        "$ ES_PAC_MIN_COMP_CHECK=NO casstart /rREGION2 /s:w    [start, 30s]",
    ] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
    let port = site.server.port();
    assert!(
        text.contains(&format!("-sredis,127.0.0.1:{port}    [remove_old, 30s]")),
        "{text}"
    );
    // Each step's commands follow its line: the probe, then the action.
    let stop = text
        .lines()
        .position(|l| l.ends_with("stop REGION1 on host1"))
        .expect("stop step");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[stop + 1].contains("casstate /rREGION1 /j"), "{text}");
    assert!(lines[stop + 2].contains("casstop -rREGION1 "), "{text}");

    let out = rollout(&site, &["plan", &plan_path, "--show-commands", "--json"]);
    out.success();
    let j = out.json();
    let c = &j["commands"];
    assert_eq!(c["settings"]["driver_timeout"], "30s", "{c}");
    assert_eq!(c["settings"]["process"], "incompatible", "{c}");
    let steps = c["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), j["steps"].as_array().unwrap().len());
    let check = steps
        .iter()
        .find(|s| s["action"] == "check_compat")
        .expect("check_compat");
    assert_eq!(check["commands"][0]["template"], "check_compat", "{check}");
    assert!(
        check["commands"][0]["command"]
            .as_str()
            .unwrap()
            .starts_with("PACUP_PRODUCT_VERSION=2.0.0 caspac -aCheckCompat=MyPAC"),
        "{check}"
    );
    assert_eq!(
        c["monitor_resume"]["command"],
        "echo resume MyPAC >> \"$MON_LOG\""
    );
    assert!(!site.exists(&key("rollout:current")));
}

/// A wrong template pauses the rollout; `rollout resume --plan` with anything but
/// templates, timeouts and health changed is refused (exit 2, the fields named, nothing
/// written); with the template corrected it continues to the end, the change recorded
/// as an `amend` event and in the history.
#[test]
fn resume_with_an_amended_plan_fixes_a_wrong_template_and_refuses_other_changes() {
    let b = Boundary::new();
    let site = &b.site;
    let mut good = plan("1m", "casstate /r{region} /j");
    good["monitor"]["keep_suspended_on_pause"] = json!(true);
    let mut wrong = good.clone();
    wrong["driver"]["templates"]["apply_update"] =
        json!("pacup --psor {psor} host update {host} --pac {pac} --product-versoin {version}");
    let wrong_path = write_plan(site, "wrong.json", &wrong);
    b.rollout(&["run", &wrong_path]).code(6);
    // Paused with monitoring kept suspended, as the plan asks.
    let hold = || std::fs::read_to_string(site.dir.path().join("monitor.log")).unwrap();
    assert_eq!(hold(), format!("suspend {PAC}\n"));

    let before = b.journal();
    let mut other = good.clone();
    other["target"]["version"] = json!("3.0.0");
    other["waves"] = json!([["host2"], ["host1"]]);
    let other_path = write_plan(site, "other.json", &other);
    let out = b.rollout(&["resume", PAC, "--plan", &other_path]);
    out.code(2);
    out.stderr_contains("invalid --plan \"(changes target.version, waves)\"");
    assert_eq!(
        b.journal(),
        before,
        "a refused amendment wrote to the journal"
    );
    assert!(!b.state_has("lock"), "a refused amendment took the lease");

    let good_path = write_plan(site, "good.json", &good);
    let out = b.rollout(&["resume", PAC, "--plan", &good_path, "--json"]);
    out.success();
    let evs = events(&out);
    let amend = evs
        .iter()
        .find(|e| e["action"] == "amend")
        .unwrap_or_else(|| panic!("no amend event: {evs:#?}"));
    assert_eq!(
        (&amend["status"], &amend["detail"]),
        (
            &json!("done"),
            &json!("plan amended: driver.templates.apply_update")
        ),
        "{amend}"
    );
    for r in ["REGION1", "REGION1B", "REGION2"] {
        assert_eq!(site.field(r, "store"), "2.0.0", "{r}");
    }
    assert_eq!(
        hold(),
        format!("suspend {PAC}\nsuspend {PAC}\nresume {PAC}\n")
    );
    let h = b.json_of(&["rollout", "history", PAC]);
    let entry = &h["rollouts"][0];
    assert_eq!(entry["result"], "done", "{entry}");
    assert_eq!(
        entry["amendments"][0]["fields"],
        json!(["driver.templates.apply_update"]),
        "{entry}"
    );
    assert_eq!(
        entry["plan"]["driver"]["templates"]["apply_update"],
        good["driver"]["templates"]["apply_update"]
    );
}

/// Host checks with the agent driver: each agent measures its `--check-path` and its
/// temp directory and publishes them in its host record; preflight refuses a host short
/// of space (naming host, path and numbers; nothing written), and a plan within the
/// bound runs with a `host_check` step before the second wave.
#[test]
fn agent_host_checks_refuse_a_full_host_at_preflight_and_run_before_later_waves() {
    let mut site = Site::new();
    let data = site.dir.path().display().to_string();
    let extra = ["--check-path", data.as_str()];
    site.agent_with("host1", "1.0.0", &["REGION1", "REGION1B"], "cold", &extra);
    site.agent_with("host2", "1.0.0", &["REGION2"], "warm", &extra);
    wait_until(UP_TIMEOUT, "every region serving", || {
        ["REGION1", "REGION1B", "REGION2"].iter().all(|r| {
            let h = site.region(r);
            h["alive"] == "1" && h.get("listener").map(String::as_str) == Some("on")
        })
    });
    let mut p = json!({
        "pac": PAC, "target": {"version": "2.0.0"},
        "hosts": [{"name": "host1", "regions": ["REGION1", "REGION1B"]},
                  {"name": "host2", "regions": ["REGION2"]}],
        "waves": [["host1"], ["host2"]],
        "drain_timeout": "3s", "stop_timeout": "10s",
        "health": {"min_healthy": "500ms", "deadline": "20s"},
        "host_checks": {"paths": [data], "min_free": "1000000TiB"},
    });
    let full = write_plan(&site, "full.json", &p);
    let out = rollout(&site, &["run", &full]);
    out.code(1);
    for h in ["host1", "host2"] {
        out.stderr_contains(&format!("host {h}: {data} has "));
    }
    out.stderr_contains("needed (host_checks.min_free)");
    assert!(!site.exists(&key("rollout:current")));

    p["host_checks"]["min_free"] = json!("1MiB");
    let ok = write_plan(&site, "ok.json", &p);
    let out = rollout(&site, &["run", &ok, "--json"]);
    out.success();
    let evs = events(&out);
    let check = evs
        .iter()
        .position(|e| e["action"] == "host_check" && e["status"] == "done")
        .unwrap_or_else(|| panic!("no host_check: {evs:#?}"));
    assert_eq!(evs[check]["detail"], "host checks passed on host2");
    let wave2 = evs
        .iter()
        .position(|e| e["action"] == "listener_off" && e["region"] == "REGION2")
        .expect("wave 2");
    assert!(check < wave2, "{evs:#?}");
}
