//! `pacup region run` as the tests start and stop it: short heartbeats, waits for the
//! start line, and a graceful stop only once the region runs its normal loop.

use std::time::Duration;

use redis::Commands;

use super::{pacup, wait_for, wait_until, Cmd, Output, RedisServer, Running, SIGTERM};

/// Bound for a region to print its start line (generous: 2 cores, tests in parallel).
pub const START: Duration = Duration::from_secs(20);
/// Bound for a region to stop after SIGTERM.
pub const STOP: Duration = Duration::from_secs(20);

/// `region run R --pac P --host H --product-version V --start-type T` with short
/// heartbeats (200 ms, TTL 1 s), after `base` (a `pacup` with its connection arguments).
pub fn region_run(base: Cmd, pac: &str, region: &str, host: &str, v: &str, start: &str) -> Cmd {
    base.args(["region", "run", region, "--pac", pac, "--host", host])
        .args(["--product-version", v, "--start-type", start])
        .args(["--heartbeat-interval", "200ms", "--heartbeat-ttl", "1s"])
}

/// [`region_run`] against `server`.
pub fn region_cmd(
    s: &RedisServer,
    pac: &str,
    region: &str,
    host: &str,
    v: &str,
    start: &str,
) -> Cmd {
    region_run(
        pacup().args(["--psor", &s.url()]),
        pac,
        region,
        host,
        v,
        start,
    )
}

/// The line a region prints once it joined a store.
pub fn started_prefix(region: &str) -> String {
    format!("Region {region} started (")
}

/// Spawns `cmd` (a `region run` of `region`) and waits for its start line
/// (`Region R started (...) in store V, mode M`), which it returns.
pub fn spawn_started(cmd: Cmd, region: &str) -> (Running, String) {
    let mut proc = cmd.spawn();
    let prefix = started_prefix(region);
    let line = proc.wait_for_stdout_line(|l| l.starts_with(&prefix), START);
    (proc, line)
}

/// Waits until `region` of `pac` has heartbeated twice (read through `c`), i.e. it is
/// past its start-up and runs its normal loop. Needed before a SIGTERM: `region run`
/// prints its start line before it handles SIGTERM (see
/// `psor_tests::sigterm_right_after_the_start_line_is_a_graceful_stop`).
pub fn settle(c: &mut redis::Connection, pac: &str, region: &str) {
    let key = format!("pac:{{{pac}}}:region:{region}");
    let mut beat = || -> Option<String> { c.hget(&key, "heartbeat_at").unwrap() };
    let first = wait_for(START, &format!("a heartbeat of {region}"), &mut beat);
    wait_until(START, &format!("a second heartbeat of {region}"), || {
        beat().is_some_and(|b| b != first)
    });
}

/// Graceful stop of a region process: SIGTERM once it is settled (see [`settle`]); it
/// must exit 0.
pub fn stop_gracefully(
    c: &mut redis::Connection,
    pac: &str,
    region: &str,
    mut r: Running,
) -> Output {
    settle(c, pac, region);
    r.signal(SIGTERM);
    let out = r.wait_with_timeout(STOP);
    out.success();
    out
}

/// A region process started by a test, with what is needed to check on it in the PSOR.
pub struct RegionRun {
    proc: Running,
    client: redis::Client,
    pac: String,
    name: String,
}

impl RegionRun {
    /// Spawns `cmd` (a `region run` of region `name` in `pac`) and waits for its
    /// `Region R started (...) in store V, mode M` line; `watch` reads its heartbeats.
    pub fn spawn(watch: redis::Client, cmd: Cmd, pac: &str, name: &str) -> (RegionRun, String) {
        let (proc, line) = spawn_started(cmd, name);
        let r = RegionRun {
            proc,
            client: watch,
            pac: pac.to_string(),
            name: name.to_string(),
        };
        (r, line)
    }

    /// Starts a region with short heartbeats on `s` and waits for its start line.
    pub fn start(
        s: &RedisServer,
        pac: &str,
        region: &str,
        host: &str,
        v: &str,
        start: &str,
    ) -> (RegionRun, String) {
        let cmd = region_cmd(s, pac, region, host, v, start);
        RegionRun::spawn(s.client(), cmd, pac, region)
    }

    /// Waits until the region has heartbeated twice ([`settle`]).
    pub fn settle(&self) {
        settle(&mut self.watch(), &self.pac, &self.name);
    }

    /// Graceful stop: SIGTERM once the region is settled; it must exit 0.
    pub fn stop(self) -> Output {
        let mut c = self.watch();
        stop_gracefully(&mut c, &self.pac, &self.name, self.proc)
    }

    fn watch(&self) -> redis::Connection {
        self.client
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap()
    }

    /// The process itself.
    pub fn into_running(self) -> Running {
        self.proc
    }
}

impl std::ops::Deref for RegionRun {
    type Target = Running;
    fn deref(&self) -> &Running {
        &self.proc
    }
}

impl std::ops::DerefMut for RegionRun {
    fn deref_mut(&mut self) -> &mut Running {
        &mut self.proc
    }
}
