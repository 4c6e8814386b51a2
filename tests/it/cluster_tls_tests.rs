//! `rediss+cluster://`: a Redis Cluster that speaks only TLS (clients, bus, replication)
//! and requires client certificates and an ACL user. The pac commands, the regions'
//! heartbeats and their sharded notifications all go over TLS, and follow a failover of
//! the PAC's slot; without the client certificate the nodes refuse the handshake.

use crate::cluster_tests::notifications_follow_a_failover;
use crate::support::pac::{key, PAC};
use crate::support::{pacup, Cmd, RedisCluster, TestPki};

/// `pacup --psor <url>` with the cluster's CA and client certificate.
fn on(url: &str, pki: &TestPki) -> Cmd {
    pacup()
        .args(["--psor", url])
        .env("PACUP_TLS_CA", &pki.ca_path)
        .env("PACUP_TLS_CERT", &pki.client_cert_path)
        .env("PACUP_TLS_KEY", &pki.client_key_path)
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
    assert!(redis::cmd("EXISTS")
        .arg(&meta)
        .query::<bool>(&mut cluster.master_conn_for(&meta))
        .unwrap());

    notifications_follow_a_failover(&cluster, &|| on(&url, pki));

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
