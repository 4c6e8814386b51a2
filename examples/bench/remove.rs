//! (c) `pac remove-old` of a big store with another PAC's keys in the same Redis, beside
//! the limit: a pipelined UNLINK of the same keys by known name; and the worst PING
//! latency another client saw during each.

use crate::server::Server;
use crate::{ms, pacup, quantile, Opts};
use pacup::names::{HostName, RegionName};
use pacup::psor::Mode;
use pacup::region::{Region, RegionConfig, StartType};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PAC: &str = "BIG";

/// PING round trips of another client while `flag` is set (one every millisecond).
fn pinger(url: String, flag: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<f64>> {
    std::thread::spawn(move || {
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        let mut out = Vec::new();
        while flag.load(Ordering::SeqCst) {
            let t = Instant::now();
            let _: String = redis::cmd("PING").query(&mut c).unwrap();
            out.push(ms(t.elapsed()));
            std::thread::sleep(Duration::from_millis(1));
        }
        out
    })
}

fn populate(server: &Server, n: u64, prefix: &str) {
    let mut c = server.conn().unwrap();
    let _: () = redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(n)
        .arg(prefix)
        .arg(16)
        .query(&mut c)
        .expect("DEBUG POPULATE");
}

/// Names the populated keys in the store's key index, as the scripts that create store
/// keys do (a store written by an older pacup has no index; its removal ignores this).
fn index(server: &Server, n: u64, prefix: &str) {
    let mut c = server.conn().unwrap();
    let idx = format!("pac:{{{PAC}}}:store:1.0.0:index");
    let mut from = 0u64;
    while from < n {
        let to = (from + 100_000).min(n);
        let _: () = redis::cmd("EVAL")
            .arg(
                "for i = tonumber(ARGV[2]), tonumber(ARGV[3]) - 1 do \
                 redis.call('RPUSH', KEYS[1], ARGV[1] .. ':' .. i) end",
            )
            .arg(1)
            .arg(&idx)
            .arg(prefix)
            .arg(from)
            .arg(to)
            .query(&mut c)
            .expect("index");
        from = to;
    }
}

struct Row {
    what: String,
    keys: u64,
    secs: f64,
    ping_p999: f64,
    ping_max: f64,
}

fn measure(server: &Server, what: &str, keys: u64, f: impl FnOnce() -> u64) -> Row {
    let flag = Arc::new(AtomicBool::new(true));
    let p = pinger(server.url(), flag.clone());
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    let deleted = f();
    let secs = t.elapsed().as_secs_f64();
    flag.store(false, Ordering::SeqCst);
    let mut pings = p.join().unwrap();
    assert!(deleted >= keys, "{what}: deleted {deleted} of {keys} keys");
    Row {
        what: what.into(),
        keys,
        secs,
        ping_p999: quantile(&mut pings, 0.999),
        ping_max: quantile(&mut pings, 1.0),
    }
}

pub async fn run(o: &Opts) {
    let (store_keys, foreign) = (o.remove_keys, o.foreign_keys);
    eprintln!("bench: remove-old of {store_keys} keys beside {foreign} keys of another PAC");
    let server = Server::start(&o.redis_server);
    let url = server.url();
    let pac = crate::fleet::pac(&url, PAC).await;
    pac.init(false, "bench", None).await.expect("init");
    // Store 1.0.0 with no live member, store 2.0.0 running: 1.0.0 is the old store.
    let start = |name: &str, v: &str, t: StartType| {
        let cfg = RegionConfig::new(
            RegionName::new(name).unwrap(),
            HostName::new("h").unwrap(),
            crate::fleet::product(v),
            t,
        );
        let p = pac.clone();
        async move {
            Region::start(
                p,
                cfg,
                Arc::new(|_: &str, _: &pacup::region::RegionEvent| {}),
            )
            .await
            .expect("start")
        }
    };
    let old = start("OLD", "1.0.0", StartType::Cold).await;
    let new = start("NEW", "2.0.0", StartType::Upgrade).await;
    pac.set_mode(Mode::Running, "bench", None).await.unwrap();
    pac.set_mode(Mode::Quiesce, "bench", None).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let old_task = tokio::spawn(old.run(rx));
    drop(tx); // a dropped control channel is a graceful stop: OLD leaves store 1.0.0
    let _ = old_task.await;
    let (_keep_tx, keep_rx) = tokio::sync::mpsc::channel(1);
    let new_task = tokio::spawn(new.run(keep_rx));
    let prefix = format!("pac:{{{PAC}}}:store:1.0.0:k");
    populate(&server, foreign, "pac:{OTHER}:ds:k");
    populate(&server, store_keys, &prefix);
    index(&server, store_keys, &prefix);

    let pacup_row = {
        let (opts, url) = (o.clone(), url.clone());
        measure(&server, "`pacup pac remove-old`", store_keys, move || {
            let (out, _, _) = pacup(&opts, &["--psor", &url, "--json", "pac", "remove-old", PAC]);
            serde_json::from_str::<serde_json::Value>(&out)
                .ok()
                .and_then(|v| v["keys_removed"].as_u64())
                .unwrap_or(0)
        })
    };
    // The limit: the same keys again, deleted by name (1000 per UNLINK, 10 in flight).
    populate(&server, store_keys, &prefix);
    let limit_row = measure(
        &server,
        "pipelined UNLINK by name (the limit)",
        store_keys,
        || {
            let mut c = server.conn().unwrap();
            let mut deleted = 0u64;
            let mut i = 0u64;
            while i < store_keys {
                let mut p = redis::pipe();
                for _ in 0..10 {
                    if i >= store_keys {
                        break;
                    }
                    let end = (i + 1000).min(store_keys);
                    let mut cmd = redis::cmd("UNLINK");
                    for k in i..end {
                        cmd.arg(format!("{prefix}:{k}"));
                    }
                    p.add_command(cmd);
                    i = end;
                }
                let n: Vec<u64> = p.query(&mut c).unwrap();
                deleted += n.iter().sum::<u64>();
            }
            deleted
        },
    );
    new_task.abort();
    println!(
        "(c) Deleting a store of {store_keys} keys with {foreign} keys of another PAC in the same Redis\n"
    );
    println!(
        "| how | keys | time | keys/s | share of the limit | other client's PING p99.9 | max |"
    );
    println!("|---|---|---|---|---|---|---|");
    let limit = limit_row.keys as f64 / limit_row.secs;
    for r in [&pacup_row, &limit_row] {
        let rate = r.keys as f64 / r.secs;
        println!(
            "| {} | {} | {:.2} s | {:.0} | {:.0}% | {:.2} ms | {:.2} ms |",
            r.what,
            r.keys,
            r.secs,
            rate,
            100.0 * rate / limit,
            r.ping_p999,
            r.ping_max
        );
    }
    println!();
}
