//! A master (optionally with replicas) monitored by one or more `redis-sentinel` processes.
//!
//! ```ignore
//! let set = SentinelSet::start("psor");                  // master + 1 sentinel
//! let url = set.sentinel_url("psor");                    // redis+sentinel://127.0.0.1:S/psor
//! let set = SentinelSet::builder("psor").sentinels(3).replicas(1).start();
//! ```
//!
//! Each sentinel gets its own temp dir, because Sentinel rewrites its config file at runtime
//! (it must be writable and must not be shared). The set is ready once every sentinel resolves
//! the master to our master's address, is connected to it, and — when there are several
//! sentinels or replicas — has discovered them, so failover tests start from a settled state.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::process::Proc;
use super::server::{RedisServer, RedisServerBuilder};
use super::{free_port, read_lossy, READY_TIMEOUT};

const PORT_ATTEMPTS: usize = 5;
const HOST: &str = "127.0.0.1";

/// Options for a [`SentinelSet`]; obtain with [`SentinelSet::builder`].
#[derive(Debug, Clone)]
pub struct SentinelSetBuilder {
    master_name: String,
    sentinels: usize,
    quorum: usize,
    replicas: usize,
    down_after: Duration,
    failover_timeout: Duration,
    master: RedisServerBuilder,
    ready_timeout: Duration,
}

impl SentinelSetBuilder {
    /// Number of sentinel processes (default 1).
    pub fn sentinels(mut self, n: usize) -> Self {
        assert!(n >= 1, "a SentinelSet needs at least one sentinel");
        self.sentinels = n;
        self
    }

    /// Sentinel quorum for the master (default 1).
    pub fn quorum(mut self, q: usize) -> Self {
        self.quorum = q;
        self
    }

    /// Number of replicas of the master (default 0). Needed for failover tests.
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    /// `sentinel down-after-milliseconds` (default 1 s: fault tests want quick detection).
    pub fn down_after(mut self, d: Duration) -> Self {
        self.down_after = d;
        self
    }

    /// `sentinel failover-timeout` (default 10 s).
    pub fn failover_timeout(mut self, d: Duration) -> Self {
        self.failover_timeout = d;
        self
    }

    /// Options for the master (and, with the replica arguments added, the replicas), e.g.
    /// `RedisServer::builder().with_acl_user(..)` — the sentinels then authenticate with that
    /// user. TLS masters are not supported.
    pub fn master(mut self, builder: RedisServerBuilder) -> Self {
        self.master = builder;
        self
    }

    /// Bound for the whole readiness wait (default 20 s; discovering other sentinels alone
    /// takes a few seconds of hello messages).
    pub fn ready_timeout(mut self, d: Duration) -> Self {
        self.ready_timeout = d;
        self
    }

    /// Sentinels (and this builder's replicas) for a master the caller owns, e.g. a
    /// [`super::pac::LivePac`]'s PSOR: failover tests of a whole PAC.
    ///
    /// A TLS master gets TLS sentinels (`port 0`, `tls-port`, `tls-replication yes`) with
    /// the master's PKI; then there can be no replicas (each TLS server has its own CA).
    pub fn watch(self, master: &RedisServer) -> SentinelWatch {
        assert!(
            !master.is_tls() || self.replicas == 0,
            "TLS sentinels are supported without replicas only"
        );
        let replicas: Vec<RedisServer> = (0..self.replicas)
            .map(|_| RedisServer::builder().replica_of(master).start())
            .collect();
        for r in &replicas {
            r.wait_for_replication_link(self.ready_timeout);
        }
        let sentinels: Vec<Sentinel> = (0..self.sentinels)
            .map(|_| Sentinel::start(&self, master))
            .collect();
        settle(&sentinels, &self, master.port(), replicas.len());
        SentinelWatch {
            sentinels,
            replicas,
            master_name: self.master_name.clone(),
            tls: master.is_tls(),
        }
    }

    pub fn start(self) -> SentinelSet {
        let master = self.master.clone().start();
        assert!(
            !master.is_tls(),
            "SentinelSet does not support TLS masters (sentinels would need TLS config too)"
        );
        // Replicas first and synced, so every sentinel learns them from its first INFO.
        let replicas: Vec<RedisServer> = (0..self.replicas)
            .map(|_| self.master.clone().replica_of(&master).start())
            .collect();
        for r in &replicas {
            r.wait_for_replication_link(self.ready_timeout);
        }
        let sentinels = (0..self.sentinels)
            .map(|_| Sentinel::start(&self, &master))
            .collect();
        let set = SentinelSet {
            sentinels,
            replicas,
            master,
            master_name: self.master_name.clone(),
        };
        set.wait_settled(&self);
        set
    }
}

/// A master, its replicas and its sentinels; every process is killed when this is dropped.
pub struct SentinelSet {
    /// Declared first so sentinels die before the master (fields drop in order) and never see
    /// it go down and start a failover during teardown.
    sentinels: Vec<Sentinel>,
    replicas: Vec<RedisServer>,
    master: RedisServer,
    master_name: String,
}

impl SentinelSet {
    /// Master `master_name` with one sentinel and no replicas.
    pub fn start(master_name: &str) -> SentinelSet {
        SentinelSet::builder(master_name).start()
    }

    pub fn builder(master_name: &str) -> SentinelSetBuilder {
        SentinelSetBuilder {
            master_name: master_name.to_string(),
            sentinels: 1,
            quorum: 1,
            replicas: 0,
            down_after: Duration::from_secs(1),
            failover_timeout: Duration::from_secs(10),
            master: RedisServer::builder(),
            ready_timeout: READY_TIMEOUT * 2,
        }
    }

    /// `redis+sentinel://127.0.0.1:S1,127.0.0.1:S2/<master>`. `master` is normally
    /// [`Self::master_name`]; another name gives a URL for a master the sentinels don't know.
    pub fn sentinel_url(&self, master: &str) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("{HOST}:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{master}", hosts.join(","))
    }

    /// The name the sentinels monitor the master under.
    pub fn master_name(&self) -> &str {
        &self.master_name
    }

    /// The master as started (after a failover it may no longer be the master).
    pub fn master(&self) -> &RedisServer {
        &self.master
    }

    /// Mutable access, for fault tests (`kill()`, `restart()`, `pause()`).
    pub fn master_mut(&mut self) -> &mut RedisServer {
        &mut self.master
    }

    pub fn replicas(&self) -> &[RedisServer] {
        &self.replicas
    }

    pub fn replicas_mut(&mut self) -> &mut [RedisServer] {
        &mut self.replicas
    }

    pub fn sentinels(&self) -> &[Sentinel] {
        &self.sentinels
    }

    pub fn sentinels_mut(&mut self) -> &mut [Sentinel] {
        &mut self.sentinels
    }

    /// What sentinel `i` currently answers to `SENTINEL get-master-addr-by-name`.
    pub fn master_addr(&self, i: usize) -> Option<(String, u16)> {
        self.sentinels[i].master_addr(&self.master_name)
    }

    /// Sentinel's view of the master (`SENTINEL master <name>`) as a field map, from sentinel
    /// `i`: `flags`, `num-slaves`, `num-other-sentinels`, ….
    pub fn master_info(&self, i: usize) -> Option<HashMap<String, String>> {
        self.sentinels[i].master_info(&self.master_name)
    }

    /// Waits until every sentinel points at our master, is connected to it, and knows all
    /// other sentinels and replicas.
    fn wait_settled(&self, opts: &SentinelSetBuilder) {
        settle(
            &self.sentinels,
            opts,
            self.master.port(),
            self.replicas.len(),
        );
    }
}

/// Sentinels and replicas watching a master owned elsewhere (see
/// [`SentinelSetBuilder::watch`]); killed when dropped (sentinels first).
pub struct SentinelWatch {
    sentinels: Vec<Sentinel>,
    replicas: Vec<RedisServer>,
    master_name: String,
    tls: bool,
}

impl SentinelWatch {
    /// `redis+sentinel://127.0.0.1:S1,.../<master>` (`rediss+sentinel://` with TLS).
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("{HOST}:{}", s.port))
            .collect();
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!(
            "{scheme}+sentinel://{}/{}",
            hosts.join(","),
            self.master_name
        )
    }

    pub fn master_name(&self) -> &str {
        &self.master_name
    }

    pub fn replicas(&self) -> &[RedisServer] {
        &self.replicas
    }

    pub fn sentinels(&self) -> &[Sentinel] {
        &self.sentinels
    }

    /// The master's port as sentinel `i` names it now.
    pub fn master_port(&self, i: usize) -> Option<u16> {
        self.sentinels[i]
            .master_addr(&self.master_name)
            .map(|(_, p)| p)
    }
}

/// Waits until every sentinel points at the master on `port`, is connected to it, and
/// knows all other sentinels and `replicas` replicas.
fn settle(sentinels: &[Sentinel], opts: &SentinelSetBuilder, port: u16, replicas: usize) {
    let master_name = &opts.master_name;
    {
        let want_addr = (HOST.to_string(), port);
        let want_others = (sentinels.len() - 1).to_string();
        let want_replicas = replicas.to_string();
        let deadline = Instant::now() + opts.ready_timeout;
        for (i, s) in sentinels.iter().enumerate() {
            loop {
                let addr = s.master_addr(master_name);
                let info = s.master_info(master_name).unwrap_or_default();
                let field = |k: &str| info.get(k).map(String::as_str).unwrap_or("?");
                if addr.as_ref() == Some(&want_addr)
                    && field("flags") == "master"
                    && field("num-other-sentinels") == want_others
                    && field("num-slaves") == want_replicas
                {
                    break;
                }
                if Instant::now() >= deadline {
                    let last = format!(
                        "addr {addr:?}, flags {}, other sentinels {}, replicas {}",
                        field("flags"),
                        field("num-other-sentinels"),
                        field("num-slaves")
                    );
                    let logs: String = sentinels.iter().map(Sentinel::diagnostics).collect();
                    panic!(
                        "sentinel {i} (:{}) did not settle on master {} at {want_addr:?} \
                         ({want_others} other sentinels, {want_replicas} replicas) within \
                         {:?}; last: {last}\n{logs}",
                        s.port, master_name, opts.ready_timeout
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// One `redis-sentinel` process, killed when dropped.
pub struct Sentinel {
    port: u16,
    /// The master's PKI, when the sentinel serves (and reaches the master over) TLS.
    pki: Option<super::TestPki>,
    /// Before `dir`, so the process is gone before its directory is deleted.
    proc: Option<Proc>,
    dir: TempDir,
}

impl Sentinel {
    fn start(opts: &SentinelSetBuilder, master: &RedisServer) -> Sentinel {
        let dir = tempfile::Builder::new()
            .prefix("pacup-sentinel-")
            .tempdir()
            .expect("create temp dir for redis-sentinel");
        let mut s = Sentinel {
            port: 0,
            pki: master.is_tls().then(|| master.pki().clone()),
            proc: None,
            dir,
        };
        for _ in 0..PORT_ATTEMPTS {
            s.port = free_port();
            let _ = std::fs::remove_file(s.log_path());
            let _ = std::fs::remove_file(s.stdio_path());
            s.write_conf(opts, master);
            let mut cmd = Command::new("redis-sentinel");
            cmd.arg(s.conf_path());
            s.proc = Some(Proc::spawn(
                format!("redis-sentinel :{}", s.port),
                cmd,
                &s.stdio_path(),
                &s.log_path(),
            ));
            match s.wait_answering(opts.ready_timeout) {
                Ok(()) => return s,
                Err(true) => continue, // port race: try another port
                Err(false) => {
                    let diagnostics = s.diagnostics();
                    drop(s.proc.take());
                    panic!(
                        "redis-sentinel on port {} failed to start\nconfig:\n{}\n{diagnostics}",
                        s.port,
                        read_lossy(&s.conf_path())
                    );
                }
            }
        }
        panic!("redis-sentinel: every port tried was taken by another process");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        let scheme = if self.pki.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://{HOST}:{}", self.port)
    }

    fn client(&self) -> redis::RedisResult<redis::Client> {
        match &self.pki {
            Some(pki) => {
                super::ensure_crypto_provider();
                redis::Client::build_with_tls(self.url(), pki.redis_certificates())
            }
            None => redis::Client::open(self.url()),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Contents of `sentinel.log`.
    pub fn log(&self) -> String {
        read_lossy(&self.log_path())
    }

    /// A blocking connection to this sentinel (for `SENTINEL …` commands).
    pub fn conn(&self) -> redis::Connection {
        let conn = self
            .client()
            .expect("sentinel client")
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to sentinel {}: {e}\n{}", self.url(), self.log()));
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("set read timeout");
        conn
    }

    /// SIGKILL this sentinel (it is not restarted).
    pub fn kill(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.kill();
        }
    }

    /// `SENTINEL get-master-addr-by-name <name>`; `None` if unknown or unreachable.
    pub fn master_addr(&self, name: &str) -> Option<(String, u16)> {
        let mut conn = self.try_conn()?;
        redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(name)
            .query::<Option<(String, u16)>>(&mut conn)
            .ok()
            .flatten()
    }

    /// `SENTINEL master <name>` as a field map; `None` if unknown or unreachable.
    pub fn master_info(&self, name: &str) -> Option<HashMap<String, String>> {
        let mut conn = self.try_conn()?;
        redis::cmd("SENTINEL")
            .arg("master")
            .arg(name)
            .query(&mut conn)
            .ok()
    }

    fn try_conn(&self) -> Option<redis::Connection> {
        let conn = self
            .client()
            .ok()?
            .get_connection_with_timeout(Duration::from_millis(500))
            .ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        Some(conn)
    }

    /// Waits until the process answers PING. `Err(true)` means "port taken, retry elsewhere".
    fn wait_answering(&mut self, timeout: Duration) -> Result<(), bool> {
        let deadline = Instant::now() + timeout;
        loop {
            let proc = self.proc.as_mut().expect("spawned");
            if proc.try_exit().is_some() {
                let out = format!(
                    "{}{}",
                    read_lossy(&self.log_path()),
                    read_lossy(&self.stdio_path())
                );
                return Err(out.contains("Address already in use"));
            }
            let pid = proc.pid().expect("running").to_string();
            if let Some(mut conn) = self.try_conn() {
                // Check the answering process is ours, not a stray one on the port.
                let info: Option<String> = redis::cmd("INFO").arg("server").query(&mut conn).ok();
                let ours = info.is_some_and(|i| {
                    i.lines()
                        .any(|l| l.strip_prefix("process_id:").map(str::trim) == Some(&pid))
                });
                if ours {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(false);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn write_conf(&self, opts: &SentinelSetBuilder, master: &RedisServer) {
        let name = &opts.master_name;
        let mut c = format!(
            "port {port}\n\
             bind {HOST}\n\
             daemonize no\n\
             dir \"{dir}\"\n\
             logfile \"{log}\"\n\
             sentinel resolve-hostnames yes\n\
             sentinel monitor {name} {HOST} {mport} {quorum}\n\
             sentinel down-after-milliseconds {name} {down}\n\
             sentinel failover-timeout {name} {failover}\n\
             sentinel parallel-syncs {name} 1\n",
            port = self.port,
            dir = self.dir.path().display(),
            log = self.log_path().display(),
            mport = master.port(),
            quorum = opts.quorum,
            down = opts.down_after.as_millis(),
            failover = opts.failover_timeout.as_millis(),
        );
        if let Some(pki) = &self.pki {
            let q = |p: &Path| format!("\"{}\"", p.display());
            c = c.replacen(&format!("port {}\n", self.port), "port 0\n", 1);
            c.push_str(&format!(
                "tls-port {port}\n\
                 tls-cert-file {cert}\n\
                 tls-key-file {key}\n\
                 tls-ca-cert-file {ca}\n\
                 tls-client-cert-file {ccert}\n\
                 tls-client-key-file {ckey}\n\
                 tls-auth-clients yes\n\
                 tls-replication yes\n",
                port = self.port,
                cert = q(&pki.server_cert_path),
                key = q(&pki.server_key_path),
                ca = q(&pki.ca_path),
                ccert = q(&pki.client_cert_path),
                ckey = q(&pki.client_key_path),
            ));
        }
        if let (Some(user), Some(pass)) = (master.username(), master.password()) {
            c.push_str(&format!(
                "sentinel auth-user {name} {user}\nsentinel auth-pass {name} {pass}\n"
            ));
        }
        std::fs::write(self.conf_path(), c).expect("write sentinel.conf");
    }

    fn diagnostics(&self) -> String {
        self.proc
            .as_ref()
            .map(Proc::diagnostics)
            .unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("sentinel.log")
    }

    fn stdio_path(&self) -> PathBuf {
        self.dir.path().join("stdio.log")
    }

    fn conf_path(&self) -> PathBuf {
        self.dir.path().join("sentinel.conf")
    }
}
