//! End-to-end tests of the rollout coordinator (issue 4 item 10): real `redis-server`,
//! real host agents (`pacup agent`), real job and client load, `pacup rollout ...` run as a
//! process and checked against the PSOR afterwards.
//!
//! Every test builds its own PAC `MyPAC` in its own Redis: host1 runs REGION1 and REGION1B,
//! host2 runs REGION2, all at 1.0.0, with short heartbeats so that deaths are noticed fast.
//! The crash, fencing, failure and rollback scenarios are in `rollout_fault_tests.rs`; the
//! scaffolding they share ([`Env`], [`Load`], event helpers) lives here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use redis::Commands;
use serde_json::{json, Value};

use crate::support::{pacup, wait_for, wait_until, Cmd, Output, RedisServer, Running};

pub(crate) const PAC: &str = "MyPAC";
pub(crate) const HOST1_REGIONS: [&str; 2] = ["REGION1", "REGION1B"];
pub(crate) const ALL_REGIONS: [&str; 3] = ["REGION1", "REGION1B", "REGION2"];

/// Bound on a whole rollout command (they take a few seconds; this is a hang detector).
pub(crate) const RUN_TIMEOUT: Duration = Duration::from_secs(90);
/// Bound on "the PAC reaches this state" waits.
pub(crate) const STATE_TIMEOUT: Duration = Duration::from_secs(30);

/// The documented event action names.
pub(crate) const EVENT_ACTIONS: [&str; 17] = [
    "preflight",
    "listener_off",
    "drain",
    "stop",
    "apply_update",
    "check_compat",
    "start_upgrade",
    "start_warm",
    "health_gate",
    "set_mode_running",
    "listener_on",
    "set_mode_quiesce",
    "verify",
    "remove_old",
    "rollback",
    "pause",
    "done",
];

/// The fields of a rollout event.
pub(crate) const EVENT_FIELDS: [&str; 10] = [
    "ts",
    "rollout",
    "seq",
    "step",
    "action",
    "host",
    "region",
    "status",
    "detail",
    "elapsed_ms",
];

pub(crate) fn key(suffix: &str) -> String {
    format!("pac:{{{PAC}}}:{suffix}")
}

/// One PAC with two host agents in a private Redis, plus a temp dir for plan files.
pub(crate) struct Env {
    pub server: RedisServer,
    pub dir: tempfile::TempDir,
    /// Host agents by host name (killed on drop).
    pub agents: BTreeMap<String, Running>,
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (host, a) in &self.agents {
                let err = a.stderr_so_far();
                let tail: Vec<&str> = err.lines().rev().take(40).collect();
                eprintln!(
                    "----- agent {host} stderr (last lines) -----\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
    }
}

impl Env {
    /// MyPAC at 1.0.0: host1 (REGION1 cold, REGION1B) and host2 (REGION2 warm), every
    /// region live with its listener on.
    pub fn start() -> Env {
        let server = RedisServer::start();
        let dir = tempfile::Builder::new()
            .prefix("pacup-rollout-")
            .tempdir()
            .expect("temp dir");
        let mut env = Env {
            server,
            dir,
            agents: BTreeMap::new(),
        };
        env.start_agent("host1", "1.0.0", "cold");
        env.wait_regions_serving(&HOST1_REGIONS);
        env.start_agent("host2", "1.0.0", "warm");
        env.wait_regions_serving(&ALL_REGIONS);
        env
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// `pacup --psor <this server>`.
    pub fn pacup(&self) -> Cmd {
        pacup().args(["--psor", &self.url()])
    }

    /// Starts (or restarts) a host agent with the test's short heartbeats.
    pub fn start_agent(&mut self, host: &str, version: &str, autostart: &str) {
        let regions: &[&str] = if host == "host1" {
            &HOST1_REGIONS
        } else {
            &["REGION2"]
        };
        let mut cmd = self.pacup().args([
            "agent",
            "--pac",
            PAC,
            "--host",
            host,
            "--product-version",
            version,
            "--autostart",
            autostart,
            "--heartbeat-interval",
            "200ms",
            "--heartbeat-ttl",
            "1s",
            "--job-time",
            "15ms",
        ]);
        for r in regions {
            cmd = cmd.args(["--region", r]);
        }
        let old = self.agents.insert(host.to_string(), cmd.spawn());
        drop(old);
        wait_until(STATE_TIMEOUT, &format!("host agent {host} alive"), || {
            self.exists(&key(&format!("host:{host}:alive")))
        });
    }

    /// SIGKILL of a host agent (its regions die with it, as on a host crash).
    pub fn kill_agent(&mut self, host: &str) {
        let mut a = self.agents.remove(host).expect("agent started");
        a.kill();
    }

    pub fn conn(&self) -> redis::Connection {
        self.server.conn()
    }

    pub fn exists(&self, k: &str) -> bool {
        self.conn().exists(k).expect("EXISTS")
    }

    pub fn hget(&self, k: &str, field: &str) -> Option<String> {
        self.conn().hget(k, field).expect("HGET")
    }

    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut k: Vec<String> = self.conn().keys(pattern).expect("KEYS");
        k.sort();
        k
    }

    pub fn xlen_events(&self) -> u64 {
        self.conn().xlen(key("events")).expect("XLEN")
    }

    pub fn region_alive(&self, r: &str) -> bool {
        self.exists(&key(&format!("region:{r}:alive")))
    }

    /// Live, active and accepting clients.
    pub fn region_serving(&self, r: &str) -> bool {
        let k = key(&format!("region:{r}"));
        self.region_alive(r)
            && self.hget(&k, "state").as_deref() == Some("active")
            && self.hget(&k, "listener").as_deref() == Some("on")
    }

    #[track_caller]
    pub fn wait_regions_serving(&self, regions: &[&str]) {
        wait_until(STATE_TIMEOUT, &format!("{regions:?} serving"), || {
            regions.iter().all(|r| self.region_serving(r))
        });
    }

    /// `pac status --json`.
    pub fn pac_status(&self) -> Value {
        self.pacup()
            .args(["pac", "status", PAC, "--json"])
            .run()
            .success()
            .json()
    }

    /// `rollout status --json`.
    pub fn rollout_status(&self) -> Value {
        self.pacup()
            .args(["rollout", "status", PAC, "--json"])
            .run()
            .success()
            .json()
    }

    /// `jobs stats --json`.
    pub fn job_stats(&self) -> Value {
        self.pacup()
            .args(["jobs", "stats", PAC, "--json"])
            .run()
            .success()
            .json()
    }

    /// Every event of the PAC's stream (`pacup events --json`), oldest first.
    pub fn events(&self) -> Vec<Value> {
        let v = self
            .pacup()
            .args(["events", PAC, "--json"])
            .run()
            .success()
            .json();
        v["events"].as_array().cloned().expect("events array")
    }

    /// The stream's events of one rollout.
    pub fn rollout_events(&self, id: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["rollout"].as_str() == Some(id))
            .collect()
    }

    /// The journal's field of the current rollout.
    pub fn journal(&self, field: &str) -> Option<String> {
        self.hget(&key("rollout:current"), field)
    }

    /// Writes a plan: the fixture with short timings, then `overrides` (top-level keys).
    pub fn plan(&self, name: &str, fixture: &str, overrides: Value) -> PathBuf {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/plans")
            .join(fixture);
        let text = std::fs::read_to_string(&path).expect("fixture plan");
        let mut plan: Value = serde_json::from_str(&text).expect("fixture is JSON");
        let short = json!({
            "drain_timeout": "3s",
            "stop_timeout": "10s",
            "health": {"min_healthy": "1s", "deadline": "20s"},
            "progress_deadline": "60s",
        });
        for src in [short, overrides] {
            for (k, v) in src.as_object().expect("object") {
                plan[k.as_str()] = v.clone();
            }
        }
        let out = self.dir.path().join(name);
        std::fs::write(&out, serde_json::to_string_pretty(&plan).unwrap()).expect("write plan");
        out
    }

    /// `rollout run <plan> --json --lease-ttl 2s [extra]`, in the background.
    pub fn spawn_run(&self, plan: &std::path::Path, extra: &[&str]) -> Running {
        self.pacup()
            .args(["rollout", "run"])
            .arg(plan)
            .args(["--json", "--lease-ttl", "2s"])
            .args(extra)
            .spawn()
    }

    /// `rollout run` to completion.
    pub fn run(&self, plan: &std::path::Path, extra: &[&str]) -> Output {
        self.spawn_run(plan, extra).wait_with_timeout(RUN_TIMEOUT)
    }

    /// `rollout <verb> MyPAC --json --lease-ttl 2s` to completion (resume, rollback).
    pub fn rollout(&self, verb: &str, extra: &[&str]) -> Output {
        self.pacup()
            .args(["rollout", verb, PAC, "--json", "--lease-ttl", "2s"])
            .args(extra)
            .timeout(RUN_TIMEOUT)
            .run()
    }

    /// Waits until no coordinator holds the lease (a killed one's lease expires).
    #[track_caller]
    pub fn wait_lease_free(&self) {
        wait_until(STATE_TIMEOUT, "the coordinator lease to be free", || {
            !self.exists(&key("lock"))
        });
    }

    /// Fills the old store with `n` extra keys, so deleting it takes a while.
    pub fn bloat_store(&self, version: &str, n: u32) {
        let prefix = key(&format!("store:{version}:bulk:"));
        let _: () = redis::cmd("EVAL")
            .arg("for i = 1, tonumber(ARGV[2]) do redis.call('SET', ARGV[1] .. i, 'x') end")
            .arg(0)
            .arg(&prefix)
            .arg(n)
            .query(&mut self.conn())
            .expect("bloat store");
    }

    /// The end state of a finished incompatible (or compatible) rollout to `version`:
    /// one running store `store`, every region live at `version` in it with its listener
    /// on, both hosts at `version`, nothing left of other stores, no lease held.
    #[track_caller]
    pub fn assert_all_at(&self, version: &str, store: &str) {
        // Listeners are switched on by notification; allow the last one a moment.
        self.wait_regions_serving(&ALL_REGIONS);
        let s = self.pac_status();
        let stores: Vec<(String, String)> = s["stores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|st| {
                (
                    st["version"].as_str().unwrap().to_string(),
                    st["mode"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            stores,
            vec![(store.to_string(), "running".to_string())],
            "stores: {s:#}"
        );
        for r in ALL_REGIONS {
            let ri = s["regions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["name"] == r)
                .unwrap_or_else(|| panic!("no region {r}: {s:#}"));
            assert_eq!(ri["alive"], true, "{r}: {s:#}");
            assert_eq!(ri["product_version"], version, "{r}: {s:#}");
            assert_eq!(ri["store"], store, "{r}: {s:#}");
            assert_eq!(ri["state"], "active", "{r}: {s:#}");
        }
        for h in s["hosts"].as_array().unwrap() {
            assert_eq!(h["product_version"], version, "host {}: {s:#}", h["name"]);
        }
        let mut live: Vec<String> = s["stores"][0]["live_members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap().to_string())
            .collect();
        live.sort();
        assert_eq!(live, ALL_REGIONS, "{s:#}");
        let stray: Vec<String> = self
            .keys(&key("store:*"))
            .into_iter()
            .filter(|k| !k.starts_with(&key(&format!("store:{store}:"))))
            .collect();
        assert!(stray.is_empty(), "keys of other stores remain: {stray:?}");
        let removing: u64 = self.conn().scard(key("removing")).expect("SCARD");
        assert_eq!(removing, 0, "a store is still being removed");
        assert!(!self.exists(&key("lock")), "the lease is still held");
    }
}

/// Job submission (and optionally client transactions) at 30/s for a while, in the
/// background; [`Load::finish`] checks that nothing was lost.
pub(crate) struct Load {
    jobs: Running,
    clients: Option<Running>,
    duration: Duration,
}

impl Load {
    /// Starts the load and waits until jobs are completing.
    pub fn start(env: &Env, duration: &str, with_clients: bool) -> Load {
        let d = humantime_secs(duration);
        let jobs = env
            .pacup()
            .args([
                "jobs",
                "submit",
                PAC,
                "--rate",
                "30/s",
                "--duration",
                duration,
                "--json",
            ])
            .spawn();
        let clients = with_clients.then(|| {
            env.pacup()
                .args([
                    "clients",
                    "run",
                    PAC,
                    "--rate",
                    "30/s",
                    "--duration",
                    duration,
                    "--json",
                ])
                .spawn()
        });
        wait_until(STATE_TIMEOUT, "jobs to be completing", || {
            env.job_stats()["completed"].as_u64().unwrap_or(0) > 0
        });
        Load {
            jobs,
            clients,
            duration: d,
        }
    }

    /// Waits for the load to end and every job to complete; asserts zero lost, zero
    /// duplicate jobs and zero failed client transactions. Returns (job stats, client report).
    #[track_caller]
    pub fn finish(self, env: &Env) -> (Value, Option<Value>) {
        let bound = self.duration + Duration::from_secs(60);
        let submitted = self.jobs.wait_with_timeout(bound);
        submitted.success();
        let submitted = submitted.json()["submitted"].as_u64().expect("submitted");
        let clients = self.clients.map(|c| {
            let out = c.wait_with_timeout(bound);
            let report = out.json();
            if report["failed"] != 0 {
                out.fail("client transactions failed during the rollout");
            }
            out.success();
            report
        });
        let stats = wait_for(STATE_TIMEOUT, "every submitted job to complete", || {
            let s = env.job_stats();
            (s["pending"] == 0).then_some(s)
        });
        assert!(submitted > 0, "no job was submitted");
        assert_eq!(stats["submitted"], submitted, "{stats:#}");
        assert_eq!(stats["completed"], submitted, "jobs lost: {stats:#}");
        assert_eq!(stats["duplicates"], 0, "duplicate jobs: {stats:#}");
        if let Some(c) = &clients {
            assert!(c["sent"].as_u64().unwrap() > 0, "{c:#}");
            assert_eq!(c["ok"], c["sent"], "{c:#}");
        }
        (stats, clients)
    }
}

fn humantime_secs(d: &str) -> Duration {
    Duration::from_secs(d.trim_end_matches('s').parse().expect("whole seconds"))
}

/// The JSON events a `rollout run|resume --json` printed.
pub(crate) fn stdout_events(out: &str) -> Vec<Value> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON event ({e}): {l}")))
        .collect()
}

/// Whether a stdout line is the event `action`/`status` (on `region`, if given).
pub(crate) fn is_event(line: &str, action: &str, status: &str, region: Option<&str>) -> bool {
    let Ok(e) = serde_json::from_str::<Value>(line) else {
        return false;
    };
    e["action"] == action
        && e["status"] == status
        && region.is_none_or(|r| e["region"].as_str() == Some(r))
}

/// Checks one event against the documented shape (types, names, an RFC 3339 time).
#[track_caller]
pub(crate) fn check_event_shape(e: &Value) {
    for f in EVENT_FIELDS {
        assert!(e.get(f).is_some(), "event lacks {f}: {e}");
    }
    let ts = e["ts"].as_str().unwrap_or_else(|| panic!("ts: {e}"));
    let b = ts.as_bytes();
    assert!(
        ts.len() >= 20
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && (ts.ends_with('Z') || ts[19..].contains('+') || ts[19..].contains('-')),
        "ts is not RFC 3339: {e}"
    );
    assert!(e["rollout"].as_str().is_some_and(|s| !s.is_empty()), "{e}");
    for f in ["seq", "step", "elapsed_ms"] {
        assert!(e[f].is_u64(), "{f} is not a number: {e}");
    }
    for f in ["host", "region"] {
        assert!(e[f].is_null() || e[f].is_string(), "{f}: {e}");
    }
    assert!(e["detail"].is_string(), "{e}");
    let action = e["action"].as_str().unwrap_or("");
    assert!(
        EVENT_ACTIONS.contains(&action),
        "unknown action {action}: {e}"
    );
    let status = e["status"].as_str().unwrap_or("");
    assert!(
        ["started", "done", "failed", "skipped"].contains(&status),
        "unknown status {status}: {e}"
    );
}

/// The seq numbers of a rollout's events run 1, 2, 3, ... without a gap or repeat.
#[track_caller]
pub(crate) fn assert_seq_consecutive(events: &[Value]) {
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let want: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, want, "event seq numbers are not 1..=n");
}

/// Position of the first event matching action/status/region.
#[track_caller]
pub(crate) fn pos(events: &[Value], action: &str, status: &str, region: Option<&str>) -> usize {
    events
        .iter()
        .position(|e| {
            e["action"] == action
                && e["status"] == status
                && region.is_none_or(|r| e["region"].as_str() == Some(r))
        })
        .unwrap_or_else(|| panic!("no {action} {status} {region:?} event"))
}

/// Every step event: each step's `started` is followed by its `done`/`skipped` (never
/// `failed`); steps in hand at the same time are of one action (a parallel group); the
/// rollout ends with `done`.
#[track_caller]
pub(crate) fn assert_clean_run(events: &[Value]) {
    let mut open: BTreeMap<u64, &Value> = BTreeMap::new();
    for e in events {
        assert_ne!(e["status"], "failed", "a step failed: {e}");
        let n = e["step"].as_u64().unwrap();
        match e["status"].as_str().unwrap() {
            "started" => {
                if let Some(o) = open.values().find(|o| o["action"] != e["action"]) {
                    panic!("{e} started while {o} was running");
                }
                assert!(open.insert(n, e).is_none(), "{e} started twice");
            }
            _ if e["action"] == "preflight" || e["action"] == "done" => {}
            _ => {
                let s = open
                    .remove(&n)
                    .unwrap_or_else(|| panic!("{e} ended a step never started"));
                assert_eq!(s["action"], e["action"], "{e}");
            }
        }
    }
    assert!(open.is_empty(), "steps never ended: {open:?}");
    let last = events.last().expect("events");
    assert_eq!(
        (&last["action"], &last["status"]),
        (&json!("done"), &json!("done")),
        "{last}"
    );
}

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
    for a in [
        "listener_off",
        "drain",
        "stop",
        "apply_update",
        "check_compat",
        "start_upgrade",
        "start_warm",
        "health_gate",
        "set_mode_running",
        "listener_on",
        "set_mode_quiesce",
        "verify",
        "remove_old",
        "done",
    ] {
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
    let nothing_written = |what: &str| {
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
    let epoch = env.hget(&key("meta"), "epoch");
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
    assert_eq!(
        env.hget(&key("meta"), "epoch"),
        epoch,
        "an invalid plan took the lease"
    );
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
