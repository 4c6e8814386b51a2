//! The command driver end to end (`"driver": {"kind": "command", ...}`).
//!
//! A live two-host PAC (one `pacup agent` per host on a private Redis) is upgraded
//! 1.0.0 -> 2.0.0 by `pacup rollout run` whose shell templates call the project's own
//! binaries in place of the vendor's (`pacup region ...` for casstart/casstop and the
//! listener, `pacup host update` for the installer, `caspac` for the PSOR actions). The
//! templates run under `sh -c` in the coordinator's environment, so the coordinator gets
//! the directory of the built binaries first on its PATH.
//!
//! Every test has its own Redis and agents; every wait is bounded.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::pac::{self, key, ALL_REGIONS, HOST1_REGIONS, PAC};
use crate::support::rollout::EVENT_FIELDS;
use crate::support::{pacup, wait_for, wait_until, Cmd, Output, RedisServer};
/// Bound on one rollout command (they take a few seconds).
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on agents and regions coming up.
const UP_TIMEOUT: Duration = Duration::from_secs(30);

/// Steps whose action is carried out by a template (the others only observe the PSOR).
const TEMPLATE_ACTIONS: [&str; 10] = [
    "listener_off",
    "listener_on",
    "stop",
    "apply_update",
    "start_upgrade",
    "start_warm",
    "check_compat",
    "set_mode_running",
    "set_mode_quiesce",
    "remove_old",
];

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_pacup"))
        .parent()
        .expect("the pacup binary has a directory")
        .to_path_buf()
}

/// PATH with the built `pacup` and `caspac` first, for the coordinator's templates.
fn path_with_bins() -> String {
    let dir = bin_dir();
    assert!(
        dir.join("caspac").exists(),
        "caspac is not next to pacup in {}",
        dir.display()
    );
    let old = std::env::var("PATH").unwrap_or_default();
    format!("{}:{old}", dir.display())
}

/// The templates of the brief: the project's binaries in place of the vendor's.
fn templates() -> Value {
    json!({
        "listener_off": "pacup --psor {psor} region listener {region} off --pac {pac}",
        "listener_on": "pacup --psor {psor} region listener {region} on --pac {pac}",
        "stop": "pacup --psor {psor} region stop {region} --pac {pac} --timeout 20s",
        "apply_update": "pacup --psor {psor} host update {host} --pac {pac} --product-version {version}",
        "start": "pacup --psor {psor} region start {region} --pac {pac} --start-type {start_type}",
        "region_state": "PACUP_PSOR={psor} ES_PAC={pac} casstate /r{region} /j",
        "check_compat": "PACUP_PRODUCT_VERSION={version} caspac -aCheckCompat={pac} -sredis,{psor_host}:{psor_port}",
        "set_mode_running": "caspac -aSetMode=Running -sredis,{psor_host}:{psor_port}",
        "set_mode_quiesce": "caspac -aSetMode=Quiesce -sredis,{psor_host}:{psor_port}",
        "remove_old": "caspac -aRemOldPAC={pac} -sredis,{psor_host}:{psor_port}",
    })
}

/// A two-host incompatible plan to 2.0.0 driven by [`templates`], with short gates.
fn base_plan(on_failure: &str) -> Value {
    json!({
        "pac": PAC,
        "target": {"version": "2.0.0"},
        "hosts": [{"name": "host1", "regions": HOST1_REGIONS},
                  {"name": "host2", "regions": ["REGION2"]}],
        "strategy": "auto",
        "waves": [["host1"], ["host2"]],
        "mode_flip": "after_first_wave",
        "drain_timeout": "5s",
        "stop_timeout": "20s",
        "health": {"min_healthy": "500ms", "deadline": "20s"},
        "progress_deadline": "1m",
        "on_failure": on_failure,
        "hold_finalization": false,
        "driver": {"kind": "command", "timeout": "30s", "templates": templates()},
    })
}

fn set_template(plan: &mut Value, name: &str, tpl: &str) {
    plan["driver"]["templates"][name] = json!(tpl);
}

/// The shared live PAC (MyPAC at 1.0.0: host1 runs REGION1 and REGION1B, host2 runs
/// REGION2, each through a `pacup agent`), with the command driver's own ways to run
/// `pacup`: the built binaries first on PATH, for the coordinator's templates.
struct LivePac(pac::LivePac);

impl std::ops::Deref for LivePac {
    type Target = pac::LivePac;
    fn deref(&self) -> &pac::LivePac {
        &self.0
    }
}

impl LivePac {
    fn start() -> LivePac {
        LivePac(pac::LivePac::start())
    }

    /// Region record fields, plus `alive` ("1" while its heartbeat key exists).
    fn region(&self, r: &str) -> HashMap<String, String> {
        let mut conn = self.conn();
        let mut h: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(key(&format!("region:{r}")))
            .query(&mut conn)
            .unwrap_or_default();
        let alive = self.region_alive(r);
        h.insert("alive".into(), if alive { "1" } else { "0" }.into());
        h
    }

    /// `pacup --psor URL ...` with the built binaries first on PATH.
    fn pacup(&self) -> Cmd {
        pacup()
            .env("PATH", path_with_bins())
            .args(["--psor", &self.url()])
    }

    fn write_plan(&self, name: &str, plan: &Value) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, serde_json::to_string_pretty(plan).expect("plan JSON"))
            .expect("write plan");
        p
    }

    fn rollout(&self, args: &[&str]) -> Output {
        self.pacup()
            .arg("rollout")
            .args(args)
            .timeout(ROLLOUT_TIMEOUT)
            .run()
    }

    fn run_plan(&self, plan: &Value) -> Output {
        let p = self.write_plan("plan.json", plan);
        self.rollout(&["run", p.to_str().expect("utf-8 path"), "--json"])
    }

    fn json_of(&self, args: &[&str]) -> Value {
        let out = self.pacup().args(args).arg("--json").run();
        out.success();
        out.json()
    }

    fn status(&self) -> Value {
        self.json_of(&["rollout", "status", PAC])
    }

    fn jobs_stats(&self) -> Value {
        self.json_of(&["jobs", "stats", PAC])
    }

    /// Waits until every submitted job has completed; returns the final stats.
    #[track_caller]
    fn wait_jobs_done(&self) -> Value {
        wait_for(
            Duration::from_secs(30),
            "every submitted job to complete",
            || {
                let s = self.jobs_stats();
                (s["pending"] == 0).then_some(s)
            },
        )
    }

    /// Asserts every plan region is live, serving, at `version` in store `version`, and
    /// `version` is the only store, running.
    #[track_caller]
    fn assert_all_at(&self, version: &str) {
        let st = self.json_of(&["pac", "status", PAC]);
        for r in ALL_REGIONS {
            let ri = st["regions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|x| x["name"] == r)
                .unwrap_or_else(|| panic!("no region {r} in {st}"));
            assert_eq!(ri["alive"], true, "{r}: {ri}");
            assert_eq!(ri["state"], "active", "{r}: {ri}");
            assert_eq!(ri["product_version"], version, "{r}: {ri}");
            assert_eq!(ri["store"], version, "{r}: {ri}");
            assert_eq!(ri["listener"], "on", "{r}: {ri}");
        }
        let stores: Vec<(String, String)> = st["stores"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                (
                    s["version"].as_str().unwrap_or("?").to_string(),
                    s["mode"].as_str().unwrap_or("?").to_string(),
                )
            })
            .collect();
        assert_eq!(
            stores,
            vec![(version.to_string(), "running".to_string())],
            "{st}"
        );
        for k in self.keys("*") {
            let other_store =
                k.starts_with(&key("store:")) && !k.starts_with(&key(&format!("store:{version}:")));
            assert!(!other_store, "key of another store left: {k}");
        }
    }
}

/// `rollout run --json` stdout: one JSON event per line (the documented event fields).
#[track_caller]
fn events(out: &Output) -> Vec<Value> {
    let evs: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| {
                out.fail(&format!("stdout line is not one JSON object ({e}): {l}"))
            })
        })
        .collect();
    for e in &evs {
        for k in EVENT_FIELDS {
            assert!(e.get(k).is_some(), "event without {k}: {e}");
        }
    }
    evs
}

fn s<'a>(e: &'a Value, k: &str) -> &'a str {
    e[k].as_str().unwrap_or("")
}

/// The terminal (`done`/`skipped`/`failed`) event of `action` on `region`/`host`.
#[track_caller]
fn outcome<'a>(
    evs: &'a [Value],
    action: &str,
    region: Option<&str>,
    host: Option<&str>,
) -> &'a Value {
    evs.iter()
        .rev()
        .find(|e| {
            s(e, "action") == action
                && s(e, "status") != "started"
                && region.is_none_or(|r| s(e, "region") == r)
                && host.is_none_or(|h| s(e, "host") == h)
        })
        .unwrap_or_else(|| panic!("no outcome of {action} {region:?} {host:?} in {evs:#?}"))
}

/// The detail of a template-driven step: the rendered command, its exit code, stdout
/// and stderr.
#[track_caller]
fn assert_command_detail(e: &Value, command: &str, code: i32, stdout_part: &str) {
    let d = s(e, "detail");
    assert!(
        d.contains(&format!("`{command}` exit {code}; stdout: ")),
        "command or exit code missing: {e}"
    );
    assert!(d.contains("; stderr: \""), "stderr missing: {e}");
    let out = d
        .split("; stdout: ")
        .nth(1)
        .and_then(|r| r.split("; stderr: ").next())
        .unwrap_or("");
    assert!(
        out.contains(stdout_part),
        "stdout {stdout_part:?} not in: {e}"
    );
}

/// Processes whose command line is exactly `argv` (to find a template's leftovers).
fn pids_with_cmdline(argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if std::fs::read(entry.path().join("cmdline")).is_ok_and(|c| c == want) {
            out.push(pid);
        }
    }
    out
}

/// Kills processes this test started (through a template) and left behind.
fn kill_pids(pids: &[u32]) {
    for pid in pids {
        let _ = std::process::Command::new("kill")
            .arg("-KILL")
            .arg(pid.to_string())
            .status();
    }
}

/// The whole incompatible upgrade through command templates, under job and client load.
#[test]
fn command_driver_upgrades_two_hosts_under_load() {
    let lp = LivePac::start();
    let url = lp.url();
    let plan = base_plan("pause");
    let plan_path = lp.write_plan("plan.json", &plan);
    let plan_arg = plan_path.to_str().expect("utf-8 path");

    // `rollout plan` shows the steps and writes nothing.
    let out = lp.rollout(&["plan", plan_arg, "--json"]);
    out.success();
    let pv = out.json();
    assert_eq!(pv["process"], "incompatible", "{pv}");
    assert_eq!(pv["problems"], json!([]), "{pv}");
    assert_eq!(pv["steps"].as_array().map(Vec::len), Some(25), "{pv}");
    assert!(
        !lp.exists(&key("rollout:current")),
        "rollout plan wrote a journal"
    );

    // Load across the rollout.
    let load = "8s";
    let jobs = lp
        .pacup()
        .args([
            "jobs",
            "submit",
            PAC,
            "--rate",
            "30/s",
            "--duration",
            load,
            "--json",
        ])
        .spawn();
    let clients = lp
        .pacup()
        .args(["clients", "run", PAC, "--duration", load, "--json"])
        .spawn();
    wait_until(UP_TIMEOUT, "the first jobs to complete", || {
        lp.jobs_stats()["completed"].as_u64().unwrap_or(0) > 0
    });

    let t0 = Instant::now();
    let out = lp.rollout(&["run", plan_arg, "--json"]);
    let took = t0.elapsed();
    out.success();
    let evs = events(&out);

    // Every step ended done or skipped, none failed, and the last event is `done`.
    assert!(evs.iter().all(|e| s(e, "status") != "failed"), "{evs:#?}");
    let last = evs.last().expect("events");
    assert_eq!(
        (s(last, "action"), s(last, "status")),
        ("done", "done"),
        "{last}"
    );
    let ended: HashSet<u64> = evs
        .iter()
        .filter(|e| matches!(s(e, "status"), "done" | "skipped"))
        .filter_map(|e| e["step"].as_u64())
        .collect();
    for n in 0..25u64 {
        assert!(ended.contains(&n), "step {n} never ended: {evs:#?}");
    }
    let id = s(&evs[0], "rollout").to_string();
    assert!(evs.iter().all(|e| s(e, "rollout") == id));
    let seqs: Vec<u64> = evs.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=evs.len() as u64).collect::<Vec<_>>());

    // Each template-driven step that acted carries the command, exit code, stdout, stderr.
    for e in evs.iter().filter(|e| s(e, "status") == "done") {
        if TEMPLATE_ACTIONS.contains(&s(e, "action")) {
            let d = s(e, "detail");
            assert!(
                d.contains("` exit ") && d.contains("; stdout: \"") && d.contains("; stderr: \""),
                "no command outcome in {e}"
            );
        }
    }
    let count = |action: &str| {
        evs.iter()
            .filter(|e| s(e, "action") == action && s(e, "status") == "done")
            .count()
    };
    for (action, n) in [
        ("listener_off", 3),
        ("stop", 3),
        ("apply_update", 2),
        ("check_compat", 1),
        ("start_upgrade", 1),
        ("start_warm", 2),
        ("set_mode_running", 1),
        ("set_mode_quiesce", 1),
        ("remove_old", 1),
    ] {
        assert_eq!(
            count(action),
            n,
            "{action} ran {} times: {evs:#?}",
            count(action)
        );
    }
    for r in ALL_REGIONS {
        let e = outcome(&evs, "stop", Some(r), None);
        assert_command_detail(
            e,
            &format!("pacup --psor {url} region stop {r} --pac {PAC} --timeout 20s"),
            0,
            &format!("region {r} stopped"),
        );
        let e = outcome(&evs, "listener_off", Some(r), None);
        assert_command_detail(
            e,
            &format!("pacup --psor {url} region listener {r} off --pac {PAC}"),
            0,
            "listener off",
        );
        assert!(
            matches!(
                s(outcome(&evs, "listener_on", Some(r), None), "status"),
                "done" | "skipped"
            ),
            "{evs:#?}"
        );
    }
    for h in ["host1", "host2"] {
        assert_command_detail(
            outcome(&evs, "apply_update", None, Some(h)),
            &format!("pacup --psor {url} host update {h} --pac {PAC} --product-version 2.0.0"),
            0,
            &format!("host {h} updated from 1.0.0 to 2.0.0"),
        );
    }
    assert_command_detail(
        outcome(&evs, "start_upgrade", Some("REGION1"), Some("host1")),
        &format!("pacup --psor {url} region start REGION1 --pac {PAC} --start-type upgrade"),
        0,
        "started in store 2.0.0",
    );
    for r in ["REGION1B", "REGION2"] {
        assert_command_detail(
            outcome(&evs, "start_warm", Some(r), None),
            &format!("pacup --psor {url} region start {r} --pac {PAC} --start-type warm"),
            0,
            "started in store 2.0.0",
        );
    }
    let port = lp.server.port();
    let cc = outcome(&evs, "check_compat", None, None);
    assert_command_detail(
        cc,
        &format!("PACUP_PRODUCT_VERSION=2.0.0 caspac -aCheckCompat={PAC} -sredis,127.0.0.1:{port}"),
        3,
        "INCOMPATIBLE",
    );
    assert_command_detail(
        outcome(&evs, "set_mode_running", None, None),
        &format!("caspac -aSetMode=Running -sredis,127.0.0.1:{port}"),
        0,
        "store 2.0.0 now running",
    );
    assert_command_detail(
        outcome(&evs, "set_mode_quiesce", None, None),
        &format!("caspac -aSetMode=Quiesce -sredis,127.0.0.1:{port}"),
        0,
        "store 1.0.0 now quiesce",
    );
    assert_command_detail(
        outcome(&evs, "remove_old", None, None),
        &format!("caspac -aRemOldPAC={PAC} -sredis,127.0.0.1:{port}"),
        0,
        "removed store 1.0.0",
    );

    // The same events, details included, are in the PSOR's event stream.
    let stored = lp.json_of(&["events", PAC]);
    let by_seq: BTreeMap<u64, &Value> = stored["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| s(e, "rollout") == id)
        .filter_map(|e| e["seq"].as_u64().map(|n| (n, e)))
        .collect();
    assert_eq!(by_seq.len(), evs.len(), "{stored}");
    for e in &evs {
        let st = by_seq[&e["seq"].as_u64().expect("seq")];
        for k in ["action", "status", "detail", "host", "region", "step"] {
            assert_eq!(st[k], e[k], "stored event differs in {k}: {st} vs {e}");
        }
    }

    // The load: nothing lost, nothing run twice, every client transaction served.
    let jobs = jobs.wait_with_timeout(Duration::from_secs(60));
    jobs.success();
    let submitted = jobs.json()["submitted"].as_u64().expect("submitted");
    let clients = clients.wait_with_timeout(Duration::from_secs(60));
    clients.success();
    let cr = clients.json();
    assert_eq!(cr["failed"], 0, "{cr}");
    assert!(cr["ok"].as_u64().unwrap_or(0) > 0, "{cr}");
    let stats = lp.wait_jobs_done();
    assert!(submitted > 0);
    assert_eq!(stats["submitted"].as_u64(), Some(submitted), "{stats}");
    assert_eq!(
        stats["completed"].as_u64(),
        Some(submitted),
        "lost jobs: {stats}"
    );
    assert_eq!(stats["duplicates"], 0, "{stats}");

    // The end state: every region 2.0.0, the old store gone, the rollout done.
    lp.assert_all_at("2.0.0");
    let st = lp.status();
    assert_eq!(st["state"], "done", "{st}");
    assert_eq!(st["lease_holder"], Value::Null, "{st}");
    let h = lp.json_of(&["rollout", "history", PAC]);
    assert_eq!(h["rollouts"][0]["result"], "done", "{h}");
    assert_eq!(h["rollouts"][0]["id"], json!(id), "{h}");
    eprintln!("command-driver rollout took {took:?}");
}

/// A template exiting 1 applies `on_failure: pause` (exit 6); the status names the step
/// and the reason (exit code, stdout, stderr); `resume` re-runs the same journaled
/// template and pauses again; `abort` ends it.
#[test]
fn failing_template_pauses_and_resume_retries_it() {
    let lp = LivePac::start();
    let mut plan = base_plan("pause");
    set_template(
        &mut plan,
        "apply_update",
        "if [ {version} = 2.0.0 ]; then echo \"installing {version} on {host}\"; \
         echo \"no package for {version}\" >&2; exit 1; fi; \
         pacup --psor {psor} host update {host} --pac {pac} --product-version {version}",
    );
    let out = lp.run_plan(&plan);
    out.code(6);
    out.stderr_contains("paused")
        .stderr_contains(&format!("pacup rollout resume {PAC}"));
    let evs = events(&out);
    // The failed step, then the pause it led to.
    let last = evs.last().expect("events");
    assert_eq!(
        (s(last, "action"), s(last, "status")),
        ("pause", "done"),
        "{last}"
    );
    let failed = &evs[evs.len() - 2];
    assert_eq!(
        (s(failed, "action"), s(failed, "status"), s(failed, "host")),
        ("apply_update", "failed", "host1"),
        "{failed}"
    );
    let d = s(failed, "detail");
    for part in [
        " exit 1; ",
        "stdout: \"installing 2.0.0 on host1\"",
        "stderr: \"no package for 2.0.0\"",
    ] {
        assert!(d.contains(part), "{part:?} not in {failed}");
    }
    let max_seq = failed["seq"].as_u64().expect("seq");

    let st = lp.status();
    assert_eq!(st["state"], "paused", "{st}");
    assert_eq!(st["next_step"], 7, "{st}");
    assert_eq!(st["current"], "7. apply_update on host1", "{st}");
    let why = s(&st, "blocking");
    assert!(
        why.contains("step 7 (apply_update) failed")
            && why.contains("exit 1")
            && why.contains("no package for 2.0.0"),
        "{st}"
    );
    assert_eq!(st["lease_holder"], Value::Null, "{st}");
    for r in st["regions"].as_array().expect("regions") {
        let want = if r["host"] == "host1" {
            "stopped"
        } else {
            "active"
        };
        assert_eq!(r["state"], want, "{st}");
    }

    // Nothing was fixed (the plan is journaled): the retry fails the same way.
    let again = lp.rollout(&["resume", PAC, "--json"]);
    again.code(6);
    let evs = events(&again);
    assert_eq!(
        evs.iter()
            .map(|e| (s(e, "action"), s(e, "status"), e["step"].as_u64()))
            .collect::<Vec<_>>(),
        vec![
            ("apply_update", "started", Some(7)),
            ("apply_update", "failed", Some(7)),
            ("pause", "done", Some(7))
        ],
        "{evs:#?}"
    );
    assert!(evs[0]["seq"].as_u64() > Some(max_seq), "{evs:#?}");
    assert!(s(&evs[1], "detail").contains("no package for 2.0.0"));
    assert_eq!(lp.status()["state"], "paused");

    // No coordinator runs it: abort ends it at once.
    lp.rollout(&["abort", PAC]).success();
    let st = lp.status();
    assert_eq!(st["state"], "aborted", "{st}");
    let h = lp.json_of(&["rollout", "history", PAC]);
    assert_eq!(h["rollouts"][0]["result"], "aborted", "{h}");
    lp.rollout(&["resume", PAC])
        .code(1)
        .stderr_contains("nothing to resume");
}

/// A failing template with `on_failure: abort` stops the rollout where it stands (exit 1);
/// resume is refused; `rollout rollback` then brings every region back to 1.0.0 through
/// the templates (exit 0: the operator asked for it) with no job lost.
#[test]
fn failing_template_with_on_failure_abort_exits_1_and_rollback_recovers() {
    let lp = LivePac::start();
    lp.pacup()
        .args(["jobs", "submit", PAC, "--count", "60"])
        .run()
        .success();
    let mut plan = base_plan("abort");
    set_template(&mut plan, "apply_update", "false");
    let out = lp.run_plan(&plan);
    out.code(1).stderr_contains("aborted");
    let evs = events(&out);
    let failed = outcome(&evs, "apply_update", None, Some("host1"));
    assert_eq!(s(failed, "status"), "failed", "{failed}");
    assert_eq!(
        s(failed, "detail"),
        "`false` exit 1; stdout: \"\"; stderr: \"\"",
        "{failed}"
    );
    let last = evs.last().expect("events");
    assert_eq!(
        (s(last, "action"), s(last, "status")),
        ("done", "failed"),
        "{last}"
    );
    assert!(
        s(last, "detail").contains("step 7 (apply_update) failed"),
        "{last}"
    );
    // Nothing after the failed step ran.
    assert!(
        !evs.iter()
            .any(|e| e["step"].as_u64().is_some_and(|n| n > 7) && s(e, "action") != "done"),
        "{evs:#?}"
    );

    let st = lp.status();
    assert_eq!(st["state"], "aborted", "{st}");
    assert_eq!(
        lp.region("REGION1")["alive"],
        "0",
        "abort leaves the rollout where it stood"
    );
    assert!(lp.region_serving("REGION2"));
    lp.rollout(&["resume", PAC])
        .code(1)
        .stderr_contains("nothing to resume");

    // Recovery: roll back (the coordinator process needs the binaries on PATH too).
    let rb = lp.rollout(&["rollback", PAC, "--json"]);
    // Asked for by the operator and completed: success (7 is for a policy rollback).
    rb.success();
    let evs = events(&rb);
    assert_eq!(s(&evs[0], "action"), "rollback", "{evs:#?}");
    assert_eq!(s(&evs[0], "status"), "started", "{evs:#?}");
    for r in HOST1_REGIONS {
        let e = outcome(&evs, "start_warm", Some(r), Some("host1"));
        assert_eq!(s(e, "status"), "done", "{e}");
        assert!(
            s(e, "detail").contains(&format!(
                "region start {r} --pac {PAC} --start-type warm` exit 0"
            )),
            "{e}"
        );
    }
    let st = lp.status();
    assert_eq!(st["state"], "rolled_back", "{st}");
    lp.wait_regions_serving(&ALL_REGIONS);
    lp.assert_all_at("1.0.0");
    let stats = lp.wait_jobs_done();
    assert_eq!(stats["completed"], stats["submitted"], "{stats}");
    assert_eq!(stats["submitted"], 60, "{stats}");
    assert_eq!(stats["duplicates"], 0, "{stats}");
}

/// Runs a plan whose first template (listener_off REGION1) hangs (`sleep 30.<port>`)
/// under a 1 s driver timeout; returns the output, how long it took and the pids of the
/// hung command still alive two seconds after the coordinator exited.
fn run_hanging(lp: &LivePac) -> (Output, Duration, Vec<u32>) {
    let secs = format!("30.{}", lp.server.port());
    let mut plan = base_plan("pause");
    plan["driver"]["timeout"] = json!("1s");
    set_template(&mut plan, "listener_off", &format!("sleep {secs}"));
    let t0 = Instant::now();
    let out = lp.run_plan(&plan);
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let left = pids_with_cmdline(&["sleep", &secs]);
    (out, took, left)
}

/// A hanging template is cut at the driver's timeout and applies the failure policy.
#[test]
fn hanging_template_is_cut_at_the_driver_timeout() {
    let lp = LivePac::start();
    let (out, took, left) = run_hanging(&lp);
    kill_pids(&left);
    out.code(6);
    assert!(
        took < Duration::from_secs(25),
        "took {took:?}, the template sleeps 30 s"
    );
    let evs = events(&out);
    // The failed steps (both listener_off of wave 1 run at once, both hang), then the
    // pause they led to.
    let last = evs.last().expect("events");
    assert_eq!(
        (s(last, "action"), s(last, "status")),
        ("pause", "done"),
        "{last}"
    );
    let failed = &evs[evs.len() - 3..evs.len() - 1];
    assert!(
        failed
            .iter()
            .all(|e| (s(e, "action"), s(e, "status")) == ("listener_off", "failed")),
        "{failed:#?}"
    );
    let failed = failed
        .iter()
        .find(|e| s(e, "region") == "REGION1")
        .expect("REGION1's listener_off failed");
    assert!(
        s(failed, "detail").contains("did not finish within 1s"),
        "{failed}"
    );
    let ms = failed["elapsed_ms"].as_u64().expect("elapsed_ms");
    assert!((1000..10_000).contains(&ms), "{failed}");
    let st = lp.status();
    assert_eq!(st["state"], "paused", "{st}");
    assert_eq!(st["current"], "1. listener_off REGION1 on host1", "{st}");
    assert!(
        s(&st, "blocking").contains("did not finish within 1s"),
        "{st}"
    );
    // It failed before changing anything.
    for r in ALL_REGIONS {
        assert!(lp.region_serving(r), "{r}");
    }
}

/// The driver timeout must end the template's command, not only the `sh -c` around it
/// (`run_shell_code` kills the shell with `kill_on_drop`; dash forks the command, which is
/// orphaned and runs on).
#[test]
fn timed_out_template_command_does_not_outlive_the_timeout() {
    let lp = LivePac::start();
    let (out, _, left) = run_hanging(&lp);
    kill_pids(&left);
    out.code(6);
    assert!(
        left.is_empty(),
        "the timed-out template's command still runs 2 s after the coordinator exited (pids {left:?}); \
         with `ssh {{host}} casstop ...` it would keep acting on the region behind the coordinator's back"
    );
}

/// A stop command may return before the region is down (the real `casstop` asks the region
/// to stop). The stop step must observe the region going down (bounded by stop_timeout)
/// before apply_update; today it reports done at once and apply_update meets live regions.
#[test]
fn asynchronous_stop_command_is_confirmed_before_apply_update() {
    let lp = LivePac::start();
    let mut plan = base_plan("pause");
    // Like a `casstop` that returns once the stop is requested: the region goes down 1 s later.
    set_template(
        &mut plan,
        "stop",
        "(sleep 1; pacup --psor {psor} region stop {region} --pac {pac} --timeout 20s) >/dev/null 2>&1 &",
    );
    upgrades_all_or_fails(
        &lp,
        &plan,
        "the stop step reported done while the region was still live, so the next step failed",
    );
}

/// Runs `plan` to the end: every region at 2.0.0; otherwise fails with `why` and the last
/// event.
#[track_caller]
fn upgrades_all_or_fails(lp: &LivePac, plan: &Value, why: &str) {
    let out = lp.run_plan(plan);
    if out.code != 0 {
        let evs = events(&out);
        let last = evs.last().cloned().unwrap_or_default();
        out.fail(&format!("{why}: {last}"));
    }
    lp.assert_all_at("2.0.0");
}

/// A start command may return before the region is up (the real `casstart` launches it).
/// start_upgrade must observe the region live in the new store before the next region's
/// warm start; today it reports done at once and the warm start finds no 2.0.0 store.
#[test]
fn asynchronous_upgrade_start_is_confirmed_before_the_warm_starts() {
    let lp = LivePac::start();
    let mut plan = base_plan("pause");
    // Like a `casstart /s:u` that returns before the region has created the new store.
    set_template(
        &mut plan,
        "start",
        "if [ {start_type} = upgrade ]; then \
         (sleep 1; pacup --psor {psor} region start {region} --pac {pac} --start-type {start_type}) >/dev/null 2>&1 & \
         else pacup --psor {psor} region start {region} --pac {pac} --start-type {start_type}; fi",
    );
    upgrades_all_or_fails(
        &lp,
        &plan,
        "start_upgrade reported done before REGION1 had created store 2.0.0; REGION1B's warm \
         start was refused",
    );
}

/// Bad templates are refused by `rollout run` and `rollout plan` with exit 2 and a
/// message naming the field, before anything is written to the PSOR.
#[test]
fn bad_templates_are_refused_before_anything_is_written() {
    let server = RedisServer::start();
    let url = server.url();
    pacup()
        .args(["--psor", &url, "pac", "init", PAC])
        .run()
        .success();
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = || {
        let mut k: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query(&mut server.conn())
            .expect("KEYS");
        k.sort();
        k
    };
    let meta = || -> HashMap<String, String> {
        redis::cmd("HGETALL")
            .arg(key("meta"))
            .query(&mut server.conn())
            .expect("HGETALL")
    };
    let (keys_before, meta_before) = (keys(), meta());
    assert!(keys_before.contains(&key("meta")), "{keys_before:?}");

    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Edit, Vec<&str>)> = vec![
        (
            "unknown placeholder",
            Box::new(|p| {
                set_template(
                    p,
                    "stop",
                    "pacup --psor {psor} region stop {regoin} --pac {pac}",
                )
            }),
            vec!["driver.templates.stop", "{regoin}", "{region}"],
        ),
        (
            "missing required template",
            Box::new(|p| {
                p["driver"]["templates"]
                    .as_object_mut()
                    .expect("templates")
                    .remove("start");
            }),
            vec!["driver.templates", "missing start"],
        ),
        (
            "unknown template name",
            Box::new(|p| set_template(p, "reboot", "ssh {host} reboot")),
            vec!["driver.templates", "reboot", "listener_off"],
        ),
        (
            "unbalanced brace",
            Box::new(|p| {
                set_template(
                    p,
                    "start",
                    "pacup region start {region} --start-type {start_type",
                )
            }),
            vec!["driver.templates.start", "balanced"],
        ),
    ];
    for (what, edit, needles) in cases {
        let mut plan = base_plan("pause");
        edit(&mut plan);
        let path = dir.path().join("bad.json");
        std::fs::write(&path, plan.to_string()).expect("write plan");
        let p = path.to_str().expect("utf-8 path");
        for args in [
            vec!["rollout", "run", p, "--json"],
            vec!["rollout", "run", p],
            vec!["rollout", "plan", p],
            vec!["rollout", "plan", p, "--json"],
        ] {
            let out = pacup()
                .env("PATH", path_with_bins())
                .args(["--psor", &url])
                .args(&args)
                .run();
            out.code(2);
            for n in &needles {
                if !out.stderr.contains(n) {
                    out.fail(&format!("{what}: the message does not name {n:?}"));
                }
            }
            if !out.stdout.trim().is_empty() {
                out.fail(&format!("{what}: expected nothing on stdout"));
            }
        }
        assert!(
            !redis::cmd("EXISTS")
                .arg(key("rollout:current"))
                .query::<bool>(&mut server.conn())
                .expect("EXISTS"),
            "{what}: a rollout journal was written"
        );
        assert_eq!(keys(), keys_before, "{what}: keys changed");
        assert_eq!(meta(), meta_before, "{what}: the PAC record changed");
    }
}

/// `hold_finalization` stops a command-driven rollout before its first finalising step
/// (set_mode_quiesce, right after wave 1 with after_first_wave) with exit 6 and state
/// `held`; `rollout resume` releases it and it runs to the end.
#[test]
fn hold_finalization_holds_before_quiesce_until_resume() {
    let lp = LivePac::start();
    let mut plan = base_plan("pause");
    plan["hold_finalization"] = json!(true);
    let out = lp.run_plan(&plan);
    out.code(8);
    let evs = events(&out);
    let last = evs.last().expect("events");
    assert_eq!(
        (s(last, "action"), s(last, "status")),
        ("pause", "done"),
        "{last}"
    );
    assert!(
        s(last, "detail").contains("held before set_mode_quiesce"),
        "{last}"
    );
    assert!(
        !evs.iter().any(|e| s(e, "action") == "set_mode_quiesce"),
        "{evs:#?}"
    );
    let st = lp.status();
    assert_eq!(st["state"], "held", "{st}");
    assert_eq!(st["current"], "15. set_mode_quiesce", "{st}");
    assert!(s(&st, "blocking").contains("hold_finalization"), "{st}");
    let modes: Vec<(Value, Value)> = st["stores"]
        .as_array()
        .expect("stores")
        .iter()
        .map(|x| (x["version"].clone(), x["mode"].clone()))
        .collect();
    assert_eq!(
        modes,
        vec![
            (json!("1.0.0"), json!("running")),
            (json!("2.0.0"), json!("running"))
        ],
        "{st}"
    );

    let mut resumed = lp.rollout(&["resume", PAC, "--json"]);
    let first = events(&resumed);
    assert_eq!(s(&first[0], "action"), "set_mode_quiesce", "{first:#?}");
    // Resume again while held (a later hold, if any, is released the same way).
    for _ in 0..3 {
        if resumed.code != 8 || lp.status()["state"] != "held" {
            break;
        }
        resumed = lp.rollout(&["resume", PAC, "--json"]);
    }
    resumed.success();
    lp.assert_all_at("2.0.0");
    assert_eq!(lp.status()["state"], "done");
}

/// The old store is what keeps a rollback possible; hold_finalization should keep it
/// until an operator confirms, after every region runs the new version.
#[test]
fn hold_finalization_also_holds_before_remove_old() {
    let lp = LivePac::start();
    let mut plan = base_plan("pause");
    plan["hold_finalization"] = json!(true);
    lp.run_plan(&plan).code(8);
    let out = lp.rollout(&["resume", PAC, "--json"]);
    let evs = events(&out);
    if out.code == 0 || evs.iter().any(|e| s(e, "action") == "remove_old") {
        out.fail(
            "released once after wave 1, the rollout deleted the old store without holding again",
        );
    }
    out.code(8);
    let st = lp.status();
    assert_eq!(st["state"], "held", "{st}");
    assert_eq!(st["current"], "24. remove_old", "{st}");
    assert!(
        lp.exists(&key("store:1.0.0:meta")),
        "the old store must still exist"
    );
    lp.rollout(&["resume", PAC]).success();
    lp.assert_all_at("2.0.0");
}

/// A template failing after the mode flip (wave 2's apply_update) with
/// `on_failure: rollback` should bring every region back to 1.0.0 (exit 7). The rollback
/// unquiesces store 1.0.0 but leaves store 2.0.0 running, so the warm start of a 1.0.0
/// region is refused (it only joins the newest running store, 2.0.0, incompatible).
#[test]
fn rollback_after_the_mode_flip_restores_the_old_version() {
    let lp = LivePac::start();
    lp.pacup()
        .args(["jobs", "submit", PAC, "--count", "60"])
        .run()
        .success();
    let mut plan = base_plan("rollback");
    set_template(
        &mut plan,
        "apply_update",
        "if [ {host} = host2 ] && [ {version} = 2.0.0 ]; then echo \"disk full on {host}\" >&2; exit 1; fi; \
         pacup --psor {psor} host update {host} --pac {pac} --product-version {version}",
    );
    let out = lp.run_plan(&plan);
    let evs = events(&out);
    assert!(
        evs.iter()
            .any(|e| s(e, "action") == "set_mode_running" && s(e, "status") == "done"),
        "the failure must come after the flip: {evs:#?}"
    );
    out.code(7);
    assert_eq!(lp.status()["state"], "rolled_back");
    lp.wait_regions_serving(&ALL_REGIONS);
    lp.assert_all_at("1.0.0");
    let stats = lp.wait_jobs_done();
    assert_eq!(stats["completed"], stats["submitted"], "{stats}");
    assert_eq!(stats["duplicates"], 0, "{stats}");
}

/// While a command template runs, `rollout status` names it (credentials redacted), with
/// its pid and how long it has run.
#[test]
fn status_shows_the_command_template_in_hand() {
    let lp = LivePac::start();
    let mut plan = base_plan("pause");
    let slow = format!(
        "sleep 3; {}",
        templates()["check_compat"].as_str().expect("template")
    );
    set_template(&mut plan, "check_compat", &slow);
    let p = lp.write_plan("plan.json", &plan);
    let run = lp
        .pacup()
        .args(["rollout", "run", p.to_str().expect("utf-8 path"), "--json"])
        .spawn();
    let cmd = crate::support::wait_for(
        UP_TIMEOUT,
        "status to show the check_compat command",
        || {
            // Until the coordinator has journaled its start there is no rollout (exit 1).
            let out = lp.pacup().args(["rollout", "status", PAC, "--json"]).run();
            let st = (out.code == 0).then(|| out.json())?;
            (st["step"]["action"] == "check_compat" && st["command"].is_object()).then_some(st)
        },
    );
    let c = &cmd["command"];
    assert!(s(c, "command").starts_with("sleep 3; "), "{cmd:#}");
    let pid = c["pid"].as_u64().expect("pid");
    assert!(pid > 1, "{cmd:#}");
    assert!(c["timeout_ms"].as_u64() == Some(30_000), "{cmd:#}");
    assert!(cmd["step"]["bound_ms"].as_u64() == Some(60_000), "{cmd:#}");
    let text = lp
        .pacup()
        .args(["rollout", "status", PAC])
        .run()
        .success()
        .stdout
        .clone();
    assert!(text.contains("running `sleep 3; "), "{text}");
    let out = run.wait_with_timeout(ROLLOUT_TIMEOUT);
    out.success();
    assert!(lp.status()["command"].is_null());
}
