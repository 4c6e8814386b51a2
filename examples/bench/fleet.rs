//! A PAC of `hosts x regions` run by in-process host agents (the library's `Agent`, as
//! `pacup agent` runs it), each with its own PSOR connection, plus the job and client
//! load of the benchmark.

use pacup::agent::{Agent, AgentConfig};
use pacup::conn::{Psor, PsorOptions};
use pacup::names::{HostName, PacName, Product, RegionName};
use pacup::psor::Pac;
use pacup::region::{Observer, RegionConfig, RegionEvent, StartType};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub fn product(v: &str) -> Product {
    Product {
        version: semver::Version::parse(v).expect("version"),
        os: pacup::names::default_os(),
        bitness: pacup::names::default_bitness(),
    }
}

pub fn host_name(h: usize) -> String {
    format!("h{h:02}")
}

pub fn region_name(h: usize, r: usize) -> String {
    format!("R{h:02}x{r:02}")
}

/// When each region saw its store's mode change (for the mode-change benchmark).
pub type ModeSeen = Arc<Mutex<HashMap<String, Instant>>>;

pub struct Fleet {
    pub pac: Pac,
    stops: Vec<watch::Sender<bool>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub mode_seen: ModeSeen,
}

pub async fn pac(url: &str, name: &str) -> Pac {
    let psor = Psor::connect(&PsorOptions::new(url)).await.expect("PSOR");
    Pac::new(psor, PacName::new(name).expect("PAC name"))
}

impl Fleet {
    pub fn new(control: Pac) -> Fleet {
        Fleet {
            pac: control,
            stops: Vec::new(),
            tasks: Vec::new(),
            mode_seen: ModeSeen::default(),
        }
    }

    /// Starts host agent `host` running `regions` at `version` with `autostart`.
    pub async fn agent(
        &mut self,
        url: &str,
        host: &str,
        regions: &[String],
        version: &str,
        autostart: StartType,
    ) {
        let pac = pac(url, self.pac.name().as_str()).await;
        let h = HostName::new(host).expect("host name");
        let mut defaults = RegionConfig::new(
            RegionName::new(&regions[0]).expect("region"),
            h.clone(),
            product(version),
            autostart,
        );
        // A thousand idle workers polling every 25 ms would be 40k claims a second: the
        // benchmark's load is 50 jobs a second, so a slower idle poll changes nothing
        // but the noise.
        defaults.idle_poll = Duration::from_millis(500);
        let cfg = AgentConfig {
            pac: pac.name().clone(),
            host: h,
            product: product(version),
            regions: regions
                .iter()
                .map(|r| (RegionName::new(r).expect("region"), None))
                .collect(),
            autostart: Some(autostart),
            region_defaults: defaults,
            host_ttl: Duration::from_secs(3),
            check_paths: Vec::new(),
        };
        let seen = self.mode_seen.clone();
        let observer: Observer = Arc::new(move |r: &str, e: &RegionEvent| {
            if matches!(e, RegionEvent::ModeChanged { .. }) {
                seen.lock().unwrap().insert(r.to_string(), Instant::now());
            }
        });
        let agent = Agent::new(pac, cfg, observer).await.expect("agent");
        let (tx, rx) = watch::channel(false);
        self.stops.push(tx);
        self.tasks.push(tokio::spawn(async move {
            if let Err(e) = agent.run(rx).await {
                eprintln!("agent: {e}");
            }
        }));
    }

    /// Waits until `n` regions are alive (and, with `listeners`, serving).
    pub async fn wait_alive(&self, n: usize, listeners: bool) {
        let end = Instant::now() + Duration::from_secs(300);
        loop {
            let s = self.pac.snapshot().await.expect("snapshot");
            let up = s
                .regions
                .iter()
                .filter(|r| r.alive && r.state == "active" && (!listeners || r.listener == "on"))
                .count();
            if up >= n {
                return;
            }
            assert!(Instant::now() < end, "only {up} of {n} regions came up");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops every agent (their regions stop gracefully).
    pub async fn shutdown(self) {
        for s in &self.stops {
            let _ = s.send(true);
        }
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(60), t).await;
        }
    }
}

/// Job submission and client transactions at `rate` per second each, until stopped.
pub struct Load {
    stop: watch::Sender<bool>,
    jobs: tokio::task::JoinHandle<u64>,
    clients: tokio::task::JoinHandle<pacup::load::ClientReport>,
}

pub struct LoadResult {
    pub lost: u64,
    pub duplicates: u64,
    pub client_failed: u64,
    pub client_sent: u64,
}

impl Load {
    pub fn start(pac: &Pac, rate: f64) -> Load {
        let (stop, rx) = watch::channel(false);
        let (p, r) = (pac.clone(), rx.clone());
        let jobs = tokio::spawn(async move {
            pacup::load::submit_jobs(&p, u64::MAX, Some(rate), None, r)
                .await
                .map(|s| s.count)
                .unwrap_or(0)
        });
        let p = pac.clone();
        let clients = tokio::spawn(pacup::load::run_clients(
            p,
            rate,
            None,
            None,
            Duration::from_secs(10),
            rx,
        ));
        Load {
            stop,
            jobs,
            clients,
        }
    }

    pub async fn finish(self, pac: &Pac) -> LoadResult {
        let _ = self.stop.send(true);
        let submitted = self.jobs.await.unwrap_or(0);
        let report = self.clients.await.unwrap_or_default();
        let end = Instant::now() + Duration::from_secs(60);
        let stats = loop {
            let s = pac.work_stats().await.expect("work stats");
            if s.pending == 0 || Instant::now() > end {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        LoadResult {
            lost: submitted.saturating_sub(stats.completed),
            duplicates: stats.duplicates,
            client_failed: report.failed,
            client_sent: report.sent,
        }
    }
}
