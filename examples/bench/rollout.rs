//! (a) rollouts under load, (b) a mode change reaching every region, (d) `pac status`.

use crate::fleet::{host_name, region_name, Fleet, Load};
use crate::proxy::Proxy;
use crate::server::Server;
use crate::{ms, pacup, quantile, Opts};
use pacup::psor::control::ControlAction;
use pacup::psor::Mode;
use pacup::region::StartType;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const PAC: &str = "BENCH";
const MIN_HEALTHY_MS: u64 = 1000;
const HOSTS_PER_WAVE: usize = 5;
const LOAD_RATE: f64 = 50.0;

struct RolloutRow {
    hosts: usize,
    regions: usize,
    wall: Duration,
    bound: Duration,
    steps: usize,
    step_ms_p50: f64,
    step_ms_p99: f64,
    outside_ms: f64,
    cmds_per_step: f64,
    all_cmds_per_step: f64,
    cpu_ms_per_step: f64,
    lost: u64,
    duplicates: u64,
    client_failed: u64,
    client_sent: u64,
    outcome: String,
}

struct ModeRow {
    regions: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

struct StatusRow {
    regions: usize,
    p50: f64,
    max: f64,
}

fn plan(hosts: usize, per: usize) -> Value {
    let hs: Vec<Value> = (0..hosts)
        .map(|h| {
            json!({"name": host_name(h),
                   "regions": (0..per).map(|r| region_name(h, r)).collect::<Vec<_>>()})
        })
        .collect();
    // Explicit waves (no field a previous version would refuse).
    let waves: Vec<Vec<String>> = (0..hosts)
        .collect::<Vec<_>>()
        .chunks(HOSTS_PER_WAVE)
        .map(|c| c.iter().map(|h| host_name(*h)).collect())
        .collect();
    json!({
        "pac": PAC,
        "target": {"version": "2.0.0"},
        "hosts": hs,
        "strategy": "incompatible",
        "waves": waves,
        "mode_flip": "after_first_wave",
        "drain_timeout": "5s",
        "stop_timeout": "30s",
        "health": {"min_healthy": format!("{MIN_HEALTHY_MS}ms"), "deadline": "2m"},
        "progress_deadline": "10m",
        "on_failure": "pause",
        "driver": {"kind": "agent"},
    })
}

/// A PAC of `hosts x per` regions at 1.0.0, all serving, reached through an old store
/// (0.9.0) so that the flip of store 1.0.0 to running is the mode change of (b).
async fn build(server: &Server, hosts: usize, per: usize) -> (Fleet, ModeRow) {
    let url = server.url();
    let control = crate::fleet::pac(&url, PAC).await;
    let mut seed = Fleet::new(control.clone());
    seed.agent(&url, "seed", &["SEED".into()], "0.9.0", StartType::Cold)
        .await;
    seed.wait_alive(1, false).await;
    let mut fleet = Fleet::new(control.clone());
    for h in 0..hosts {
        let regions: Vec<String> = (0..per).map(|r| region_name(h, r)).collect();
        fleet
            .agent(&url, &host_name(h), &regions, "1.0.0", StartType::Upgrade)
            .await;
    }
    let n = hosts * per;
    fleet.wait_alive(n + 1, false).await;
    // (b): every region of store 1.0.0 learns that it runs.
    fleet.mode_seen.lock().unwrap().clear();
    let t0 = Instant::now();
    control
        .set_mode(Mode::Running, "bench", None)
        .await
        .expect("set mode running");
    let end = Instant::now() + Duration::from_secs(60);
    while fleet.mode_seen.lock().unwrap().len() < n && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut lat: Vec<f64> = fleet
        .mode_seen
        .lock()
        .unwrap()
        .values()
        .map(|t| ms(t.saturating_duration_since(t0)))
        .collect();
    assert_eq!(lat.len(), n, "not every region saw the mode change");
    let mode = ModeRow {
        regions: n,
        p50: quantile(&mut lat, 0.5),
        p99: quantile(&mut lat, 0.99),
        max: quantile(&mut lat, 1.0),
    };
    // The old store goes: one store, every region in it, serving.
    control
        .set_mode(Mode::Quiesce, "bench", None)
        .await
        .expect("quiesce");
    seed.shutdown().await;
    control
        .remove_old(false, "bench", None)
        .await
        .expect("remove-old");
    let mut ons = Vec::new();
    for h in 0..hosts {
        for r in 0..per {
            let (p, host) = (control.clone(), host_name(h));
            let action = ControlAction::Listener {
                region: region_name(h, r),
                on: true,
            };
            ons.push(async move {
                p.control(&host, action, Duration::from_secs(60), "bench", None)
                    .await
                    .expect("listener on")
            });
        }
    }
    futures_util::future::join_all(ons).await;
    fleet.wait_alive(n, true).await;
    (fleet, mode)
}

/// (d): `pac status --json`, a few times.
fn status(o: &Opts, server: &Server, n: usize) -> StatusRow {
    let url = server.url();
    let mut t: Vec<f64> = (0..7)
        .map(|_| ms(pacup(o, &["--psor", &url, "pac", "status", PAC, "--json"]).1))
        .collect();
    StatusRow {
        regions: n,
        p50: quantile(&mut t, 0.5),
        max: quantile(&mut t, 1.0),
    }
}

/// (a): the rollout to 2.0.0 under load, its coordinator behind the counting proxy.
async fn rollout(o: &Opts, server: &Server, fleet: &Fleet, hosts: usize, per: usize) -> RolloutRow {
    let proxy = Proxy::start(server.port).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("plan.json");
    std::fs::write(&path, plan(hosts, per).to_string()).expect("plan");
    let load = Load::start(&fleet.pac, LOAD_RATE);
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.reset();
    let all0 = server.commands();
    let url = format!("redis://127.0.0.1:{}", proxy.port);
    let p = path.to_str().unwrap().to_string();
    let o2 = o.clone();
    let (out, wall, cpu) = tokio::task::spawn_blocking(move || {
        pacup(
            &o2,
            &[
                "--psor",
                &url,
                "rollout",
                "run",
                &p,
                "--json",
                "--lease-ttl",
                "5s",
            ],
        )
    })
    .await
    .expect("coordinator");
    let all1 = server.commands();
    if let Ok(dir) = std::env::var("BENCH_EVENTS_DIR") {
        let _ = std::fs::write(format!("{dir}/events-{hosts}x{per}.jsonl"), &out);
    }
    let lr = load.finish(&fleet.pac).await;
    let events: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let last = events.last().cloned().unwrap_or_default();
    let outcome = format!(
        "{} {}",
        last["action"].as_str().unwrap_or("?"),
        last["status"].as_str().unwrap_or("?")
    );
    // The inherent lower bound: per wave, its longest drain plus min_healthy.
    let wave_of: BTreeMap<String, usize> = (0..hosts)
        .map(|h| (host_name(h), h / HOSTS_PER_WAVE))
        .collect();
    let mut longest: BTreeMap<usize, u64> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e["action"] == "drain" && e["status"] != "started")
    {
        let w = wave_of[e["host"].as_str().unwrap_or("")];
        let d = longest.entry(w).or_default();
        *d = (*d).max(e["elapsed_ms"].as_u64().unwrap_or(0));
    }
    let waves = hosts.div_ceil(HOSTS_PER_WAVE);
    let bound_ms: u64 = (0..waves)
        .map(|w| longest.get(&w).copied().unwrap_or(0) + MIN_HEALTHY_MS)
        .sum();
    let steps: BTreeSet<u64> = events
        .iter()
        .filter(|e| e["status"] == "started")
        .filter_map(|e| e["step"].as_u64())
        .collect();
    let st = proxy.stats.lock().unwrap();
    let mut per_step: Vec<f64> = steps
        .iter()
        .map(|s| st.step_time.get(s).map_or(0.0, |d| ms(*d)))
        .collect();
    let k = steps.len().max(1) as f64;
    RolloutRow {
        hosts,
        regions: per,
        wall,
        bound: Duration::from_millis(bound_ms),
        steps: steps.len(),
        step_ms_p50: quantile(&mut per_step, 0.5),
        step_ms_p99: quantile(&mut per_step, 0.99),
        outside_ms: ms(st.outside),
        cmds_per_step: st.commands as f64 / k,
        all_cmds_per_step: all1.saturating_sub(all0) as f64 / k,
        cpu_ms_per_step: ms(cpu) / k,
        lost: lr.lost,
        duplicates: lr.duplicates,
        client_failed: lr.client_failed,
        client_sent: lr.client_sent,
        outcome,
    }
}

pub async fn run(o: &Opts) {
    // Waves of 5 hosts: 100 regions as 10 x 10 (two waves: one wave would leave no
    // capacity), 500 and 1000 as hosts of 20 regions (`--sizes`).
    let (mut rows, mut modes, mut statuses) = (Vec::new(), Vec::new(), Vec::new());
    for &(hosts, per) in &o.sizes {
        eprintln!("bench: PAC of {hosts} x {per} regions");
        let server = Server::start(&o.redis_server);
        let (fleet, mode) = build(&server, hosts, per).await;
        modes.push(mode);
        if o.only.contains(&'d') {
            statuses.push(status(o, &server, hosts * per));
        }
        if o.only.contains(&'a') {
            rows.push(rollout(o, &server, &fleet, hosts, per).await);
        }
        fleet.shutdown().await;
    }
    if o.only.contains(&'a') {
        println!("(a) Rollouts under load ({LOAD_RATE} jobs/s and {LOAD_RATE} client requests/s, waves of {HOSTS_PER_WAVE} hosts, min_healthy {MIN_HEALTHY_MS}ms, incompatible process)\n");
        println!("| PAC (hosts x regions) | rollout wall | inherent lower bound | wall / bound | steps | coordinator time per step, median | p99 | coordinator Redis commands per step | all clients' commands per step (INFO commandstats) | coordinator CPU per step | jobs lost / run twice | client requests failed | end |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for r in &rows {
            println!(
                "| {} x {} = {} | {:.1} s | {:.1} s | {:.2} | {} | {:.2} ms | {:.2} ms | {:.1} | {:.0} | {:.2} ms | {} / {} | {} of {} | {} |",
                r.hosts, r.regions, r.hosts * r.regions,
                r.wall.as_secs_f64(), r.bound.as_secs_f64(),
                r.wall.as_secs_f64() / r.bound.as_secs_f64(),
                r.steps, r.step_ms_p50, r.step_ms_p99, r.cmds_per_step,
                r.all_cmds_per_step, r.cpu_ms_per_step, r.lost, r.duplicates,
                r.client_failed, r.client_sent, r.outcome
            );
        }
        let outside: Vec<String> = rows
            .iter()
            .map(|r| format!("{:.0} ms", r.outside_ms))
            .collect();
        println!(
            "\nCoordinator PSOR time outside any step (preflight, markers): {}.\n",
            outside.join(", ")
        );
    }
    if o.only.contains(&'b') {
        println!("(b) A mode change (store flipped to running) reaching every region: from the write to each region's reaction\n");
        println!("| regions | p50 | p99 | max |");
        println!("|---|---|---|---|");
        for m in &modes {
            println!(
                "| {} | {:.1} ms | {:.1} ms | {:.1} ms |",
                m.regions, m.p50, m.p99, m.max
            );
        }
        println!();
    }
    if o.only.contains(&'d') {
        println!(
            "(d) `pacup pac status --json` (the whole command, process start included; 7 runs)\n"
        );
        println!("| regions | median | max |");
        println!("|---|---|---|");
        for s in &statuses {
            println!("| {} | {:.0} ms | {:.0} ms |", s.regions, s.p50, s.max);
        }
        println!();
    }
}
