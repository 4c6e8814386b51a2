//! A real Redis Cluster: masters and replicas, each a `redis-server --cluster-enabled yes`
//! in its own temp dir on free loopback ports, joined with `redis-cli --cluster create`.
//!
//! ```ignore
//! let cluster = RedisCluster::start();                  // 3 masters + 3 replicas
//! let url = cluster.url();                              // redis+cluster://127.0.0.1:P1,...
//! let tls = RedisCluster::builder().with_tls().start();  // rediss+cluster://, one CA
//! let mut c = cluster.master_conn_for("pac:{MyPAC}:meta");
//! cluster.failover_slot_of("pac:{MyPAC}:meta");         // CLUSTER FAILOVER on its replica
//! ```
//!
//! The cluster is ready once every node reports `cluster_state:ok` and knows every other
//! node, and every replica's link to its master is up; a cluster that does not get there
//! within the bound fails the test with every node's log. Every process is killed when
//! the handle is dropped.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use redis::Commands;

use super::server::{RedisServer, RedisServerBuilder};
use super::TestPki;
use super::{free_port, wait_until};

const HOST: &str = "127.0.0.1";

/// Options for a [`RedisCluster`]; obtain with [`RedisCluster::builder`].
#[derive(Debug, Clone)]
pub struct RedisClusterBuilder {
    masters: usize,
    replicas: usize,
    acl_user: Option<(String, String)>,
    /// TLS for clients, the cluster bus and replication, every node with this PKI (kept
    /// in `_dir`, which lives as long as the cluster).
    tls: Option<(TestPki, std::sync::Arc<tempfile::TempDir>)>,
    ready_timeout: Duration,
}

impl RedisClusterBuilder {
    /// Number of masters (default 3, the least `redis-cli --cluster create` accepts).
    pub fn masters(mut self, n: usize) -> Self {
        self.masters = n;
        self
    }

    /// Replicas per master (default 1).
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    /// Every node requires this ACL user (the default user off), replication included.
    pub fn with_acl_user(mut self, user: &str, password: &str) -> Self {
        self.acl_user = Some((user.into(), password.into()));
        self
    }

    /// TLS only, clients' certificates required; the nodes share one CA, which
    /// [`RedisCluster::pki`] gives to the test's clients.
    pub fn with_tls(mut self) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pacup-cluster-pki-")
            .tempdir()
            .expect("temp dir for the cluster's PKI");
        self.tls = Some((TestPki::generate(dir.path()), std::sync::Arc::new(dir)));
        self
    }

    pub fn start(self) -> RedisCluster {
        let n = self.masters * (1 + self.replicas);
        let nodes: Vec<RedisServer> = (0..n).map(|_| self.node().start()).collect();
        let cluster = RedisCluster {
            nodes,
            acl_user: self.acl_user.clone(),
            tls: self.tls.clone(),
        };
        cluster.create(&self);
        cluster.wait_ready(self.ready_timeout);
        cluster
    }

    fn node(&self) -> RedisServerBuilder {
        // The bus port is chosen too: the default (port + 10000) may be taken or invalid.
        let mut b = RedisServer::builder()
            .conf_line("cluster-enabled yes")
            .conf_line("cluster-config-file nodes.conf")
            .conf_line("cluster-node-timeout 5000")
            .conf_line(format!("cluster-port {}", free_port()));
        if let Some((u, p)) = &self.acl_user {
            b = b
                .with_acl_user(u.clone(), p.clone())
                .conf_line(format!("masteruser {u}"))
                .conf_line(format!("masterauth {p}"));
        }
        if let Some((pki, _)) = &self.tls {
            b = b
                .with_tls_pki(pki.clone())
                .conf_line("tls-cluster yes")
                .conf_line("tls-replication yes")
                // A node dialling another (bus, replication) is a client that must show a
                // certificate; the server certificate is for server use only.
                .conf_line(format!(
                    "tls-client-cert-file {}",
                    pki.client_cert_path.display()
                ))
                .conf_line(format!(
                    "tls-client-key-file {}",
                    pki.client_key_path.display()
                ));
        }
        b
    }
}

/// One node as `CLUSTER NODES` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    pub port: u16,
    pub master: bool,
    /// The master's id, for a replica.
    pub master_id: Option<String>,
    /// Slot ranges served (masters).
    pub slots: Vec<(u16, u16)>,
}

/// The nodes of a cluster; every process is killed when this is dropped.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    acl_user: Option<(String, String)>,
    tls: Option<(TestPki, std::sync::Arc<tempfile::TempDir>)>,
}

impl RedisCluster {
    /// 3 masters with one replica each.
    pub fn start() -> RedisCluster {
        RedisCluster::builder().start()
    }

    pub fn builder() -> RedisClusterBuilder {
        RedisClusterBuilder {
            masters: 3,
            replicas: 1,
            acl_user: None,
            tls: None,
            ready_timeout: Duration::from_secs(60),
        }
    }

    /// `redis+cluster://[user:pass@]127.0.0.1:P1,...` listing every node.
    pub fn url(&self) -> String {
        let cred = match &self.acl_user {
            Some((u, p)) => format!("{u}:{p}@"),
            None => String::new(),
        };
        let scheme = if self.tls.is_some() {
            "rediss+cluster"
        } else {
            "redis+cluster"
        };
        format!("{scheme}://{cred}{}", self.addrs().join(","))
    }

    /// The CA and client certificate of a TLS cluster.
    pub fn pki(&self) -> &TestPki {
        &self
            .tls
            .as_ref()
            .expect("this RedisCluster was not built with_tls()")
            .0
    }

    /// `127.0.0.1:P` of every node, in start order.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("{HOST}:{}", n.port()))
            .collect()
    }

    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The node listening on `port`.
    pub fn node(&self, port: u16) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no node on port {port}"))
    }

    /// `CLUSTER KEYSLOT key`.
    pub fn slot_of(&self, key: &str) -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.nodes[0].conn())
            .expect("CLUSTER KEYSLOT")
    }

    /// Every node as `CLUSTER NODES` on the node at `port` describes it.
    pub fn topology_from(&self, port: u16) -> Vec<NodeInfo> {
        let text: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query(&mut self.node(port).conn())
            .expect("CLUSTER NODES");
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let addr = f.get(1)?.split(['@', ',']).next()?;
                let port = addr.rsplit_once(':')?.1.parse().ok()?;
                let flags = f.get(2)?;
                let slots = f
                    .iter()
                    .skip(8)
                    .filter(|s| !s.starts_with('['))
                    .map(|s| match s.split_once('-') {
                        Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                        None => (s.parse().unwrap(), s.parse().unwrap()),
                    })
                    .collect();
                Some(NodeInfo {
                    id: f[0].to_string(),
                    port,
                    master: flags.contains("master"),
                    master_id: (f.get(3) != Some(&"-")).then(|| f[3].to_string()),
                    slots,
                })
            })
            .collect()
    }

    /// The port of the master serving `key`'s slot, as every node agrees (waits, bounded,
    /// for them to agree after a failover).
    pub fn master_port_for(&self, key: &str) -> u16 {
        let slot = self.slot_of(key);
        let mut owner = 0;
        wait_until(
            Duration::from_secs(30),
            &format!("every node to agree on the master of slot {slot}"),
            || {
                let views: Vec<Option<u16>> = self
                    .nodes
                    .iter()
                    .map(|n| {
                        self.topology_from(n.port())
                            .into_iter()
                            .find(|i| {
                                i.master && i.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
                            })
                            .map(|i| i.port)
                    })
                    .collect();
                match views[0] {
                    Some(p) if views.iter().all(|v| *v == Some(p)) => {
                        owner = p;
                        true
                    }
                    _ => false,
                }
            },
        );
        owner
    }

    /// A connection to the master of `key`'s slot (for the keys of one PAC, which all live
    /// in that slot).
    pub fn master_conn_for(&self, key: &str) -> redis::Connection {
        self.node(self.master_port_for(key)).conn()
    }

    /// Ports of the masters that serve slots.
    pub fn master_ports(&self) -> Vec<u16> {
        let mut m: Vec<u16> = self
            .topology_from(self.nodes[0].port())
            .into_iter()
            .filter(|i| i.master && !i.slots.is_empty())
            .map(|i| i.port)
            .collect();
        m.sort();
        m
    }

    /// Every key matching `pattern` on every master, with the master's port.
    pub fn keys_by_master(&self, pattern: &str) -> BTreeMap<String, u16> {
        let mut out = BTreeMap::new();
        for port in self.master_ports() {
            let keys: Vec<String> = self.node(port).conn().keys(pattern).expect("KEYS");
            out.extend(keys.into_iter().map(|k| (k, port)));
        }
        out
    }

    /// A manual failover of `key`'s slot: `CLUSTER FAILOVER` on a replica of its master.
    /// Returns (old master port, new master port) once every node agrees on the new one.
    pub fn failover_slot_of(&self, key: &str) -> (u16, u16) {
        let old = self.master_port_for(key);
        let topo = self.topology_from(old);
        let old_id = topo.iter().find(|i| i.port == old).unwrap().id.clone();
        let replica = topo
            .iter()
            .find(|i| i.master_id.as_deref() == Some(old_id.as_str()))
            .unwrap_or_else(|| panic!("master :{old} has no replica: {topo:?}"))
            .port;
        let _: () = redis::cmd("CLUSTER")
            .arg("FAILOVER")
            .query(&mut self.node(replica).conn())
            .expect("CLUSTER FAILOVER");
        wait_until(
            Duration::from_secs(30),
            &format!("replica :{replica} to take over from :{old}"),
            || self.master_port_for(key) == replica,
        );
        (old, replica)
    }

    fn create(&self, opts: &RedisClusterBuilder) {
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster").arg("create").args(self.addrs());
        cmd.args([
            "--cluster-replicas",
            &opts.replicas.to_string(),
            "--cluster-yes",
        ]);
        if let Some((u, p)) = &opts.acl_user {
            cmd.args(["--user", u, "--pass", p, "--no-auth-warning"]);
        }
        if let Some((pki, _)) = &opts.tls {
            cmd.arg("--tls")
                .arg("--cacert")
                .arg(&pki.ca_path)
                .arg("--cert")
                .arg(&pki.client_cert_path)
                .arg("--key")
                .arg(&pki.client_key_path);
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let out_path = dir.path().join("create.log");
        let out = std::fs::File::create(&out_path).expect("create log");
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone"))
            .stderr(out);
        let mut child = cmd.spawn().expect("spawn redis-cli --cluster create");
        let deadline = Instant::now() + opts.ready_timeout;
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait redis-cli") {
                break Some(s);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if status.is_none_or(|s| !s.success()) {
            panic!(
                "redis-cli --cluster create failed ({status:?}):\n{}\n{}",
                std::fs::read_to_string(&out_path).unwrap_or_default(),
                self.logs()
            );
        }
    }

    fn wait_ready(&self, timeout: Duration) {
        let n = self.nodes.len().to_string();
        let deadline = Instant::now() + timeout;
        loop {
            let mut last = String::new();
            let ready = self.nodes.iter().all(|node| {
                let Ok(mut c) = node
                    .client()
                    .get_connection_with_timeout(Duration::from_secs(2))
                else {
                    return false;
                };
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut c)
                    .unwrap_or_default();
                let field = |k: &str| {
                    info.lines()
                        .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
                        .map(str::trim)
                        .unwrap_or("?")
                        .to_string()
                };
                let repl: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut c)
                    .unwrap_or_default();
                let replica_ok =
                    !repl.contains("role:slave") || repl.contains("master_link_status:up");
                let ok = field("cluster_state") == "ok" && field("cluster_known_nodes") == n;
                if !(ok && replica_ok) {
                    last = format!(
                        ":{} state {} known {} replica link ok {replica_ok}",
                        node.port(),
                        field("cluster_state"),
                        field("cluster_known_nodes")
                    );
                }
                ok && replica_ok
            });
            if ready {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the cluster was not ready within {timeout:?}; last: {last}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("----- node :{} -----\n{}\n", n.port(), n.log()))
            .collect()
    }
}
