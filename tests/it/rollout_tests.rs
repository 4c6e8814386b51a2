//! End-to-end tests of the rollout coordinator (issue 4 item 10): real `redis-server`,
//! real host agents (`pacup agent`), real job and client load, `pacup rollout ...` run as a
//! process and checked against the PSOR afterwards.
//!
//! Every test builds its own PAC `MyPAC` in its own Redis: host1 runs REGION1 and REGION1B,
//! host2 runs REGION2, all at 1.0.0, with short heartbeats so that deaths are noticed fast.
//! The crash, fencing, failure and rollback scenarios are in `rollout_fault_tests.rs`; the
//! scaffolding they share ([`Env`], [`Load`], event helpers) is in `support` and
//! re-exported here.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use redis::Commands;
use serde_json::{json, Value};

use crate::support::{pacup, Output};

// The scaffolding the rollout tests share lives in `support` (`pac`: the live PAC and
// its agents, `rollout`: plans, runs, load, event checks); re-exported here, where the
// rollout test files have always found it (some only for the files that use them).
#[allow(unused_imports)]
pub(crate) use crate::support::pac::{
    key, LivePac as Env, ALL_REGIONS, HOST1_REGIONS, PAC, RUN_TIMEOUT, STATE_TIMEOUT,
};
#[allow(unused_imports)]
pub(crate) use crate::support::rollout::{
    assert_clean_run, assert_seq_consecutive, check_event_shape, is_event, pos, stdout_events,
    Load, EVENT_ACTIONS, EVENT_FIELDS, OPTIONAL_ACTIONS,
};

#[test]
fn incompatible_rollout_after_first_wave_under_load_loses_nothing() {
    let env = Env::start();
    let plan = env.plan("p.json", "two-host-incompatible.json", json!({}));
    let load = Load::start(&env, "7s", true);
    let out = env.run(&plan, &["--reason", "issue 4 end-to-end"]);
    out.success();
    let (stats, _) = load.finish(&env);
    // Both stores did batch work during the rollout: each region completed jobs.
    for r in ALL_REGIONS {
        assert!(
            stats["by_region"][r].as_u64().unwrap_or(0) > 0,
            "{r} did no job: {stats:#}"
        );
    }
    env.assert_all_at("2.0.0", "2.0.0");
    assert!(env.keys(&key("store:1.0.0:*")).is_empty());

    // The events on stdout: documented fields and names, the documented order with the early flip.
    let events = stdout_events(&out.stdout);
    events.iter().for_each(check_event_shape);
    assert_seq_consecutive(&events);
    assert_clean_run(&events);
    let id = events[0]["rollout"].as_str().unwrap().to_string();
    assert!(events.iter().all(|e| e["rollout"] == id.as_str()));
    assert_eq!(events[0]["action"], "preflight");
    let names: BTreeSet<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    // Every documented step of the process (the preflight is the first event, checked above).
    for a in EVENT_ACTIONS
        .into_iter()
        .filter(|a| !matches!(*a, "preflight" | "rollback" | "pause"))
        .filter(|a| !OPTIONAL_ACTIONS.contains(a))
    {
        assert!(names.contains(a), "no {a} event");
    }
    let upgrade = pos(&events, "start_upgrade", "done", Some("REGION1"));
    let flip = pos(&events, "set_mode_running", "done", None);
    let quiesce = pos(&events, "set_mode_quiesce", "done", None);
    let wave2 = pos(&events, "listener_off", "started", Some("REGION2"));
    let region2_up = pos(&events, "start_warm", "done", Some("REGION2"));
    let verify = pos(&events, "verify", "done", None);
    let remove = pos(&events, "remove_old", "done", None);
    assert!(pos(&events, "stop", "done", Some("REGION1")) < upgrade);
    assert!(
        upgrade < flip && flip < quiesce,
        "the new store runs after wave 1, then the old quiesces"
    );
    assert!(
        quiesce < wave2,
        "mode_flip after_first_wave flips before wave 2"
    );
    assert!(wave2 < region2_up && region2_up < verify && verify < remove);
    assert_eq!(events[upgrade]["host"], "host1");
    assert_eq!(events[region2_up]["host"], "host2");

    // The same events are in the PAC's stream (the time is taken on each side).
    let stream = env.rollout_events(&id);
    stream.iter().for_each(check_event_shape);
    assert_eq!(
        stream.len(),
        events.len(),
        "stream and stdout differ in length"
    );
    for (s, o) in stream.iter().zip(&events) {
        for f in EVENT_FIELDS.iter().filter(|f| **f != "ts") {
            assert_eq!(s[*f], o[*f], "field {f}: stream {s} vs stdout {o}");
        }
    }

    // History: the rollout, its result and the reason given.
    let h = env
        .pacup()
        .args(["rollout", "history", PAC, "--json"])
        .run()
        .success()
        .json();
    let last = &h["rollouts"][0];
    assert_eq!(last["id"], id.as_str(), "{h:#}");
    assert_eq!(last["result"], "done", "{h:#}");
    assert_eq!(last["reason"], "issue 4 end-to-end", "{h:#}");
    assert_eq!(last["target"], "2.0.0", "{h:#}");
    env.pacup()
        .args(["rollout", "history", PAC])
        .run()
        .success()
        .stdout_contains(&id)
        .stdout_contains("issue 4 end-to-end");
    let st = env.rollout_status();
    assert_eq!(st["state"], "done", "{st:#}");
    assert!(st["blocking"].is_null(), "{st:#}");
}

#[test]
fn after_all_waves_needs_allow_downtime_and_then_loses_nothing() {
    let env = Env::start();
    let plan = env.plan(
        "p.json",
        "two-host-incompatible.json",
        json!({"mode_flip": "after_all_waves"}),
    );
    let xlen = env.xlen_events();

    // Two hosts, the literal order: the last wave leaves no batch region -> refused.
    let out = env.run(&plan, &[]);
    out.code(1)
        .stderr_contains("wave 2 (host2)")
        .stderr_contains("--allow-downtime");
    assert!(
        !env.exists(&key("rollout:current")),
        "a refused run wrote a journal"
    );
    assert!(env.keys(&key("rollout:*")).is_empty());
    assert!(!env.exists(&key("lock")));
    assert_eq!(env.xlen_events(), xlen, "a refused run wrote events");
    assert_eq!(env.pac_status()["stores"].as_array().unwrap().len(), 1);

    // Accepted with --allow-downtime: jobs wait through the gap, clients retry through it.
    let load = Load::start(&env, "7s", true);
    let out = env.run(&plan, &["--allow-downtime"]);
    out.success();
    load.finish(&env);
    env.assert_all_at("2.0.0", "2.0.0");
    let events = stdout_events(&out.stdout);
    assert_clean_run(&events);
    let flip = pos(&events, "set_mode_running", "done", None);
    assert!(
        pos(&events, "start_warm", "done", Some("REGION2")) < flip,
        "after_all_waves flips after the last wave started"
    );
    assert!(flip < pos(&events, "set_mode_quiesce", "done", None));
}

#[test]
fn compatible_rollout_is_a_rolling_restart_into_the_same_store() {
    let env = Env::start();
    let plan = env.plan("p.json", "compatible-patch.json", json!({}));
    let load = Load::start(&env, "6s", true);
    let out = env.run(&plan, &[]);
    out.success();
    load.finish(&env);
    env.assert_all_at("1.0.1", "1.0.0");
    assert_eq!(
        env.hget(&key("store:1.0.0:meta"), "running_version")
            .as_deref(),
        Some("1.0.1")
    );
    let stores: Vec<String> = env.conn().zrange(key("stores"), 0, -1).unwrap();
    assert_eq!(stores, ["1.0.0"]);
    let events = stdout_events(&out.stdout);
    events.iter().for_each(check_event_shape);
    assert_clean_run(&events);
    assert!(
        events[0]["detail"].as_str().unwrap().contains("compatible"),
        "{}",
        events[0]
    );
    for a in [
        "start_upgrade",
        "set_mode_running",
        "set_mode_quiesce",
        "remove_old",
    ] {
        assert!(
            !events.iter().any(|e| e["action"] == a),
            "a compatible rollout has no {a}"
        );
    }
    // Each region was restarted (warm) at 1.0.1.
    for r in ALL_REGIONS {
        pos(&events, "stop", "done", Some(r));
        pos(&events, "start_warm", "done", Some(r));
    }
}

#[test]
fn a_second_coordinator_exits_4_at_once_and_wait_lock_waits() {
    let env = Env::start();
    let plan = env.plan(
        "p.json",
        "two-host-incompatible.json",
        json!({"health": {"min_healthy": "2s", "deadline": "20s"}}),
    );
    let mut first = env.spawn_run(&plan, &[]);
    first.wait_for_stdout_line(|l| is_event(l, "health_gate", "started", None), RUN_TIMEOUT);
    let id = env.journal("id").expect("journal");

    let t = Instant::now();
    let second = env.run(&plan, &[]);
    second.code(4).stderr_contains("lease");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the second coordinator did not exit at once ({:?})",
        t.elapsed()
    );
    assert!(second.stdout.trim().is_empty(), "{}", second.stdout);
    // `resume` is refused the same way while the first runs.
    env.rollout("resume", &[]).code(4);
    assert_eq!(env.journal("id").as_deref(), Some(id.as_str()));

    // With --wait-lock it waits for the first to finish, then sees the real state.
    let waiting = env.spawn_run(&plan, &["--wait-lock"]);
    let first = first.wait_with_timeout(RUN_TIMEOUT);
    first.success();
    assert!(first
        .stdout
        .lines()
        .last()
        .is_some_and(|l| is_event(l, "done", "done", None)));
    let waited = waiting.wait_with_timeout(RUN_TIMEOUT);
    waited.code(1).stderr_contains("already at 2.0.0");
    assert_eq!(env.journal("id").as_deref(), Some(id.as_str()));
    assert_eq!(env.journal("state").as_deref(), Some("done"));
    env.assert_all_at("2.0.0", "2.0.0");
}

#[test]
fn plans_that_remove_all_capacity_or_are_invalid_write_nothing() {
    let env = Env::start();
    let xlen = env.xlen_events();
    let before = env.pac_status();
    let epoch = env.hget(&key("meta"), "epoch");
    let nothing_written = |what: &str| {
        assert_eq!(
            env.hget(&key("meta"), "epoch"),
            epoch,
            "{what}: the fencing epoch moved"
        );
        assert!(
            env.keys(&key("rollout:*")).is_empty(),
            "{what}: rollout keys written"
        );
        assert!(!env.exists(&key("lock")), "{what}: lease left behind");
        assert_eq!(env.xlen_events(), xlen, "{what}: events written");
        let now = env.pac_status();
        assert_eq!(now["stores"], before["stores"], "{what}");
    };

    // Every host in one wave: no region would take batch work or serve clients.
    let all = env.plan(
        "all.json",
        "two-host-incompatible.json",
        json!({"waves": [["host1", "host2"]]}),
    );
    let out = env.run(&all, &[]);
    out.code(1)
        .stderr_contains("wave 1 (host1, host2)")
        .stderr_contains("no region taking batch work");
    nothing_written("capacity");
    env.pacup()
        .args(["rollout", "plan"])
        .arg(&all)
        .run()
        .code(1)
        .stdout_contains("wave 1 (host1, host2)");

    // Invalid plans: exit 2 naming the problem, before anything is written.
    let cases = [
        ("unknown.json", json!({"colour": "blue"}), "colour"),
        (
            "host.json",
            json!({"waves": [["host1"], ["host3"]]}),
            "waves[1]",
        ),
        (
            "dup.json",
            json!({"hosts": [{"name": "host1", "regions": ["REGION1", "REGION1B"]},
                             {"name": "host2", "regions": ["REGION1"]}]}),
            "each region once",
        ),
    ];
    for (name, overrides, needle) in cases {
        let p = env.plan(name, "two-host-incompatible.json", overrides);
        env.run(&p, &[]).code(2).stderr_contains(needle);
        nothing_written(name);
    }
}

#[test]
fn refused_resume_and_rollback_write_nothing_and_resuming_a_done_rollout_exits_0() {
    let env = Env::start();
    let xlen = env.xlen_events();
    let epoch = env.hget(&key("meta"), "epoch");
    for verb in ["resume", "rollback"] {
        env.rollout(verb, &[])
            .code(1)
            .stderr_contains("not started");
        assert_eq!(
            env.hget(&key("meta"), "epoch"),
            epoch,
            "{verb} bumped the epoch"
        );
        assert!(!env.exists(&key("lock")), "{verb} left a lease");
        assert!(
            env.keys(&key("rollout:*")).is_empty(),
            "{verb} wrote rollout keys"
        );
        assert_eq!(env.xlen_events(), xlen, "{verb} wrote events");
    }

    let plan = env.plan("p.json", "two-host-incompatible.json", json!({}));
    env.run(&plan, &[]).success();
    let epoch = env.hget(&key("meta"), "epoch");
    let journal: std::collections::HashMap<String, String> =
        env.conn().hgetall(key("rollout:current")).unwrap();
    // A coordinator killed after its last write leaves a done rollout: resuming it is
    // success, says so, and changes nothing.
    let out = env.rollout("resume", &[]);
    out.success().stderr_contains("is done; nothing to resume");
    let plain = env.pacup().args(["rollout", "resume", PAC]).run();
    plain
        .success()
        .stdout_contains("is done; nothing to resume");
    assert_eq!(env.hget(&key("meta"), "epoch"), epoch);
    let after: std::collections::HashMap<String, String> =
        env.conn().hgetall(key("rollout:current")).unwrap();
    assert_eq!(after, journal);
    // Rolling a done rollout back is refused, writing nothing.
    env.rollout("rollback", &[]).code(1);
    assert_eq!(env.hget(&key("meta"), "epoch"), epoch);
}

/// `(version, mode)` of every store in a status document.
fn store_modes(doc: &Value) -> Vec<(String, String)> {
    doc["stores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["version"].as_str().unwrap().to_string(),
                s["mode"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The rollout ended held before `action`: last event `pause`, status `held` with the
/// reason, no lease held.
#[track_caller]
fn assert_held_before(env: &Env, out: &Output, action: &str) -> Value {
    let events = stdout_events(&out.stdout);
    let last = events.last().unwrap();
    assert_eq!(
        (&last["action"], &last["status"]),
        (&json!("pause"), &json!("done")),
        "{last}"
    );
    assert!(last["detail"].as_str().unwrap().contains(action), "{last}");
    assert!(!events.iter().any(|e| e["action"] == action));
    let st = env.rollout_status();
    assert_eq!(st["state"], "held", "{st:#}");
    assert!(
        st["blocking"]
            .as_str()
            .is_some_and(|b| b.contains("hold_finalization") && b.contains(action)),
        "{st:#}"
    );
    assert!(st["lease_holder"].is_null(), "{st:#}");
    st
}

#[test]
fn hold_finalization_holds_before_each_finalising_step_until_resume() {
    let env = Env::start();
    let plan = env.plan(
        "p.json",
        "two-host-incompatible.json",
        json!({"hold_finalization": true}),
    );
    let load = Load::start(&env, "6s", false);
    let out = env.run(&plan, &[]);
    // Held as the plan asked: exit 8, not the 6 of a pause waiting on an error.
    out.code(8);
    // Held before the old store stops taking batch work: both stores run.
    let st = assert_held_before(&env, &out, "set_mode_quiesce");
    let modes = store_modes(&st);
    assert!(
        modes.contains(&("1.0.0".into(), "running".into())),
        "{modes:?}"
    );
    assert!(
        modes.contains(&("2.0.0".into(), "running".into())),
        "{modes:?}"
    );

    // Released: quiesce and the last wave run, then held before the old store goes,
    // every region already at 2.0.0 and the old store still there for a rollback.
    let resumed = env.rollout("resume", &[]);
    resumed.code(8);
    let events = stdout_events(&resumed.stdout);
    assert_eq!(events[0]["action"], "set_mode_quiesce", "{}", events[0]);
    pos(&events, "verify", "done", None);
    let st = assert_held_before(&env, &resumed, "remove_old");
    let modes = store_modes(&st);
    assert!(
        modes.contains(&("1.0.0".into(), "quiesce".into())),
        "{modes:?}"
    );
    for r in st["regions"].as_array().unwrap() {
        assert_eq!(r["version"], "2.0.0", "{st:#}");
    }

    let finished = env.rollout("resume", &[]);
    finished.success();
    let events = stdout_events(&finished.stdout);
    assert_eq!(events[0]["action"], "remove_old", "{}", events[0]);
    assert_clean_run(&events);
    load.finish(&env);
    env.assert_all_at("2.0.0", "2.0.0");
}

#[test]
fn demo_runs_the_whole_story_and_loses_nothing() {
    crate::support::require_redis();
    // In a temp dir: the demo writes its report to the current directory.
    let dir = tempfile::tempdir().expect("temp dir");
    let out = pacup()
        .args(["demo"])
        .current_dir(dir.path())
        .timeout(Duration::from_secs(180))
        .run();
    out.success().stdout_contains("nothing lost");
    let report = dir.path().join("pacup-demo-report.html").canonicalize();
    let report = report.unwrap_or_else(|e| out.fail(&format!("no report written: {e}")));
    out.stdout_contains(&format!("report:   {}", report.display()));
}

/// The agent driver's safety steps: a `backup` of the PAC into `backup.dir` before the
/// upgrade start and before `remove_old` (keeping the newest `backup.keep`, each file
/// named in its event), and the monitoring hold around the steps.
#[test]
fn agent_rollout_backs_up_before_store_changes_and_holds_monitoring() {
    let env = Env::start();
    let dir = env.dir.path().join("backups");
    let log = env.dir.path().join("monitor.log");
    let plan = env.plan(
        "p.json",
        "two-host-incompatible.json",
        json!({
            "backup": {"dir": dir, "keep": 1},
            "monitor": {
                "suspend": format!("echo suspend {{pac}} {{version}} >> {}", log.display()),
                "resume": format!("echo resume {{pac}} >> {}", log.display()),
            },
        }),
    );
    let out = env.run(&plan, &[]);
    out.success();
    let events = stdout_events(&out.stdout);
    let backups: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "backup" && e["status"] == "done")
        .collect();
    assert_eq!(backups.len(), 2, "{events:#?}");
    let upgrade = pos(&events, "start_upgrade", "started", None);
    let first = pos(&events, "backup", "done", None);
    assert!(
        first < upgrade,
        "the first backup precedes the upgrade start"
    );
    let remove = pos(&events, "remove_old", "started", None);
    let second = events
        .iter()
        .rposition(|e| e["action"] == "backup" && e["status"] == "done")
        .unwrap();
    assert!(pos(&events, "verify", "done", None) < second && second < remove);
    let file_of = |e: &Value| -> String {
        let d = e["detail"].as_str().unwrap();
        let f = d.split(" saved to ").nth(1).expect("file in detail");
        f.split(' ').next().unwrap().to_string()
    };
    let (f1, f2) = (file_of(backups[0]), file_of(backups[1]));
    assert!(f1.ends_with("-before_upgrade.json"), "{f1}");
    assert!(f2.ends_with("-before_remove_old.json"), "{f2}");
    // keep 1: the second removed the first.
    let name1 = std::path::Path::new(&f1)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        backups[1]["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("removed {name1}")),
        "{}",
        backups[1]
    );
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    left.sort();
    assert_eq!(left, vec![f2.clone()]);
    let b: Value = serde_json::from_str(&std::fs::read_to_string(&f2).unwrap()).unwrap();
    assert_eq!(b["format"], "pacup-backup-1");
    assert_eq!(b["pac"], PAC);
    assert!(
        b["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["key"] == key("store:1.0.0:meta")),
        "the backup before remove_old holds the old store"
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        format!("suspend {PAC} 2.0.0\nresume {PAC}\n")
    );
    env.assert_all_at("2.0.0", "2.0.0");
}
