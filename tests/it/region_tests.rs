//! Regions at work, driven through real `pacup agent` processes and a private Redis: mode
//! gating of batch jobs, the whole upgrade story under load, graceful stops under load, the
//! client listener over real TCP, and refusals that must leave the PSOR untouched.
//!
//! The helpers they use live in `support` (`pac`, `work`, `state`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use redis::Commands;

use crate::support::pac::*;
use crate::support::state::*;
use crate::support::work::*;
use crate::support::{wait_for, wait_until, RedisServer};

/// Upgrade mode takes no batch work, running does, quiesce takes no new work; and the mode
/// change reaches the upgrade region by notification (its heartbeat interval is 60 s, so a
/// mode line within seconds cannot come from the periodic re-read).
#[test]
fn jobs_are_taken_only_by_regions_of_a_running_store() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    let _old = spawn_agent(
        &server,
        "host1",
        "1.0.0",
        &["REGION1"],
        "cold",
        &["--job-time", "50ms"],
    );
    let mut new = spawn_agent(
        &server,
        "host3",
        "2.0.0",
        &["REGION3"],
        "upgrade",
        &[
            "--job-time",
            "50ms",
            "--heartbeat-interval",
            "60s",
            "--heartbeat-ttl",
            "180s",
        ],
    );
    let agents_started = Instant::now();
    assert_eq!(members(&mut conn, "2.0.0"), ["REGION3"]);
    let mode: String = conn.hget(key("store:2.0.0:meta"), "mode").unwrap();
    assert_eq!(mode, "upgrade");
    // auto listener: off in upgrade mode, so no client reaches the new PAC yet.
    assert_eq!(
        region_field(&mut conn, "REGION3", "listener").as_deref(),
        Some("off")
    );

    // Upgrade mode: 40 jobs of 50 ms keep REGION1 busy for 2 s while REGION3 keeps asking.
    submit(&server, 40);
    let s = wait_all_done(&server, 40, SOON);
    assert_eq!(by_region(&s, "REGION1"), 40, "{s}");
    assert_eq!(
        by_region(&s, "REGION3"),
        0,
        "an upgrade-mode region took jobs: {s}"
    );
    assert_eq!(region_field(&mut conn, "REGION3", "jobs_done"), None);

    // Running: the new store takes work too, and the region hears of it by notification.
    let flip = redis_now_ms(&mut conn);
    run(&server, &["pac", "set-mode", PAC, "running"])
        .success()
        .stdout_contains("store 2.0.0 now running");
    let notified = Instant::now();
    new.wait_for_stdout_line(
        |l| l == "Region REGION3: store mode changed from upgrade to running",
        Duration::from_secs(5),
    );
    assert!(
        agents_started.elapsed() < Duration::from_secs(60),
        "the test ran past REGION3's 60 s heartbeat, so it no longer proves notification"
    );
    eprintln!("mode change reached REGION3 after {:?}", notified.elapsed());
    submit(&server, 40);
    let s = wait_all_done(&server, 80, SOON);
    assert!(
        by_region(&s, "REGION3") > 0,
        "the running new store took no job: {s}"
    );
    assert!(
        by_region(&s, "REGION1") > 40,
        "the running old store took no job: {s}"
    );
    for (job, r) in job_results(&mut conn) {
        if r.region == "REGION3" {
            assert_eq!(r.store, "2.0.0");
            assert!(
                r.ts >= flip,
                "job {job} completed by REGION3 before set-mode running: {r:?}"
            );
        }
    }

    // Quiesce: nothing was pending, so the old region has no job in hand and takes no more.
    let done_before: String = region_field(&mut conn, "REGION1", "jobs_done").unwrap();
    let new_before = by_region(&s, "REGION3");
    run(&server, &["pac", "set-mode", PAC, "quiesce"])
        .success()
        .stdout_contains("store 1.0.0 now quiesce");
    let (first, last) = submit(&server, 20);
    let s = wait_all_done(&server, 100, SOON);
    assert_eq!(
        region_field(&mut conn, "REGION1", "jobs_done").unwrap(),
        done_before
    );
    assert_eq!(by_region(&s, "REGION3"), new_before + 20, "{s}");
    let results = job_results(&mut conn);
    for job in first..=last {
        let r = &results[&job];
        assert_eq!(
            (r.region.as_str(), r.store.as_str()),
            ("REGION3", "2.0.0"),
            "job {job}"
        );
    }
    // Quiesce stops work, not the region: it is still alive and a member of its store.
    assert!(region_alive(&mut conn, "REGION1"));
    assert_eq!(members(&mut conn, "1.0.0"), ["REGION1"]);
    assert_eq!(n(&s, "duplicates"), 0, "{s}");
}

/// The whole story under load: two 1.0.0 hosts (three regions) and an upgrade-started 2.0.0
/// host; jobs flow before, during and after `set-mode running` and `set-mode quiesce` while
/// old regions are stopped; clients are served throughout. Every job completes exactly once,
/// only in running stores, and no client transaction fails.
#[test]
fn upgrade_under_load_completes_every_job_once_and_serves_every_client() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    let _h1 = spawn_host1(&server, "cold", &[]);
    let _h2 = spawn_agent(&server, "host2", "1.0.0", &["REGION2"], "warm", &[]);
    let _h3 = spawn_agent(&server, "host3", "2.0.0", &["REGION3"], "upgrade", &[]);
    let old = ["REGION1", "REGION1B", "REGION2"];
    assert_eq!(members(&mut conn, "1.0.0"), old);

    // Before: 10 jobs, done by the old PAC alone.
    submit(&server, 10);
    let s = wait_all_done(&server, 10, SOON);
    assert_eq!(by_region(&s, "REGION3"), 0, "{s}");

    // During: a steady stream of jobs and of client transactions.
    let jobs = cli(&server)
        .args([
            "jobs",
            "submit",
            PAC,
            "--rate",
            "30/s",
            "--duration",
            "5s",
            "--json",
        ])
        .spawn();
    let clients = cli(&server)
        .args([
            "clients",
            "run",
            PAC,
            "--duration",
            "5s",
            "--rate",
            "20/s",
            "--json",
        ])
        .spawn();
    wait_until(SOON, "jobs to flow", || {
        n(&stats(&server), "submitted") >= 25
    });

    let before_running = redis_now_ms(&mut conn);
    run(&server, &["pac", "set-mode", PAC, "running"]).success();
    run(
        &server,
        &["region", "listener", "REGION3", "on", "--pac", PAC],
    )
    .success()
    .stdout_contains("region REGION3: listener on at 127.0.0.1:");
    wait_until(SOON, "REGION3 to take jobs", || {
        by_region(&stats(&server), "REGION3") >= 3
    });

    run(&server, &["pac", "set-mode", PAC, "quiesce"]).success();
    let after_quiesce = redis_now_ms(&mut conn);
    // Old regions leave while jobs and clients keep coming.
    for r in ["REGION1", "REGION2"] {
        run(
            &server,
            &["region", "stop", r, "--pac", PAC, "--drain-timeout", "5s"],
        )
        .success()
        .stdout_contains(&format!("region {r} stopped"));
    }

    let submitted_during = n(&finish_json(jobs, Duration::from_secs(30)), "submitted");
    let report = finish_json(clients, Duration::from_secs(30));

    // After: 10 more, which only the new PAC may run.
    let (first_after, last_after) = submit(&server, 10);
    let total = 10 + submitted_during + 10;
    let s = wait_all_done(&server, total, SOON);

    // Exactly once.
    assert_eq!(n(&s, "completed"), total, "{s}");
    assert_eq!(n(&s, "duplicates"), 0, "{s}");
    let results = job_results(&mut conn);
    assert_eq!(results.len() as u64, total, "one result per job");
    assert_eq!(
        runs(&mut conn, &["REGION1", "REGION1B", "REGION2", "REGION3"]),
        total,
        "a job ran twice"
    );
    assert_eq!(pending_entries(&mut conn), 0);

    // Only by regions of a running store.
    let mut old_after_quiesce = 0;
    for (job, r) in &results {
        match r.region.as_str() {
            "REGION3" => {
                assert_eq!(r.store, "2.0.0", "job {job}");
                assert!(
                    r.ts >= before_running,
                    "job {job} done by the upgrade store before it ran: {r:?}"
                );
            }
            other => {
                assert!(old.contains(&other), "job {job}: {r:?}");
                assert_eq!(r.store, "1.0.0", "job {job}");
                if r.ts > after_quiesce {
                    old_after_quiesce += 1;
                }
            }
        }
    }
    // At most the job each old region had in hand at the flip finishes after it.
    assert!(
        old_after_quiesce <= 3,
        "{old_after_quiesce} old-store jobs finished after quiesce"
    );
    for job in first_after..=last_after {
        assert_eq!(
            results[&job].region, "REGION3",
            "job {job} submitted after quiesce"
        );
    }
    assert!(by_region(&s, "REGION3") > 10, "{s}");

    // Clients were served throughout, by regions whose listener was on.
    assert!(n(&report, "sent") >= 50, "{report}");
    assert_eq!(n(&report, "failed"), 0, "{report}");
    assert_eq!(n(&report, "ok"), n(&report, "sent"), "{report}");
    assert!(
        report["by_region"]["REGION3"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
    assert!(
        report["by_region"]["REGION1B"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
    assert_eq!(
        n(&s, "transactions"),
        n(&report, "ok"),
        "stats {s} vs report {report}"
    );
}

/// Graceful stops while jobs flow finish the job in hand, hand nothing to anyone else, and
/// lose nothing; restarted regions pick up again; final counts are exact.
#[test]
fn graceful_stops_under_load_lose_and_duplicate_nothing() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    let _h1 = spawn_host1(&server, "cold", &["--job-time", "100ms"]);
    let _h2 = spawn_agent(
        &server,
        "host2",
        "1.0.0",
        &["REGION2"],
        "warm",
        &["--job-time", "100ms"],
    );
    let jobs = cli(&server)
        .args([
            "jobs",
            "submit",
            PAC,
            "--rate",
            "15/s",
            "--duration",
            "3s",
            "--json",
        ])
        .spawn();

    for r in ["REGION1", "REGION2"] {
        let entry = wait_for(SOON, &format!("{r} to hold a job"), || {
            in_hand(&mut conn, r).pop()
        });
        let job = job_of_entry(&mut conn, &entry.0);
        run(&server, &["region", "stop", r, "--pac", PAC])
            .success()
            .stdout_contains(&format!("region {r} stopped"));
        // Graceful: the job in hand was finished (and acknowledged) by the region itself.
        assert_eq!(in_hand(&mut conn, r), vec![], "{r} left a job in hand");
        assert_eq!(
            job_results(&mut conn)[&job].region,
            r,
            "job {job} that {r} held"
        );
        assert_eq!(
            region_field(&mut conn, r, "state").as_deref(),
            Some("stopped")
        );
        assert_eq!(region_field(&mut conn, r, "store").as_deref(), Some(""));
        assert!(!members(&mut conn, "1.0.0").contains(&r.to_string()));
    }
    assert_eq!(members(&mut conn, "1.0.0"), ["REGION1B"]);
    for r in ["REGION1", "REGION2"] {
        start_through_agent(&server, r, "warm")
            .success()
            .stdout_contains(&format!("region {r} started in store 1.0.0"));
        assert!(region_alive(&mut conn, r));
    }
    assert_eq!(
        members(&mut conn, "1.0.0"),
        ["REGION1", "REGION1B", "REGION2"]
    );

    let submitted = n(&finish_json(jobs, Duration::from_secs(30)), "submitted");
    assert!(submitted >= 40, "{submitted}");
    let s = wait_all_done(&server, submitted, SOON);
    assert_eq!(n(&s, "completed"), submitted, "{s}");
    assert_eq!(n(&s, "duplicates"), 0, "{s}");
    assert_eq!(job_results(&mut conn).len() as u64, submitted);
    assert_eq!(
        runs(&mut conn, &["REGION1", "REGION1B", "REGION2"]),
        submitted
    );
    assert_eq!(pending_entries(&mut conn), 0);
    // The restarted regions took work again.
    let before: u64 = by_region(&s, "REGION1") + by_region(&s, "REGION2");
    submit(&server, 30);
    let s = wait_all_done(&server, submitted + 30, SOON);
    assert!(
        by_region(&s, "REGION1") + by_region(&s, "REGION2") > before,
        "{s}"
    );
}

fn send_line(stream: &mut TcpStream, reader: &mut BufReader<TcpStream>, line: &str) -> String {
    stream.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut answer = String::new();
    reader.read_line(&mut answer).unwrap();
    answer.trim_end().to_string()
}

fn connect(endpoint: &str) -> std::io::Result<(TcpStream, BufReader<TcpStream>)> {
    let s = TcpStream::connect(endpoint)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let r = BufReader::new(s.try_clone()?);
    Ok((s, r))
}

/// The listener over real TCP: off refuses new connections while an open one keeps being
/// served; on accepts again on the same (here fixed, `R=ADDR`) endpoint.
#[test]
fn listener_off_refuses_new_connections_and_on_reopens_the_same_endpoint() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    let port = crate::support::free_port();
    let addr = format!("127.0.0.1:{port}");
    let _agent = spawn_agent(
        &server,
        "host1",
        "1.0.0",
        &[&format!("REGION1={addr}")],
        "cold",
        &[],
    );
    wait_until(SOON, "REGION1's listener to be recorded on", || {
        region_field(&mut conn, "REGION1", "listener").as_deref() == Some("on")
    });
    let endpoint = region_field(&mut conn, "REGION1", "endpoint").unwrap();
    assert_eq!(endpoint, addr);

    let (mut open, mut open_r) = connect(&endpoint).unwrap();
    assert_eq!(send_line(&mut open, &mut open_r, "PING"), "PONG REGION1");
    assert_eq!(
        send_line(&mut open, &mut open_r, "TX t1"),
        "OK REGION1 1.0.0 t1"
    );
    assert!(send_line(&mut open, &mut open_r, "HELLO").starts_with("ERR "));

    run(
        &server,
        &["region", "listener", "REGION1", "off", "--pac", PAC],
    )
    .success()
    .stdout_contains(&format!("region REGION1: listener off at {addr}"));
    assert_eq!(
        region_field(&mut conn, "REGION1", "listener").as_deref(),
        Some("off")
    );
    assert_eq!(
        region_field(&mut conn, "REGION1", "endpoint").as_deref(),
        Some(addr.as_str())
    );
    let Err(refused) = connect(&endpoint) else {
        panic!("a new connection must be refused while the listener is off");
    };
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{refused}"
    );
    // The connection opened before keeps being served.
    assert_eq!(
        send_line(&mut open, &mut open_r, "TX t2"),
        "OK REGION1 1.0.0 t2"
    );

    run(
        &server,
        &["region", "listener", "REGION1", "on", "--pac", PAC],
    )
    .success()
    .stdout_contains(&format!("region REGION1: listener on at {addr}"));
    assert_eq!(
        region_field(&mut conn, "REGION1", "endpoint").as_deref(),
        Some(addr.as_str())
    );
    let (mut again, mut again_r) = connect(&endpoint).unwrap();
    assert_eq!(
        send_line(&mut again, &mut again_r, "TX t3"),
        "OK REGION1 1.0.0 t3"
    );

    // Each transaction recorded once, by the region that served it.
    let tx: HashMap<String, String> = conn.hgetall(key("ds:tx")).unwrap();
    let expected: HashMap<String, String> = ["t1", "t2", "t3"]
        .iter()
        .map(|t| (t.to_string(), "REGION1".to_string()))
        .collect();
    assert_eq!(tx, expected);
    let s = stats(&server);
    assert_eq!(
        (n(&s, "transactions"), n(&s, "transaction_duplicates")),
        (3, 0),
        "{s}"
    );
}

/// Refusals of region and host commands: exit 1 with a message naming the problem, and the
/// PSOR exactly as before. Malformed names are usage errors (exit 2).
#[test]
fn refused_region_and_host_commands_change_nothing() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    let _agent = spawn_host1(&server, "cold", &[]);
    run(&server, &["region", "stop", "REGION1B", "--pac", PAC]).success();
    let before = psor_state(&mut conn);
    assert!(before[&key("region:REGION1B")].contains("\"state\": \"stopped\""));

    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["region", "stop", "NOPE", "--pac", PAC],
            1,
            "region NOPE is not known in PAC MyPAC",
        ),
        (
            &["region", "listener", "NOPE", "off", "--pac", PAC],
            1,
            "region NOPE is not known in PAC MyPAC",
        ),
        (
            &[
                "region",
                "start",
                "NOPE",
                "--pac",
                PAC,
                "--start-type",
                "warm",
            ],
            1,
            "region NOPE is not known",
        ),
        (
            &["region", "stop", "REGION1B", "--pac", PAC],
            1,
            "region REGION1B is not running on host host1",
        ),
        (
            &["region", "listener", "REGION1B", "on", "--pac", PAC],
            1,
            "region REGION1B is not running on host1",
        ),
        (
            &["region", "crash", "REGION1B", "--pac", PAC],
            1,
            "region REGION1B is not running on host host1",
        ),
        (
            &[
                "region",
                "start",
                "REGION1",
                "--pac",
                PAC,
                "--start-type",
                "warm",
            ],
            1,
            "region REGION1 is already running on host1",
        ),
        (
            &[
                "host",
                "update",
                "host1",
                "--pac",
                PAC,
                "--product-version",
                "2.0.0",
            ],
            1,
            "cannot update host host1 while regions run: REGION1; stop them first",
        ),
        (
            &[
                "host",
                "update",
                "host9",
                "--pac",
                PAC,
                "--product-version",
                "2.0.0",
            ],
            1,
            "host host9 is not known in PAC MyPAC",
        ),
        (&["region", "stop", "BAD/NAME", "--pac", PAC], 2, "region"),
        (
            &[
                "host",
                "update",
                "host1",
                "--pac",
                PAC,
                "--product-version",
                "two",
            ],
            2,
            "product version",
        ),
        (
            &[
                "region",
                "stop",
                "REGION1",
                "--pac",
                PAC,
                "--timeout",
                "soon",
            ],
            2,
            "duration",
        ),
    ];
    for (args, code, message) in cases {
        let out = run(&server, args);
        out.code(*code).stderr_contains(message);
        assert_psor_unchanged(&mut conn, &before, &format!("`pacup {}`", args.join(" ")));
    }
    let hv: String = conn.hget(key("host:host1"), "product_version").unwrap();
    assert_eq!(hv, "1.0.0");
    assert!(
        region_alive(&mut conn, "REGION1"),
        "a refused command hurt a running region"
    );
}

/// A mode change whose notification is lost (the store record changed without a publish) is
/// still picked up by the periodic re-read of the heartbeat, within a few intervals.
#[test]
fn a_lost_mode_notification_is_healed_by_the_heartbeat() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    let _old = spawn_agent(&server, "host1", "1.0.0", &["REGION1"], "cold", &[]);
    let mut new = spawn_agent(&server, "host3", "2.0.0", &["REGION3"], "upgrade", &[]);
    let _: () = conn
        .hset(key("store:2.0.0:meta"), "mode", "running")
        .unwrap();
    new.wait_for_stdout_line(
        |l| l == "Region REGION3: store mode changed from upgrade to running",
        Duration::from_secs(3),
    );
    submit(&server, 20);
    let s = wait_all_done(&server, 20, SOON);
    assert!(by_region(&s, "REGION3") > 0, "{s}");
}

/// A forced stop (`--force`, or a graceful stop past `--timeout`) abandons the job in hand:
/// the region stops at once and the job, still pending under its name, is reclaimed by a
/// running region after `--reclaim-idle` and completed once.
#[test]
fn forced_stops_abandon_the_job_in_hand_to_be_reclaimed() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    let _agent = spawn_host1(
        &server,
        "cold",
        &["--job-time", "1200ms", "--reclaim-idle", "500ms"],
    );
    submit(&server, 3);
    let held = wait_for(SOON, "both regions to hold a job", || {
        let a = in_hand(&mut conn, "REGION1");
        let b = in_hand(&mut conn, "REGION1B");
        (a.len() == 1 && b.len() == 1).then(|| a[0].0.clone())
    });
    let abandoned = job_of_entry(&mut conn, &held);
    let out = run(
        &server,
        &["region", "stop", "REGION1", "--pac", PAC, "--force"],
    );
    out.success()
        .stdout_contains("region REGION1 stopped (forced)");
    assert_eq!(
        region_field(&mut conn, "REGION1", "state").as_deref(),
        Some("stopped")
    );
    let left: Vec<String> = in_hand(&mut conn, "REGION1")
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(left, vec![held], "the forced stop left its job pending");

    let s = wait_all_done(&server, 3, SOON);
    assert_eq!((n(&s, "completed"), n(&s, "duplicates")), (3, 0), "{s}");
    assert_eq!(job_results(&mut conn)[&abandoned].region, "REGION1B");

    // Past --timeout, a graceful stop turns forced as well.
    submit(&server, 1);
    wait_until(SOON, "REGION1B to hold the new job", || {
        !in_hand(&mut conn, "REGION1B").is_empty()
    });
    run(
        &server,
        &[
            "region",
            "stop",
            "REGION1B",
            "--pac",
            PAC,
            "--timeout",
            "200ms",
        ],
    )
    .success()
    .stdout_contains("region REGION1B stopped (forced)");
    assert_eq!(n(&stats(&server), "pending"), 1);
    start_through_agent(&server, "REGION1", "warm").success();
    let s = wait_all_done(&server, 4, SOON);
    assert_eq!((n(&s, "completed"), n(&s, "duplicates")), (4, 0), "{s}");
    assert_eq!(job_results(&mut conn).len(), 4);
}

/// An agent refuses to host a region that is alive on another host, and malformed agent
/// settings are usage errors; neither writes anything.
#[test]
fn an_agent_refuses_a_region_alive_elsewhere_and_bad_settings() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    let _agent = spawn_agent(&server, "host1", "1.0.0", &["REGION1"], "cold", &[]);
    let before = psor_state(&mut conn);
    let base = [
        "agent",
        "--pac",
        PAC,
        "--host",
        "host2",
        "--product-version",
        "1.0.0",
    ];
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["--region", "REGION1", "--autostart", "warm"],
            1,
            "host agent host2 cannot start: region REGION1 is alive on host host1; \
             a region can run on one host only",
        ),
        (
            &["--region", "REGION2", "--region", "REGION2"],
            2,
            "each region once",
        ),
        (
            &["--region", "REGION2=localhost"],
            2,
            "invalid listener address",
        ),
        (
            &[
                "--region",
                "REGION2",
                "--heartbeat-interval",
                "2s",
                "--heartbeat-ttl",
                "1s",
            ],
            2,
            "a TTL longer than --heartbeat-interval",
        ),
        (
            &["--region", "REGION2", "--autostart", "sometimes"],
            2,
            "--autostart",
        ),
    ];
    for (extra, code, message) in cases {
        let args: Vec<&str> = base.iter().chain(extra.iter()).copied().collect();
        let out = cli(&server)
            .args(&args)
            .timeout(Duration::from_secs(20))
            .run();
        out.code(*code).stderr_contains(message);
        assert_psor_unchanged(&mut conn, &before, &format!("`pacup {}`", args.join(" ")));
    }
    assert!(region_alive(&mut conn, "REGION1"));
}

/// A region moved to another host (its old host's agent is gone, a live agent on the new
/// host lists it) can be started through the new host's agent.
#[test]
fn region_start_reaches_the_live_agent_a_region_moved_to() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    let mut old = spawn_host1(&server, "cold", &[]);
    run(&server, &["region", "stop", "REGION1", "--pac", PAC]).success();
    old.signal(crate::support::SIGTERM);
    old.wait_with_timeout(SOON).success();
    let _new = spawn_agent(&server, "host2", "1.0.0", &["REGION1"], "none", &[]);
    wait_until(SOON, "host1's agent to count as dead", || {
        !conn.exists::<_, bool>(key("host:host1:alive")).unwrap()
    });
    start_through_agent(&server, "REGION1", "warm")
        .success()
        .stdout_contains("region REGION1 started in store 1.0.0");
    assert_eq!(
        region_field(&mut conn, "REGION1", "host").as_deref(),
        Some("host2")
    );
}

/// On a PSOR without the PAC (new, or restarted without persistence), a cold start through a
/// live agent creates it, as `region run --start-type cold` and `agent --autostart cold` do
/// and as the refusal message itself suggests ("or cold start a region").
#[test]
fn region_start_cold_through_an_agent_creates_a_missing_pac() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    let _agent = spawn_agent(&server, "host1", "1.0.0", &["REGION1"], "none", &[]);
    start_through_agent(&server, "REGION1", "cold")
        .success()
        .stdout_contains("region REGION1 started in store 1.0.0");
    assert!(region_alive(&mut conn, "REGION1"));
    assert_eq!(members(&mut conn, "1.0.0"), ["REGION1"]);
}
