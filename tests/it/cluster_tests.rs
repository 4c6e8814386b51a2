//! Redis Cluster as the PSOR: the URL forms, one slot per PAC, the pac commands (with a
//! removal that walks only the PAC's slot), `pac list` over every master, caspac's probe
//! of a node list, sharded notifications that follow a failover, and rollouts under load
//! on a 6-node cluster, with and without a failover of the PAC's slot.

use std::collections::{BTreeMap, BTreeSet};

use redis::Commands;
use serde_json::json;

use crate::support::cluster_pac::ClusterPac;
use crate::support::pac::{key, PAC, SOON};
use crate::support::region::{spawn_started, stop_gracefully};
use crate::support::rollout::Load;
use crate::support::{caspac, free_port, pacup, Cmd, RedisCluster, RedisServer, SentinelSet};
use crate::support::{wait_for, wait_until, Running};

/// `pacup --psor <url>`.
fn on(url: &str) -> Cmd {
    pacup().args(["--psor", url])
}

/// A region with the tests' usual short heartbeats.
fn region(url: &str, region: &str, v: &str, start: &str) -> Running {
    let cmd = crate::support::region::region_run(on(url), PAC, region, "h1", v, start);
    spawn_started(cmd, region).0
}

/// Every key on every master with its value's DUMP, for "nothing else changed".
fn fingerprint(cluster: &RedisCluster, keep: impl Fn(&str) -> bool) -> BTreeMap<String, Vec<u8>> {
    cluster
        .keys_by_master("*")
        .into_iter()
        .filter(|(k, _)| keep(k))
        .map(|(k, port)| {
            let dump: Vec<u8> = redis::cmd("DUMP")
                .arg(&k)
                .query(&mut cluster.node(port).conn())
                .expect("DUMP");
            (k, dump)
        })
        .collect()
}

/// Every key of the PAC is in one slot, on one master.
#[track_caller]
fn assert_one_slot(cluster: &RedisCluster) {
    let keys = cluster.keys_by_master(&key("*"));
    assert!(!keys.is_empty());
    let slot = cluster.slot_of(&key("meta"));
    let masters: BTreeSet<u16> = keys.values().copied().collect();
    assert_eq!(
        masters.len(),
        1,
        "the PAC's keys are on several masters: {keys:?}"
    );
    for k in keys.keys() {
        assert_eq!(cluster.slot_of(k), slot, "{k} is not in the PAC's slot");
    }
}

#[test]
fn cluster_urls_with_acl_credentials_connect_and_bad_ones_exit_2_without_the_password() {
    let cluster = RedisCluster::builder()
        .replicas(0)
        .with_acl_user("pacup", "s3cret")
        .start();
    let url = cluster.url();
    assert!(url.starts_with("redis+cluster://pacup:s3cret@"), "{url}");
    on(&url).args(["pac", "init", PAC]).run().success();
    let doc = on(&url)
        .args(["pac", "status", PAC, "--json"])
        .run()
        .success()
        .json();
    assert_eq!(doc["pac"], PAC, "{doc:#}");

    // The password from the environment when the URL names only the user.
    let nodes = cluster.addrs().join(",");
    on(&format!("redis+cluster://pacup@{nodes}"))
        .env("PACUP_PSOR_PASSWORD", "s3cret")
        .args(["pac", "status", PAC])
        .run()
        .success();

    // A refused password is exit 5 and never printed.
    let out = on(&format!("redis+cluster://pacup:wrongpass@{nodes}"))
        .args(["pac", "status", PAC])
        .run();
    out.code(5);
    assert!(
        !format!("{}{}", out.stdout, out.stderr).contains("wrongpass"),
        "{out:?}"
    );

    let before = fingerprint(&cluster, |_| true);
    let first = &cluster.addrs()[0];
    for bad in [
        "redis+cluster://pacup:s3cret@".to_string(),
        "redis+cluster://pacup:s3cret@127.0.0.1".to_string(),
        format!("redis+cluster://pacup:s3cret@{first},nohostport"),
        format!("redis+cluster://pacup:s3cret@{first},:1"),
        format!("redis+cluster://pacup:s3cret@{first}/1"),
        "rediss+cluster://pacup:s3cret@127.0.0.1:99999".to_string(),
    ] {
        let out = on(&bad).args(["pac", "init", "Other"]).run();
        out.code(2).stderr_contains("--psor");
        assert!(
            !format!("{}{}", out.stdout, out.stderr).contains("s3cret"),
            "{bad}: the password was printed: {out:?}"
        );
    }
    assert_eq!(
        fingerprint(&cluster, |_| true),
        before,
        "a refused URL wrote"
    );
}

#[test]
fn pac_commands_on_a_cluster_keep_the_pac_in_one_slot_and_remove_old_only_its_store() {
    let cluster = RedisCluster::builder().replicas(0).start();
    let url = cluster.url();
    on(&url).args(["pac", "init", "OtherPAC"]).run().success();
    let r1 = region(&url, "R1", "1.0.0", "cold");
    let r2 = region(&url, "R2", "2.0.0", "upgrade");
    on(&url)
        .args(["pac", "set-mode", PAC, "running"])
        .run()
        .success();
    on(&url)
        .args(["pac", "set-mode", PAC, "quiesce"])
        .run()
        .success();
    let doc = on(&url)
        .args(["pac", "status", PAC, "--json"])
        .run()
        .success()
        .json();
    let modes: Vec<(String, String)> = doc["stores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["version"].as_str().unwrap().into(),
                s["mode"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        modes,
        [
            ("1.0.0".into(), "quiesce".into()),
            ("2.0.0".into(), "running".into())
        ],
        "{doc:#}"
    );
    assert_one_slot(&cluster);

    // More keys in the old store than one batch, and keys that are not the store's: one
    // in the PAC's slot but outside the PAC, and keys elsewhere.
    let mut c = cluster.master_conn_for(&key("meta"));
    for i in 0..1200 {
        let _: () = c.set(key(&format!("store:1.0.0:junk{i}")), i).unwrap();
    }
    let _: () = c.set(format!("foreign:{{{PAC}}}:x"), "kept").unwrap();
    let _: () = cluster
        .master_conn_for("elsewhere:{zz}")
        .set("elsewhere:{zz}", "kept")
        .unwrap();
    let not_the_old_store = |k: &str| !k.starts_with(&key("store:1.0.0:"));
    let others = fingerprint(&cluster, |k| !k.starts_with(&key("")));

    stop_gracefully(&mut c, PAC, "R1", r1);
    let out = on(&url).args(["pac", "remove-old", PAC, "--json"]).run();
    out.success();
    let report = out.json();
    assert_eq!(report["stores_removed"], json!(["1.0.0"]), "{report:#}");
    assert!(
        report["keys_removed"].as_u64().unwrap() >= 1200,
        "{report:#}"
    );

    let left = cluster.keys_by_master("*");
    let stray: Vec<&String> = left.keys().filter(|k| !not_the_old_store(k)).collect();
    assert!(
        stray.is_empty(),
        "keys of the removed store remain: {stray:?}"
    );
    assert_eq!(
        fingerprint(&cluster, |k| !k.starts_with(&key(""))),
        others,
        "keys outside the PAC changed"
    );
    let doc = on(&url)
        .args(["pac", "status", PAC, "--json"])
        .run()
        .success()
        .json();
    assert_eq!(doc["stores"].as_array().unwrap().len(), 1, "{doc:#}");
    assert_eq!(doc["stores"][0]["version"], "2.0.0");
    on(&url).args(["pac", "status", "OtherPAC"]).run().success();
    assert_one_slot(&cluster);
    stop_gracefully(&mut c, PAC, "R2", r2);
}

#[test]
fn pac_list_covers_every_master() {
    let cluster = RedisCluster::builder().replicas(0).start();
    let url = cluster.url();
    // One PAC on each master.
    let mut by_master: BTreeMap<u16, String> = BTreeMap::new();
    for i in 0.. {
        let name = format!("PAC{i}");
        let port = cluster.master_port_for(&format!("pac:{{{name}}}:meta"));
        by_master.entry(port).or_insert(name);
        if by_master.len() == cluster.master_ports().len() {
            break;
        }
    }
    for name in by_master.values() {
        on(&url).args(["pac", "init", name]).run().success();
    }
    let doc = on(&url)
        .args(["pac", "list", "--json"])
        .run()
        .success()
        .json();
    let listed: BTreeSet<String> = doc["pacs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pac"].as_str().unwrap().to_string())
        .collect();
    let want: BTreeSet<String> = by_master.values().cloned().collect();
    assert_eq!(listed, want, "{doc:#}");
}

#[test]
fn caspac_asks_the_first_reachable_node_whether_the_list_is_sentinel_or_cluster() {
    let dead = format!("127.0.0.1:{}", free_port());

    let cluster = RedisCluster::builder().replicas(0).start();
    let nodes = cluster.addrs();
    caspac()
        .args([
            "-aInitPac=CasPAC",
            &format!("-sredis,{dead},{},{}", nodes[0], nodes[1]),
        ])
        .run()
        .success();
    let mut c = cluster.master_conn_for("pac:{CasPAC}:meta");
    assert!(c.exists::<_, bool>("pac:{CasPAC}:meta").unwrap());

    let set = SentinelSet::start("psor");
    let sentinel = format!("127.0.0.1:{}", set.sentinels()[0].port());
    caspac()
        .args([
            "-aInitPac=CasPAC",
            &format!("-sredis,{dead},{sentinel}"),
            "-npsor",
        ])
        .run()
        .success();
    assert!(set
        .master()
        .conn()
        .exists::<_, bool>("pac:{CasPAC}:meta")
        .unwrap());
    caspac()
        .args(["-aInitPac=CasPAC", &format!("-sredis,{sentinel},{dead}")])
        .run()
        .code(2)
        .stderr_contains("-n<sorName>");

    // Standalone servers are neither: refused, nothing written.
    let a = RedisServer::start();
    let b = RedisServer::start();
    caspac()
        .args([
            "-aInitPac=CasPAC",
            &format!("-sredis,127.0.0.1:{},127.0.0.1:{}", a.port(), b.port()),
        ])
        .run()
        .code(2)
        .stderr_contains("standalone");
    let n: u64 = redis::cmd("DBSIZE").query(&mut a.conn()).unwrap();
    assert_eq!(n, 0);

    // No node answers: exit 5.
    caspac()
        .args(["-aInitPac=CasPAC", &format!("-sredis,{dead},{dead}")])
        .run()
        .code(5);
}

/// `PUBSUB SHARDNUMSUB <channel>` and `PUBSUB NUMSUB <channel>` on the node at `port`.
fn subscribers(cluster: &RedisCluster, port: u16, channel: &str) -> (u64, u64) {
    let mut c = cluster.node(port).conn();
    let (_, sharded): (String, u64) = redis::cmd("PUBSUB")
        .arg("SHARDNUMSUB")
        .arg(channel)
        .query(&mut c)
        .unwrap();
    let (_, plain): (String, u64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query(&mut c)
        .unwrap();
    (sharded, plain)
}

/// Two regions with heartbeats so slow that only a notification makes them notice a
/// mode change within the test's bounds; one change before and one after a failover of
/// the PAC's slot. `on` is `pacup --psor <cluster>` with whatever else the cluster needs.
pub(crate) fn notifications_follow_a_failover(cluster: &RedisCluster, on: &dyn Fn() -> Cmd) {
    let region = |name: &str, v: &str, start: &str| {
        let cmd = on()
            .args(["region", "run", name, "--pac", PAC, "--host", "h1"])
            .args(["--product-version", v, "--start-type", start])
            .args(["--heartbeat-interval", "30s", "--heartbeat-ttl", "60s"]);
        spawn_started(cmd, name).0
    };
    let channel = key("notify");
    let mut r1 = region("R1", "1.0.0", "cold");
    let mut r2 = region("R2", "2.0.0", "upgrade");
    let master = cluster.master_port_for(&channel);
    wait_until(
        SOON,
        "both regions subscribed (sharded) on the slot's master",
        || subscribers(cluster, master, &channel) == (2, 0),
    );
    on().args(["pac", "set-mode", PAC, "running"])
        .run()
        .success();
    r2.wait_for_stdout_line(
        |l| l.contains("Region R2: store mode changed from upgrade to running"),
        SOON,
    );

    let (_, new) = cluster.failover_slot_of(&channel);
    wait_until(
        SOON,
        "both regions subscribed again on the new master",
        || subscribers(cluster, new, &channel) == (2, 0),
    );
    on().args(["pac", "set-mode", PAC, "quiesce"])
        .run()
        .success();
    r1.wait_for_stdout_line(
        |l| l.contains("Region R1: store mode changed from running to quiesce"),
        SOON,
    );
    let doc = on()
        .args(["pac", "status", PAC, "--json"])
        .run()
        .success()
        .json();
    let alive: Vec<&str> = doc["regions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["alive"] == true)
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(alive, ["R1", "R2"], "{doc:#}");
    for r in [&mut r1, &mut r2] {
        r.kill();
    }
}

#[test]
fn notifications_reach_regions_over_sharded_pubsub_and_follow_a_failover() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    notifications_follow_a_failover(&cluster, &|| on(&url));
}

#[test]
fn rollout_under_load_on_a_six_node_cluster_loses_nothing() {
    let env = ClusterPac::start();
    let plan = env.plan("p.json", "two-host-incompatible.json", json!({}));
    let load = Load::start(&env, "7s", true);
    env.run(&plan).success();
    load.finish(&env);
    let doc = env.pac_status();
    assert_eq!(doc["stores"].as_array().unwrap().len(), 1, "{doc:#}");
    assert_eq!(doc["stores"][0]["version"], "2.0.0", "{doc:#}");
    let keys = env.pac_keys();
    assert!(
        !keys.keys().any(|k| k.starts_with(&key("store:1.0.0:"))),
        "keys of the old store remain"
    );
    assert_one_slot(&env.cluster);
}

#[test]
#[ignore = "fault matrix: run by .ci/run"]
fn matrix_cluster_failover_mid_rollout() {
    let env = ClusterPac::start();
    let plan = env.plan("p.json", "two-host-incompatible.json", json!({}));
    let load = Load::start(&env, "10s", true);
    let mut run = env.spawn_run(&plan);
    // The failover lands in the middle: once the first region of wave 1 has stopped.
    run.wait_for_stdout_line(
        |l| l.contains("\"action\":\"stop\"") && l.contains("\"status\":\"done\""),
        SOON,
    );
    let (old, new) = env.cluster.failover_slot_of(&key("meta"));
    assert_ne!(old, new);
    let out = run.wait_with_timeout(crate::support::pac::RUN_TIMEOUT);
    out.success();
    load.finish(&env);
    let doc = env.pac_status();
    assert_eq!(doc["stores"].as_array().unwrap().len(), 1, "{doc:#}");
    assert_eq!(doc["stores"][0]["version"], "2.0.0", "{doc:#}");
    let done = wait_for(SOON, "the journal on the new master", || {
        env.conn()
            .hget::<_, _, Option<String>>(key("rollout:current"), "state")
            .unwrap()
    });
    assert_eq!(done, "done");
    assert_one_slot(&env.cluster);
}

#[test]
fn backup_and_restore_walk_the_pac_slot_and_restore_into_a_pac_on_another_master() {
    let cluster = RedisCluster::builder().replicas(0).start();
    let url = cluster.url();
    let r1 = region(&url, "R1", "1.0.0", "cold");
    let mut c = cluster.master_conn_for(&key("meta"));
    stop_gracefully(&mut c, PAC, "R1", r1);
    // More keys than one page of the walk, and a key of the slot outside the PAC.
    for i in 0..1200 {
        let _: () = c
            .hset(key("ds:results"), format!("job{i}"), "done")
            .unwrap();
        let _: () = c.set(key(&format!("ds:item{i}")), i).unwrap();
    }
    let _: () = c
        .set(format!("foreign:{{{PAC}}}:x"), "not the PAC's")
        .unwrap();
    let original: BTreeSet<String> = cluster.keys_by_master(&key("*")).into_keys().collect();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.json");
    let out = on(&url)
        .args(["pac", "backup", PAC, "--json", "--out"])
        .arg(&file)
        .run();
    out.success();
    assert_eq!(out.json()["keys"], original.len() as u64, "{out}");

    // Restored over a changed PAC, with --force: exactly as saved.
    on(&url).args(["pac", "init", PAC]).run().success();
    on(&url)
        .args(["pac", "restore", PAC, "--force", "--in"])
        .arg(&file)
        .run()
        .success();
    let now: BTreeSet<String> = cluster.keys_by_master(&key("*")).into_keys().collect();
    assert_eq!(now, original);
    assert!(c.exists::<_, bool>(format!("foreign:{{{PAC}}}:x")).unwrap());

    // Into a PAC whose slot is on another master.
    let here = cluster.master_port_for(&key("meta"));
    let copy = (0..)
        .map(|i| format!("Copy{i}"))
        .find(|n| cluster.master_port_for(&format!("pac:{{{n}}}:meta")) != here)
        .unwrap();
    on(&url)
        .args(["pac", "restore", &copy, "--in"])
        .arg(&file)
        .run()
        .success();
    let renamed: BTreeSet<String> = original
        .iter()
        .map(|k| k.replacen(&key(""), &format!("pac:{{{copy}}}:"), 1))
        .collect();
    let copied: BTreeSet<String> = cluster
        .keys_by_master(&format!("pac:{{{copy}}}:*"))
        .into_keys()
        .collect();
    assert_eq!(copied, renamed);
}
