//! PSOR faults: durability of acknowledged writes (`--durability`), following a Sentinel
//! failover at once, and riding out a PSOR outage. The `matrix_*` tests marked ignored
//! are the slow fault-matrix cases (run by `.ci/run`: `cargo test --test it -- --ignored
//! matrix_`).

use std::time::{Duration, Instant};

use redis::Commands;
use serde_json::json;

use crate::rollout_tests::{
    assert_seq_consecutive, check_event_shape, is_event, key, Env, Load, HOST1_REGIONS, PAC,
    RUN_TIMEOUT, STATE_TIMEOUT,
};
use crate::support::{pacup, wait_until, RedisServer, SentinelSet};

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
        let state2 = [("seq", "2".to_string()), ("next_step", "2".to_string())];
        let event2 = [
            ("rollout", format!("{PAC}-1")),
            ("seq", "2".to_string()),
            ("action", "stop".to_string()),
        ];
        let second = RolloutWrite {
            fence: lease.epoch,
            state: &state2,
            event: &event2,
            history: None,
        };
        assert!(matches!(pac.eval(&second).await.unwrap(), Fenced::Ok(_)));
        // The first write again (its reply lost): neither its event nor its fields.
        assert!(matches!(pac.eval(&write).await.unwrap(), Fenced::Ok(_)));
        let events: u64 = server.conn().xlen(key("events")).unwrap();
        assert_eq!(events, 3, "init's event and each write's, once");
        let seq: Option<String> = server.conn().hget(key("rollout:current"), "seq").unwrap();
        assert_eq!(seq.as_deref(), Some("2"));

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

/// The heartbeat TTL the test agents run with (`agent_cmd`).
const HEARTBEAT_TTL: Duration = Duration::from_secs(1);

/// A seed for a fault's timing, printed so a failing run can be repeated
/// (`PACUP_FAULT_SEED=<n>`).
fn seed() -> u64 {
    let s = std::env::var("PACUP_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("fault seed: PACUP_FAULT_SEED={s}");
    s
}

/// The end state every rollout fault case checks: `done` in the journal of the PSOR that
/// survived, every region at 2.0.0 in store 2.0.0, one unbroken event sequence.
#[track_caller]
fn assert_rollout_done(env: &Env) {
    assert_eq!(env.journal("state").as_deref(), Some("done"));
    let id = env.journal("id").expect("journal id");
    let stream = env.rollout_events(&id);
    stream.iter().for_each(check_event_shape);
    assert_seq_consecutive(&stream);
    env.assert_all_at("2.0.0", "2.0.0");
}

/// Sentinel failover in the middle of a two-host incompatible rollout under job and
/// client load: the rollout finishes by itself (exit 0) on the new master, whose journal
/// says `done`; no job lost or run twice, no client request failed, and the longest
/// batch gap stays within twice the heartbeat TTL plus the failover's own time.
#[test]
#[ignore = "fault matrix: run by .ci/run"]
fn matrix_sentinel_failover_mid_rollout_under_load() {
    let env = Env::on(
        RedisServer::start(),
        Some(SentinelSet::builder("psor").replicas(1)),
        &[("host1", &HOST1_REGIONS), ("host2", &["REGION2"])],
    );
    let old_port = env.server.port();
    let plan = env.plan("p.json", "two-host-incompatible.json", json!({}));
    let load = Load::start(&env, "12s", true);
    let mut run = env.spawn_run(&plan, &[]);
    // Mid-rollout: host1's regions are being restarted at 2.0.0.
    run.wait_for_stdout_line(
        |l| is_event(l, "stop", "done", Some("REGION1")),
        RUN_TIMEOUT,
    );
    let w = env.sentinels.as_ref().unwrap();
    let t0 = Instant::now();
    wait_until(STATE_TIMEOUT, "the sentinel to accept a failover", || {
        redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg("psor")
            .query::<String>(&mut w.sentinels()[0].conn())
            .is_ok()
    });
    wait_until(
        STATE_TIMEOUT,
        "the sentinels to name the new master",
        || w.master_port(0).is_some_and(|p| p != old_port),
    );
    let failover = t0.elapsed();
    eprintln!("failover took {failover:?}");
    assert_ne!(env.master().port(), old_port);

    let out = run.wait_with_timeout(RUN_TIMEOUT);
    out.success();
    let (stats, _) = load.finish(&env);
    assert_rollout_done(&env);
    let gap = Duration::from_millis(stats["max_completion_gap_ms"].as_u64().unwrap());
    assert!(
        gap <= 2 * HEARTBEAT_TTL + failover,
        "longest batch gap {gap:?} (failover {failover:?}): {stats:#}"
    );
}

/// The PSOR (with an AOF) crashes in the middle of a rollout under load and is back
/// 1-5 s later: the coordinator waits on the step it was on and finishes by itself
/// (exit 0), and nothing is lost.
#[test]
#[ignore = "fault matrix: run by .ci/run"]
fn matrix_psor_restart_with_aof_mid_rollout() {
    let seed = seed();
    let down = Duration::from_millis(1000 + seed % 4000);
    eprintln!("PSOR down for {down:?}");
    let server = RedisServer::builder()
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .start();
    let mut env = Env::on(
        server,
        None,
        &[("host1", &HOST1_REGIONS), ("host2", &["REGION2"])],
    );
    let plan = env.plan("p.json", "two-host-incompatible.json", json!({}));
    let load = Load::start(&env, "10s", true);
    let mut run = env.spawn_run(&plan, &[]);
    run.wait_for_stdout_line(
        |l| is_event(l, "stop", "done", Some("REGION1")),
        RUN_TIMEOUT,
    );
    env.server.kill();
    // The outage itself: the PSOR stays down this long (the fault, not a wait).
    std::thread::sleep(down);
    env.server.restart();

    let out = run.wait_with_timeout(RUN_TIMEOUT);
    out.success();
    load.finish(&env);
    assert_rollout_done(&env);
}

/// A PSOR that stays away longer than the plan's progress deadline: the coordinator
/// gives up with exit 5, naming the step it was on, and `rollout resume` finishes the
/// rollout once the PSOR is back.
#[test]
#[ignore = "fault matrix: run by .ci/run"]
fn matrix_psor_outage_past_the_progress_deadline_is_exit_5() {
    let server = RedisServer::builder()
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .start();
    let mut env = Env::on(
        server,
        None,
        &[("host1", &HOST1_REGIONS), ("host2", &["REGION2"])],
    );
    let plan = env.plan(
        "p.json",
        "two-host-incompatible.json",
        json!({"progress_deadline": "3s"}),
    );
    let mut run = env.spawn_run(&plan, &[]);
    run.wait_for_stdout_line(
        |l| is_event(l, "stop", "done", Some("REGION1")),
        RUN_TIMEOUT,
    );
    env.server.kill();
    let out = run.wait_with_timeout(RUN_TIMEOUT);
    env.server.restart();
    out.code(5).stderr_contains("gave up on step");
    let resumed = env.rollout("resume", &[]);
    resumed.success();
    assert_rollout_done(&env);
}

/// Region `r`'s `heartbeat_at` on `server`.
fn heartbeat_at(server: &RedisServer, r: &str) -> u64 {
    let hb: Option<String> = server
        .conn()
        .hget(key(&format!("region:{r}")), "heartbeat_at")
        .unwrap();
    hb.and_then(|h| h.parse().ok()).unwrap_or(0)
}

fn is_master(server: &RedisServer) -> bool {
    let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut server.conn()).unwrap();
    role.first() == Some(&redis::Value::BulkString(b"master".to_vec()))
}

/// On `+switch-master` every pacup process moves to the new master at once, not when the
/// old one is demoted (Sentinel reconfigures it only on its next check, seconds later):
/// while the old master still accepts writes, an agent's regions heartbeat on the new
/// one only, and the old one gets no more heartbeats. (`--durability none`, so that no
/// unconfirmed write tells the agent first: the announcement alone moves it.)
#[test]
fn sentinel_switch_master_is_followed_before_the_old_master_is_demoted() {
    use crate::support::pac::spawn_agent_via;
    let old = RedisServer::start();
    let w = SentinelSet::builder("psor").replicas(1).watch(&old);
    let new = &w.replicas()[0];
    let _agent = spawn_agent_via(
        &w.url(),
        &old,
        "host1",
        "1.0.0",
        &["REGION1", "REGION1B"],
        "cold",
        &["--durability", "none"],
    );
    wait_until(STATE_TIMEOUT, "the sentinel to accept a failover", || {
        redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg("psor")
            .query::<String>(&mut w.sentinels()[0].conn())
            .is_ok()
    });
    wait_until(
        STATE_TIMEOUT,
        "the sentinels to name the new master",
        || w.master_port(0) == Some(new.port()),
    );
    // Heartbeats land on the new master...
    let on_new = heartbeat_at(new, "REGION1");
    wait_until(STATE_TIMEOUT, "heartbeats on the new master", || {
        heartbeat_at(new, "REGION1") > on_new
    });
    // ...and, from the next one on, no longer on the old master.
    let last_on_old = heartbeat_at(&old, "REGION1");
    let seen = heartbeat_at(new, "REGION1");
    wait_until(
        STATE_TIMEOUT,
        "three more heartbeats on the new master",
        || heartbeat_at(new, "REGION1") >= seen + 3 * 200,
    );
    assert!(
        is_master(&old),
        "the agent reached the new master only once the old one was demoted"
    );
    assert_eq!(heartbeat_at(&old, "REGION1"), last_on_old);
    // The agent's control reader moved too: a stop sent through the new master is
    // carried out.
    pacup()
        .args([
            "--psor",
            &w.url(),
            "region",
            "stop",
            "REGION1B",
            "--pac",
            PAC,
        ])
        .args(["--drain-timeout", "1s"])
        .timeout(RUN_TIMEOUT)
        .run()
        .success();
    assert!(!new
        .conn()
        .exists::<_, bool>(key("region:REGION1B:alive"))
        .unwrap());
}

/// `rediss+sentinel://`: TLS to the sentinels and to the master they name, with a private
/// CA and a client certificate. A region runs through it, and its process is subscribed
/// to `+switch-master` on the sentinel (over TLS too).
#[test]
fn tls_to_sentinel_and_master() {
    use crate::support::region::{region_run, spawn_started, stop_gracefully};
    let master = RedisServer::builder().with_tls().start();
    let w = SentinelSet::builder("psor").watch(&master);
    let url = w.url();
    assert!(url.starts_with("rediss+sentinel://"), "{url}");
    let tls = |cmd: crate::support::Cmd| {
        cmd.env("PACUP_TLS_CA", master.ca_path())
            .env("PACUP_TLS_CERT", master.client_cert_path())
            .env("PACUP_TLS_KEY", master.client_key_path())
    };
    tls(pacup())
        .args(["--psor", &url, "pac", "init", PAC])
        .run()
        .success();
    assert!(master.conn().exists::<_, bool>(key("meta")).unwrap());

    let cmd = tls(pacup()).args(["--psor", &url]);
    let (r, _) = spawn_started(region_run(cmd, PAC, "R1", "h1", "1.0.0", "cold"), "R1");
    let subscribed = || {
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query(&mut w.sentinels()[0].conn())
            .unwrap();
        clients.lines().any(|l| l.contains(" sub=1 "))
    };
    wait_until(STATE_TIMEOUT, "a +switch-master subscription", subscribed);
    stop_gracefully(&mut master.conn(), PAC, "R1", r).success();

    // Without the client certificate the sentinel refuses the handshake: exit 5.
    pacup()
        .args(["--psor", &url, "pac", "status", PAC])
        .env("PACUP_TLS_CA", master.ca_path())
        .run()
        .code(5);
}
