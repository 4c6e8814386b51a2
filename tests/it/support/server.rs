//! A private `redis-server` per test.
//!
//! ```ignore
//! let server = RedisServer::start();                       // plain TCP
//! let server = RedisServer::builder().with_acl_user("pacup", "s3cret").start();
//! let server = RedisServer::builder().with_tls().start();   // rediss:// + client certs
//! let mut conn = server.conn();
//! ```
//!
//! The server runs from a `redis.conf` written into its own temp dir (no persistence, log to
//! `redis.log` there) on a port that was free a moment ago; if another process grabs that port
//! first, startup retries on a new one. It is ready only once *this* process answers PING and
//! `INFO server` reports our pid — a server that some other test left on the port does not
//! count. Fault tests can `kill()`/`stop()` it and `restart()` it on the same port and dir.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::process::Proc;
use super::tls::{ensure_crypto_provider, TestPki};
use super::{encode_userinfo, free_port, read_lossy, READY_TIMEOUT};

/// How many fresh ports `start()` tries before giving up on port races.
const PORT_ATTEMPTS: usize = 5;
/// How many times `restart()` retries the *same* port if it is momentarily taken.
const RESTART_ATTEMPTS: usize = 5;
/// Upper bound for a graceful `stop()` before it falls back to SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Timeouts on the connections handed to tests: long enough never to fire on a slow CI box,
/// short enough that a hung server fails the test instead of hanging it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(30);

const HOST: &str = "127.0.0.1";

/// Options for a [`RedisServer`]; obtain with [`RedisServer::builder`].
#[derive(Debug, Clone)]
pub struct RedisServerBuilder {
    extra_args: Vec<String>,
    conf_lines: Vec<String>,
    notify_keyspace_events: Option<String>,
    unix_socket: bool,
    acl_user: Option<(String, String)>,
    /// `Some(auth_clients)` when TLS is on.
    tls: Option<bool>,
    /// A PKI shared with other servers (a cluster's nodes trust one CA); `None`: each TLS
    /// server generates its own.
    shared_pki: Option<TestPki>,
    ready_timeout: Duration,
    port_hint: Option<u16>,
}

impl Default for RedisServerBuilder {
    fn default() -> Self {
        RedisServerBuilder {
            extra_args: Vec::new(),
            conf_lines: Vec::new(),
            notify_keyspace_events: None,
            unix_socket: false,
            acl_user: None,
            tls: None,
            shared_pki: None,
            ready_timeout: READY_TIMEOUT,
            port_hint: None,
        }
    }
}

impl RedisServerBuilder {
    /// Extra command-line argument for `redis-server`, appended after the config file, so it
    /// overrides it (e.g. `.args(["--maxmemory", "1mb"])`).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// A raw line appended to the generated `redis.conf` (e.g. `"maxclients 20"`).
    pub fn conf_line(mut self, line: impl Into<String>) -> Self {
        self.conf_lines.push(line.into());
        self
    }

    /// Sets `notify-keyspace-events` (e.g. `"KEA"`); left at Redis' default (off) otherwise,
    /// so tests can check that the library enables what it needs itself.
    pub fn notify_keyspace_events(mut self, flags: impl Into<String>) -> Self {
        self.notify_keyspace_events = Some(flags.into());
        self
    }

    /// Also listen on a unix socket in the temp dir; see [`RedisServer::unix_path`].
    pub fn with_unix_socket(mut self) -> Self {
        self.unix_socket = true;
        self
    }

    /// Creates ACL user `user` with password `password` and full permissions, and disables the
    /// `default` user, so unauthenticated or wrongly authenticated clients are refused.
    /// [`RedisServer::url`] then carries the credentials.
    ///
    /// The password is written verbatim into `redis.conf`, so it must not contain whitespace.
    pub fn with_acl_user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        let (user, password) = (user.into(), password.into());
        assert!(
            !user.contains(char::is_whitespace) && !password.contains(char::is_whitespace),
            "ACL user and password must not contain whitespace"
        );
        self.acl_user = Some((user, password));
        self
    }

    /// Serve TLS only (`port 0`, `tls-port P`), with a freshly generated PKI and client
    /// certificates required (`tls-auth-clients yes`).
    pub fn with_tls(mut self) -> Self {
        self.tls = Some(self.tls.unwrap_or(true));
        self
    }

    /// Serve TLS like [`Self::with_tls`], with `pki`'s certificates instead of fresh ones
    /// (servers that talk to each other over TLS, such as a cluster's nodes, share a CA).
    pub fn with_tls_pki(mut self, pki: TestPki) -> Self {
        self.shared_pki = Some(pki);
        self.with_tls()
    }

    /// Turns TLS on and sets whether clients must present a certificate.
    pub fn tls_auth_clients(mut self, required: bool) -> Self {
        self.tls = Some(required);
        self
    }

    /// Makes this server a replica of `master` (`--replicaof`), authenticating with the
    /// master's ACL user if it has one. Use [`RedisServer::wait_for_replication_link`] to wait
    /// until it has synced.
    pub fn replica_of(mut self, master: &RedisServer) -> Self {
        self = self.args([
            "--replicaof".to_string(),
            HOST.into(),
            master.port().to_string(),
        ]);
        if let Some((user, pass)) = &master.opts.acl_user {
            self = self.args(["--masteruser", user.as_str(), "--masterauth", pass.as_str()]);
        }
        self
    }

    /// Bound for the readiness wait (default [`READY_TIMEOUT`]).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Try this port first; if it is taken, fall back to free ones like any start. Mainly
    /// for exercising the port-race retry itself.
    pub fn port_hint(mut self, port: u16) -> Self {
        self.port_hint = Some(port);
        self
    }

    /// Starts the server and waits until it answers; panics (with the server log) if it does not
    /// come up within the ready timeout.
    pub fn start(self) -> RedisServer {
        super::require_redis();
        let dir = tempfile::Builder::new()
            .prefix("pacup-redis-")
            .tempdir()
            .expect("create temp dir for redis-server");
        let pki = self.tls.map(|_| {
            self.shared_pki
                .clone()
                .unwrap_or_else(|| TestPki::generate(dir.path()))
        });
        let mut server = RedisServer {
            opts: self,
            port: 0,
            proc: None,
            pki,
            dir,
        };
        let mut races = Vec::new();
        for attempt in 0..PORT_ATTEMPTS {
            server.port = match server.opts.port_hint {
                Some(port) if attempt == 0 => port,
                _ => free_port(),
            };
            // Each attempt starts with empty logs, so the logs describe the server we keep.
            let _ = std::fs::remove_file(server.log_path());
            let _ = std::fs::remove_file(server.stdio_path());
            match server.launch() {
                Ok(()) => return server,
                Err(Launch::PortInUse) => races.push(server.port),
                Err(Launch::Failed(msg)) => server.fail_start(&msg),
            }
        }
        panic!("redis-server: every port tried was taken by another process: {races:?}");
    }
}

enum Launch {
    /// The port was taken by another process; retry (with a new port on first start).
    PortInUse,
    /// Anything else: not worth retrying.
    Failed(String),
}

/// A running `redis-server`, killed (SIGKILL) when dropped.
pub struct RedisServer {
    opts: RedisServerBuilder,
    /// The port clients use: the TLS port for TLS servers, the plain one otherwise.
    port: u16,
    /// Declared before `dir`: fields drop in order, so the process is dead (and its log
    /// printed on panic) before the directory holding the log is deleted.
    proc: Option<Proc>,
    pki: Option<TestPki>,
    dir: TempDir,
}

impl RedisServer {
    /// A plain server with default options.
    pub fn start() -> RedisServer {
        RedisServer::builder().start()
    }

    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// The port clients connect to (the TLS port when TLS is on).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Client URL: `redis://127.0.0.1:P`, `rediss://…` with TLS, `…//user:pass@…` with ACL.
    pub fn url(&self) -> String {
        self.url_for_host(HOST)
    }

    /// [`Self::url`] with another host name (e.g. `"localhost"`, which the TLS certificate
    /// also covers).
    pub fn url_for_host(&self, host: &str) -> String {
        let userinfo = match &self.opts.acl_user {
            Some((u, p)) => format!("{}:{}@", encode_userinfo(u), encode_userinfo(p)),
            None => String::new(),
        };
        format!("{}://{userinfo}{host}:{}", self.scheme(), self.port)
    }

    /// [`Self::url`] with the user name but without the password (`redis://user@127.0.0.1:P`),
    /// for tests that supply the password some other way (e.g. `PACUP_PSOR_PASSWORD`).
    /// Equal to `url()` when there is no ACL user.
    pub fn url_without_password(&self) -> String {
        let userinfo = match &self.opts.acl_user {
            Some((u, _)) => format!("{}@", encode_userinfo(u)),
            None => String::new(),
        };
        format!("{}://{userinfo}{HOST}:{}", self.scheme(), self.port)
    }

    /// The `rediss://127.0.0.1:P` URL (with credentials if ACL is on); the server certificate
    /// is valid for this IP. Panics if TLS is off.
    pub fn tls_url(&self) -> String {
        self.pki();
        self.url()
    }

    /// The ACL user name, if any.
    pub fn username(&self) -> Option<&str> {
        self.opts.acl_user.as_ref().map(|(u, _)| u.as_str())
    }

    /// The ACL user's password, if any.
    pub fn password(&self) -> Option<&str> {
        self.opts.acl_user.as_ref().map(|(_, p)| p.as_str())
    }

    pub fn is_tls(&self) -> bool {
        self.pki.is_some()
    }

    /// The generated PKI (CA, server and client certificates). Panics if TLS is off.
    pub fn pki(&self) -> &TestPki {
        self.pki
            .as_ref()
            .expect("this RedisServer was not built with_tls()")
    }

    pub fn ca_path(&self) -> &Path {
        &self.pki().ca_path
    }

    pub fn client_cert_path(&self) -> &Path {
        &self.pki().client_cert_path
    }

    pub fn client_key_path(&self) -> &Path {
        &self.pki().client_key_path
    }

    /// The unix socket path. Panics unless built `with_unix_socket()`.
    pub fn unix_path(&self) -> PathBuf {
        assert!(
            self.opts.unix_socket,
            "this RedisServer was not built with_unix_socket()"
        );
        self.dir.path().join("redis.sock")
    }

    /// `redis+unix:///…/redis.sock` (plus `?user=…&pass=…` with ACL), as the redis crate
    /// parses it.
    pub fn unix_url(&self) -> String {
        let mut url = format!("redis+unix://{}", self.unix_path().display());
        if let Some((u, p)) = &self.opts.acl_user {
            let _ = write!(
                url,
                "?user={}&pass={}",
                encode_userinfo(u),
                encode_userinfo(p)
            );
        }
        url
    }

    /// The server's temp dir (config, log, TLS files, unix socket).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Contents of `redis.log` (all runs since `start()`, restarts included).
    pub fn log(&self) -> String {
        read_lossy(&self.log_path())
    }

    /// The pid, while the process has not exited.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().and_then(Proc::pid)
    }

    /// Whether the process is still alive (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| p.try_exit().is_none())
    }

    /// A redis crate client for this server: credentials included, and for TLS our CA as the
    /// only trust root plus the client certificate.
    pub fn client(&self) -> redis::Client {
        let url = self.url();
        let client = match &self.pki {
            Some(pki) => {
                ensure_crypto_provider();
                redis::Client::build_with_tls(url.as_str(), pki.redis_certificates())
            }
            None => redis::Client::open(url.as_str()),
        };
        client.unwrap_or_else(|e| panic!("redis client for {url}: {e}"))
    }

    /// A client connecting through the unix socket.
    pub fn unix_client(&self) -> redis::Client {
        let url = self.unix_url();
        redis::Client::open(url.as_str()).unwrap_or_else(|e| panic!("redis client for {url}: {e}"))
    }

    /// A blocking connection (authenticated / TLS as configured), with bounded I/O timeouts.
    pub fn conn(&self) -> redis::Connection {
        let conn = self
            .client()
            .get_connection_with_timeout(CONNECT_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {}: {e}\n{}", self.url(), self.log()));
        conn.set_read_timeout(Some(IO_TIMEOUT))
            .expect("set read timeout");
        conn.set_write_timeout(Some(IO_TIMEOUT))
            .expect("set write timeout");
        conn
    }

    /// An async multiplexed connection (authenticated / TLS as configured). The response timeout
    /// is raised from the crate's 500 ms default, which is too tight for a busy CI machine.
    pub async fn aconn(&self) -> redis::aio::MultiplexedConnection {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(IO_TIMEOUT));
        self.client()
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .unwrap_or_else(|e| panic!("async connect to {}: {e}\n{}", self.url(), self.log()))
    }

    /// Graceful shutdown (SIGTERM; SIGKILL if it takes longer than 5 s). Keeps dir and port
    /// for [`Self::restart`].
    pub fn stop(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.terminate(STOP_GRACE);
        }
    }

    /// Crash: SIGKILL and reap. Keeps dir and port for [`Self::restart`].
    pub fn kill(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.kill();
        }
    }

    /// SIGSTOP: the server keeps its sockets but stops answering, like a hung or partitioned
    /// server. Undo with [`Self::resume`]; `stop()`, `kill()` and drop work while paused.
    pub fn pause(&self) {
        if let Some(p) = self.proc.as_ref() {
            p.signal("STOP");
        }
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&self) {
        if let Some(p) = self.proc.as_ref() {
            p.signal("CONT");
        }
    }

    /// Starts the server again on the same port and dir (after `stop()`/`kill()`; if it is still
    /// running it is killed first) and waits until it is ready. Data is not preserved (no
    /// persistence), which is what a crashed PSOR without AOF looks like.
    pub fn restart(&mut self) {
        self.kill();
        for attempt in 1..=RESTART_ATTEMPTS {
            match self.launch() {
                Ok(()) => return,
                Err(Launch::PortInUse) if attempt < RESTART_ATTEMPTS => {
                    // The port cannot change on restart, so back off briefly and retry.
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(Launch::PortInUse) => {
                    self.fail_start(&format!("port {} stayed in use", self.port))
                }
                Err(Launch::Failed(msg)) => self.fail_start(&msg),
            }
        }
    }

    /// Waits until this server (a replica) reports `master_link_status:up`.
    pub fn wait_for_replication_link(&self, timeout: Duration) {
        let mut conn = self.conn();
        super::wait_until(timeout, "replica link to master to come up", || {
            redis::cmd("INFO")
                .arg("replication")
                .query::<String>(&mut conn)
                .is_ok_and(|info| info.contains("master_link_status:up"))
        });
    }

    fn scheme(&self) -> &'static str {
        if self.pki.is_some() {
            "rediss"
        } else {
            "redis"
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn stdio_path(&self) -> PathBuf {
        self.dir.path().join("stdio.log")
    }

    fn conf_path(&self) -> PathBuf {
        self.dir.path().join("redis.conf")
    }

    /// Everything `redis-server` needs is in the config file rather than on the command line,
    /// so a failing test leaves a readable `redis.conf` to reproduce with.
    fn write_conf(&self) {
        let dir = self.dir.path();
        let mut c = String::new();
        let mut line = |s: String| {
            c.push_str(&s);
            c.push('\n');
        };
        line(format!("bind {HOST}"));
        match &self.pki {
            Some(pki) => {
                line("port 0".into());
                line(format!("tls-port {}", self.port));
                line(format!("tls-cert-file {}", quote(&pki.server_cert_path)));
                line(format!("tls-key-file {}", quote(&pki.server_key_path)));
                line(format!("tls-ca-cert-file {}", quote(&pki.ca_path)));
                let auth = if self.opts.tls == Some(false) {
                    "no"
                } else {
                    "yes"
                };
                line(format!("tls-auth-clients {auth}"));
            }
            None => line(format!("port {}", self.port)),
        }
        line("daemonize no".into());
        line(format!("dir {}", quote(dir)));
        line(format!("logfile {}", quote(&self.log_path())));
        line("save \"\"".into());
        line("appendonly no".into());
        // Fault tests may want `DEBUG SLEEP` to simulate a slow server.
        line("enable-debug-command local".into());
        if self.opts.unix_socket {
            line(format!("unixsocket {}", quote(&self.unix_path())));
            line("unixsocketperm 700".into());
        }
        if let Some(flags) = &self.opts.notify_keyspace_events {
            line(format!("notify-keyspace-events {}", quote_str(flags)));
        }
        if let Some((user, pass)) = &self.opts.acl_user {
            line(format!("user {user} on >{pass} ~* &* +@all"));
            line("user default off".into());
        }
        for l in &self.opts.conf_lines {
            line(l.clone());
        }
        std::fs::write(self.conf_path(), c).expect("write redis.conf");
    }

    /// Spawns the process and waits (bounded) until it is ready.
    fn launch(&mut self) -> Result<(), Launch> {
        self.write_conf();
        let offsets = (file_len(&self.log_path()), file_len(&self.stdio_path()));
        let mut cmd = Command::new("redis-server");
        cmd.arg(self.conf_path()).args(&self.opts.extra_args);
        let name = format!("redis-server :{}", self.port);
        self.proc = Some(Proc::spawn(name, cmd, &self.stdio_path(), &self.log_path()));

        let deadline = Instant::now() + self.opts.ready_timeout;
        let mut interval = Duration::from_millis(5);
        loop {
            let proc = self.proc.as_mut().expect("just spawned");
            if let Some(status) = proc.try_exit() {
                let new_output = format!(
                    "{}{}",
                    read_from(&self.log_path(), offsets.0),
                    read_from(&self.stdio_path(), offsets.1)
                );
                if new_output.contains("Address already in use") {
                    return Err(Launch::PortInUse);
                }
                return Err(Launch::Failed(format!(
                    "exited ({status}) before becoming ready"
                )));
            }
            let pid = proc.pid().expect("running");
            let last_probe = match self.probe(pid) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(Launch::Failed(format!(
                    "not ready within {:?}; last probe: {last_probe}",
                    self.opts.ready_timeout
                )));
            }
            std::thread::sleep(interval.min(deadline - now));
            interval = (interval * 2).min(Duration::from_millis(50));
        }
    }

    /// One readiness probe: PING answers PONG and the answering process is ours (its
    /// `process_id` is our child's pid), so a stray server on the port is not mistaken for ours.
    fn probe(&self, pid: u32) -> Result<(), String> {
        let mut conn = self
            .client()
            .get_connection_with_timeout(Duration::from_millis(500))
            .map_err(|e| format!("connect: {e}"))?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        let pong: String = redis::cmd("PING")
            .query(&mut conn)
            .map_err(|e| format!("PING: {e}"))?;
        if pong != "PONG" {
            return Err(format!("PING answered {pong:?}"));
        }
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query(&mut conn)
            .map_err(|e| format!("INFO: {e}"))?;
        let their_pid = info
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .map(str::trim);
        if their_pid != Some(pid.to_string().as_str()) {
            return Err(format!(
                "port answered by process {their_pid:?}, not our redis-server {pid}"
            ));
        }
        Ok(())
    }

    /// Kills the process and panics with its logs in the message. The process is dropped
    /// *before* panicking so the log is not printed a second time by `Proc::drop`.
    fn fail_start(&mut self, msg: &str) -> ! {
        let diagnostics = self
            .proc
            .as_ref()
            .map(Proc::diagnostics)
            .unwrap_or_default();
        drop(self.proc.take());
        panic!(
            "redis-server on port {} failed to start: {msg}\nconfig ({}):\n{}\n{diagnostics}",
            self.port,
            self.conf_path().display(),
            read_lossy(&self.conf_path()),
        );
    }
}

/// Quotes a path for redis.conf (double quotes; `\` and `"` escaped).
fn quote(path: &Path) -> String {
    quote_str(&path.display().to_string())
}

fn quote_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The part of a log file written after byte `offset` (i.e. by the current launch).
fn read_from(path: &Path, offset: u64) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}
