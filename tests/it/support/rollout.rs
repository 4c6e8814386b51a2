//! What the rollout tests share: the [`LivePac`]'s rollout commands (plans, runs, the
//! journal and events), a background [`Load`] that must lose nothing, and checks of the
//! documented event stream.

use std::path::PathBuf;
use std::time::Duration;

use redis::Commands;
use serde_json::{json, Value};

use super::pac::{key, LivePac, ALL_REGIONS, PAC, RUN_TIMEOUT, STATE_TIMEOUT};
use super::{wait_for, wait_until, Cmd, Output, Running};

/// The documented event action names.
pub(crate) const EVENT_ACTIONS: [&str; 21] = [
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
    "backup",
    "monitor_suspend",
    "monitor_resume",
    "amend",
];

/// Actions only a plan that asks for them has (backups, the monitoring hold) or that
/// only `rollout resume --plan` writes.
pub(crate) const OPTIONAL_ACTIONS: [&str; 4] =
    ["backup", "monitor_suspend", "monitor_resume", "amend"];

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

impl LivePac {
    /// `rollout status --json`.
    pub fn rollout_status(&self) -> Value {
        self.pacup()
            .args(["rollout", "status", PAC, "--json"])
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
        write_plan(self.dir.path(), name, fixture, overrides)
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
            .arg(
                "for i = 1, tonumber(ARGV[2]) do redis.call('SET', ARGV[1] .. i, 'x'); \
                 redis.call('RPUSH', ARGV[3], ARGV[1] .. i) end",
            )
            .arg(0)
            .arg(&prefix)
            .arg(n)
            .arg(key(&format!("store:{version}:index")))
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

/// Writes plan `name` into `dir`: the fixture with short timings, then `overrides`
/// (top-level keys).
pub(crate) fn write_plan(
    dir: &std::path::Path,
    name: &str,
    fixture: &str,
    overrides: Value,
) -> PathBuf {
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
    let out = dir.join(name);
    std::fs::write(&out, serde_json::to_string_pretty(&plan).unwrap()).expect("write plan");
    out
}

/// What a [`Load`] needs of a PAC under test: its `pacup` command line.
pub(crate) trait PacCli {
    /// `pacup --psor <the PAC's PSOR>`.
    fn cli(&self) -> Cmd;

    /// `jobs stats --json`.
    fn stats(&self) -> Value {
        self.cli()
            .args(["jobs", "stats", PAC, "--json"])
            .run()
            .success()
            .json()
    }
}

impl PacCli for LivePac {
    fn cli(&self) -> Cmd {
        self.pacup()
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
    pub fn start(env: &impl PacCli, duration: &str, with_clients: bool) -> Load {
        let d = humantime_secs(duration);
        let jobs = env
            .cli()
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
            env.cli()
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
            env.stats()["completed"].as_u64().unwrap_or(0) > 0
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
    pub fn finish(self, env: &impl PacCli) -> (Value, Option<Value>) {
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
            let s = env.stats();
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
    let mut open: std::collections::BTreeMap<u64, &Value> = std::collections::BTreeMap::new();
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
