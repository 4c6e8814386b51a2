//! Shared scaffolding for the integration tests.
//!
//! Every test that needs Redis gets its *own* `redis-server` (or Sentinel set) in its own
//! temporary directory on a free loopback port, so tests can run in parallel, never touch a
//! developer's Redis on 6379, and leave nothing behind. Processes are killed when their handle is
//! dropped; when a test panics, the server logs are printed so the failure is diagnosable from the
//! test output alone.
//!
//! All waiting is bounded polling on a real condition ([`wait_until`], [`wait_for`]); nothing
//! here sleeps a fixed time and hopes the other side is ready.
//!
//! Many helpers exist for tests that are not written yet, hence the module-wide `dead_code`
//! allowance: each test binary only uses a subset.
#![allow(dead_code, unused_imports)]

pub mod cluster;
pub mod cluster_pac;
pub mod cmd;
pub mod monitor;
pub mod pac;
mod process;
pub mod region;
pub mod rollout;
pub mod sentinel;
pub mod server;
pub mod state;
pub mod tls;
pub mod work;

pub use cluster::RedisCluster;
pub use cmd::{
    caspac, pacup, Cmd, Output, Running, SIGCONT, SIGHUP, SIGINT, SIGKILL, SIGSTOP, SIGTERM,
};
pub use monitor::Monitor;
pub use sentinel::{Sentinel, SentinelSet, SentinelSetBuilder};
pub use server::{RedisServer, RedisServerBuilder};
pub use tls::{ensure_crypto_provider, TestPki};

use std::collections::HashSet;
use std::future::Future;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Default bound for "the server should be up by now" waits. Generous because CI machines
/// are small (2 cores) and tests run in parallel; it is a ceiling, not a delay.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest pause between two polls: short enough that tests stay fast, long enough not to
/// spin a CPU the servers under test need.
const MAX_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Polls `cond` until it returns `true`, panicking with `what` once `timeout` has elapsed.
///
/// Use this instead of `sleep` whenever a test waits for something another process does.
/// Polls start at 5 ms and back off to 100 ms, so quick conditions cost almost nothing.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    wait_for(timeout, what, || cond().then_some(()))
}

/// Like [`wait_until`], but the condition yields a value (`Some`) once it holds, which is
/// returned — handy for "wait until the key exists and give me its value".
#[track_caller]
pub fn wait_for<T>(timeout: Duration, what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut interval = Duration::from_millis(5);
    loop {
        if let Some(v) = cond() {
            return v;
        }
        let now = Instant::now();
        if now >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(interval.min(deadline - now));
        interval = (interval * 2).min(MAX_POLL_INTERVAL);
    }
}

/// Async twin of [`wait_until`] for `#[tokio::test]`s: sleeps with `tokio::time::sleep` so the
/// runtime (and e.g. a connection task the condition depends on) keeps running meanwhile.
pub async fn wait_until_async<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    let mut interval = Duration::from_millis(5);
    loop {
        if cond().await {
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(interval.min(deadline - now)).await;
        interval = (interval * 2).min(MAX_POLL_INTERVAL);
    }
}

/// Returns a loopback TCP port that was free a moment ago.
///
/// The OS picks it (bind to port 0, then release). That leaves a window in which something
/// else can grab the port, which is why the server starters retry on "address in use". Ports
/// already handed out by this process are never handed out again, so two tests in the same
/// binary cannot race each other for one port (only foreign processes can).
pub fn free_port() -> u16 {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(Default::default);
    for _ in 0..1000 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        drop(listener);
        if handed_out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(port)
        {
            return port;
        }
    }
    panic!("could not find a free loopback port that was not already handed out");
}

/// The executables the integration tests start.
const REDIS_EXECUTABLES: [&str; 2] = ["redis-server", "redis-sentinel"];

/// Ends the test run with one line when `redis-server` or `redis-sentinel` is not on PATH.
///
/// Every server start calls this; the check runs once and every other test waits for its
/// answer, so a machine without Redis gets one line saying what is missing and how to get it,
/// instead of the same panic from a hundred tests. The process exits before any test has
/// started a server, so no server is left behind. The line goes to the real stderr: libtest
/// captures the `eprintln!` of a test and would drop it with the process.
pub fn require_redis() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let missing: Vec<&str> = REDIS_EXECUTABLES
            .into_iter()
            .filter(|exe| !std::env::split_paths(&path).any(|d| is_executable(&d.join(exe))))
            .collect();
        if missing.is_empty() {
            return;
        }
        let (names, verb) = match missing.as_slice() {
            [one] => (one.to_string(), "is"),
            many => (many.join(" and "), "are"),
        };
        let _ = writeln!(
            std::io::stderr().lock(),
            "error: {names} {verb} not on PATH: the integration tests start their own \
             redis-server and redis-sentinel; `cargo xtask test` installs them and runs the tests"
        );
        // libtest's own status for a failed run.
        std::process::exit(101);
    });
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Reads a (log) file as text, tolerating missing files and invalid UTF-8, because it is only
/// ever used to *show* something in a failure message.
pub(crate) fn read_lossy(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// Percent-encodes a URL userinfo component (user or password), so credentials containing
/// `@`, `:` or `/` still produce a parseable URL.
pub(crate) fn encode_userinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The seed of a randomised test: `PACUP_TEST_SEED` if set (to replay a failure), else
/// the clock; printed either way, so every run can be replayed.
pub(crate) fn seed(test: &str) -> u64 {
    let seed = std::env::var("PACUP_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |d| d.as_nanos() as u64)
        });
    eprintln!("{test}: seed {seed} (PACUP_TEST_SEED={seed} replays it)");
    seed
}

/// A small deterministic generator for randomised tests (seeded with [`seed`]).
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }

    /// One of `xs`.
    pub fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}
