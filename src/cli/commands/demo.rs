//! `pacup demo`: the whole story on this machine, cleaned up afterwards.

use super::print_json;
use super::rollout::emitter;
use crate::cli::args::rate;
use crate::cli::output::outln;
use crate::cli::GlobalArgs;
use crate::conn::{Psor, PsorOptions};
use crate::coordinator::plan::Plan;
use crate::coordinator::{Coordinator, Outcome, RunOptions};
use crate::error::{Error, ExitCode};
use crate::load;
use crate::names::PacName;
use crate::psor::Pac;
use anyhow::Context as _;
use clap::{Args, ValueEnum};
use serde_json::json;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// Arguments of `pacup demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// redis-server executable to run privately.
    #[arg(long, default_value = "redis-server", value_name = "PATH")]
    pub redis_server: PathBuf,
    /// Batch jobs per second during the rollout.
    #[arg(long, value_parser = rate, default_value = "40/s")]
    pub job_rate: f64,
    /// Client transactions per second during the rollout.
    #[arg(long, value_parser = rate, default_value = "40/s")]
    pub client_rate: f64,
    /// Mode flip of the demo plan.
    #[arg(long, value_enum, default_value = "after-first-wave")]
    pub mode_flip: DemoFlip,
    /// Where to write the rollout's HTML report (`rollout report`); the default is a
    /// file in the current directory.
    #[arg(long, value_name = "FILE", default_value = "pacup-demo-report.html")]
    pub report: PathBuf,
}

/// `pacup demo --mode-flip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DemoFlip {
    /// The new store runs as soon as the first wave is healthy.
    AfterFirstWave,
    /// The documented order (a batch gap while the last wave upgrades).
    AfterAllWaves,
}

/// Child processes killed when the demo ends, however it ends.
struct Children(Vec<Child>);

impl Children {
    async fn stop_all(&mut self) {
        for c in &mut self.0 {
            if let Some(pid) = c
                .id()
                .and_then(|p| i32::try_from(p).ok())
                .filter(|p| *p > 1)
            {
                // SAFETY: kill(2) on our own child's pid (still unreaped, so not reused).
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
        for c in &mut self.0 {
            if tokio::time::timeout(Duration::from_secs(15), c.wait())
                .await
                .is_err()
            {
                let _ = c.kill().await;
            }
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(Error::refused(format!("demo: timed out waiting for {what}")).into())
}

/// Waits until `n` regions are alive with their listener on.
async fn serving(pac: &Pac, n: usize, what: &str) -> anyhow::Result<()> {
    wait_for(what, Duration::from_secs(20), || {
        let p = pac.clone();
        async move {
            p.snapshot().await.is_ok_and(|s| {
                s.regions
                    .iter()
                    .filter(|r| r.alive && r.listener == "on")
                    .count()
                    == n
            })
        }
    })
    .await
}

pub(super) async fn demo(g: &GlobalArgs, a: DemoArgs) -> anyhow::Result<ExitCode> {
    let say = |s: &str| {
        if !g.json {
            outln!("{s}");
        }
    };
    let dir = tempfile::Builder::new().prefix("pacup-demo-").tempdir()?;
    let port = free_port()?;
    let url = format!("redis://127.0.0.1:{port}");
    let mut kids = Children(Vec::new());
    let redis = Command::new(&a.redis_server)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .arg("--logfile")
        .arg(dir.path().join("redis.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            Error::refused(format!(
                "pacup demo needs a redis-server executable ({}: {e}); install one, e.g. `apt-get install redis-server`",
                a.redis_server.display()
            ))
        })?;
    kids.0.push(redis);
    let r = run(g, &a, &url, dir.path(), &mut kids, &say).await;
    kids.stop_all().await;
    // The error goes back whole: its chain decides the exit code.
    if r.is_err() {
        if let Ok(log) = std::fs::read_to_string(dir.path().join("redis.log")) {
            tracing::info!("demo redis log:\n{log}");
        }
    }
    r
}

async fn run(
    g: &GlobalArgs,
    a: &DemoArgs,
    url: &str,
    dir: &std::path::Path,
    kids: &mut Children,
    say: &dyn Fn(&str),
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut opts = PsorOptions::new(url);
    opts.connect_timeout = Duration::from_secs(2);
    // Bounded readiness wait for the private server.
    let end = Instant::now() + Duration::from_secs(10);
    let psor = loop {
        match Psor::connect(&opts).await {
            Ok(p) => break p,
            Err(e) if Instant::now() >= end => {
                return Err(anyhow::Error::new(e).context("the private redis-server did not answer"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let name = PacName::new("DEMO")?;
    let pac = Pac::new(psor.clone(), name.clone());
    say(&format!(
        "Private PSOR: redis-server on {url} (data in {})",
        dir.display()
    ));
    let exe = std::env::current_exe().context("locating the pacup executable")?;
    let agent = |host: &str, regions: &[&str], autostart: &str| -> anyhow::Result<Child> {
        let log = std::fs::File::create(dir.join(format!("agent-{host}.log")))?;
        let mut c = Command::new(&exe);
        c.args([
            "--psor",
            url,
            "-q",
            "agent",
            "--pac",
            "DEMO",
            "--host",
            host,
            "--product-version",
            "1.0.0",
        ]);
        for r in regions {
            c.args(["--region", r]);
        }
        c.args([
            "--autostart",
            autostart,
            "--heartbeat-interval",
            "250ms",
            "--heartbeat-ttl",
            "1s",
            "--job-time",
            "15ms",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
        Ok(c.spawn()?)
    };
    kids.0
        .push(agent("host1", &["REGION1", "REGION1B"], "cold")?);
    serving(&pac, 2, "host1's regions").await?;
    kids.0.push(agent("host2", &["REGION2"], "warm")?);
    serving(&pac, 3, "host2's region").await?;
    say("PAC DEMO at 1.0.0: host1 runs REGION1 and REGION1B, host2 runs REGION2 (host agents)");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let jobs = {
        let (p, rx, rate) = (pac.clone(), stop_rx.clone(), a.job_rate);
        tokio::spawn(async move {
            load::submit_jobs(&p, u64::MAX, Some(rate), None, rx)
                .await
                .map(|s| s.count)
        })
    };
    let clients = {
        let (p, rx, rate) = (pac.clone(), stop_rx.clone(), a.client_rate);
        tokio::spawn(async move {
            load::run_clients(p, rate, None, None, Duration::from_secs(15), rx).await
        })
    };
    say(&format!(
        "Load: {} jobs/s and {} client transactions/s",
        a.job_rate, a.client_rate
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let flip = match a.mode_flip {
        DemoFlip::AfterFirstWave => "after_first_wave",
        DemoFlip::AfterAllWaves => "after_all_waves",
    };
    let plan = Plan::parse(&format!(
        r#"{{"pac": "DEMO", "target": {{"version": "2.0.0"}},
            "hosts": [{{"name": "host1", "regions": ["REGION1", "REGION1B"]}},
                      {{"name": "host2", "regions": ["REGION2"]}}],
            "strategy": "auto", "mode_flip": "{flip}",
            "drain_timeout": "5s", "stop_timeout": "20s",
            "health": {{"min_healthy": "1s", "deadline": "30s"}},
            "progress_deadline": "2m", "on_failure": "rollback"}}"#
    ))?;
    say("Rollout: incompatible upgrade 1.0.0 -> 2.0.0, timeline:");
    let t0 = Instant::now();
    let opts = RunOptions {
        allow_downtime: a.mode_flip == DemoFlip::AfterAllWaves,
        allow_partial: false,
        reason: "pacup demo".into(),
        by: super::actor(g),
        wait_lock: false,
        lease_ttl: Duration::from_secs(5),
        psor_url: url.to_string(),
        emit: emitter(g.json, None),
        interrupt: crate::coordinator::Interrupt::never(),
        metrics: crate::metrics::Metrics::disabled(),
    };
    let outcome = Coordinator::acquire(pac.clone(), opts)
        .await?
        .run(plan)
        .await?;
    let rollout_ms = t0.elapsed().as_millis() as u64;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop_tx.send(true);
    let submitted = jobs.await.context("job submitter")??;
    let report = clients.await.context("clients")?;
    let _ = wait_for(
        "every submitted job to complete",
        Duration::from_secs(30),
        || {
            let p = pac.clone();
            async move { p.work_stats().await.is_ok_and(|s| s.pending == 0) }
        },
    )
    .await;
    let stats = pac.work_stats().await?;
    let snap = pac.snapshot().await?;
    let written = crate::report::write(&pac, None, &a.report)
        .await
        .with_context(|| format!("writing the rollout report {}", a.report.display()))?;
    let lost = stats.submitted.saturating_sub(stats.completed);
    let ok = outcome == Outcome::Done && lost == 0 && stats.duplicates == 0 && report.failed == 0;
    let summary = json!({
        "result": if ok { "ok" } else { "failed" },
        "rollout": match &outcome { Outcome::Done => "done".to_string(), o => format!("{o:?}") },
        "rollout_ms": rollout_ms,
        "stores": snap.stores.iter().map(|s| json!({"version": s.version, "mode": s.mode})).collect::<Vec<_>>(),
        "jobs": {"submitted": stats.submitted, "completed": stats.completed, "lost": lost,
                 "duplicates": stats.duplicates, "longest_batch_gap_ms": stats.max_completion_gap_ms,
                 "by_region": stats.by_region},
        "clients": {"sent": report.sent, "ok": report.ok, "failed": report.failed, "retried": report.retried,
                    "by_region": report.by_region},
        "total_ms": started.elapsed().as_millis() as u64,
        "submitted_by_demo": submitted,
        "report": written.path,
    });
    if g.json {
        print_json(&summary);
    } else {
        outln!();
        outln!("Summary");
        outln!(
            "  rollout:  {} in {:.1}s; stores now: {}",
            summary["rollout"].as_str().unwrap_or("?"),
            rollout_ms as f64 / 1000.0,
            snap.stores
                .iter()
                .map(|s| format!("{} ({})", s.version, s.mode))
                .collect::<Vec<_>>()
                .join(", ")
        );
        outln!(
            "  jobs:     {} submitted, {} completed, {} lost, {} duplicates, longest batch gap {}ms",
            stats.submitted, stats.completed, lost, stats.duplicates, stats.max_completion_gap_ms
        );
        outln!(
            "  clients:  {} requests, {} ok, {} failed ({} retried on another region)",
            report.sent,
            report.ok,
            report.failed,
            report.retried
        );
        outln!(
            "  report:   {} (`pacup rollout report`)",
            written.path.display()
        );
        outln!("  result:   {}", if ok { "nothing lost" } else { "FAILED" });
    }
    if ok {
        Ok(ExitCode::Ok)
    } else {
        Err(Error::refused("the demo rollout lost work or did not finish").into())
    }
}
