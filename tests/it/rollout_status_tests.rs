//! What a pipeline branches on: `rollout status --watch` exit codes for every end state,
//! a status that says why it waits, and Ctrl-C on a coordinator as a pause.
//! Scaffolding: [`crate::rollout_tests`].

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::rollout_tests::{
    is_event, key, stdout_events, Env, Load, PAC, RUN_TIMEOUT, STATE_TIMEOUT,
};
use crate::support::{wait_until, Running, SIGINT};

/// `rollout status MyPAC --watch [extra]` in the background.
fn spawn_watch(env: &Env, extra: &[&str]) -> Running {
    env.pacup()
        .args(["rollout", "status", PAC, "--watch"])
        .args(extra)
        .spawn()
}

#[test]
fn watch_started_before_the_rollout_follows_it_to_done_and_exits_0() {
    let env = Env::start();
    let mut watch = spawn_watch(&env, &["--timeout", "80s"]);
    watch.wait_for_stdout_line(
        |l| l.contains("waiting for a rollout to start"),
        STATE_TIMEOUT,
    );
    let plan = env.plan("p.json", "two-host-incompatible.json", json!({}));
    let out = env.run(&plan, &[]);
    out.success();
    let w = watch.wait_with_timeout(STATE_TIMEOUT);
    w.success();
    // One line per change, not a block per second: the gate and some step lines, then done.
    assert!(w.stdout.contains(" running step "), "{w}");
    assert!(w.stdout.contains(" gate "), "{w}");
    assert!(
        w.stdout.lines().last().is_some_and(|l| l.contains(" done")),
        "{w}"
    );
    assert!(w.stdout.lines().count() < 200, "{w}");
}

#[test]
fn watch_exits_8_when_held_and_follows_through_holds_to_done() {
    let env = Env::start();
    let plan = env.plan(
        "p.json",
        "two-host-incompatible.json",
        json!({"hold_finalization": true}),
    );
    let until_held = spawn_watch(&env, &["--until", "held", "--wait-new", "--timeout", "80s"]);
    let mut to_the_end = spawn_watch(&env, &["--json", "--timeout", "120s"]);
    env.run(&plan, &[]).code(8);
    until_held.wait_with_timeout(STATE_TIMEOUT).code(8);
    // The plain watch goes on through the hold: it is not an end state.
    to_the_end.wait_for_stdout_line(|l| l.contains("\"state\":\"held\""), STATE_TIMEOUT);
    assert!(to_the_end.is_running(), "the watch stopped at a hold");
    env.rollout("resume", &[]).code(8);
    assert!(
        to_the_end.is_running(),
        "the watch stopped at the second hold"
    );
    env.rollout("resume", &[]).success();
    let w = to_the_end.wait_with_timeout(STATE_TIMEOUT);
    w.success();
    let last: Value = serde_json::from_str(w.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["state"], "done", "{w}");
    // A finished rollout: the watch says so at once (with its code).
    spawn_watch(&env, &[])
        .wait_with_timeout(STATE_TIMEOUT)
        .success();
}

/// A plan whose first-wave gate fails once REGION1B is crashed in it.
fn crash_in_first_gate(env: &Env, on_failure: &str) -> Running {
    let plan = env.plan(
        "p.json",
        "two-host-incompatible.json",
        json!({"on_failure": on_failure, "health": {"min_healthy": "3s", "deadline": "5s"}}),
    );
    let mut run = env.spawn_run(&plan, &[]);
    run.wait_for_stdout_line(|l| is_event(l, "health_gate", "started", None), RUN_TIMEOUT);
    env.pacup()
        .args(["region", "crash", "REGION1B", "--pac", PAC])
        .run()
        .success();
    run
}

#[test]
fn watch_exits_6_at_a_pause_1_after_an_abort_and_7_after_a_rollback() {
    let env = Env::start();
    let until_paused = spawn_watch(&env, &["--until", "paused", "--timeout", "80s"]);
    let to_the_end = spawn_watch(&env, &["--timeout", "120s"]);
    let run = crash_in_first_gate(&env, "pause");

    // The dead region fails the gate at once (long before its 5 s deadline) and the
    // status names it.
    run.wait_with_timeout(RUN_TIMEOUT).code(6);
    let st = env.rollout_status();
    assert!(
        st["blocking"]
            .as_str()
            .is_some_and(|b| b.contains("REGION1B") && b.contains("died during the gate")),
        "{st:#}"
    );
    until_paused.wait_with_timeout(STATE_TIMEOUT).code(6);
    env.pacup().args(["rollout", "abort", PAC]).run().success();
    let w = to_the_end.wait_with_timeout(STATE_TIMEOUT);
    w.code(1);
    assert!(w.stdout.contains("aborted"), "{w}");

    // An operator's rollback that completes exits 0; a watch of it reports 7.
    let mut watch_rb = spawn_watch(&env, &["--wait-new", "--timeout", "80s"]);
    watch_rb.wait_for_stdout_line(|l| l.contains("waiting for a rollout"), STATE_TIMEOUT);
    env.rollout("rollback", &[]).success();
    watch_rb.wait_with_timeout(STATE_TIMEOUT).code(7);
}

#[test]
fn watch_times_out_with_9_and_refuses_bad_options_with_2() {
    let env = Env::start();
    let t = Instant::now();
    let out = env
        .pacup()
        .args(["rollout", "status", PAC, "--watch", "--timeout", "1s"])
        .run();
    out.code(9)
        .stderr_contains("timed out after 1s: no rollout started");
    assert!(t.elapsed() < Duration::from_secs(20));
    for bad in [
        &["--watch", "--until", "finished"][..],
        &["--watch", "--timeout", "soon"],
        &["--until", "held"],
        &["--timeout", "5s"],
    ] {
        env.pacup()
            .args(["rollout", "status", PAC])
            .args(bad)
            .run()
            .code(2);
    }
    assert!(
        !env.exists(&key("rollout:current")),
        "a refused watch wrote"
    );
}

#[test]
fn ctrl_c_pauses_after_the_step_in_hand_and_resume_finishes() {
    let env = Env::start();
    let plan = env.plan("p.json", "two-host-incompatible.json", json!({}));
    let load = Load::start(&env, "6s", true);
    let mut run = env.spawn_run(&plan, &[]);
    run.wait_for_stdout_line(|l| is_event(l, "drain", "started", None), RUN_TIMEOUT);
    run.signal(SIGINT);
    let out = run.wait_with_timeout(RUN_TIMEOUT);
    out.code(6)
        .stderr_contains("`pacup rollout resume MyPAC` continues");
    // The step in hand finished before the pause: its `done` is the event before it.
    let events = stdout_events(&out.stdout);
    let last = events.last().unwrap();
    assert_eq!(
        (&last["action"], &last["status"]),
        (&json!("pause"), &json!("done")),
        "{last}"
    );
    let before = &events[events.len() - 2];
    assert_eq!(
        (&before["action"], &before["status"]),
        (&json!("drain"), &json!("done")),
        "{before}"
    );
    let st = env.rollout_status();
    assert_eq!(st["state"], "paused", "{st:#}");
    assert!(st["lease_holder"].is_null(), "{st:#}");
    env.rollout("resume", &[]).success();
    load.finish(&env);
    env.assert_all_at("2.0.0", "2.0.0");
}

#[test]
fn a_second_ctrl_c_gives_up_the_step_at_once() {
    let env = Env::start();
    let plan = env.plan(
        "p.json",
        "two-host-incompatible.json",
        json!({"health": {"min_healthy": "20s", "deadline": "40s"}}),
    );
    let mut run = env.spawn_run(&plan, &[]);
    run.wait_for_stdout_line(|l| is_event(l, "health_gate", "started", None), RUN_TIMEOUT);
    run.signal(SIGINT);
    run.wait_for_stderr_line(|l| l.contains("press Ctrl-C again"), STATE_TIMEOUT);
    let t = Instant::now();
    run.signal(SIGINT);
    let out = run.wait_with_timeout(STATE_TIMEOUT);
    out.code(6)
        .stderr_contains("`pacup rollout resume MyPAC` continues");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    let st = env.rollout_status();
    assert_eq!(st["state"], "paused", "{st:#}");
    assert_eq!(
        st["current"].as_str().map(|c| c.contains("health_gate")),
        Some(true),
        "{st:#}"
    );
    wait_until(STATE_TIMEOUT, "the lease to be released", || {
        !env.exists(&key("lock"))
    });
}
