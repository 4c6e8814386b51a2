//! PSOR faults: durability of acknowledged writes (`--durability`), following a Sentinel
//! failover at once, and riding out a PSOR outage. The `matrix_*` tests marked ignored
//! are the slow fault-matrix cases (run by `.ci/run`: `cargo test --test it -- --ignored
//! matrix_`).

use std::time::Duration;

use redis::Commands;

use crate::support::{pacup, RedisServer};

const PAC: &str = "MyPAC";

fn key(suffix: &str) -> String {
    format!("pac:{{{PAC}}}:{suffix}")
}

/// A master with one synced replica.
fn replicated() -> (RedisServer, RedisServer) {
    let master = RedisServer::start();
    let replica = RedisServer::builder().replica_of(&master).start();
    replica.wait_for_replication_link(Duration::from_secs(20));
    (master, replica)
}

/// With a replica connected, the default durability is `replica`: a command's writes
/// are on the replica by the time it reports success, so a failover right after it
/// loses nothing it acknowledged.
#[test]
fn durability_acknowledged_writes_are_on_the_replica() {
    let (master, replica) = replicated();
    let url = master.url();
    pacup()
        .args(["--psor", &url, "pac", "init", PAC])
        .run()
        .success();
    for _ in 0..5 {
        pacup()
            .args(["--psor", &url, "jobs", "submit", PAC, "--count", "7"])
            .run()
            .success();
        // Read at once, no waiting: acknowledged means replicated.
    }
    let submitted: Option<u64> = replica.conn().hget(key("ds:stats"), "submitted").unwrap();
    assert_eq!(submitted, Some(35));
    assert!(replica.conn().exists::<_, bool>(key("meta")).unwrap());
}

/// A replica that stops answering: a critical write is not reported done (exit 5, the
/// write named not durable), while `--durability none` takes the master's word.
#[test]
fn durability_unconfirmed_write_is_exit_5_not_success() {
    let (master, replica) = replicated();
    let url = master.url();
    pacup()
        .args(["--psor", &url, "pac", "init", PAC])
        .run()
        .success();
    replica.pause();
    let out = pacup()
        .args(["--psor", &url, "pac", "init", "Other"])
        .timeout(Duration::from_secs(60))
        .run();
    replica.resume();
    out.code(5)
        .stderr_contains("did not confirm a write as durable (replica): 0 of 1");
    replica.pause();
    let out = pacup()
        .args([
            "--psor",
            &url,
            "--durability",
            "none",
            "pac",
            "init",
            "Third",
        ])
        .run();
    replica.resume();
    out.success();
}

/// `--durability aof` on a server without WAITAOF (before Redis 7.2) or without an AOF is
/// refused before anything is written; a bad value is exit 2.
#[test]
fn durability_aof_refused_where_the_server_cannot_do_it() {
    let server = RedisServer::start();
    let url = server.url();
    let version: String = redis::cmd("INFO")
        .arg("server")
        .query::<String>(&mut server.conn())
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:").map(str::to_string))
        .unwrap();
    let out = pacup()
        .args(["--psor", &url, "--durability", "aof", "pac", "init", PAC])
        .run();
    out.code(2).stderr_contains("--durability");
    let has_waitaof = {
        let mut v = version.trim().split('.').map(|p| p.parse::<u64>().unwrap());
        (v.next().unwrap(), v.next().unwrap()) >= (7, 2)
    };
    if has_waitaof {
        out.stderr_contains("has no AOF");
    } else {
        out.stderr_contains("WAITAOF needs Redis 7.2 or later");
    }
    let keys: Vec<String> = server.conn().keys("*").unwrap();
    assert!(keys.is_empty(), "written: {keys:?}");
    pacup()
        .args(["--psor", &url, "pac", "init", PAC])
        .env("PACUP_DURABILITY", "always")
        .run()
        .code(2)
        .stderr_contains("none, replica or aof");
    // The default on a PSOR without replicas: acknowledged as applied.
    pacup()
        .args(["--psor", &url, "pac", "init", PAC])
        .run()
        .success();
    assert!(server.conn().exists::<_, bool>(key("meta")).unwrap());
}

async fn pac_on(server: &RedisServer) -> pacup::psor::Pac {
    let psor = pacup::conn::Psor::connect(&pacup::conn::PsorOptions::new(server.url()))
        .await
        .expect("connect");
    let pac = pacup::psor::Pac::new(psor, pacup::names::PacName::new(PAC).unwrap());
    pac.init(false, "test", None).await.expect("init");
    pac
}

/// The writes a client repeats after an outage (its reply lost, or its write not
/// confirmed durable) take effect once: a submission under its id, a journal write with
/// its event, and a lease that lapsed while the PSOR was away and nobody took is ours
/// again (a lease someone else took is not).
#[test]
fn repeated_writes_take_effect_once() {
    use pacup::psor::rollout::LeaseHolder;
    use pacup::psor::scripts::{Fenced, RolloutWrite};
    let server = RedisServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pac = pac_on(&server).await;
        let a = pac.submit_jobs_once(5, "run1-0").await.unwrap();
        let b = pac.submit_jobs_once(5, "run1-0").await.unwrap();
        assert_eq!(a, (1, 5));
        assert_eq!(b, a);
        assert_eq!(pac.submit_jobs_once(2, "run1-5").await.unwrap(), (6, 7));
        assert_eq!(pac.work_stats().await.unwrap().submitted, 7);

        let lease = pac
            .acquire_lease(
                &LeaseHolder::this_process("test"),
                Duration::from_millis(100),
            )
            .await
            .unwrap();
        let state = [("id", format!("{PAC}-1")), ("seq", "1".to_string())];
        let event = [
            ("rollout", format!("{PAC}-1")),
            ("seq", "1".to_string()),
            ("action", "preflight".to_string()),
        ];
        let write = RolloutWrite {
            fence: lease.epoch,
            state: &state,
            event: &event,
            history: None,
        };
        assert!(matches!(pac.eval(&write).await.unwrap(), Fenced::Ok(_)));
        assert!(matches!(pac.eval(&write).await.unwrap(), Fenced::Ok(_)));
        let events: u64 = server.conn().xlen(key("events")).unwrap();
        assert_eq!(events, 2, "init's event and the write's, once");

        crate::support::wait_until(Duration::from_secs(10), "the lease to lapse", || {
            !server.conn().exists::<_, bool>(key("lock")).unwrap()
        });
        assert!(pac
            .renew_lease(&lease, Duration::from_secs(5))
            .await
            .unwrap());
        assert!(server.conn().exists::<_, bool>(key("lock")).unwrap());
        let _: () = server.conn().del(key("lock")).unwrap();
        let other = pac
            .acquire_lease(&LeaseHolder::this_process("other"), Duration::from_secs(5))
            .await
            .unwrap();
        assert!(other.epoch > lease.epoch);
        let _: () = server.conn().del(key("lock")).unwrap();
        assert!(!pac
            .renew_lease(&lease, Duration::from_secs(5))
            .await
            .unwrap());
    });
}
