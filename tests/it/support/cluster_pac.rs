//! [`ClusterPac`]: MyPAC at 1.0.0 with its host agents on a 6-node [`RedisCluster`], the
//! cluster counterpart of [`super::pac::LivePac`] for rollouts under load.
//!
//! Every key of the PAC lives in the slot of its hash tag, so the PAC's keys are read on
//! that slot's current master ([`RedisCluster::master_conn_for`]), which follows a
//! failover.

use std::collections::BTreeMap;
use std::path::PathBuf;

use redis::Commands;
use serde_json::Value;

use super::cluster::RedisCluster;
use super::pac::{
    agent_cmd, key, region_alive, HOST1_REGIONS, PAC, RUN_TIMEOUT, SOON, STATE_TIMEOUT,
};
use super::rollout::{write_plan, PacCli};
use super::{pacup, wait_until, Cmd, Output, Running};

/// MyPAC with host1 (REGION1 cold, REGION1B) and host2 (REGION2 warm) on a cluster.
pub(crate) struct ClusterPac {
    /// Host agents by host name (killed on drop, before the cluster).
    pub agents: BTreeMap<String, Running>,
    pub cluster: RedisCluster,
    pub dir: tempfile::TempDir,
}

impl Drop for ClusterPac {
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

impl PacCli for ClusterPac {
    fn cli(&self) -> Cmd {
        self.pacup()
    }
}

impl ClusterPac {
    /// A fresh 3+3 cluster with MyPAC's two hosts, every region serving.
    pub fn start() -> ClusterPac {
        let cluster = RedisCluster::start();
        let dir = tempfile::Builder::new()
            .prefix("pacup-cluster-pac-")
            .tempdir()
            .expect("temp dir");
        let mut pac = ClusterPac {
            agents: BTreeMap::new(),
            cluster,
            dir,
        };
        pac.start_agent("host1", &HOST1_REGIONS, "cold");
        pac.wait_regions_serving(&HOST1_REGIONS);
        pac.start_agent("host2", &["REGION2"], "warm");
        pac.wait_regions_serving(&["REGION1", "REGION1B", "REGION2"]);
        pac
    }

    pub fn url(&self) -> String {
        self.cluster.url()
    }

    /// `pacup --psor <the cluster>`.
    pub fn pacup(&self) -> Cmd {
        pacup().args(["--psor", &self.url()])
    }

    /// A connection to the master of the PAC's slot (it holds every key of the PAC).
    pub fn conn(&self) -> redis::Connection {
        self.cluster.master_conn_for(&key("meta"))
    }

    fn start_agent(&mut self, host: &str, regions: &[&str], autostart: &str) {
        let mut agent = agent_cmd(
            &self.url(),
            host,
            "1.0.0",
            regions,
            autostart,
            &["--job-time", "15ms"],
        )
        .spawn();
        let ready = format!("Host agent {host} ready for PAC {PAC}");
        agent.wait_for_stdout_line(|l| l.starts_with(&ready), SOON);
        for r in regions {
            wait_until(SOON, &format!("region {r} to be alive"), || {
                region_alive(&mut self.conn(), r)
            });
        }
        wait_until(SOON, &format!("host {host} to be published"), || {
            let alive: bool = self
                .conn()
                .exists(key(&format!("host:{host}:alive")))
                .unwrap();
            alive
        });
        drop(self.agents.insert(host.to_string(), agent));
    }

    /// Live, active and accepting clients.
    pub fn region_serving(&self, r: &str) -> bool {
        let mut c = self.conn();
        let k = key(&format!("region:{r}"));
        let state: Option<String> = c.hget(&k, "state").unwrap();
        let listener: Option<String> = c.hget(&k, "listener").unwrap();
        region_alive(&mut c, r)
            && state.as_deref() == Some("active")
            && listener.as_deref() == Some("on")
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

    /// A plan file (see [`write_plan`]).
    pub fn plan(&self, name: &str, fixture: &str, overrides: Value) -> PathBuf {
        write_plan(self.dir.path(), name, fixture, overrides)
    }

    /// `rollout run <plan> --json --lease-ttl 2s`, in the background.
    pub fn spawn_run(&self, plan: &std::path::Path) -> Running {
        self.pacup()
            .args(["rollout", "run"])
            .arg(plan)
            .args(["--json", "--lease-ttl", "2s"])
            .spawn()
    }

    /// `rollout run` to completion.
    pub fn run(&self, plan: &std::path::Path) -> Output {
        self.spawn_run(plan).wait_with_timeout(RUN_TIMEOUT)
    }

    /// Every key of the PAC on every master, with the master holding it.
    pub fn pac_keys(&self) -> BTreeMap<String, u16> {
        self.cluster.keys_by_master(&key("*"))
    }
}
