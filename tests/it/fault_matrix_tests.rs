//! The fault matrix: the incompatible two-host rollout under job and client load, with
//! one kind of fault injected per test, each checked the same way: the right end state,
//! every submitted job completed exactly once (no duplicate run), no failed client
//! request, and the documented exit codes.
//!
//! - the coordinator `kill -9`ed at random instants (seeded; the seed is printed and
//!   `PACUP_TEST_SEED` replays it), resumed each time;
//! - a host agent killed and restarted by its "supervisor" with its original command
//!   line, in every phase of its host's part of the rollout;
//! - a host agent frozen (SIGSTOP) past its heartbeat TTL while its region is being
//!   stopped, then resumed (SIGCONT);
//! - a region crashed during and just after its health gate, under each `on_failure`.
//!
//! They take minutes, so they are ignored by default: `.ci/run` runs them with
//! `cargo test --test it -- --ignored matrix_`. Scaffolding: [`crate::rollout_tests`] and
//! [`crate::rollout_fault_tests`].

use std::time::{Duration, Instant};

use serde_json::json;

use crate::rollout_fault_tests::{
    assert_gate_failed_on, assert_rolled_back, crash_in_gate, failed_event, failure_plan,
};
use crate::rollout_tests::{
    check_event_shape, is_event, key, stdout_events, Env, Load, PAC, RUN_TIMEOUT, STATE_TIMEOUT,
};
use crate::support::pac::{agent_cmd, SOON};
use crate::support::{seed, wait_until, Output, Rng, SIGCONT, SIGKILL, SIGSTOP};

/// The plan of round `major` of a test that rolls the PAC forward several times:
/// `<major>.0.0`, each an incompatible upgrade of the one before.
fn round_plan(env: &Env, major: u32) -> std::path::PathBuf {
    env.plan(
        &format!("p{major}.json"),
        "two-host-incompatible.json",
        json!({"target": {"version": format!("{major}.0.0")}}),
    )
}

/// Whether the journal says the current rollout ended `done`.
fn rollout_done(env: &Env) -> bool {
    env.journal("state").as_deref() == Some("done")
}

// ---------------------------------------------------------------------------------------
// The coordinator killed at random instants
// ---------------------------------------------------------------------------------------

/// How many times the coordinator is killed in one run.
const KILLS: u32 = 20;

#[test]
#[ignore = "fault matrix: run by .ci/run"]
fn matrix_coordinator_kill_9_at_random_instants_then_resume() {
    let mut rng = Rng::new(seed("matrix_coordinator_kill_9_at_random_instants"));
    let env = Env::start();
    let load = Load::start(&env, "50s", true);
    let mut major = 2;
    let mut plan = round_plan(&env, major);
    let mut kills = 0;
    while kills < KILLS {
        // A rollout to resume, or (none yet, or the last one done) the next one to run.
        let resume = env.journal("id").is_some() && !rollout_done(&env);
        let mut c = if resume {
            env.pacup()
                .args(["rollout", "resume", PAC, "--json", "--lease-ttl", "1s"])
                .spawn()
        } else {
            env.pacup()
                .args(["rollout", "run"])
                .arg(&plan)
                .args(["--json", "--lease-ttl", "1s"])
                .spawn()
        };
        // The instant is the point of the test: anywhere in the first 1.5 s of this
        // coordinator's life, including before it wrote anything.
        std::thread::sleep(Duration::from_millis(rng.below(1500)));
        let out = if c.is_running() {
            c.signal(SIGKILL);
            c.wait_with_timeout(Duration::from_secs(10))
        } else {
            c.wait_with_timeout(RUN_TIMEOUT)
        };
        // A coordinator may also finish by itself between the check and the signal.
        if out.signal == Some(SIGKILL) {
            kills += 1;
            env.wait_lease_free();
            // Killed at any instant, the rollout is running (or not yet started, or done
            // by its last write): never paused, failed or rolled back.
            let state = env.journal("state");
            assert!(
                matches!(state.as_deref(), None | Some("running" | "done")),
                "after kill {kills}: state {state:?}"
            );
        } else {
            out.success();
        }
        if rollout_done(&env) && env.journal("target").as_deref() == Some(&format!("{major}.0.0")) {
            env.assert_all_at(&format!("{major}.0.0"), &format!("{major}.0.0"));
            major += 1;
            plan = round_plan(&env, major);
        }
    }
    eprintln!("{kills} kills over {} rollout(s)", major - 1);
    // The last one finishes on one more resume (or was finished by its last coordinator:
    // resuming it then says so and exits 0 too).
    if env.journal("id").is_some() && !rollout_done(&env) {
        let out = env.rollout("resume", &[]);
        out.success();
        stdout_events(&out.stdout)
            .iter()
            .for_each(check_event_shape);
    }
    assert!(rollout_done(&env));
    let v = env.journal("target").expect("journal target");
    env.assert_all_at(&v, &v);
    load.finish(&env);
}

// ---------------------------------------------------------------------------------------
// A host agent killed and restarted with its original command line
// ---------------------------------------------------------------------------------------

/// Kills `host`'s agent (its regions die with it) and starts it again as its supervisor
/// would: the original command line (`--product-version 1.0.0`, host1's `--autostart
/// cold`, host2's `warm`), whatever the rollout has installed since. Returns once it
/// serves; it autostarts its regions, or leaves them to the coordinator when a rollout
/// is acting on its host.
fn restart_agent(env: &mut Env, host: &str) -> String {
    env.kill_agent(host);
    let regions: Vec<String> = env
        .hosts
        .iter()
        .find(|(h, _)| h == host)
        .map(|(_, rs)| rs.clone())
        .expect("a host of the PAC");
    let regions: Vec<&str> = regions.iter().map(String::as_str).collect();
    let autostart = if host == "host1" { "cold" } else { "warm" };
    let mut agent = agent_cmd(
        &env.url(),
        host,
        "1.0.0",
        &regions,
        autostart,
        &["--job-time", "15ms"],
    )
    .spawn();
    let ready = format!("Host agent {host} ready for PAC {PAC}");
    let line = agent.wait_for_stdout_line(|l| l.starts_with(&ready), SOON);
    env.agents.insert(host.to_string(), agent);
    line
}

/// The phases of a host's part in the rollout, as the event after which its agent dies.
/// (`host`, `action`, `status`, `region`, what it is.)
const AGENT_PHASES: [(&str, &str, &str, Option<&str>, &str); 7] = [
    (
        "host2",
        "stop",
        "started",
        Some("REGION1"),
        "before its wave",
    ),
    (
        "host1",
        "stop",
        "started",
        Some("REGION1"),
        "during its stop",
    ),
    ("host1", "apply_update", "done", None, "after its update"),
    (
        "host1",
        "start_upgrade",
        "started",
        Some("REGION1"),
        "during its start",
    ),
    ("host1", "health_gate", "started", None, "during its gate"),
    (
        "host1",
        "stop",
        "started",
        Some("REGION2"),
        "after its wave",
    ),
    (
        "host2",
        "set_mode_quiesce",
        "started",
        None,
        "after its gate, in the last wave",
    ),
];

#[test]
#[ignore = "fault matrix: run by .ci/run"]
fn matrix_agent_killed_and_restarted_with_its_original_command_line_in_every_phase() {
    let mut env = Env::start();
    let load = Load::start(&env, "90s", true);
    for (i, (host, action, status, region, phase)) in AGENT_PHASES.into_iter().enumerate() {
        let major = i as u32 + 2;
        let v = format!("{major}.0.0");
        let plan = round_plan(&env, major);
        let mut run = env.spawn_run(&plan, &[]);
        run.wait_for_stdout_line(|l| is_event(l, action, status, region), RUN_TIMEOUT);
        let ready = restart_agent(&mut env, host);
        eprintln!("{v}: {host}'s agent restarted {phase}: {ready}");
        let out = run.wait_with_timeout(RUN_TIMEOUT);
        if out.code != 0 {
            out.fail(&format!(
                "the rollout to {v} did not finish with {host}'s agent restarted {phase}"
            ));
        }
        // The restarted agent runs what is installed on its host, not its stale flag.
        let installed = env.hget(&key(&format!("host:{host}")), "product_version");
        assert_eq!(installed.as_deref(), Some(v.as_str()), "{phase}");
        env.assert_all_at(&v, &v);
    }
    let agent = env.agents.get("host1").expect("host1's agent");
    assert!(
        agent
            .stderr_so_far()
            .contains("--product-version 1.0.0 is stale: the host's record shows"),
        "no warning naming the stale flag and the installed version:\n{}",
        agent.stderr_so_far()
    );
    // Its last restart came after its wave, with the rollout still active: its
    // `--autostart cold` started the regions warm (a cold start with host2's region
    // stopped would have wiped the PAC and the rollout's journal).
    assert!(
        agent.stderr_so_far().contains("warm, not cold: rollout"),
        "host1's cold autostart during the rollout was not made warm:\n{}",
        agent.stderr_so_far()
    );
    load.finish(&env);
}

// ---------------------------------------------------------------------------------------
// A host agent frozen past its TTL
// ---------------------------------------------------------------------------------------

/// Pending job entries held by `region`.
fn pending_of(env: &Env, region: &str) -> u64 {
    let v: redis::Value = redis::cmd("XPENDING")
        .arg(key("ds:jobs"))
        .arg("regions")
        .arg("-")
        .arg("+")
        .arg(1000)
        .arg(region)
        .query(&mut env.conn())
        .unwrap_or(redis::Value::Nil);
    match v {
        redis::Value::Array(a) => a.len() as u64,
        _ => 0,
    }
}

#[test]
#[ignore = "fault matrix: run by .ci/run"]
fn matrix_agent_frozen_past_its_ttl_then_resumed() {
    let mut env = Env::start();
    let plan = env.plan("p.json", "two-host-incompatible.json", json!({}));
    let load = Load::start(&env, "12s", true);
    let mut run = env.spawn_run(&plan, &[]);
    // host1 freezes while the coordinator drains REGION1: the stop that follows goes to
    // a host that does not answer.
    run.wait_for_stdout_line(
        |l| is_event(l, "drain", "started", Some("REGION1")),
        RUN_TIMEOUT,
    );
    let agent = env.agents.get_mut("host1").expect("host1's agent");
    agent.signal(SIGSTOP);
    let frozen = Instant::now();
    // Frozen past the TTL: host and regions are seen silent, and the jobs they held are
    // taken over by REGION2.
    wait_until(STATE_TIMEOUT, "host1 and its regions to go silent", || {
        !env.exists(&key("host:host1:alive"))
            && !env.region_alive("REGION1")
            && !env.region_alive("REGION1B")
    });
    wait_until(STATE_TIMEOUT, "host1's jobs to be reclaimed", || {
        pending_of(&env, "REGION1") + pending_of(&env, "REGION1B") == 0
    });
    let while_frozen = run.stdout_so_far();
    env.agents.get_mut("host1").unwrap().signal(SIGCONT);
    eprintln!("host1 frozen for {:?}", frozen.elapsed());
    // The coordinator never counted the silent host's stop as done.
    for e in stdout_events(&while_frozen) {
        assert!(
            !(e["action"] == "stop"
                && e["region"] == "REGION1"
                && (e["status"] == "done" || e["status"] == "skipped")),
            "REGION1's stop was counted while its host was frozen: {e}"
        );
    }
    let out = run.wait_with_timeout(RUN_TIMEOUT);
    out.success();
    env.assert_all_at("2.0.0", "2.0.0");
    let (stats, _) = load.finish(&env);
    assert_eq!(stats["duplicates"], 0, "{stats:#}");
}

// ---------------------------------------------------------------------------------------
// A region crashed during and just after its gate, under each on_failure
// ---------------------------------------------------------------------------------------

/// When the region crashes.
#[derive(Clone, Copy)]
enum Crash {
    /// In its wave's health gate (just after its start).
    DuringGate,
    /// Right after its wave's gate passed.
    AfterGate,
}

/// Runs the rollout under load, crashes REGION1B (wave 1) as `when` says, and returns the
/// coordinator's output.
fn crash_region(env: &Env, plan: &std::path::Path, when: Crash) -> Output {
    match when {
        Crash::DuringGate => crash_in_gate(env, plan, "REGION1B"),
        Crash::AfterGate => {
            let mut run = env.spawn_run(plan, &[]);
            run.wait_for_stdout_line(|l| is_event(l, "health_gate", "done", None), RUN_TIMEOUT);
            env.pacup()
                .args(["region", "crash", "REGION1B", "--pac", PAC])
                .run()
                .success();
            run.wait_with_timeout(RUN_TIMEOUT)
        }
    }
}

/// The failed step names REGION1B: its gate (during), or a later step (after: its
/// `listener_on`, or `verify`), never reported done.
#[track_caller]
fn assert_failed_on_region1b(out: &Output, when: Crash) {
    let events = stdout_events(&out.stdout);
    events.iter().for_each(check_event_shape);
    match when {
        Crash::DuringGate => assert_gate_failed_on(&events, "REGION1B"),
        Crash::AfterGate => {
            let failed = failed_event(&events);
            let d = failed["detail"].as_str().unwrap_or_default();
            assert!(
                d.contains("REGION1B") || failed["region"] == "REGION1B",
                "{failed}"
            );
            assert_ne!(failed["action"], "health_gate", "{failed}");
        }
    }
    assert!(
        !events
            .iter()
            .any(|e| e["action"] == "done" && e["status"] == "done"),
        "the rollout ended done with REGION1B dead"
    );
}

/// Restarts the crashed region (its host is at 2.0.0 already) and resumes: done. As an
/// operator must: a start is refused while the dead region's liveness key lasts (up to
/// its TTL), and the rollout may pause well within that.
fn restart_and_resume(env: &Env) {
    wait_until(STATE_TIMEOUT, "REGION1B's liveness key to expire", || {
        !env.region_alive("REGION1B")
    });
    env.pacup()
        .args([
            "region",
            "start",
            "REGION1B",
            "--pac",
            PAC,
            "--start-type",
            "warm",
        ])
        .run()
        .success();
    let resumed = env.rollout("resume", &[]);
    resumed.success();
    env.assert_all_at("2.0.0", "2.0.0");
}

fn crash_under(on_failure: &str, when: Crash) {
    let env = Env::start();
    let plan = failure_plan(&env, on_failure, "3s", "5s", "30s");
    let load = Load::start(&env, "8s", true);
    let out = crash_region(&env, &plan, when);
    assert_failed_on_region1b(&out, when);
    let state = env.rollout_status()["state"].clone();
    match on_failure {
        "pause" => {
            out.code(6);
            assert_eq!(state, "paused");
            restart_and_resume(&env);
        }
        "rollback" => {
            out.code(7);
            // The rollback starts the dead region again, at 1.0.0.
            assert_rolled_back(&env, &out);
        }
        "abort" => {
            out.code(1);
            assert_eq!(state, "aborted");
            // Where it stood, the operator rolls back: the dead region is started again.
            let rb = env.rollout("rollback", &[]);
            rb.success();
            assert_rolled_back(&env, &rb);
        }
        other => panic!("no such on_failure {other}"),
    }
    let (stats, clients) = load.finish(&env);
    assert_eq!(stats["duplicates"], 0, "{stats:#}");
    assert_eq!(clients.expect("client load")["failed"], 0);
}

#[test]
#[ignore = "fault matrix: run by .ci/run"]
fn matrix_region_crashed_during_its_gate_under_pause() {
    crash_under("pause", Crash::DuringGate);
}

#[test]
#[ignore = "fault matrix: run by .ci/run"]
fn matrix_region_crashed_during_its_gate_under_rollback() {
    crash_under("rollback", Crash::DuringGate);
}

#[test]
#[ignore = "fault matrix: run by .ci/run"]
fn matrix_region_crashed_during_its_gate_under_abort() {
    crash_under("abort", Crash::DuringGate);
}

#[test]
#[ignore = "fault matrix: run by .ci/run"]
fn matrix_region_crashed_just_after_its_gate_under_pause() {
    crash_under("pause", Crash::AfterGate);
}

#[test]
#[ignore = "fault matrix: run by .ci/run"]
fn matrix_region_crashed_just_after_its_gate_under_rollback() {
    crash_under("rollback", Crash::AfterGate);
}

#[test]
#[ignore = "fault matrix: run by .ci/run"]
fn matrix_region_crashed_just_after_its_gate_under_abort() {
    crash_under("abort", Crash::AfterGate);
}
