//! What keeps a large PAC cheap, checked by what Redis sees: a mode change reaches regions
//! from the notification alone (no per-region read), a host agent holds one notification
//! subscription for all its regions, and `pac remove-old` deletes a store by its key
//! index (no SCAN of the keyspace), old stores without one by SCAN, and resumes an
//! interrupted deletion.

use std::collections::BTreeSet;

use redis::Commands;
use serde_json::json;

use pacup::psor::scripts::{DetachOld, DetachOldReply, HEARTBEAT};

use crate::support::pac::*;
use crate::support::region::{RegionRun, START};
use crate::support::{wait_until, Monitor, RedisServer};

/// Heartbeats so rare that none falls inside a test: every heartbeat Redis sees was caused
/// by a notification.
const RARE_BEATS: [&str; 4] = ["--heartbeat-interval", "1h", "--heartbeat-ttl", "3h"];

fn heartbeat_sha() -> String {
    HEARTBEAT.script().get_hash().to_string()
}

/// Waits until every region of host2 reported its store running.
fn all_running(agent: &crate::support::Running) {
    wait_until(SOON, "host2's regions to see their store running", || {
        let out = agent.stdout_so_far();
        ["REGION2", "REGION2B", "REGION2C"].iter().all(|r| {
            out.contains(&format!(
                "Region {r}: store mode changed from upgrade to running"
            ))
        })
    });
}

fn heartbeat_at(c: &mut redis::Connection, r: &str) -> Option<String> {
    c.hget(key(&format!("region:{r}")), "heartbeat_at").unwrap()
}

/// Store 1.0.0 running on host1 (REGION1), store 2.0.0 in upgrade mode on host2
/// (REGION2, REGION2B, REGION2C), both agents with [`RARE_BEATS`].
fn two_stores(server: &RedisServer) -> (crate::support::Running, crate::support::Running) {
    let old = spawn_agent(server, "host1", "1.0.0", &["REGION1"], "cold", &RARE_BEATS);
    let new = spawn_agent(
        server,
        "host2",
        "2.0.0",
        &["REGION2", "REGION2B", "REGION2C"],
        "upgrade",
        &RARE_BEATS,
    );
    (old, new)
}

#[test]
fn a_mode_change_reaches_every_region_from_the_message_alone() {
    let server = RedisServer::start();
    // Watched from before the starts: each region's first heartbeat follows its start
    // (whenever that lands); every other one is a re-read.
    let monitor = Monitor::start(&server);
    let (_old, new) = two_stores(&server);
    run(&server, &["pac", "set-mode", PAC, "running"]).success();
    all_running(&new);
    let seen = monitor.stop();
    let published: Vec<(usize, String)> = seen
        .iter()
        .enumerate()
        .filter(|(_, l)| l.name() == "PUBLISH")
        .map(|(i, l)| (i, l.arg(2)))
        .collect();
    let (at, what) = published.last().expect("a publish").clone();
    assert_eq!(what, "mode running 2.0.0", "{published:?}");
    let sha = heartbeat_sha();
    let mut first_seen = BTreeSet::new();
    let mut rereads = Vec::new();
    for (i, l) in seen.iter().enumerate() {
        if l.name() != "EVALSHA" || l.arg(1) != sha {
            continue;
        }
        // EVALSHA sha 1 <prefix> <region> ...
        let region = l.arg(4);
        if first_seen.insert(region.clone()) {
            continue;
        }
        if i > at {
            rereads.push(region);
        }
    }
    assert_eq!(
        rereads,
        Vec::<String>::new(),
        "regions re-read the PSOR after a mode change whose message said it all"
    );
}

/// A message this version cannot act on alone (another change, or a mode change in the
/// form an older pacup publishes) makes every region re-read its state: the fallback.
#[test]
fn a_message_without_the_outcome_makes_every_region_reread() {
    let server = RedisServer::start();
    let (_old, new) = two_stores(&server);
    let mut c = server.conn();
    let regions = ["REGION1", "REGION2", "REGION2B", "REGION2C"];
    let before: Vec<Option<String>> = regions.iter().map(|r| heartbeat_at(&mut c, r)).collect();
    // An older writer: the mode in the store record, and a bare `mode` on the channel.
    let _: () = c.hset(key("store:2.0.0:meta"), "mode", "running").unwrap();
    let _: () = c.publish(key("notify"), "mode").unwrap();
    all_running(&new);
    wait_until(SOON, "every region to re-read by heartbeat", || {
        regions
            .iter()
            .zip(&before)
            .all(|(r, b)| heartbeat_at(&mut c, r) != *b)
    });
}

#[test]
fn a_host_agent_holds_one_notification_subscription_for_all_its_regions() {
    let server = RedisServer::start();
    let (_old, _new) = two_stores(&server);
    let mut c = server.conn();
    let numsub = |c: &mut redis::Connection| -> u64 {
        let v: (String, u64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(key("notify"))
            .query(c)
            .unwrap();
        v.1
    };
    assert_eq!(numsub(&mut c), 2, "4 regions on 2 agents");
    // A standalone region keeps its own subscription.
    let (r, _) = RegionRun::start(&server, PAC, "SOLO", "host3", "2.0.0", "warm");
    wait_until(START, "SOLO to subscribe", || numsub(&mut c) == 3);
    r.stop();
    wait_until(SOON, "SOLO to unsubscribe", || numsub(&mut c) == 2);
}

fn keys(c: &mut redis::Connection, pattern: &str) -> BTreeSet<String> {
    let v: Vec<String> = c.keys(pattern).unwrap();
    v.into_iter().collect()
}

/// Store 1.0.0 without live members and `bulk` more keys of it (named in its index as
/// every writer of a store key does), store 2.0.0 running; another PAC has keys of the
/// same shape. Returns the store's keys (its index left out).
fn old_store_with_bulk(
    server: &RedisServer,
    bulk: usize,
) -> (crate::support::Running, BTreeSet<String>) {
    let mut old = spawn_agent(server, "host1", "1.0.0", &["REGION1"], "cold", &[]);
    let new = spawn_agent(server, "host2", "2.0.0", &["REGION2"], "upgrade", &[]);
    run(server, &["pac", "set-mode", PAC, "running"]).success();
    run(server, &["pac", "set-mode", PAC, "quiesce"]).success();
    old.signal(crate::support::SIGTERM);
    let _ = old.wait_with_timeout(SOON);
    let mut c = server.conn();
    let mut p = redis::pipe();
    for n in 0..bulk {
        let k = key(&format!("store:1.0.0:bulk:{n}"));
        p.set(&k, n).ignore();
        p.rpush(key("store:1.0.0:index"), &k).ignore();
        p.set(format!("pac:{{OTHER}}:store:1.0.0:bulk:{n}"), n)
            .ignore();
    }
    let _: () = p.query(&mut c).unwrap();
    let mut store = keys(&mut c, &key("store:1.0.0:*"));
    assert!(store.remove(&key("store:1.0.0:index")));
    assert!(store.len() > bulk);
    (new, store)
}

#[test]
fn remove_old_by_the_key_index_deletes_every_key_of_the_store_and_nothing_else() {
    const BULK: usize = 5000;
    let server = RedisServer::start();
    let (_new, store) = old_store_with_bulk(&server, BULK);
    let mut c = server.conn();
    assert_eq!(
        c.hget::<_, _, String>(key("store:1.0.0:meta"), "key_index")
            .unwrap(),
        "1"
    );
    // Names that are not the store's, slipped into its index, are not deleted.
    let strays = [key("ds:kept"), key("store:2.0.0:meta")];
    let _: () = c.set(&strays[0], "x").unwrap();
    let _: () = c.rpush(key("store:1.0.0:index"), &strays[..]).unwrap();
    let others_before = keys(&mut c, "pac:{OTHER}:*");
    let new_store = keys(&mut c, &key("store:2.0.0:*"));
    let dbsize: u64 = redis::cmd("DBSIZE").query(&mut c).unwrap();

    let monitor = Monitor::start(&server);
    let out = run(&server, &["pac", "remove-old", PAC, "--json"]);
    let seen = monitor.stop();
    out.success();
    let doc = out.json();
    assert_eq!(doc["stores_removed"], json!(["1.0.0"]), "{doc}");
    assert_eq!(doc["keys_removed"], store.len() as u64, "{doc}");
    assert_eq!(keys(&mut c, &key("store:1.0.0:*")), BTreeSet::new());
    assert_eq!(keys(&mut c, "pac:{OTHER}:*"), others_before);
    assert_eq!(keys(&mut c, &key("store:2.0.0:*")), new_store);
    assert!(c.exists::<_, bool>(&strays[0]).unwrap());
    let after: u64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    // The store's keys and its index went; nothing else.
    assert_eq!(after, dbsize - store.len() as u64 - 1);
    let scans: Vec<_> = seen.iter().filter(|l| l.name() == "SCAN").collect();
    assert!(
        scans.is_empty(),
        "the removal walked the keyspace: {scans:?}"
    );
}

/// A store written by an older pacup has no key index (and no `key_index` in its
/// record): it is still removed completely, by SCAN.
#[test]
fn an_old_store_without_a_key_index_is_still_removed() {
    let server = RedisServer::start();
    let (_new, store) = old_store_with_bulk(&server, 2000);
    let mut c = server.conn();
    let _: () = c.hdel(key("store:1.0.0:meta"), "key_index").unwrap();
    let _: () = c.del(key("store:1.0.0:index")).unwrap();
    let others_before = keys(&mut c, "pac:{OTHER}:*");
    let out = run(&server, &["pac", "remove-old", PAC, "--json"]);
    out.success();
    let doc = out.json();
    assert_eq!(doc["keys_removed"], store.len() as u64, "{doc}");
    assert_eq!(keys(&mut c, &key("store:1.0.0:*")), BTreeSet::new());
    assert_eq!(keys(&mut c, "pac:{OTHER}:*"), others_before);
    assert_eq!(c.scard::<_, u64>(key("removing")).unwrap(), 0);
}

/// A removal that stopped after its first batches (a crash: detached, part of its keys
/// gone, the index whole) is finished by the next `remove-old`, which deletes what is
/// left and leaves nothing behind. (`kill_9_during_remove_old_then_resume` kills a real
/// coordinator inside the deletion.)
#[test]
fn an_interrupted_removal_by_the_index_is_finished_by_the_next_run() {
    let server = RedisServer::start();
    let (_new, store) = old_store_with_bulk(&server, 3000);
    let mut c = server.conn();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let psor = pacup::conn::Psor::connect(&pacup::conn::PsorOptions::new(server.url()))
            .await
            .unwrap();
        let pac = pacup::psor::Pac::new(psor, pacup::names::PacName::new(PAC).unwrap());
        let d = pac
            .eval(&DetachOld {
                fence: None,
                actor: "test",
                force: false,
            })
            .await
            .unwrap();
        assert!(matches!(d, DetachOldReply::Ok { .. }), "{d:?}");
    });
    // The first batches went before the crash.
    let gone: Vec<String> = (0..1000)
        .map(|n| key(&format!("store:1.0.0:bulk:{n}")))
        .collect();
    let unlinked: u64 = redis::cmd("UNLINK").arg(&gone).query(&mut c).unwrap();
    assert_eq!(unlinked, 1000);
    // What the crash left: detached, in `removing`, the rest of its keys still there.
    let rest = keys(&mut c, &key("store:1.0.0:*"));
    assert_eq!(rest.len() as u64, store.len() as u64 + 1 - unlinked);
    assert!(c.sismember::<_, _, bool>(key("removing"), "1.0.0").unwrap());
    run(&server, &["pac", "status", PAC])
        .success()
        .stdout_contains("1.0.0");

    let out = run(&server, &["pac", "remove-old", PAC, "--json"]);
    out.success();
    let doc = out.json();
    assert_eq!(doc["stores_removed"], json!(["1.0.0"]), "{doc}");
    assert_eq!(doc["keys_removed"], store.len() as u64 - unlinked, "{doc}");
    assert_eq!(keys(&mut c, &key("store:1.0.0:*")), BTreeSet::new());
    assert_eq!(c.scard::<_, u64>(key("removing")).unwrap(), 0);
}
