//! Workload drivers: the client load balancer behind `pacup clients run` and the demo.

use crate::psor::Pac;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Result of `clients run` (stable JSON, documented in docs/regions.md).
#[derive(Debug, Default, Serialize)]
pub struct ClientReport {
    /// Transactions attempted.
    pub sent: u64,
    /// Answered `OK` by some region.
    pub ok: u64,
    /// No region could serve it within the transaction timeout.
    pub failed: u64,
    /// Attempts that failed on one region and were sent to another.
    pub retried: u64,
    /// Transactions served per region.
    pub by_region: BTreeMap<String, u64>,
    /// Wall time.
    pub elapsed_ms: u64,
}

/// A small load balancer: live regions whose listener is on, round robin, one connection
/// per region, refreshed from the PSOR every 200 ms (connections to regions whose
/// listener went off are closed, so draining regions lose their clients at once).
pub struct Balancer {
    pac: Pac,
    targets: Vec<(String, String)>,
    refreshed: Option<Instant>,
    conns: HashMap<
        String,
        (
            BufReader<tokio::net::tcp::OwnedReadHalf>,
            tokio::net::tcp::OwnedWriteHalf,
        ),
    >,
    next: usize,
}

impl Balancer {
    async fn refresh(&mut self, force: bool) {
        if !force
            && self
                .refreshed
                .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
        {
            return;
        }
        if let Ok(s) = self.pac.snapshot().await {
            self.targets = s
                .regions
                .iter()
                .filter(|r| r.alive && r.listener == "on" && !r.endpoint.is_empty())
                .map(|r| (r.name.clone(), r.endpoint.clone()))
                .collect();
            let keep: HashSet<&String> = self.targets.iter().map(|(n, _)| n).collect();
            self.conns.retain(|n, _| keep.contains(n));
        }
        self.refreshed = Some(Instant::now());
    }

    async fn send(&mut self, region: &str, endpoint: &str, tx: &str) -> Result<(), String> {
        if !self.conns.contains_key(region) {
            let s = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(endpoint))
                .await
                .map_err(|_| "connect timed out".to_string())?
                .map_err(|e| e.to_string())?;
            let _ = s.set_nodelay(true);
            let (r, w) = s.into_split();
            self.conns
                .insert(region.to_string(), (BufReader::new(r), w));
        }
        let (r, w) = self.conns.get_mut(region).expect("inserted");
        let out = async {
            w.write_all(format!("TX {tx}\n").as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut line = String::new();
            let n = r.read_line(&mut line).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed".to_string());
            }
            if line.starts_with("OK ") {
                Ok(())
            } else {
                Err(line.trim().to_string())
            }
        };
        let res = tokio::time::timeout(Duration::from_secs(2), out)
            .await
            .unwrap_or_else(|_| Err("no answer within 2s".into()));
        if res.is_err() {
            self.conns.remove(region);
        }
        res
    }

    /// Serves one transaction, retrying other regions until `deadline`.
    async fn serve(&mut self, tx: &str, deadline: Instant, report: &mut ClientReport) -> bool {
        let mut tried: HashSet<String> = HashSet::new();
        loop {
            self.refresh(false).await;
            let candidates: Vec<(String, String)> = self
                .targets
                .iter()
                .filter(|(n, _)| !tried.contains(n))
                .cloned()
                .collect();
            if candidates.is_empty() {
                if Instant::now() >= deadline {
                    return false;
                }
                tried.clear();
                tokio::time::sleep(Duration::from_millis(50)).await;
                self.refresh(true).await;
                continue;
            }
            let (name, ep) = candidates[self.next % candidates.len()].clone();
            self.next = self.next.wrapping_add(1);
            match self.send(&name, &ep, tx).await {
                Ok(()) => {
                    *report.by_region.entry(name).or_default() += 1;
                    return true;
                }
                Err(e) => {
                    tracing::debug!("transaction {tx} on {name} failed: {e}; retrying elsewhere");
                    report.retried += 1;
                    tried.insert(name);
                    if Instant::now() >= deadline {
                        return false;
                    }
                }
            }
        }
    }
}

/// Client outcomes not yet added to the PSOR's per-second series.
#[derive(Default)]
struct Pending {
    ok: u64,
    failed: u64,
}

/// Adds the pending outcomes to the running rollout's `clients` series (one script call);
/// on a PSOR error they stay pending for the next second, so a blip loses nothing.
async fn flush(pac: &Pac, pending: &std::sync::Mutex<Pending>) {
    let (ok, failed) = {
        let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
        (std::mem::take(&mut p.ok), std::mem::take(&mut p.failed))
    };
    if ok + failed == 0 {
        return;
    }
    if let Err(e) = pac.record_clients(ok, failed).await {
        tracing::debug!("recording client requests in the PSOR failed: {e}; retrying next second");
        let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
        p.ok += ok;
        p.failed += failed;
    }
}

/// Records client outcomes once a second (batched: the request loop only bumps counters)
/// until `done` turns true, then flushes what is left.
fn spawn_recorder(
    pac: Pac,
    pending: std::sync::Arc<std::sync::Mutex<Pending>>,
    mut done: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => flush(&pac, &pending).await,
                _ = crate::until_true(&mut done) => break,
            }
        }
        flush(&pac, &pending).await;
    })
}

/// Sends transactions at `rate` per second until `count` are sent, `duration` passed or
/// `stop` turns true; each is retried on other regions until `tx_timeout`. While a
/// rollout runs, the outcomes are recorded per second in its `clients` series (for
/// `pacup rollout report`).
pub async fn run_clients(
    pac: Pac,
    rate: f64,
    count: Option<u64>,
    duration: Option<Duration>,
    tx_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) -> ClientReport {
    let pending = std::sync::Arc::new(std::sync::Mutex::new(Pending::default()));
    let (done_tx, done_rx) = watch::channel(false);
    let recorder = spawn_recorder(pac.clone(), pending.clone(), done_rx);
    let mut lb = Balancer {
        pac,
        targets: Vec::new(),
        refreshed: None,
        conns: HashMap::new(),
        next: 0,
    };
    let run_id = format!("c{:x}", crate::psor::now_ms());
    let start = Instant::now();
    let mut report = ClientReport::default();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if count.is_some_and(|c| report.sent >= c)
            || duration.is_some_and(|d| start.elapsed() >= d)
            || *stop.borrow()
        {
            break;
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = crate::until_true(&mut stop) => break,
        }
        let tx = format!("{run_id}-{}", report.sent);
        report.sent += 1;
        let deadline = Instant::now() + tx_timeout;
        let served = lb.serve(&tx, deadline, &mut report).await;
        let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
        if served {
            report.ok += 1;
            p.ok += 1;
        } else {
            report.failed += 1;
            p.failed += 1;
        }
        drop(p);
    }
    report.elapsed_ms = start.elapsed().as_millis() as u64;
    let _ = done_tx.send(true);
    let _ = recorder.await;
    report
}

/// How long a load driver waits out a PSOR outage (retrying with backoff) before it
/// gives up with the outage's error.
pub const OUTAGE_PATIENCE: Duration = Duration::from_secs(120);

/// Runs `f` until it succeeds or fails for a reason other than a PSOR outage; an outage
/// is retried with backoff for up to [`OUTAGE_PATIENCE`], or until `stop`.
async fn ride_out<T, F, Fut>(stop: &mut watch::Receiver<bool>, mut f: F) -> crate::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = crate::Result<T>>,
{
    let mut since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        match f().await {
            Err(e) if e.is_outage() => {
                let t0 = *since.get_or_insert_with(|| {
                    tracing::warn!("the PSOR is out of reach ({e}); retrying");
                    Instant::now()
                });
                if t0.elapsed() >= OUTAGE_PATIENCE || *stop.borrow() {
                    return Err(e);
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = crate::until_true(stop) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            r => {
                if since.is_some() && r.is_ok() {
                    tracing::warn!("the PSOR is back");
                }
                return r;
            }
        }
    }
}

/// What [`submit_jobs`] submitted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Submitted {
    /// How many jobs.
    pub count: u64,
    /// First job id (0 when none).
    pub first: u64,
    /// Last job id (0 when none).
    pub last: u64,
}

/// Submits up to `max` jobs: all at once (in batches of 1000 per script) without a rate,
/// else at `rate` per second until `max`, `duration` or `stop`. The one submit loop of
/// `pacup jobs submit` and the demo. A PSOR outage is ridden out (each batch retried
/// under its submission id, so it is counted exactly once).
pub async fn submit_jobs(
    pac: &Pac,
    max: u64,
    rate: Option<f64>,
    duration: Option<Duration>,
    mut stop: watch::Receiver<bool>,
) -> crate::Result<Submitted> {
    let mut out = Submitted::default();
    // Submission ids: unique to this run (process and start time), numbered by the count
    // submitted before, so a retried submission is recognised and not counted twice.
    let run_id = format!("{:x}-{:x}", std::process::id(), crate::psor::now_ms());
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while out.count < max {
        let due = match rate {
            None => max,
            Some(r) => {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = crate::until_true(&mut stop) => break,
                }
                if duration.is_some_and(|d| start.elapsed() >= d) {
                    break;
                }
                ((start.elapsed().as_secs_f64() * r) as u64 + 1).min(max)
            }
        };
        if due > out.count {
            let n = (due - out.count).min(1000);
            let id = format!("{run_id}-{}", out.count);
            let (f, l) = ride_out(&mut stop, || pac.submit_jobs_once(n, &id)).await?;
            if out.first == 0 {
                out.first = f;
            }
            out.last = l;
            out.count += n;
        }
    }
    Ok(out)
}
