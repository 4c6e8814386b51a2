//! The executor end to end (issue 9): parallel groups under load with nothing lost,
//! `max_parallel`, derived waves, `kill -9` inside a parallel group and inside a
//! rollback, a rollback visible in `rollout status`, `rollout rollback --fast`, listeners
//! off during every health gate, a region dying in its gate, and the refusal of a plan
//! that leaves out a live region. Scaffolding: [`crate::rollout_tests`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::rollout_fault_tests::kill_then_resume;
use crate::rollout_tests::{
    assert_clean_run, assert_seq_consecutive, check_event_shape, is_event, key, stdout_events, Env,
    Load, ALL_REGIONS, PAC, RUN_TIMEOUT, STATE_TIMEOUT,
};
use crate::support::{wait_for, wait_until, SIGKILL};

const HOST3_REGIONS: [&str; 2] = ["REGION3", "REGION3B"];

/// [`Env::start`] plus host3 (REGION3, REGION3B), so that a wave of two hosts exists.
fn env3() -> Env {
    let mut env = Env::start();
    let mut cmd = env.pacup().args([
        "agent",
        "--pac",
        PAC,
        "--host",
        "host3",
        "--product-version",
        "1.0.0",
        "--autostart",
        "warm",
        "--heartbeat-interval",
        "200ms",
        "--heartbeat-ttl",
        "1s",
        "--job-time",
        "15ms",
    ]);
    for r in HOST3_REGIONS {
        cmd = cmd.args(["--region", r]);
    }
    env.agents.insert("host3".into(), cmd.spawn());
    env.wait_regions_serving(&HOST3_REGIONS);
    env
}

fn hosts3() -> Value {
    json!([
        {"name": "host1", "regions": ["REGION1", "REGION1B"]},
        {"name": "host2", "regions": ["REGION2"]},
        {"name": "host3", "regions": HOST3_REGIONS},
    ])
}

/// Steps of `action` that were in hand at the same time: for each, whether every
/// `started` came before the first `done`/`skipped` of the group.
fn all_started_before_any_ended(events: &[Value], action: &str, regions: &[&str]) -> bool {
    let of =
        |e: &&Value| e["action"] == action && regions.contains(&e["region"].as_str().unwrap_or(""));
    let idx: Vec<(usize, &Value)> = events.iter().enumerate().filter(|(_, e)| of(e)).collect();
    let last_start = idx
        .iter()
        .filter(|(_, e)| e["status"] == "started")
        .map(|(i, _)| *i)
        .max();
    let first_end = idx
        .iter()
        .filter(|(_, e)| e["status"] != "started")
        .map(|(i, _)| *i)
        .min();
    matches!((last_start, first_end), (Some(s), Some(e)) if s < e)
}

#[test]
fn parallel_waves_under_load_lose_nothing_and_max_parallel_bounds_them() {
    let env = env3();
    let plan = env.plan(
        "p.json",
        "two-host-incompatible.json",
        json!({"hosts": hosts3(), "waves": [["host1"], ["host2", "host3"]]}),
    );
    let load = Load::start(&env, "7s", true);
    let out = env.run(&plan, &[]);
    out.success();
    let (stats, _) = load.finish(&env);
    for r in ["REGION1", "REGION2", "REGION3"] {
        assert!(
            stats["by_region"][r].as_u64().unwrap_or(0) > 0,
            "{r}: {stats:#}"
        );
    }
    let events = stdout_events(&out.stdout);
    events.iter().for_each(check_event_shape);
    assert_seq_consecutive(&events);
    assert_clean_run(&events);
    // Wave 2's three regions act at once: listeners off, drains, stops, both hosts'
    // updates, the warm starts.
    let wave2 = ["REGION2", "REGION3", "REGION3B"];
    for a in ["listener_off", "drain", "stop", "start_warm"] {
        assert!(
            all_started_before_any_ended(&events, a, &wave2),
            "{a} was not parallel"
        );
    }
    let updates: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "apply_update" && e["host"] != "host1")
        .collect();
    assert_eq!(updates.len(), 4, "{updates:#?}");
    assert_eq!(
        (&updates[0]["status"], &updates[1]["status"]),
        (&json!("started"), &json!("started"))
    );
    // Step numbers are those of `rollout plan` (one per region and action, no gap), and
    // the done marker follows the last.
    let n: BTreeSet<u64> = events.iter().filter_map(|e| e["step"].as_u64()).collect();
    assert_eq!(n.len() as u64, n.last().unwrap() + 1, "{n:?}");
    assert_eq!(events.last().unwrap()["step"], n.len() as u64 - 1);

    // max_parallel 1: the same rollout back again one step at a time.
    let back = env.plan(
        "back.json",
        "two-host-incompatible.json",
        json!({"hosts": hosts3(), "waves": [["host1"], ["host2", "host3"]],
               "target": {"version": "3.0.0"}, "max_parallel": 1}),
    );
    let out = env.run(&back, &[]);
    out.success();
    let events = stdout_events(&out.stdout);
    assert_clean_run(&events);
    let mut open = 0;
    for e in &events {
        match e["status"].as_str().unwrap() {
            "started" => {
                open += 1;
                assert_eq!(open, 1, "two steps in hand with max_parallel 1: {e}");
            }
            _ if e["action"] == "preflight" || e["action"] == "done" => {}
            _ => open -= 1,
        }
    }
}

#[test]
fn waves_derived_from_max_unavailable_and_canary_are_what_runs() {
    let env = env3();
    let plan = env.plan(
        "p.json",
        "two-host-incompatible.json",
        // 5 regions: the canary host1, then 60% = 3 regions a wave: host2 + host3 do not
        // fit together (1 + 2 = 3 fits), so one wave.
        json!({"hosts": hosts3(), "waves": [], "canary": 1, "max_unavailable": "60%"}),
    );
    let pv = env
        .pacup()
        .args(["rollout", "plan", "--json"])
        .arg(&plan)
        .run();
    pv.success();
    let gates: Vec<u64> = pv.json()["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["action"] == "health_gate")
        .map(|s| s["wave"].as_u64().unwrap())
        .collect();
    assert_eq!(gates, [0, 1], "{}", pv.stdout);
    let out = env.run(&plan, &[]);
    out.success();
    let h = env
        .pacup()
        .args(["rollout", "history", PAC, "--json"])
        .run()
        .json();
    assert_eq!(
        h["rollouts"][0]["plan"]["waves"],
        json!([["host1"], ["host2", "host3"]]),
        "the journaled plan carries the derived waves: {h:#}"
    );
}

#[test]
fn kill_9_inside_a_parallel_group_then_resume_does_exactly_what_is_missing() {
    // Kill points inside the groups of wave 1 (two regions each).
    kill_then_resume("listener_off", "done", Some("REGION1"), false);
    kill_then_resume("stop", "started", Some("REGION1B"), false);
    kill_then_resume("drain", "done", Some("REGION1B"), false);
    kill_then_resume("listener_on", "started", Some("REGION1"), false);
}

/// A rollout paused by a crash in wave 2's gate (REGION2), with gates long enough to
/// watch a rollback's.
fn paused_in_wave_2(env: &Env, min_healthy: &str) -> std::path::PathBuf {
    let plan = env.plan(
        "p.json",
        "two-host-incompatible.json",
        json!({"on_failure": "pause", "health": {"min_healthy": min_healthy, "deadline": "30s"}}),
    );
    let mut run = env.spawn_run(&plan, &[]);
    run.wait_for_stdout_line(
        |l| is_event(l, "start_warm", "done", Some("REGION2")),
        RUN_TIMEOUT,
    );
    env.pacup()
        .args(["region", "crash", "REGION2", "--pac", PAC])
        .run()
        .success();
    run.wait_with_timeout(RUN_TIMEOUT).code(6);
    plan
}

/// The end state of a rollback to 1.0.0.
#[track_caller]
fn assert_back_at_1(env: &Env) {
    env.assert_all_at("1.0.0", "1.0.0");
    assert!(env.keys(&key("store:2.0.0:*")).is_empty());
    assert_eq!(env.rollout_status()["state"], "rolled_back");
}

#[test]
fn a_rollback_runs_through_the_executor_shows_in_status_and_survives_kill_9() {
    let env = Env::start();
    paused_in_wave_2(&env, "3s");
    let load = Load::start(&env, "8s", false);
    let mut rb = env
        .pacup()
        .args(["rollout", "rollback", PAC, "--json", "--lease-ttl", "2s"])
        .spawn();
    // While it works, `rollout status` shows the rollback's step in hand and its list.
    let st = wait_for(STATE_TIMEOUT, "status to show a rollback gate", || {
        let st = env.rollout_status();
        (st["state"] == "rolling_back"
            && st["step"]["rollback"] == true
            && st["step"]["action"] == "health_gate"
            && st["gate"].is_object())
        .then_some(st)
    });
    assert!(st["steps_total"].as_u64().unwrap() > 26, "{st:#}");
    assert!(
        st["current"]
            .as_str()
            .is_some_and(|c| c.contains("health_gate")),
        "{st:#}"
    );
    rb.signal(SIGKILL);
    rb.wait_with_timeout(Duration::from_secs(10));
    env.wait_lease_free();
    let st = env.rollout_status();
    assert_eq!(st["state"], "rolling_back", "{st:#}");
    assert!(
        st["blocking"]
            .as_str()
            .is_some_and(|b| b.contains("no coordinator")),
        "{st:#}"
    );
    let id = env.journal("id").unwrap();
    let ended_before: BTreeSet<u64> = env
        .rollout_events(&id)
        .iter()
        .filter(|e| e["status"] == "done" || e["status"] == "skipped")
        .filter_map(|e| e["step"].as_u64())
        .filter(|n| *n > 25)
        .collect();
    assert!(!ended_before.is_empty(), "the rollback had done nothing");

    // Resumed: an operator's rollback that completes exits 0; nothing ran twice.
    let resumed = env.rollout("resume", &[]);
    resumed.success();
    let events = stdout_events(&resumed.stdout);
    events.iter().for_each(check_event_shape);
    for e in events.iter().filter(|e| e["status"] == "started") {
        let n = e["step"].as_u64().unwrap();
        assert!(
            !ended_before.contains(&n),
            "rollback step {n} ran twice: {e}"
        );
    }
    let last = events.last().unwrap();
    assert_eq!(
        (&last["action"], &last["status"]),
        (&json!("rollback"), &json!("done"))
    );
    let stream = env.rollout_events(&id);
    assert_seq_consecutive(&stream);
    // Rollback steps are numbered after the plan's 25 (the `rollback` event takes 25),
    // each ended exactly once.
    let mut ends: BTreeMap<u64, usize> = BTreeMap::new();
    for e in stream.iter().filter(|e| e["action"] != "rollback") {
        let n = e["step"].as_u64().unwrap();
        if n > 25 && e["status"] != "started" && e["action"] != "pause" {
            *ends.entry(n).or_default() += 1;
        }
    }
    assert!(ends.len() > 5, "{ends:?}");
    assert!(
        ends.values().all(|c| *c == 1),
        "a rollback step ended twice: {ends:?}"
    );
    assert_eq!(
        stream.iter().find(|e| e["action"] == "rollback").unwrap()["step"],
        25
    );
    load.finish(&env);
    assert_back_at_1(&env);
}

#[test]
fn a_fast_rollback_moves_every_host_at_once_and_loses_nothing() {
    let env = Env::start();
    paused_in_wave_2(&env, "10s");
    let load = Load::start(&env, "6s", false);
    let t = Instant::now();
    let out = env.rollout("rollback", &["--fast"]);
    let took = t.elapsed();
    out.success();
    let events = stdout_events(&out.stdout);
    assert!(
        events[0]["detail"].as_str().unwrap().contains("(fast)"),
        "{}",
        events[0]
    );
    let gates: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "health_gate" && e["status"] == "done")
        .collect();
    assert_eq!(gates.len(), 1, "one gate for every host: {events:#?}");
    assert!(
        gates[0]["elapsed_ms"].as_u64().unwrap() < 10_000,
        "{}",
        gates[0]
    );
    // Every host at once: both hosts' updates and all starts in one group each.
    assert!(all_started_before_any_ended(
        &events,
        "start_warm",
        &ALL_REGIONS
    ));
    assert!(
        took < Duration::from_secs(20),
        "took {took:?}: the 10s min_healthy was waited for"
    );
    load.finish(&env);
    assert_back_at_1(&env);
}

/// Samples, while a rollout runs, every region of the health gate in hand with its
/// listener, read in one MULTI with the journal's step in hand (so a sample never mixes
/// a gate with the listener_on after it).
struct GateWatch {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<(u64, String, String)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GateWatch {
    fn start(env: &Env, waves: Vec<Vec<&'static str>>) -> GateWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let mut conn = env.conn();
        let (s, out) = (stop.clone(), samples.clone());
        let all: Vec<&str> = waves.iter().flatten().copied().collect();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let mut p = redis::pipe();
                p.atomic()
                    .hget(key("rollout:current"), "current")
                    .hget(key("rollout:current"), "steps")
                    .hget(key("rollout:current"), "rollback_steps");
                for r in &all {
                    p.hget(key(&format!("region:{r}")), "listener");
                }
                let v: Vec<Option<String>> = p.query(&mut conn).expect("MULTI");
                let cur: Option<Value> = v[0].as_deref().and_then(|c| serde_json::from_str(c).ok());
                if let Some(cur) = cur.filter(|c| c["action"] == "health_gate") {
                    let n = cur["n"].as_u64().unwrap();
                    let steps: Vec<Value> = [&v[1], &v[2]]
                        .iter()
                        .filter_map(|s| s.as_deref())
                        .filter_map(|s| serde_json::from_str::<Vec<Value>>(s).ok())
                        .flatten()
                        .collect();
                    let wave = steps
                        .iter()
                        .find(|s| s["n"] == n)
                        .and_then(|s| s["wave"].as_u64());
                    if let Some(w) = wave {
                        for r in &waves[w as usize] {
                            let i = all.iter().position(|x| x == r).unwrap();
                            let l = v[3 + i].clone().unwrap_or_default();
                            out.lock().unwrap().push((n, r.to_string(), l));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        GateWatch {
            stop,
            samples,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<(u64, String, String)> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().expect("watch thread");
        self.samples.lock().unwrap().clone()
    }
}

#[test]
fn listeners_stay_off_during_every_gate_forward_and_in_a_rollback() {
    let env = Env::start();
    let waves = vec![vec!["REGION1", "REGION1B"], vec!["REGION2"]];
    let plan = env.plan(
        "p.json",
        "two-host-incompatible.json",
        json!({"on_failure": "rollback", "health": {"min_healthy": "1500ms", "deadline": "5s"}}),
    );
    let watch = GateWatch::start(&env, waves);
    let load = Load::start(&env, "8s", true);
    // Forward through wave 1; REGION2 crashes in wave 2's gate; the rollback moves both
    // hosts back, each through its own gate.
    let mut run = env.spawn_run(&plan, &[]);
    run.wait_for_stdout_line(
        |l| is_event(l, "start_warm", "done", Some("REGION2")),
        RUN_TIMEOUT,
    );
    env.pacup()
        .args(["region", "crash", "REGION2", "--pac", PAC])
        .run()
        .success();
    let out = run.wait_with_timeout(RUN_TIMEOUT);
    out.code(7);
    let samples = watch.finish();
    load.finish(&env);
    let gates: BTreeSet<u64> = samples.iter().map(|(n, _, _)| *n).collect();
    // Wave 1's and wave 2's gates, and the rollback's two.
    assert!(gates.len() >= 4, "gates sampled: {gates:?}");
    let on: Vec<_> = samples.iter().filter(|(_, _, l)| l == "on").collect();
    assert!(on.is_empty(), "listeners on during a gate: {on:?}");
    assert_back_at_1(&env);
}

#[test]
fn a_region_crashed_during_its_gate_fails_it_within_twice_the_heartbeat_ttl() {
    let env = Env::start();
    // The agents' heartbeat TTL is 1 s; the gate's own bounds are far longer.
    let plan = env.plan(
        "p.json",
        "two-host-incompatible.json",
        json!({"health": {"min_healthy": "20s", "deadline": "60s"}, "progress_deadline": "90s"}),
    );
    let mut run = env.spawn_run(&plan, &[]);
    run.wait_for_stdout_line(|l| is_event(l, "health_gate", "started", None), RUN_TIMEOUT);
    let t = Instant::now();
    env.pacup()
        .args(["region", "crash", "REGION1B", "--pac", PAC])
        .run()
        .success();
    let line =
        run.wait_for_stdout_line(|l| is_event(l, "health_gate", "failed", None), RUN_TIMEOUT);
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the gate failed {took:?} after the crash: {line}"
    );
    assert!(
        line.contains("REGION1B") && line.contains("not alive"),
        "{line}"
    );
    run.wait_with_timeout(RUN_TIMEOUT).code(6);
}

#[test]
fn a_plan_leaving_out_a_live_region_is_refused_naming_it() {
    let env = Env::start();
    let xlen = env.xlen_events();
    let only_host1 = json!({"hosts": [{"name": "host1", "regions": ["REGION1", "REGION1B"]}],
                            "waves": [["host1"]]});
    // Incompatible: refused, --allow-partial or not, naming the region left out.
    let plan = env.plan("p.json", "two-host-incompatible.json", only_host1.clone());
    for extra in [&[][..], &["--allow-partial"]] {
        let out = env.run(&plan, extra);
        out.code(1)
            .stderr_contains("leaves out live regions of the PAC: REGION2 on host2");
        if !extra.is_empty() {
            out.stderr_contains("--allow-partial applies to the compatible process only");
        }
    }
    env.pacup()
        .args(["rollout", "plan"])
        .arg(&plan)
        .run()
        .code(1)
        .stdout_contains("REGION2 on host2");
    assert!(
        env.keys(&key("rollout:*")).is_empty(),
        "a refused run wrote a journal"
    );
    assert_eq!(env.xlen_events(), xlen, "a refused run wrote events");
    assert!(!env.exists(&key("lock")));

    // Compatible: refused unless --allow-partial, which upgrades host1 alone.
    let mut partial = only_host1;
    partial["target"] = json!({"version": "1.0.1"});
    partial["strategy"] = json!("compatible");
    let plan = env.plan("c.json", "compatible-patch.json", partial);
    env.run(&plan, &[])
        .code(1)
        .stderr_contains("--allow-partial");
    env.run(&plan, &["--allow-partial"]).success();
    let s = env.pac_status();
    let version = |r: &str| {
        s["regions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == r)
            .map(|x| x["product_version"].clone())
    };
    assert_eq!(version("REGION1"), Some(json!("1.0.1")), "{s:#}");
    assert_eq!(version("REGION2"), Some(json!("1.0.0")), "{s:#}");
    wait_until(STATE_TIMEOUT, "every region serving", || {
        ALL_REGIONS.iter().all(|r| env.region_serving(r))
    });
}
