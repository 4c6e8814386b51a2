//! `rediss+cluster://`: a Redis Cluster that speaks only TLS (clients, bus, replication)
//! and requires client certificates and an ACL user. The pac commands, a region's
//! heartbeats and its sharded notifications all go over TLS, and follow a failover of
//! the PAC's slot; without the client certificate the nodes refuse the handshake.

use crate::support::pac::{key, PAC, SOON};
use crate::support::region::spawn_started;
use crate::support::{pacup, wait_until, Cmd, RedisCluster, TestPki};

/// `pacup --psor <url>` with the cluster's CA and client certificate.
fn on(url: &str, pki: &TestPki) -> Cmd {
    pacup()
        .args(["--psor", url])
        .env("PACUP_TLS_CA", &pki.ca_path)
        .env("PACUP_TLS_CERT", &pki.client_cert_path)
        .env("PACUP_TLS_KEY", &pki.client_key_path)
}

/// Sharded subscribers of `channel` on the node at `port`.
fn sharded_subscribers(cluster: &RedisCluster, port: u16, channel: &str) -> u64 {
    let (_, n): (String, u64) = redis::cmd("PUBSUB")
        .arg("SHARDNUMSUB")
        .arg(channel)
        .query(&mut cluster.node(port).conn())
        .unwrap();
    n
}

#[test]
fn a_tls_cluster_with_an_acl_user_carries_the_pac_and_its_notifications_across_a_failover() {
    let cluster = RedisCluster::builder()
        .with_acl_user("pacup", "s3cret")
        .with_tls()
        .start();
    let url = cluster.url();
    assert!(url.starts_with("rediss+cluster://pacup:s3cret@"), "{url}");
    let pki = cluster.pki();
    on(&url, pki).args(["pac", "init", PAC]).run().success();
    let meta = key("meta");
    let mut master = cluster.master_port_for(&meta);
    assert!(redis::cmd("EXISTS")
        .arg(&meta)
        .query::<bool>(&mut cluster.node(master).conn())
        .unwrap());

    // Heartbeats 30 s apart: only a notification makes a region see a new mode soon.
    let region = |name: &str, v: &str, start: &str| {
        let cmd = on(&url, pki)
            .args(["region", "run", name, "--pac", PAC, "--host", "h1"])
            .args(["--product-version", v, "--start-type", start])
            .args(["--heartbeat-interval", "30s", "--heartbeat-ttl", "60s"]);
        spawn_started(cmd, name).0
    };
    let mut r1 = region("R1", "1.0.0", "cold");
    let mut r2 = region("R2", "2.0.0", "upgrade");
    let channel = key("notify");
    wait_until(
        SOON,
        "both regions subscribed (sharded) on the slot's master",
        || sharded_subscribers(&cluster, master, &channel) == 2,
    );
    on(&url, pki)
        .args(["pac", "set-mode", PAC, "running"])
        .run()
        .success();
    r2.wait_for_stdout_line(
        |l| l.contains("Region R2: store mode changed from upgrade to running"),
        SOON,
    );

    let (_, new) = cluster.failover_slot_of(&meta);
    master = new;
    wait_until(
        SOON,
        "both regions subscribed again on the new master",
        || sharded_subscribers(&cluster, master, &channel) == 2,
    );
    on(&url, pki)
        .args(["pac", "set-mode", PAC, "quiesce"])
        .run()
        .success();
    r1.wait_for_stdout_line(
        |l| l.contains("Region R1: store mode changed from running to quiesce"),
        SOON,
    );
    let doc = on(&url, pki)
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

    // Without the client certificate every node refuses the handshake: exit 5, and the
    // password is not printed.
    let out = pacup()
        .args(["--psor", &url, "pac", "status", PAC])
        .env("PACUP_TLS_CA", &pki.ca_path)
        .run();
    out.code(5);
    assert!(
        !format!("{}{}", out.stdout, out.stderr).contains("s3cret"),
        "{out:?}"
    );
}
