//! Rollout faults end to end: a coordinator killed (`kill -9`) after each kind of step and
//! resumed, a coordinator frozen (SIGSTOP) past its lease and fenced after a takeover, a
//! host agent dying before its wave, a region failing its health gate, rollbacks.
//! Scaffolding: [`crate::rollout_tests`].

use std::collections::HashMap;
use std::time::Duration;

use redis::Commands;
use serde_json::{json, Value};

use crate::rollout_tests::{
    assert_clean_run, assert_seq_consecutive, check_event_shape, is_event, key, pos, stdout_events,
    Env, Load, ALL_REGIONS, PAC, RUN_TIMEOUT, STATE_TIMEOUT,
};
use crate::support::{wait_until, Running, SIGKILL};

/// `kill -<sig> <pid>` for signals the support module has no constant for (STOP, CONT).
fn signal_pid(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid} failed");
}

/// Runs the standard incompatible rollout under job load, SIGKILLs the coordinator as
/// soon as it printed the event `action`/`status` (on `region`), lets its lease expire,
/// and checks that `rollout resume` re-runs the interrupted step and reaches the right
/// end state with no job lost and the event sequence unbroken.
pub(crate) fn kill_then_resume(
    action: &str,
    status: &str,
    region: Option<&str>,
    bloat_old_store: bool,
) {
    let env = Env::start();
    if bloat_old_store {
        // Deleting the old store then takes long enough to be interrupted.
        env.bloat_store("1.0.0", 60_000);
    }
    let plan = env.plan("p.json", "two-host-incompatible.json", json!({}));
    let load = Load::start(&env, "6s", false);
    let mut run = env.spawn_run(&plan, &[]);
    let line = run.wait_for_stdout_line(|l| is_event(l, action, status, region), RUN_TIMEOUT);
    assert!(
        run.is_running(),
        "the coordinator finished before it could be killed after {line}"
    );
    run.signal(SIGKILL);
    let killed = run.wait_with_timeout(Duration::from_secs(10));
    assert_eq!(killed.signal, Some(SIGKILL), "{killed}");
    if bloat_old_store {
        assert!(
            !env.keys(&key("store:1.0.0:bulk:*")).is_empty(),
            "the kill did not interrupt remove_old"
        );
    }

    // The killed coordinator's lease expires; status says why nothing moves.
    env.wait_lease_free();
    let st = env.rollout_status();
    assert_eq!(st["state"], "running", "{st:#}");
    assert!(
        st["blocking"]
            .as_str()
            .is_some_and(|b| b.contains("no coordinator holds the lease")),
        "{st:#}"
    );
    let next: u64 = env
        .journal("next_step")
        .and_then(|s| s.parse().ok())
        .expect("journal next_step");

    // The steps the killed coordinator saw end (a parallel group may have ended some).
    let id = env.journal("id").expect("journal id");
    let ended_before: Vec<u64> = env
        .rollout_events(&id)
        .iter()
        .filter(|e| e["status"] == "done" || e["status"] == "skipped")
        .filter_map(|e| e["step"].as_u64())
        .collect();

    let resumed = env.rollout("resume", &[]);
    resumed.success();
    let events = stdout_events(&resumed.stdout);
    events.iter().for_each(check_event_shape);
    let first = events[0]["step"].as_u64().unwrap();
    assert!(
        events[0]["status"] == "started" && first >= next && !ended_before.contains(&first),
        "resume must start with a step of the interrupted group {next} that had not ended: {}",
        events[0]
    );
    // Exactly what was missing: no step that had ended runs again.
    for e in events.iter().filter(|e| e["status"] == "started") {
        let n = e["step"].as_u64().unwrap();
        assert!(!ended_before.contains(&n), "step {n} ran twice: {e}");
    }
    assert_clean_run(&events);

    // One unbroken event sequence across both coordinators, ending done.
    let stream = env.rollout_events(&id);
    stream.iter().for_each(check_event_shape);
    assert_seq_consecutive(&stream);
    let last = stream.last().unwrap();
    assert_eq!(
        (&last["action"], &last["status"]),
        (&json!("done"), &json!("done"))
    );
    assert_eq!(env.journal("state").as_deref(), Some("done"));

    load.finish(&env);
    env.assert_all_at("2.0.0", "2.0.0");
}

#[test]
fn kill_9_during_stop_then_resume() {
    kill_then_resume("stop", "started", Some("REGION1"), false);
}

#[test]
fn kill_9_after_apply_update_then_resume() {
    kill_then_resume("apply_update", "done", None, false);
}

#[test]
fn kill_9_during_start_upgrade_then_resume() {
    kill_then_resume("start_upgrade", "started", Some("REGION1"), false);
}

#[test]
fn kill_9_during_health_gate_then_resume() {
    kill_then_resume("health_gate", "started", None, false);
}

#[test]
fn kill_9_after_set_mode_running_then_resume() {
    kill_then_resume("set_mode_running", "done", None, false);
}

#[test]
fn kill_9_during_set_mode_quiesce_then_resume() {
    kill_then_resume("set_mode_quiesce", "started", None, false);
}

#[test]
fn kill_9_during_remove_old_then_resume() {
    kill_then_resume("remove_old", "started", None, true);
}

fn journal_all(env: &Env) -> HashMap<String, String> {
    env.conn().hgetall(key("rollout:current")).expect("HGETALL")
}

#[test]
fn a_coordinator_stopped_past_its_lease_is_fenced_after_a_takeover() {
    let env = Env::start();
    let plan = env.plan(
        "p.json",
        "two-host-incompatible.json",
        json!({"health": {"min_healthy": "2s", "deadline": "20s"}}),
    );
    let load = Load::start(&env, "6s", false);
    let mut a = env.spawn_run(&plan, &[]);
    a.wait_for_stdout_line(|l| is_event(l, "health_gate", "started", None), RUN_TIMEOUT);
    let pid = a.pid().expect("running");
    signal_pid(pid, "STOP");
    // Frozen past its 2 s lease.
    env.wait_lease_free();
    let a_stdout = a.stdout_so_far();

    // Another coordinator takes over and finishes the rollout.
    let b = env.rollout("resume", &[]);
    b.success();
    let b_events = stdout_events(&b.stdout);
    assert_eq!(b_events[0]["action"], "health_gate", "{}", b_events[0]);
    assert_clean_run(&b_events);
    let events = env.events();
    let journal = journal_all(&env);
    let status = env.pac_status();

    // The frozen one wakes up: it must notice, write nothing, and exit 4.
    signal_pid(pid, "CONT");
    let a = a.wait_with_timeout(RUN_TIMEOUT);
    a.code(4).stderr_contains("fenced");
    assert_eq!(a.stdout, a_stdout, "the fenced coordinator printed events");
    assert_eq!(env.events(), events, "the fenced coordinator wrote events");
    assert_eq!(
        journal_all(&env),
        journal,
        "the fenced coordinator wrote the journal"
    );
    let now = env.pac_status();
    assert_eq!(now["stores"], status["stores"]);
    let id = env.journal("id").unwrap();
    assert_seq_consecutive(&env.rollout_events(&id));

    load.finish(&env);
    env.assert_all_at("2.0.0", "2.0.0");
}

/// The plan of the failure tests: gates long enough to inject the failure in them.
pub(crate) fn failure_plan(
    env: &Env,
    on_failure: &str,
    min_healthy: &str,
    deadline: &str,
    progress_deadline: &str,
) -> std::path::PathBuf {
    env.plan(
        "p.json",
        "two-host-incompatible.json",
        json!({
            "on_failure": on_failure,
            "health": {"min_healthy": min_healthy, "deadline": deadline},
            "progress_deadline": progress_deadline,
        }),
    )
}

/// The failed event of a run's output.
#[track_caller]
pub(crate) fn failed_event(events: &[Value]) -> Value {
    let failed: Vec<&Value> = events.iter().filter(|e| e["status"] == "failed").collect();
    assert!(!failed.is_empty(), "no failed event");
    failed[0].clone()
}

#[test]
fn an_agent_dead_before_its_wave_pauses_the_rollout_and_resume_finishes_it() {
    let mut env = Env::start();
    let plan = failure_plan(&env, "pause", "2s", "20s", "3s");
    let load = Load::start(&env, "6s", false);
    let mut run = env.spawn_run(&plan, &[]);
    run.wait_for_stdout_line(|l| is_event(l, "health_gate", "started", None), RUN_TIMEOUT);
    // host2 crashes while wave 1 is in its gate.
    env.kill_agent("host2");
    wait_until(STATE_TIMEOUT, "REGION2 to be dead", || {
        !env.region_alive("REGION2")
    });
    assert!(
        !run.stdout_so_far().contains("\"host\":\"host2\""),
        "wave 2 began before host2 was seen dead"
    );
    let out = run.wait_with_timeout(RUN_TIMEOUT);
    out.code(6).stderr_contains("paused");
    let events = stdout_events(&out.stdout);
    let failed = failed_event(&events);
    // The coordinator does not act on a host it cannot see: wave 2's first step fails at
    // once, naming the region whose heartbeat stopped without it leaving its store.
    assert_eq!(failed["host"], "host2", "{failed}");
    assert_eq!(failed["action"], "listener_off", "{failed}");
    assert!(
        failed["detail"]
            .as_str()
            .unwrap()
            .contains("stopped heartbeating without leaving its store"),
        "{failed}"
    );
    let st = env.rollout_status();
    assert_eq!(st["state"], "paused", "{st:#}");
    let blocking = st["blocking"].as_str().unwrap_or_default();
    assert!(
        blocking.contains("listener_off") && blocking.contains("REGION2"),
        "{st:#}"
    );
    assert!(st["lease_holder"].is_null(), "{st:#}");

    // The operator brings host2's agent back (same installation, nothing autostarted).
    env.start_agent("host2", "1.0.0", "none");
    let resumed = env.rollout("resume", &[]);
    resumed.success();
    let events = stdout_events(&resumed.stdout);
    assert_eq!(
        (&events[0]["action"], &events[0]["host"]),
        (&json!("listener_off"), &json!("host2")),
        "{}",
        events[0]
    );
    assert_clean_run(&events);
    load.finish(&env);
    env.assert_all_at("2.0.0", "2.0.0");
}

/// Runs the rollout until `region` was started in its wave, crashes it there (through its
/// agent), and returns the finished run: its health gate cannot pass.
pub(crate) fn crash_in_gate(
    env: &Env,
    plan: &std::path::Path,
    region: &str,
) -> crate::support::Output {
    spawn_crash_in_gate(env, plan, region).wait_with_timeout(RUN_TIMEOUT)
}

/// [`crash_in_gate`], returning the still running coordinator.
pub(crate) fn spawn_crash_in_gate(env: &Env, plan: &std::path::Path, region: &str) -> Running {
    let mut run = env.spawn_run(plan, &[]);
    run.wait_for_stdout_line(
        |l| {
            is_event(l, "start_warm", "done", Some(region))
                || is_event(l, "start_warm", "skipped", Some(region))
        },
        RUN_TIMEOUT,
    );
    env.pacup()
        .args(["region", "crash", region, "--pac", PAC])
        .run()
        .success();
    run
}

#[track_caller]
pub(crate) fn assert_gate_failed_on(events: &[Value], region: &str) {
    let failed = failed_event(events);
    assert_eq!(failed["action"], "health_gate", "{failed}");
    let d = failed["detail"].as_str().unwrap();
    assert!(d.contains(region) && d.contains("not alive"), "{failed}");
}

#[test]
fn a_region_failing_its_health_gate_pauses_and_resume_finishes() {
    let env = Env::start();
    let plan = failure_plan(&env, "pause", "3s", "5s", "30s");
    let load = Load::start(&env, "6s", false);
    let out = crash_in_gate(&env, &plan, "REGION2");
    out.code(6);
    assert_gate_failed_on(&stdout_events(&out.stdout), "REGION2");
    let st = env.rollout_status();
    assert_eq!(st["state"], "paused", "{st:#}");
    let blocking = st["blocking"].as_str().unwrap_or_default();
    assert!(
        blocking.contains("health_gate") && blocking.contains("REGION2"),
        "{st:#}"
    );

    // The operator restarts the region (its host is already at 2.0.0), then resumes.
    env.pacup()
        .args([
            "region",
            "start",
            "REGION2",
            "--pac",
            PAC,
            "--start-type",
            "warm",
        ])
        .run()
        .success();
    let resumed = env.rollout("resume", &[]);
    resumed.success();
    let events = stdout_events(&resumed.stdout);
    assert_eq!(events[0]["action"], "health_gate", "{}", events[0]);
    assert_clean_run(&events);
    load.finish(&env);
    env.assert_all_at("2.0.0", "2.0.0");
}

/// After a rollback: the old store runs again with every region live in it at 1.0.0, the
/// new store is gone, the history says rolled back.
#[track_caller]
pub(crate) fn assert_rolled_back(env: &Env, out: &crate::support::Output) {
    let events = stdout_events(&out.stdout);
    events.iter().for_each(check_event_shape);
    pos(&events, "rollback", "started", None);
    env.assert_all_at("1.0.0", "1.0.0");
    assert!(env.keys(&key("store:2.0.0:*")).is_empty());
    let st = env.rollout_status();
    assert_eq!(st["state"], "rolled_back", "{st:#}");
    let h = env
        .pacup()
        .args(["rollout", "history", PAC, "--json"])
        .run()
        .success()
        .json();
    assert_eq!(h["rollouts"][0]["result"], "rolled_back", "{h:#}");
    for r in ALL_REGIONS {
        assert!(
            env.region_serving(r),
            "{r} is not serving after the rollback"
        );
    }
}

/// A region of `wave`'s gate crashes under `on_failure: rollback`: exit 7, nothing lost.
fn a_gate_failure_rolls_back_with_exit_7(region: &str) {
    let env = Env::start();
    let plan = failure_plan(&env, "rollback", "3s", "5s", "30s");
    let load = Load::start(&env, "6s", true);
    let out = crash_in_gate(&env, &plan, region);
    out.code(7);
    assert_gate_failed_on(&stdout_events(&out.stdout), region);
    load.finish(&env);
    assert_rolled_back(&env, &out);
}

/// A region's gate crashes under `on_failure: pause` (exit 6), then the operator rolls
/// back: exit 0, the last event says the rollback is done, nothing lost.
fn rollout_rollback_of_a_paused_rollout_exits_0(region: &str) {
    let env = Env::start();
    let plan = failure_plan(&env, "pause", "3s", "5s", "30s");
    let load = Load::start(&env, "6s", false);
    let out = crash_in_gate(&env, &plan, region);
    out.code(6);
    // The operator asked for the rollback and got it: success, the last event says done.
    let rb = env.rollout("rollback", &[]);
    rb.success();
    let last = stdout_events(&rb.stdout).pop().unwrap();
    assert_eq!(
        (&last["action"], &last["status"]),
        (&json!("rollback"), &json!("done")),
        "{last}"
    );
    load.finish(&env);
    assert_rolled_back(&env, &rb);
}

#[test]
fn a_gate_failure_in_the_first_wave_rolls_back_with_exit_7() {
    a_gate_failure_rolls_back_with_exit_7("REGION1B");
}

#[test]
fn rollout_rollback_of_a_rollout_paused_in_the_first_wave_exits_0() {
    rollout_rollback_of_a_paused_rollout_exits_0("REGION1B");
}

#[test]
fn a_gate_failure_in_the_last_wave_rolls_back_with_exit_7() {
    a_gate_failure_rolls_back_with_exit_7("REGION2");
}

#[test]
fn rollout_rollback_of_a_rollout_paused_in_the_last_wave_exits_0() {
    rollout_rollback_of_a_paused_rollout_exits_0("REGION2");
}

#[test]
fn a_rollback_interrupted_by_kill_9_is_finished_by_resume() {
    let env = Env::start();
    let plan = failure_plan(&env, "rollback", "3s", "5s", "30s");
    let load = Load::start(&env, "6s", false);
    let mut run = spawn_crash_in_gate(&env, &plan, "REGION2");
    run.wait_for_stdout_line(|l| is_event(l, "rollback", "started", None), RUN_TIMEOUT);
    // Kill it once it is moving host2 back.
    run.wait_for_stdout_line(|l| is_event(l, "apply_update", "done", None), RUN_TIMEOUT);
    assert!(
        run.is_running(),
        "the rollback finished before it could be killed"
    );
    run.signal(SIGKILL);
    run.wait_with_timeout(Duration::from_secs(10));
    env.wait_lease_free();
    let st = env.rollout_status();
    assert_eq!(st["state"], "rolling_back", "{st:#}");

    let resumed = env.rollout("resume", &[]);
    resumed.code(7);
    let id = env.journal("id").unwrap();
    let stream = env.rollout_events(&id);
    stream.iter().for_each(check_event_shape);
    assert_seq_consecutive(&stream);
    load.finish(&env);
    assert_rolled_back(&env, &resumed);
}

/// A `min_healthy` shorter than the regions' heartbeat TTL (1 s here) is lengthened to it
/// (the gate's event says so), and a region crashed right after its start never passes
/// its gate: its liveness key outlives it, its heartbeats do not.
#[test]
fn a_short_min_healthy_is_lengthened_and_a_region_crashed_after_its_start_fails_its_gate() {
    let env = Env::start();
    let plan = failure_plan(&env, "pause", "300ms", "5s", "30s");
    let load = Load::start(&env, "6s", false);
    let out = crash_in_gate(&env, &plan, "REGION2");
    out.code(6);
    let events = stdout_events(&out.stdout);
    let first_gate = events
        .iter()
        .find(|e| e["action"] == "health_gate" && e["status"] == "done")
        .expect("wave 1's gate passed");
    assert!(
        first_gate["detail"]
            .as_str()
            .unwrap()
            .contains("(min_healthy 300ms lengthened to the heartbeat TTL)"),
        "{first_gate}"
    );
    assert_gate_failed_on(&events, "REGION2");
    assert!(
        out.stderr
            .contains("is shorter than the regions' heartbeat TTL"),
        "{out}"
    );
    assert_eq!(env.rollout_status()["state"], "paused");
    load.finish(&env);
}

/// A region found up at the wrong version when its start step runs (here: the coordinator
/// was killed after host1's update, and REGION1 was started at 1.0.0 again by hand, as an
/// agent restarted from a stale installation would) is repaired by the step: listener
/// off, stopped, its host updated, started at the target.
#[test]
fn a_region_found_up_at_the_wrong_version_is_stopped_updated_and_started_again() {
    let env = Env::start();
    let plan = env.plan("p.json", "two-host-incompatible.json", json!({}));
    let load = Load::start(&env, "6s", false);
    let mut run = env.spawn_run(&plan, &[]);
    run.wait_for_stdout_line(|l| is_event(l, "apply_update", "done", None), RUN_TIMEOUT);
    run.signal(SIGKILL);
    run.wait_with_timeout(Duration::from_secs(10));
    env.wait_lease_free();
    // REGION1 comes back at the old version, in the old store.
    let pacup = |args: &[&str]| env.pacup().args(args).run();
    pacup(&[
        "host",
        "update",
        "host1",
        "--pac",
        PAC,
        "--product-version",
        "1.0.0",
    ])
    .success();
    pacup(&[
        "region",
        "start",
        "REGION1",
        "--pac",
        PAC,
        "--start-type",
        "warm",
    ])
    .success();
    assert_eq!(
        env.hget(&key("region:REGION1"), "store").as_deref(),
        Some("1.0.0")
    );
    let resumed = env.rollout("resume", &[]);
    resumed.success();
    let events = stdout_events(&resumed.stdout);
    let start = events
        .iter()
        .find(|e| e["action"] == "start_upgrade" && e["status"] == "done")
        .expect("REGION1's start ran");
    assert!(
        start["detail"]
            .as_str()
            .unwrap()
            .contains("it was up at 1.0.0 in store 1.0.0: stopped and started again"),
        "{start}"
    );
    assert_clean_run(&events);
    load.finish(&env);
    env.assert_all_at("2.0.0", "2.0.0");
}
