//! `casstart`, `casstop` and `casstate`, the vendor's syntax on pacup's regions, against
//! real `pacup agent` processes on a private Redis: the outcome of each command is read
//! back from the PSOR, and a command-driver rollout runs the production plan's own
//! `stop` and `start` templates (fixtures/plans/enterprise-server.json) through an `ssh`
//! stand-in.
//!
//! Every test has its own Redis and agents; every wait is bounded.

mod apart;
mod boundary;
mod rollout;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{free_port, pacup, wait_until, Cmd, RedisServer, Running};

const PAC: &str = "MyPAC";
/// Bound on agents and regions coming up or going down.
const UP_TIMEOUT: Duration = Duration::from_secs(30);

fn casstart() -> Cmd {
    Cmd::new(env!("CARGO_BIN_EXE_casstart"))
}
fn casstop() -> Cmd {
    Cmd::new(env!("CARGO_BIN_EXE_casstop"))
}
fn casstate() -> Cmd {
    Cmd::new(env!("CARGO_BIN_EXE_casstate"))
}

fn key(suffix: &str) -> String {
    format!("pac:{{{PAC}}}:{suffix}")
}

/// A private PSOR and the host agents serving MyPAC from it.
struct Site {
    /// Dropped first: the agents die before their PSOR.
    agents: Vec<Running>,
    server: RedisServer,
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        Site {
            agents: Vec::new(),
            server: RedisServer::start(),
            dir: tempfile::Builder::new()
                .prefix("pacup-vendor-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    fn url(&self) -> String {
        self.server.url()
    }

    /// Starts a host agent at `version` hosting `regions`; returns its index.
    fn agent(&mut self, host: &str, version: &str, regions: &[&str], autostart: &str) -> usize {
        self.agent_with(host, version, regions, autostart, &[])
    }

    /// [`Site::agent`] with `extra` arguments.
    fn agent_with(
        &mut self,
        host: &str,
        version: &str,
        regions: &[&str],
        autostart: &str,
        extra: &[&str],
    ) -> usize {
        let mut args = vec!["agent", "--pac", PAC, "--host", host];
        args.extend(extra);
        args.extend(["--product-version", version, "--autostart", autostart]);
        for r in regions {
            args.extend(["--region", r]);
        }
        args.extend(["--heartbeat-interval", "200ms", "--heartbeat-ttl", "1s"]);
        args.extend(["--job-time", "15ms"]);
        let a = pacup().args(args).args(["--psor", &self.url()]).spawn();
        self.agents.push(a);
        let alive = key(&format!("host:{host}:alive"));
        wait_until(UP_TIMEOUT, &format!("host agent {host} up"), || {
            self.exists(&alive)
        });
        self.agents.len() - 1
    }

    /// A vendor tool with the PSOR in its environment, as a site would configure it.
    fn tool(&self, cmd: Cmd) -> Cmd {
        cmd.env("PACUP_PSOR", self.url())
    }

    fn pacup(&self) -> Cmd {
        pacup().args(["--psor", &self.url()])
    }

    fn json_of(&self, args: &[&str]) -> Value {
        let out = self.pacup().args(args).arg("--json").run();
        out.success();
        out.json()
    }

    /// Region record fields, plus `alive` ("1" while its heartbeat key exists).
    fn region(&self, r: &str) -> HashMap<String, String> {
        let mut conn = self.server.conn();
        let mut h: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(key(&format!("region:{r}")))
            .query(&mut conn)
            .unwrap_or_default();
        let alive = self.exists(&key(&format!("region:{r}:alive")));
        h.insert("alive".into(), if alive { "1" } else { "0" }.into());
        h
    }

    fn field(&self, r: &str, f: &str) -> String {
        self.region(r).get(f).cloned().unwrap_or_default()
    }

    fn exists(&self, k: &str) -> bool {
        redis::cmd("EXISTS")
            .arg(k)
            .query(&mut self.server.conn())
            .expect("EXISTS")
    }

    fn members(&self, store: &str) -> Vec<String> {
        let mut m: Vec<String> = redis::cmd("SMEMBERS")
            .arg(key(&format!("store:{store}:members")))
            .query(&mut self.server.conn())
            .expect("SMEMBERS");
        m.sort();
        m
    }

    /// `casstate /r<region> /j`, which must succeed.
    fn state(&self, region: &str) -> Value {
        let out = self
            .tool(casstate())
            .args([&format!("/r{region}"), "/j"])
            .run();
        out.success();
        out.json()
    }

    #[track_caller]
    fn wait_jobs_done(&self, submitted: u64) -> Value {
        crate::support::wait_for(UP_TIMEOUT, "every submitted job to complete", || {
            let s = self.json_of(&["jobs", "stats", PAC]);
            (s["completed"].as_u64() == Some(submitted)).then_some(s)
        })
    }
    /// Six seconds of load while a rollout runs: jobs at 30/s and client requests, as
    /// (jobs, clients) for [`Site::assert_upgraded_with_nothing_lost`].
    fn start_load(&self) -> (Running, Running) {
        let load = ["--duration", "6s", "--json"];
        let jobs = self
            .pacup()
            .args(["jobs", "submit", PAC, "--rate", "30/s"])
            .args(load)
            .spawn();
        let clients = self
            .pacup()
            .args(["clients", "run", PAC])
            .args(load)
            .spawn();
        (jobs, clients)
    }

    /// The end of a full incompatible upgrade under load: every region runs in store
    /// 2.0.0 with its listener on, the old store is gone, the load's client requests all
    /// succeeded, and every submitted job completed exactly once.
    #[track_caller]
    fn assert_upgraded_with_nothing_lost(&self, jobs: Running, clients: Running) {
        for r in ["REGION1", "REGION1B", "REGION2"] {
            let s = self.state(r);
            assert_eq!(
                (&s["state"], &s["listener"]),
                (&json!("running"), &json!("on")),
                "{s}"
            );
            assert_eq!(self.field(r, "store"), "2.0.0");
        }
        assert!(!self.exists(&key("store:1.0.0:meta")));
        let jobs = jobs.wait_with_timeout(Duration::from_secs(60));
        jobs.success();
        let clients = clients.wait_with_timeout(Duration::from_secs(60));
        clients.success();
        assert_eq!(clients.json()["failed"], 0, "{}", clients.json());
        let stats = self.wait_jobs_done(jobs.json()["submitted"].as_u64().expect("submitted"));
        assert_eq!(stats["duplicates"], 0, "{stats}");
    }
}

/// Cold, warm and upgrade starts through `casstart`, each visible in the PSOR as the
/// region's record and store membership; `casstate` then says `running`.
#[test]
fn casstart_cold_warm_and_upgrade_show_in_the_psor() {
    let mut site = Site::new();
    site.agent("host1", "1.0.0", &["REGION1", "REGION1B"], "none");
    site.agent("host2", "2.0.0", &["REGION2"], "none");
    // Nothing runs yet: the agents list their regions, which have never started. The
    // PAC has no record before its cold start, so ES_PAC names it.
    let out = site
        .tool(casstate())
        .env("ES_PAC", PAC)
        .args(["/rREGION1", "/j"])
        .run();
    out.success();
    assert_eq!(out.json()["state"], "stopped", "{out}");

    let out = site
        .tool(casstart())
        .env("ES_PAC", PAC)
        .args(["/rREGION1", "/s:c"])
        .run();
    out.success()
        .stdout_contains("region REGION1 started in store 1.0.0");
    let r1 = site.region("REGION1");
    assert_eq!(
        (
            r1["state"].as_str(),
            r1["alive"].as_str(),
            r1["store"].as_str()
        ),
        ("active", "1", "1.0.0"),
        "{r1:?}"
    );
    assert_eq!(r1["start_type"], "cold", "{r1:?}");

    // Now the only PAC: no ES_PAC needed. Dashes, upper-case letters and a region name
    // in another case, as the vendor's tools accept them.
    let out = site.tool(casstart()).args(["-rregion1b", "-S:W"]).run();
    out.success()
        .stdout_contains("region REGION1B started in store 1.0.0");
    assert_eq!(site.field("REGION1B", "start_type"), "warm");
    assert_eq!(site.members("1.0.0"), ["REGION1", "REGION1B"]);

    // host2 has the new product: the upgrade start creates store 2.0.0 in upgrade mode.
    let out = site
        .tool(casstart())
        .args(["/r", "REGION2", "/s", "u", "/w30"])
        .run();
    out.success()
        .stdout_contains("region REGION2 started in store 2.0.0");
    assert_eq!(site.field("REGION2", "start_type"), "upgrade");
    assert_eq!(site.members("2.0.0"), ["REGION2"]);
    let st = site.json_of(&["pac", "status", PAC]);
    let modes: Vec<(&str, &str)> = st["stores"]
        .as_array()
        .expect("stores")
        .iter()
        .map(|s| (s["version"].as_str().unwrap(), s["mode"].as_str().unwrap()))
        .collect();
    assert_eq!(modes, [("1.0.0", "running"), ("2.0.0", "upgrade")], "{st}");

    // casstate: running everywhere; the upgrade-mode region keeps its listener off.
    let s1 = site.state("REGION1");
    assert_eq!(
        (&s1["state"], &s1["listener"], &s1["host"]),
        (&json!("running"), &json!("on"), &json!("host1")),
        "{s1}"
    );
    assert!(s1["clients"].is_u64(), "{s1}");
    let s2 = site.state("REGION2");
    assert_eq!(
        (&s2["state"], &s2["listener"]),
        (&json!("running"), &json!("off"))
    );
    let out = site.tool(casstate()).arg("-rREGION1B").run();
    out.success();
    assert_eq!(
        out.stdout.split_whitespace().next(),
        Some("running"),
        "{out}"
    );

    // A second start is refused by the agent (exit 1) and changes nothing.
    let out = site.tool(casstart()).args(["/rREGION1", "/s:w"]).run();
    out.code(1).stderr_contains("already running");
    assert_eq!(site.field("REGION1", "start_type"), "cold");
}

/// `casstop` drains and leaves the store; `/f` forces. No job is lost either way, and
/// `casstate` follows each region to `stopped`, a crashed one included, and to `unknown`
/// once its host agent is gone too.
#[test]
fn casstop_graceful_and_forced_then_casstate_of_stopped_and_dead_regions() {
    let mut site = Site::new();
    let agent = site.agent("host1", "1.0.0", &["REGION1", "REGION1B"], "cold");
    wait_until(UP_TIMEOUT, "both regions running", || {
        ["REGION1", "REGION1B"]
            .iter()
            .all(|r| site.field(r, "state") == "active" && site.field(r, "alive") == "1")
    });
    let jobs = site
        .pacup()
        .args(["jobs", "submit", PAC, "--rate", "40/s", "--duration", "3s"])
        .args(["--json"])
        .spawn();
    wait_until(UP_TIMEOUT, "the first jobs to complete", || {
        site.json_of(&["jobs", "stats", PAC])["completed"]
            .as_u64()
            .unwrap_or(0)
            > 0
    });

    let out = site.tool(casstop()).arg("/rREGION1").run();
    out.success();
    assert_eq!(out.stdout.trim(), "region REGION1 stopped", "{out}");
    let r1 = site.region("REGION1");
    assert_eq!(
        (
            r1["state"].as_str(),
            r1["alive"].as_str(),
            r1["store"].as_str()
        ),
        ("stopped", "0", ""),
        "{r1:?}"
    );
    assert_eq!(site.members("1.0.0"), ["REGION1B"]);
    let s = site.state("REGION1");
    assert_eq!(
        s,
        json!({"state": "stopped", "clients": 0, "listener": "off", "pac": PAC,
               "region": "REGION1", "host": "host1", "record": "stopped",
               "detail": "stopped, last on host1"})
    );
    let out = site.tool(casstate()).arg("/rREGION1").run();
    out.success();
    assert!(out.stdout.starts_with("stopped ("), "{out}");

    // Stopping a stopped region is refused (exit 1).
    site.tool(casstop())
        .arg("/rREGION1")
        .run()
        .code(1)
        .stderr_contains("not running");

    // Back up, then force the other one down while jobs still arrive.
    site.tool(casstart())
        .args(["/rREGION1", "/s:w"])
        .run()
        .success();
    let out = site.tool(casstop()).args(["-RREGION1B", "-F"]).run();
    out.success();
    assert_eq!(
        out.stdout.trim(),
        "region REGION1B stopped (forced)",
        "{out}"
    );
    assert_eq!(site.field("REGION1B", "state"), "stopped");
    assert_eq!(site.state("REGION1B")["state"], "stopped");

    // Nothing lost, nothing run twice: a job the forced stop abandoned is reclaimed.
    let jobs = jobs.wait_with_timeout(Duration::from_secs(30));
    jobs.success();
    let submitted = jobs.json()["submitted"].as_u64().expect("submitted");
    let stats = site.wait_jobs_done(submitted);
    assert_eq!(stats["duplicates"], 0, "{stats}");

    // A crash: the heartbeat expires, the agent lives on, nothing runs the region.
    site.pacup()
        .args(["region", "crash", "REGION1", "--pac", PAC])
        .run()
        .success();
    wait_until(UP_TIMEOUT, "REGION1's heartbeat to expire", || {
        site.field("REGION1", "alive") == "0"
    });
    let s = site.state("REGION1");
    assert_eq!(
        (&s["state"], &s["record"]),
        (&json!("stopped"), &json!("dead")),
        "{s}"
    );
    assert!(
        s["detail"].as_str().unwrap().contains("dead on host1"),
        "{s}"
    );

    // The host agent gone too: the region may still run somewhere we cannot see.
    site.agents[agent].kill();
    wait_until(UP_TIMEOUT, "host1's agent record to expire", || {
        !site.exists(&key("host:host1:alive"))
    });
    let s = site.state("REGION1");
    assert_eq!(
        (&s["state"], &s["listener"]),
        (&json!("unknown"), &json!("off")),
        "{s}"
    );
    // A cleanly stopped region stays stopped.
    assert_eq!(site.state("REGION1B")["state"], "stopped");
}

/// `INFO stats` counter of connections the server accepted.
fn connections(conn: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("stats").query(conn).expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("total_connections_received")
}

fn all_keys(conn: &mut redis::Connection) -> HashSet<String> {
    redis::cmd("KEYS").arg("*").query(conn).expect("KEYS")
}

/// Bad arguments and environment are refused with exit 2 and the usage, before anything
/// connects; a region or PAC the PSOR does not know is exit 1 and writes nothing; an
/// unreachable PSOR is exit 5.
#[test]
fn bad_input_is_exit_2_and_writes_nothing() {
    use std::os::unix::ffi::OsStringExt;
    let site = Site::new();
    site.pacup().args(["pac", "init", PAC]).run().success();
    let mut conn = site.server.conn();
    let keys = all_keys(&mut conn);
    let before = connections(&mut conn);
    let non_utf8 = std::ffi::OsString::from_vec(b"/rREGION\xff".to_vec());
    let cases: Vec<(Cmd, &str)> = vec![
        (casstart().args(["/rREGION1"]), "no start type"),
        (casstart().args(["/rREGION1", "/s:x"]), "unknown start type"),
        (
            casstart().args(["/rREGION1", "/s:w", "/w0"]),
            "invalid wait",
        ),
        (casstart().args(["/s:w"]), "no region"),
        (casstart().args(["REGION1", "/s:w"]), "unexpected argument"),
        (
            casstart().args(["/rREGION1", "/s:w", "/x"]),
            "unknown option",
        ),
        (casstart().arg(&non_utf8).arg("/s:w"), "not valid UTF-8"),
        (casstop().args(["/rREGION1", "/fx"]), "takes no value"),
        (casstop().args(["/rTOO/LONG/NAME"]), "region name"),
        (
            casstop().args(["/rREGION1"]).env("ES_PAC", "NINECHARS"),
            "ES_PAC",
        ),
        (casstate().args(["/rREGION1", "--frob"]), "unknown option"),
        (casstate().args([] as [&str; 0]), "no region"),
        (casstate().arg(&non_utf8), "not valid UTF-8"),
    ];
    for (cmd, needle) in cases {
        let out = site.tool(cmd).run();
        out.code(2)
            .stderr_contains(needle)
            .stderr_contains("usage: cas");
        assert!(out.stdout.is_empty(), "{out}");
    }
    // A malformed PSOR URL or audit name in the environment: exit 2 as well.
    let out = casstop()
        .args(["/rREGION1"])
        .env("PACUP_PSOR", "http://x")
        .run();
    out.code(2).stderr_contains("invalid --psor");
    let out = site
        .tool(casstop())
        .args(["/rREGION1"])
        .env("PACUP_BY", "")
        .run();
    out.code(2).stderr_contains("env PACUP_BY");
    assert_eq!(
        connections(&mut conn),
        before,
        "a refused command connected"
    );

    // Known syntax, unknown names: the PSOR answers "no", and nothing is written.
    let out = site.tool(casstop()).arg("/rNOSUCH").run();
    out.code(1)
        .stderr_contains("region NOSUCH is not known in PAC MyPAC");
    let out = site.tool(casstate()).args(["/rNOSUCH", "/j"]).run();
    out.code(1)
        .stderr_contains("region NOSUCH is not known in PAC MyPAC");
    let out = site
        .tool(casstart())
        .env("ES_PAC", "OTHER")
        .args(["/rREGION1", "/s:w"])
        .run();
    out.code(1).stderr_contains("OTHER");
    assert_eq!(all_keys(&mut conn), keys, "a refused command wrote keys");

    // Nothing listens: exit 5.
    let dead = format!("redis://127.0.0.1:{}", free_port());
    let out = casstate().arg("/rREGION1").env("PACUP_PSOR", &dead).run();
    out.code(5).stderr_contains("cannot reach the PSOR");
    // Help and version need no PSOR.
    for h in ["/?", "-h", "--help", "-?"] {
        casstop()
            .arg(h)
            .run()
            .success()
            .stdout_contains("usage: casstop /r<region> [/f]");
    }
    casstate()
        .arg("--version")
        .run()
        .success()
        .stdout_contains("casstate (pacup ");
}
