//! A live PAC in a private Redis, and the one way to start its host agents.
//!
//! [`LivePac`] is MyPAC at 1.0.0 on N hosts (by default host1 with REGION1 and REGION1B,
//! host2 with REGION2), each host with its `pacup agent`; [`spawn_agent`] starts any
//! agent and waits until it serves. Every test has its own Redis, so the PAC is always
//! [`PAC`] and keys are spelled with [`key`].

use std::collections::BTreeMap;
use std::time::Duration;

use redis::Commands;
use serde_json::Value;

use super::sentinel::{SentinelSetBuilder, SentinelWatch};
use super::{pacup, wait_until, Cmd, Output, RedisServer, Running};

/// The PAC every test uses (each test has its own Redis).
pub(crate) const PAC: &str = "MyPAC";
/// The default PAC's hosts and regions.
pub(crate) const HOST1_REGIONS: [&str; 2] = ["REGION1", "REGION1B"];
pub(crate) const ALL_REGIONS: [&str; 3] = ["REGION1", "REGION1B", "REGION2"];

/// Bound for "this should happen soon" waits: a ceiling, never a delay.
pub(crate) const SOON: Duration = Duration::from_secs(15);
/// Bound on a whole rollout command (they take a few seconds; this is a hang detector).
pub(crate) const RUN_TIMEOUT: Duration = Duration::from_secs(90);
/// Bound on "the PAC reaches this state" waits.
pub(crate) const STATE_TIMEOUT: Duration = Duration::from_secs(30);

/// A PSOR key of [`PAC`]: `key("ds:results")` is `pac:{MyPAC}:ds:results`.
pub(crate) fn key(suffix: &str) -> String {
    format!("pac:{{{PAC}}}:{suffix}")
}

/// `pacup` pointed at `server`.
pub(crate) fn cli(server: &RedisServer) -> Cmd {
    pacup().env("PACUP_PSOR", server.url())
}

/// Runs `pacup <args>` against `server` to completion.
pub(crate) fn run(server: &RedisServer, args: &[&str]) -> Output {
    cli(server).args(args).run()
}

/// `pacup agent` for `host` hosting `regions` (`R` or `R=ADDR`) at `version`, with short
/// heartbeats (200ms/1s) unless `extra` sets `--heartbeat-interval` itself: the one
/// command line every test's agent is started with.
pub(crate) fn agent_cmd(
    url: &str,
    host: &str,
    version: &str,
    regions: &[&str],
    autostart: &str,
    extra: &[&str],
) -> Cmd {
    let mut cmd = pacup().args(["--psor", url]).args([
        "agent",
        "--pac",
        PAC,
        "--host",
        host,
        "--product-version",
        version,
        "--autostart",
        autostart,
    ]);
    for r in regions {
        cmd = cmd.args(["--region", r]);
    }
    if !extra.contains(&"--heartbeat-interval") {
        cmd = cmd.args(["--heartbeat-interval", "200ms", "--heartbeat-ttl", "1s"]);
    }
    cmd.args(extra)
}

/// Starts an agent ([`agent_cmd`]) and waits for its "ready" line, until every region is
/// alive in the PSOR (unless `autostart` is `none`) and its host record is published.
pub(crate) fn spawn_agent(
    server: &RedisServer,
    host: &str,
    version: &str,
    regions: &[&str],
    autostart: &str,
    extra: &[&str],
) -> Running {
    spawn_agent_via(
        &server.url(),
        server,
        host,
        version,
        regions,
        autostart,
        extra,
    )
}

/// [`spawn_agent`] with the agent reaching `server` through `url` (a Sentinel URL).
pub(crate) fn spawn_agent_via(
    url: &str,
    server: &RedisServer,
    host: &str,
    version: &str,
    regions: &[&str],
    autostart: &str,
    extra: &[&str],
) -> Running {
    let mut agent = agent_cmd(url, host, version, regions, autostart, extra).spawn();
    let ready = format!("Host agent {host} ready for PAC {PAC}");
    agent.wait_for_stdout_line(|l| l.starts_with(&ready), SOON);
    let mut conn = server.conn();
    if autostart != "none" {
        for spec in regions {
            let r = spec.split('=').next().unwrap();
            wait_until(SOON, &format!("region {r} to be alive"), || {
                region_alive(&mut conn, r)
            });
        }
    }
    // A cold start resets the PAC, host records included; the agent publishes its record
    // again right after its autostart, so wait for that too.
    wait_until(SOON, &format!("host {host} to be published"), || {
        let alive: bool = conn.exists(key(&format!("host:{host}:alive"))).unwrap();
        let record: bool = conn.exists(key(&format!("host:{host}"))).unwrap();
        let listed: bool = conn.sismember(key("hosts"), host).unwrap();
        alive && record && listed
    });
    agent
}

/// Region `r` heartbeats and is recorded active.
pub(crate) fn region_alive(conn: &mut redis::Connection, r: &str) -> bool {
    let alive: bool = conn.exists(key(&format!("region:{r}:alive"))).unwrap();
    let state: Option<String> = conn.hget(key(&format!("region:{r}")), "state").unwrap();
    alive && state.as_deref() == Some("active")
}

/// One field of a region's record.
pub(crate) fn region_field(conn: &mut redis::Connection, r: &str, field: &str) -> Option<String> {
    conn.hget(key(&format!("region:{r}")), field).unwrap()
}

/// Members of store `v`, sorted.
pub(crate) fn members(conn: &mut redis::Connection, v: &str) -> Vec<String> {
    let mut m: Vec<String> = conn.smembers(key(&format!("store:{v}:members"))).unwrap();
    m.sort();
    m
}

/// One PAC with its host agents in a private Redis, plus a temp dir for plan files.
pub(crate) struct LivePac {
    /// Host agents by host name (killed on drop, before their PSOR).
    pub agents: BTreeMap<String, Running>,
    /// Sentinels and replicas watching `server`, when the PAC is reached through them
    /// (dropped before `server`, so they never see it go and fail over).
    pub sentinels: Option<SentinelWatch>,
    pub server: RedisServer,
    pub dir: tempfile::TempDir,
    /// Each host and the regions its agent hosts, in start order.
    pub hosts: Vec<(String, Vec<String>)>,
}

impl Drop for LivePac {
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

impl LivePac {
    /// MyPAC at 1.0.0: host1 (REGION1 cold, REGION1B) and host2 (REGION2 warm), every
    /// region live with its listener on.
    pub fn start() -> LivePac {
        LivePac::with_hosts(&[("host1", &HOST1_REGIONS), ("host2", &["REGION2"])])
    }

    /// MyPAC at 1.0.0 on these hosts, each with its agent: the first host's regions cold
    /// start, the others warm start; returns once every region is live with its listener
    /// on.
    pub fn with_hosts(hosts: &[(&str, &[&str])]) -> LivePac {
        LivePac::on(RedisServer::start(), None, hosts)
    }

    /// Like [`LivePac::with_hosts`] on `server` (e.g. one with an AOF), reached directly
    /// or, with `sentinels`, through sentinels watching it (with the builder's replicas).
    pub fn on(
        server: RedisServer,
        sentinels: Option<SentinelSetBuilder>,
        hosts: &[(&str, &[&str])],
    ) -> LivePac {
        let sentinels = sentinels.map(|b| b.watch(&server));
        let dir = tempfile::Builder::new()
            .prefix("pacup-pac-")
            .tempdir()
            .expect("temp dir");
        let mut pac = LivePac {
            agents: BTreeMap::new(),
            sentinels,
            server,
            dir,
            hosts: hosts
                .iter()
                .map(|(h, rs)| (h.to_string(), rs.iter().map(|r| r.to_string()).collect()))
                .collect(),
        };
        let mut live = Vec::new();
        for (i, (host, regions)) in hosts.iter().enumerate() {
            pac.start_agent(host, "1.0.0", if i == 0 { "cold" } else { "warm" });
            live.extend_from_slice(regions);
            pac.wait_regions_serving(&live);
        }
        pac
    }

    pub fn url(&self) -> String {
        match &self.sentinels {
            Some(w) => w.url(),
            None => self.server.url(),
        }
    }

    /// The server that is the PSOR's master now (after a failover, a former replica).
    pub fn master(&self) -> &RedisServer {
        let Some(w) = &self.sentinels else {
            return &self.server;
        };
        let port = super::wait_for(STATE_TIMEOUT, "a sentinel to name the master", || {
            w.master_port(0)
        });
        std::iter::once(&self.server)
            .chain(w.replicas())
            .find(|s| s.port() == port)
            .expect("the master is one of ours")
    }

    /// `pacup --psor <this server>`.
    pub fn pacup(&self) -> Cmd {
        pacup().args(["--psor", &self.url()])
    }

    /// Starts (or restarts) a host agent ([`spawn_agent`]) with the test's short
    /// heartbeats and 15 ms jobs.
    pub fn start_agent(&mut self, host: &str, version: &str, autostart: &str) {
        let regions: Vec<&str> = self
            .hosts
            .iter()
            .find(|(h, _)| h == host)
            .map(|(_, rs)| rs.iter().map(String::as_str).collect())
            .unwrap_or_else(|| panic!("{host} is not a host of this PAC"));
        let agent = spawn_agent_via(
            &self.url(),
            &self.server,
            host,
            version,
            &regions,
            autostart,
            &["--job-time", "15ms"],
        );
        drop(self.agents.insert(host.to_string(), agent));
    }

    /// SIGKILL of a host agent (its regions die with it, as on a host crash).
    pub fn kill_agent(&mut self, host: &str) {
        let mut a = self.agents.remove(host).expect("agent started");
        a.kill();
    }

    /// A connection to the PSOR's master (the current one, behind sentinels).
    pub fn conn(&self) -> redis::Connection {
        self.master().conn()
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

    /// `jobs stats --json`.
    pub fn job_stats(&self) -> Value {
        self.pacup()
            .args(["jobs", "stats", PAC, "--json"])
            .run()
            .success()
            .json()
    }
}

/// [`spawn_agent`] of host1 at 1.0.0 hosting REGION1 and REGION1B.
pub(crate) fn spawn_host1(server: &RedisServer, autostart: &str, extra: &[&str]) -> Running {
    spawn_agent(server, "host1", "1.0.0", &HOST1_REGIONS, autostart, extra)
}

/// `pacup region start R --pac MyPAC --start-type T`: a start through R's host agent.
pub(crate) fn start_through_agent(server: &RedisServer, region: &str, start_type: &str) -> Output {
    run(
        server,
        &[
            "region",
            "start",
            region,
            "--pac",
            PAC,
            "--start-type",
            start_type,
        ],
    )
}
