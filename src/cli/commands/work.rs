//! `pacup jobs ...` and `pacup clients run`: drive and audit work.

use super::{connect, print_json};
use crate::cli::{ClientsCommand, GlobalArgs, JobsCommand};
use crate::error::{Error, ExitCode};
use crate::psor::Pac;
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub(super) async fn jobs(g: &GlobalArgs, cmd: JobsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        JobsCommand::Submit {
            pac,
            count,
            rate,
            duration,
        } => {
            let p = Pac::new(connect(g).await?, pac.clone());
            let max = count.unwrap_or(u64::MAX);
            let (mut first, mut last, mut done) = (0u64, 0u64, 0u64);
            let submit = |n: u64, f: &mut u64, l: &mut u64, d: &mut u64, r: (u64, u64)| {
                if *f == 0 {
                    *f = r.0;
                }
                *l = r.1;
                *d += n;
            };
            match rate {
                None => {
                    while done < max {
                        let n = (max - done).min(1000);
                        let r = p.submit_jobs(n).await?;
                        submit(n, &mut first, &mut last, &mut done, r);
                    }
                }
                Some(rate) => {
                    let start = Instant::now();
                    let mut tick = tokio::time::interval(Duration::from_millis(20));
                    loop {
                        tick.tick().await;
                        let elapsed = start.elapsed();
                        if duration.is_some_and(|d| elapsed >= d) || done >= max {
                            break;
                        }
                        let due = ((elapsed.as_secs_f64() * rate) as u64 + 1).min(max);
                        if due > done {
                            let n = due - done;
                            let r = p.submit_jobs(n).await?;
                            submit(n, &mut first, &mut last, &mut done, r);
                        }
                    }
                }
            }
            if g.json {
                print_json(&json!({"pac": pac, "submitted": done, "first_job": first, "last_job": last}));
            } else {
                println!("PAC {pac}: {done} jobs submitted (ids {first}..={last})");
            }
            Ok(ExitCode::Ok)
        }
        JobsCommand::Stats { pac } => {
            let p = Pac::new(connect(g).await?, pac.clone());
            let s = p.work_stats().await?;
            if g.json {
                let mut v = serde_json::to_value(&s)?;
                v["pac"] = json!(pac);
                print_json(&v);
            } else {
                println!(
                    "PAC {pac}: submitted {}, completed {}, pending {}, duplicates {}, longest completion gap {}ms",
                    s.submitted, s.completed, s.pending, s.duplicates, s.max_completion_gap_ms
                );
                for (r, n) in &s.by_region {
                    println!("  {r}: {n}");
                }
                println!(
                    "client transactions: {} recorded, {} repeated",
                    s.transactions, s.transaction_duplicates
                );
            }
            Ok(ExitCode::Ok)
        }
    }
}

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
struct Balancer {
    pac: Pac,
    targets: Vec<(String, String)>,
    refreshed: Option<Instant>,
    conns: HashMap<String, (BufReader<tokio::net::tcp::OwnedReadHalf>, tokio::net::tcp::OwnedWriteHalf)>,
    next: usize,
}

impl Balancer {
    async fn refresh(&mut self, force: bool) {
        if !force && self.refreshed.is_some_and(|t| t.elapsed() < Duration::from_millis(200)) {
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
            self.conns.insert(region.to_string(), (BufReader::new(r), w));
        }
        let (r, w) = self.conns.get_mut(region).expect("inserted");
        let out = async {
            w.write_all(format!("TX {tx}\n").as_bytes()).await.map_err(|e| e.to_string())?;
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
            let candidates: Vec<(String, String)> =
                self.targets.iter().filter(|(n, _)| !tried.contains(n)).cloned().collect();
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

pub(super) async fn clients(g: &GlobalArgs, cmd: ClientsCommand) -> anyhow::Result<ExitCode> {
    let ClientsCommand::Run {
        pac,
        count,
        duration,
        rate,
        tx_timeout,
    } = cmd;
    let p = Pac::new(connect(g).await?, pac.clone());
    let mut lb = Balancer {
        pac: p,
        targets: Vec::new(),
        refreshed: None,
        conns: HashMap::new(),
        next: 0,
    };
    let run_id = format!("c{:x}", crate::psor::now_ms());
    let start = Instant::now();
    let mut report = ClientReport::default();
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if count.is_some_and(|c| report.sent >= c) || duration.is_some_and(|d| start.elapsed() >= d) {
            break;
        }
        tick.tick().await;
        let tx = format!("{run_id}-{}", report.sent);
        report.sent += 1;
        let deadline = Instant::now() + tx_timeout;
        if lb.serve(&tx, deadline, &mut report).await {
            report.ok += 1;
        } else {
            report.failed += 1;
        }
    }
    report.elapsed_ms = start.elapsed().as_millis() as u64;
    if g.json {
        let mut v = serde_json::to_value(&report)?;
        v["pac"] = json!(pac);
        print_json(&v);
    } else {
        println!(
            "PAC {pac}: {} transactions sent, {} ok, {} failed, {} retried in {}ms",
            report.sent, report.ok, report.failed, report.retried, report.elapsed_ms
        );
        for (r, n) in &report.by_region {
            println!("  {r}: {n}");
        }
    }
    if report.failed > 0 {
        return Err(Error::refused(format!("{} client transactions could not be served", report.failed)).into());
    }
    Ok(ExitCode::Ok)
}
