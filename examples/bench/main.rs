//! `cargo xtask bench`: the coordinator's benchmark (docs/performance.md).
//!
//! On private redis-servers (free loopback ports, temporary directories, killed at the
//! end) it measures and prints, as a markdown table:
//! (a) rollouts of PACs of growing size under job and client load: wall time against
//!     the inherent lower bound, the coordinator's time per step and its Redis commands
//!     per step, jobs lost or run twice, client requests failed;
//! (b) a mode change reaching every region of the largest PAC;
//! (c) `pac remove-old` of a big store beside another PAC's keys, against a pipelined
//!     UNLINK of the same keys by name, with the worst PING latency meanwhile;
//! (d) `pac status --json` of each PAC.
//!
//! The coordinator and the commands run as `pacup` processes (`--pacup PATH`, default
//! the `pacup` built beside this example), so an earlier version is measured the same
//! way; the host agents run in this process on the library.
//!
//! Usage: `bench [--quick] [--pacup PATH] [--redis-server PATH] [--only a,b,c,d]`

mod fleet;
mod proxy;
mod remove;
mod rollout;
mod server;

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub struct Opts {
    pub pacup: PathBuf,
    pub redis_server: String,
    pub quick: bool,
    pub only: Vec<char>,
}

fn opts() -> Opts {
    let mut o = Opts {
        pacup: std::env::current_exe()
            .ok()
            .and_then(|p| Some(p.parent()?.parent()?.join("pacup")))
            .unwrap_or_else(|| "pacup".into()),
        redis_server: "redis-server".into(),
        quick: false,
        only: vec!['a', 'b', 'c', 'd'],
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--pacup" => o.pacup = args.next().expect("--pacup PATH").into(),
            "--redis-server" => o.redis_server = args.next().expect("--redis-server PATH"),
            "--only" => {
                o.only = args
                    .next()
                    .expect("--only a,b,c,d")
                    .split(',')
                    .filter_map(|s| s.trim().chars().next())
                    .collect()
            }
            "-h" | "--help" => {
                println!("bench [--quick] [--pacup PATH] [--redis-server PATH] [--only a,b,c,d]");
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(
        o.pacup.exists() || o.pacup == std::path::Path::new("pacup"),
        "no pacup binary at {} (build it: cargo build --release --bin pacup)",
        o.pacup.display()
    );
    o
}

/// The value at quantile `q` (0..=1) of `v` (sorted here).
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `pacup ARGS`, returning (stdout, wall time, child CPU time).
pub fn pacup(o: &Opts, args: &[&str]) -> (String, Duration, Duration) {
    let cpu0 = children_cpu();
    let t = Instant::now();
    let out = std::process::Command::new(&o.pacup)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", o.pacup.display()));
    let wall = t.elapsed();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        wall,
        children_cpu().saturating_sub(cpu0),
    )
}

fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let kb: u64 = m.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb / 1024 / 1024)
        })
        .unwrap_or(0);
    format!("{cores} cores ({cpu}), {mem} GiB")
}

fn main() {
    let o = opts();
    server::raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let version = std::process::Command::new(&o.pacup)
        .arg("--version")
        .output()
        .map(|v| String::from_utf8_lossy(&v.stdout).trim().to_string())
        .unwrap_or_default();
    println!(
        "pacup benchmark: {version} ({}), {}{}\n",
        o.pacup.display(),
        machine(),
        if o.quick { ", --quick sizes" } else { "" }
    );
    rt.block_on(async {
        if o.only.iter().any(|c| "abd".contains(*c)) {
            rollout::run(&o).await;
        }
        if o.only.contains(&'c') {
            remove::run(&o).await;
        }
    });
}
