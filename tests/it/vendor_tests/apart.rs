//! The coordinator's state apart from the PSOR in the vendor boundary tests: a site and
//! a second Redis for `--state`, the check that after a rollout each holds only its own
//! keys, and a rollout whose coordinator is given an empty Redis as its PSOR.

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Value};

use super::boundary::{events, plan, probe_breaking_after_host1, rollout_cmd_on, write_plan};
use super::{key, Site, PAC};
use crate::support::monitor::Monitor;
use crate::support::{Output, RedisServer};

/// The site and the coordinator's own Redis.
pub(super) struct Boundary {
    pub(super) site: Site,
    pub(super) state: RedisServer,
}

/// The families of the coordinator's own keys.
const COORDINATOR_KEYS: [&str; 4] = ["lock", "rollout:current", "rollout:history", "events"];

impl Boundary {
    pub(super) fn new() -> Boundary {
        Boundary {
            site: super::boundary::site(),
            state: RedisServer::start(),
        }
    }

    /// `pacup rollout ...` with the state in the coordinator's Redis (`PACUP_STATE`).
    pub(super) fn rollout(&self, args: &[&str]) -> Output {
        super::boundary::rollout_cmd(&self.site, args)
            .env("PACUP_STATE", self.state.url())
            .run()
    }

    /// `pacup --state <url> ...`, which must succeed, as JSON.
    pub(super) fn json_of(&self, args: &[&str]) -> Value {
        let out = self
            .site
            .pacup()
            .args(["--state", &self.state.url()])
            .args(args)
            .arg("--json")
            .run();
        out.success();
        out.json()
    }

    /// Every key of `server`, without the PAC's prefix.
    pub(super) fn keys_of(server: &RedisServer) -> BTreeSet<String> {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query(&mut server.conn())
            .expect("KEYS");
        let prefix = key("");
        keys.into_iter()
            .map(|k| k.strip_prefix(&prefix).map_or(k.clone(), str::to_string))
            .collect()
    }

    pub(super) fn state_has(&self, k: &str) -> bool {
        Self::keys_of(&self.state).contains(k)
    }

    pub(super) fn journal(&self) -> HashMap<String, String> {
        redis::cmd("HGETALL")
            .arg(key("rollout:current"))
            .query(&mut self.state.conn())
            .expect("HGETALL")
    }

    /// The PSOR's fencing epoch (the PAC record's `epoch`).
    pub(super) fn psor_epoch(&self) -> Option<String> {
        redis::cmd("HGET")
            .arg(key("meta"))
            .arg("epoch")
            .query(&mut self.site.server.conn())
            .expect("HGET")
    }

    /// The PSOR holds nothing of the coordinator's: none of its keys (the events stream
    /// there, if any, is the tools' record of store changes, with no rollout event), no
    /// rollout series, its epoch as it was; the state Redis holds no region, host, store
    /// or datastore key, and its PAC record only the epoch.
    #[track_caller]
    pub(super) fn assert_apart(&self, psor_epoch: &Option<String>) {
        let psor = Self::keys_of(&self.site.server);
        // Only the PAC's own families (what the regions and the templates' tools
        // write), and the stream where the PSOR's scripts record their changes.
        let foreign: Vec<&String> = psor
            .iter()
            .filter(|k| *k != "events")
            .filter(|k| {
                pacup::psor::keys::shape_of(&key(k)).map(|s| s.home)
                    != Some(pacup::psor::keys::Home::Psor)
            })
            .collect();
        assert!(
            foreign.is_empty(),
            "not the PAC's keys in the PSOR: {foreign:?}"
        );
        for k in ["lock", "rollout:current", "rollout:history"] {
            assert!(
                !psor.contains(k),
                "the PSOR has the coordinator's {k}: {psor:#?}"
            );
        }
        assert!(
            !psor.iter().any(|k| k.starts_with("series:")),
            "rollout series in the PSOR: {psor:#?}"
        );
        let events: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(key("events"))
            .arg("-")
            .arg("+")
            .query(&mut self.site.server.conn())
            .expect("XRANGE");
        let rollout_events: Vec<&String> = events
            .ids
            .iter()
            .filter(|e| e.map.contains_key("rollout"))
            .map(|e| &e.id)
            .collect();
        assert!(
            rollout_events.is_empty(),
            "rollout events in the PSOR: {rollout_events:?}"
        );
        assert_eq!(&self.psor_epoch(), psor_epoch, "the PSOR's epoch moved");

        let state = Self::keys_of(&self.state);
        let stray: Vec<&String> = state
            .iter()
            .filter(|k| !COORDINATOR_KEYS.contains(&k.as_str()) && *k != "meta")
            .collect();
        assert!(stray.is_empty(), "the state Redis holds {stray:?}");
        assert!(state.contains("rollout:current"), "{state:?}");
        assert!(state.contains("events"), "{state:?}");
        let meta: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(key("meta"))
            .query(&mut self.state.conn())
            .expect("HGETALL");
        assert_eq!(
            meta.keys().collect::<Vec<_>>(),
            vec!["epoch"],
            "the state's PAC record: {meta:?}"
        );
    }
}

/// With `--state`, plans that would make the coordinator write to the PSOR are refused
/// with exit 2 before anything is written, by `rollout plan` and `rollout run` alike: the
/// agent driver (its commands go through the PSOR), a store change without its
/// template, and a plan without `store_state` (the stores would be read from the PSOR).
#[test]
fn state_apart_refuses_plans_that_would_write_the_psor() {
    let b = Boundary::new();
    let site = &b.site;
    let epoch = b.psor_epoch();
    let mut agent = plan("1m", "casstate /r{region} /j");
    agent.as_object_mut().unwrap().remove("driver");
    let mut no_set_mode = plan("1m", "casstate /r{region} /j");
    let t = no_set_mode["driver"]["templates"].as_object_mut().unwrap();
    t.remove("set_mode_quiesce");
    t.remove("remove_old");
    let mut no_store_state = plan("1m", "casstate /r{region} /j");
    let t = no_store_state["driver"]["templates"]
        .as_object_mut()
        .unwrap();
    t.remove("store_state");
    for (name, p, want) in [
        (
            "agent.json",
            agent,
            "invalid --state \"(with driver.kind agent)\": a plan with driver.kind command",
        ),
        (
            "no-set-mode.json",
            no_set_mode,
            "invalid plan field driver.templates \"(missing remove_old, set_mode_quiesce \
             with --state)\"",
        ),
        (
            "no-store-state.json",
            no_store_state,
            "invalid plan field driver.templates \"(missing store_state with --state)\": \
             with --state the coordinator reads and writes nothing of the PSOR",
        ),
    ] {
        let path = write_plan(site, name, &p);
        for cmd in ["plan", "run"] {
            let out = b.rollout(&[cmd, &path]);
            out.code(2);
            out.stderr_contains(want);
        }
    }
    let state = Boundary::keys_of(&b.state);
    assert!(state.is_empty(), "a refused plan wrote {state:?}");
    assert!(!site.exists(&key("rollout:current")));
    assert_eq!(b.psor_epoch(), epoch);
}

/// With the state apart, a rollback stops at its own store step, which would change
/// the PSOR itself (the old store quiesced by then runs again only through `UNQUIESCE`):
/// `on_failure: rollback` fails there (exit 1) naming the script, before any host moves
/// back, still `rolling_back` for `rollout resume` once the store was fixed by hand, with
/// nothing of the coordinator's in the PSOR.
#[test]
fn a_rollback_stops_at_the_store_step_it_cannot_take_without_the_psor() {
    let b = Boundary::new();
    let site = &b.site;
    let epoch = b.psor_epoch();
    let mut p = probe_breaking_after_host1(site);
    p["on_failure"] = json!("rollback");
    let plan_path = write_plan(site, "plan.json", &p);
    let out = b.rollout(&["run", &plan_path, "--json"]);
    out.code(1);
    out.stderr_contains("rollback failed at set_mode_running");
    out.stderr_contains("this would change the PSOR directly (script UNQUIESCE)");
    out.stderr_contains("`pacup rollout resume MyPAC` continues the rollback");
    assert_eq!(b.journal()["state"], "rolling_back");
    for r in ["REGION1", "REGION1B"] {
        assert_eq!(site.field(r, "store"), "2.0.0", "{r} was moved");
    }
    b.assert_apart(&epoch);
}

/// With `--state` the coordinator reads nothing of the PSOR. The whole upgrade under
/// load runs with the coordinator given an empty Redis as its PSOR (`--psor`), watched
/// by `MONITOR`, while the templates reach the site's PSOR by its own address (the
/// coordinator is never told it). The empty Redis sees only the connection's setup
/// (`PING`, `INFO`), not one command naming a key or running a script, and ends empty:
/// every store the coordinator read came from `store_state` and every region from
/// `region_state`, so the site's PSOR is one only the templates and the regions touch.
#[test]
fn a_state_apart_rollout_issues_no_command_on_the_psor() {
    let b = Boundary::new();
    let site = &b.site;
    let epoch = b.psor_epoch();
    let port = site.server.port().to_string();
    let text = plan("1m", "casstate /r{region} /j")
        .to_string()
        .replace("{psor}", &site.url())
        .replace("{psor_host}", "127.0.0.1")
        .replace("{psor_port}", &port);
    let p: Value = serde_json::from_str(&text).expect("plan");
    let plan_path = write_plan(site, "plan.json", &p);
    let given = RedisServer::start();
    let mon = Monitor::start(&given);
    let (jobs, clients) = site.start_load();
    let out = rollout_cmd_on(&given.url(), site, &["run", &plan_path, "--json"])
        .env("PACUP_STATE", b.state.url())
        .run();
    let seen = mon.stop();
    out.success();
    let commands: Vec<String> = seen.iter().map(|c| c.line()).collect();
    assert!(
        seen.iter()
            .all(|c| c.source != "lua" && ["PING", "INFO"].contains(&c.name().as_str())),
        "the coordinator issued commands on its PSOR: {commands:#?}"
    );
    assert!(Boundary::keys_of(&given).is_empty());
    let verify = events(&out)
        .into_iter()
        .find(|e| e["action"] == "verify" && e["status"] == "done")
        .expect("verify");
    assert!(
        verify["detail"]
            .as_str()
            .unwrap()
            .contains("store 2.0.0 running (store_state)"),
        "{verify}"
    );
    // The operator's commands know the PAC by its rollout state in the state Redis: the
    // coordinator's PSOR holds no record of it, and they still answer.
    let status = rollout_cmd_on(&given.url(), site, &["status", PAC, "--json"])
        .env("PACUP_STATE", b.state.url())
        .run()
        .success()
        .json();
    assert_eq!(status["state"], "done", "{status:#}");
    let history = rollout_cmd_on(&given.url(), site, &["history", PAC, "--json"])
        .env("PACUP_STATE", b.state.url())
        .run();
    history.success();
    assert!(history.stdout.contains("done"), "{history:?}");
    crate::support::pacup()
        .args(["--psor", &given.url(), "events", PAC])
        .env("PACUP_STATE", b.state.url())
        .run()
        .success()
        .stdout_contains("remove_old");
    // A PAC without rollout state is still refused, naming it.
    rollout_cmd_on(&given.url(), site, &["status", "OtherPAC"])
        .env("PACUP_STATE", b.state.url())
        .run()
        .code(1)
        .stderr_contains("OtherPAC");
    assert!(Boundary::keys_of(&given).is_empty());
    b.assert_apart(&epoch);
    site.assert_upgraded_with_nothing_lost(jobs, clients);
}
