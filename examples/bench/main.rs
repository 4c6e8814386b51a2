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
//! Usage: see [`USAGE`].

mod fleet;
mod proxy;
mod remove;
mod rollout;
mod server;

use std::path::PathBuf;
use std::time::{Duration, Instant};

const USAGE: &str = "bench [--quick] [--sizes N,N,...] [--remove-keys N] [--foreign-keys N] \
[--pacup PATH] [--redis-server PATH] [--only a,b,c,d]

  --sizes N,...      PACs to roll out, by region count (up to 100: 10 hosts, 100 = 10 x 10;
                     above, hosts of 20: 500 = 25 x 20, 1000 = 50 x 20) or HOSTSxREGIONS;
                     default 100,500,1000 (--quick: 20,100)
  --remove-keys N    keys of the store (c) removes (default 1000000, --quick 100000)
  --foreign-keys N   keys of another PAC beside it (default 4000000, --quick 400000)
  --only a,b,c,d     which parts to run: (a) rollouts, (b) mode change, (c) remove-old,
                     (d) pac status";

#[derive(Clone)]
pub struct Opts {
    pub pacup: PathBuf,
    pub redis_server: String,
    pub quick: bool,
    pub only: Vec<char>,
    /// PACs of (hosts, regions per host), smallest first.
    pub sizes: Vec<(usize, usize)>,
    pub remove_keys: u64,
    pub foreign_keys: u64,
}

/// A PAC size: `N` regions (hosts of 10 up to 100 regions, of 20 above) or `HxR`.
fn size(s: &str) -> (usize, usize) {
    fn bad(s: &str) -> ! {
        panic!("--sizes: {s:?} is neither a region count nor HOSTSxREGIONS\n{USAGE}")
    }
    if let Some((h, r)) = s.split_once('x') {
        let h: usize = h.parse().unwrap_or_else(|_| bad(s));
        let r: usize = r.parse().unwrap_or_else(|_| bad(s));
        if h == 0 || r == 0 {
            bad(s)
        }
        return (h, r);
    }
    let n: usize = s.parse().unwrap_or_else(|_| bad(s));
    // Up to 100 regions: 10 hosts (two waves); above: hosts of 20 regions.
    let (hosts, per) = if n > 100 { (n / 20, 20) } else { (10, n / 10) };
    if n == 0 || hosts * per != n {
        panic!("--sizes: {n} regions do not split that way; give HOSTSxREGIONS instead");
    }
    (hosts, per)
}

fn count(a: Option<String>, flag: &str) -> u64 {
    a.and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or_else(|| panic!("{flag} N (a key count)\n{USAGE}"))
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
        sizes: Vec::new(),
        remove_keys: 0,
        foreign_keys: 0,
    };
    let (mut sizes, mut remove_keys, mut foreign_keys) = (None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--sizes" => {
                let mut v: Vec<(usize, usize)> = args
                    .next()
                    .unwrap_or_else(|| panic!("--sizes N,N,...\n{USAGE}"))
                    .split(',')
                    .map(|s| size(s.trim()))
                    .collect();
                v.sort_by_key(|(h, r)| h * r);
                sizes = Some(v);
            }
            "--remove-keys" => remove_keys = Some(count(args.next(), "--remove-keys")),
            "--foreign-keys" => foreign_keys = Some(count(args.next(), "--foreign-keys")),
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
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}\n{USAGE}"),
        }
    }
    o.sizes = sizes.unwrap_or_else(|| {
        if o.quick {
            vec![(10, 2), (10, 10)]
        } else {
            vec![(10, 10), (25, 20), (50, 20)]
        }
    });
    o.remove_keys = remove_keys.unwrap_or(if o.quick { 100_000 } else { 1_000_000 });
    o.foreign_keys = foreign_keys.unwrap_or(if o.quick { 400_000 } else { 4_000_000 });
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
        if o.quick { ", --quick" } else { "" }
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
