//! Host agents under failure: `kill -9` with jobs in hand, a restart of a killed agent, the
//! control protocol's at-most-once / deadline / fencing rules, and a PSOR that stops
//! answering for a while.

use std::time::{Duration, Instant};

use redis::Commands;
use serde_json::{json, Value};

use crate::support::pac::*;
use crate::support::work::*;
use crate::support::{wait_for, wait_until, RedisServer, SIGKILL, SIGTERM};

/// `kill -9` of an agent whose region holds a job: the job stays pending under the dead
/// region, another running region reclaims it once it has been idle for `--reclaim-idle`
/// (not before), and every job ends with exactly one result.
#[test]
fn kill_9_of_an_agent_loses_no_job_in_hand() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    let work = ["--job-time", "300ms", "--reclaim-idle", "2s"];
    let mut victim = spawn_agent(&server, "host1", "1.0.0", &["REGION1"], "cold", &work);
    let mut survivor = spawn_agent(
        &server,
        "host2",
        "1.0.0",
        &["REGION2"],
        "warm",
        &[&work[..], &["-v"]].concat(),
    );

    submit(&server, 12);
    wait_until(SOON, "REGION1 to hold a job", || {
        !in_hand(&mut conn, "REGION1").is_empty()
    });
    victim.signal(SIGKILL);
    let _ = victim.wait_with_timeout(Duration::from_secs(5));
    // What the dead region held stays pending under its name (one job at a time).
    let held = in_hand(&mut conn, "REGION1");
    assert_eq!(
        held.len(),
        1,
        "REGION1 was killed with one job in hand: {held:?}"
    );
    let (entry, idle_at_kill) = held[0].clone();
    let job = job_of_entry(&mut conn, &entry);
    let delivered_at = redis_now_ms(&mut conn) - idle_at_kill;

    let s = wait_all_done(&server, 12, SOON);
    assert_eq!(n(&s, "completed"), 12, "{s}");
    assert_eq!(
        n(&s, "duplicates"),
        0,
        "the dead region never finished its job: {s}"
    );
    let results = job_results(&mut conn);
    assert_eq!(results.len(), 12, "one result per job id");
    let r = &results[&job];
    assert_eq!(
        r.region, "REGION2",
        "job {job} held by the killed region: {r:?}"
    );
    assert_eq!(
        r.entry, entry,
        "the result is for the very entry REGION1 held"
    );
    assert!(
        r.ts >= delivered_at + 2000,
        "job {job} was reclaimed {} ms after delivery, before --reclaim-idle 2s",
        r.ts - delivered_at
    );
    survivor.wait_for_stderr_line(
        |l| {
            l.contains(&format!(
                "REGION2 reclaimed job {job} from a region that stopped answering"
            ))
        },
        SOON,
    );
    assert_eq!(pending_entries(&mut conn), 0);
    assert_eq!(in_hand(&mut conn, "REGION1"), vec![]);
}

/// A killed agent started again (same host and regions, `--autostart none`) cleans what its
/// previous incarnation left at once, without waiting for the 30 s heartbeat TTL: its regions
/// are stopped and in no store; `region start` brings them back. A command queued while it
/// was down is not run by the new incarnation.
#[test]
fn restarted_agent_cleans_its_regions_and_can_start_them_again() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    let slow_ttl = ["--heartbeat-interval", "1s", "--heartbeat-ttl", "30s"];
    let regions = HOST1_REGIONS;
    let mut first = spawn_host1(&server, "cold", &slow_ttl);
    assert_eq!(members(&mut conn, "1.0.0"), regions);
    first.signal(SIGKILL);
    let _ = first.wait_with_timeout(Duration::from_secs(5));
    // Dead, but its heartbeats have 30 s left: the PSOR still believes in it.
    assert!(region_alive(&mut conn, "REGION1"));

    // A command sent to the dead agent (as an impatient operator would) stays unread.
    let stale = json!({
        "id": "stale-1", "action": "crash", "region": "REGION1",
        "deadline_ms": redis_now_ms(&mut conn) + 600_000, "by": "test", "epoch": null
    });
    let _: String = conn
        .xadd(key("host:host1:ctl"), "*", &[("cmd", stale.to_string())])
        .unwrap();

    let _second = spawn_agent(&server, "host1", "1.0.0", &regions, "none", &slow_ttl);
    for r in regions {
        assert_eq!(
            region_field(&mut conn, r, "state").as_deref(),
            Some("stopped"),
            "{r}"
        );
        assert_eq!(
            region_field(&mut conn, r, "store").as_deref(),
            Some(""),
            "{r}"
        );
        assert_eq!(
            region_field(&mut conn, r, "listener").as_deref(),
            Some("off"),
            "{r}"
        );
        assert!(!region_alive(&mut conn, r), "{r}");
    }
    assert_eq!(members(&mut conn, "1.0.0"), Vec::<String>::new());
    let status = run(&server, &["pac", "status", PAC, "--json"]);
    status.success();
    let v: Value = status.json();
    for r in v["regions"].as_array().unwrap() {
        assert_eq!(
            (r["state"].as_str(), r["alive"].as_bool()),
            (Some("stopped"), Some(false)),
            "{r}"
        );
    }
    assert_eq!(v["hosts"][0]["alive"], json!(true), "{v}");

    for r in regions {
        start_through_agent(&server, r, "warm")
            .success()
            .stdout_contains(&format!("region {r} started in store 1.0.0"));
        assert!(region_alive(&mut conn, r));
    }
    assert_eq!(members(&mut conn, "1.0.0"), regions);
    submit(&server, 10);
    wait_all_done(&server, 10, SOON);
    // The stale command was never taken (nor answered) by the new incarnation.
    let taken: bool = conn.hexists(key("host:host1:done"), "stale-1").unwrap();
    assert!(
        !taken,
        "a command sent to the previous incarnation was taken"
    );
    let replied: bool = conn.exists(key("reply:stale-1")).unwrap();
    assert!(!replied);
}

fn send_raw(conn: &mut redis::Connection, host: &str, cmd: &Value) {
    let _: String = conn
        .xadd(
            key(&format!("host:{host}:ctl")),
            "*",
            &[("cmd", cmd.to_string())],
        )
        .unwrap();
}

fn wait_reply(conn: &mut redis::Connection, id: &str) -> Value {
    let body: String = wait_for(SOON, &format!("a reply to {id}"), || {
        conn.lindex::<_, Option<String>>(key(&format!("reply:{id}")), 0)
            .unwrap()
    });
    serde_json::from_str(&body).unwrap()
}

/// The control protocol: a command delivered twice runs once (one reply, one entry in
/// `done`); a command past its deadline is answered and not run; a command under a stale
/// fencing epoch is answered `fenced` (exit code 4) and not run.
#[test]
fn control_commands_run_at_most_once_and_never_late_or_fenced() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    let mut agent = spawn_host1(&server, "cold", &["-v"]);
    let deadline = redis_now_ms(&mut conn) + 60_000;

    // Twice the same crash: the first crashes REGION1; a second run would answer
    // "not running" as a second reply.
    let crash = json!({"id": "dup-1", "action": "crash", "region": "REGION1",
                       "deadline_ms": deadline, "by": "test", "epoch": null});
    send_raw(&mut conn, "host1", &crash);
    send_raw(&mut conn, "host1", &crash);
    let reply = wait_reply(&mut conn, "dup-1");
    assert_eq!(
        reply,
        json!({"id": "dup-1", "ok": true, "code": 0, "message": "region REGION1 crashed"})
    );
    agent.wait_for_stderr_line(
        |l| l.contains("control command dup-1 already taken; not running it again"),
        SOON,
    );
    let replies: u64 = conn.llen(key("reply:dup-1")).unwrap();
    assert_eq!(replies, 1, "the duplicate delivery ran again");
    let done: Vec<String> = conn.hkeys(key("host:host1:done")).unwrap();
    assert_eq!(done.iter().filter(|d| *d == "dup-1").count(), 1);
    run(
        &server,
        &["region", "listener", "REGION1", "on", "--pac", PAC],
    )
    .code(1)
    .stderr_contains("region REGION1 is not running on host1");

    // Past its deadline: answered, not run (REGION1B keeps running).
    let late = json!({"id": "late-1", "action": "crash", "region": "REGION1B",
                      "deadline_ms": redis_now_ms(&mut conn) - 1000, "by": "test", "epoch": null});
    send_raw(&mut conn, "host1", &late);
    let reply = wait_reply(&mut conn, "late-1");
    assert_eq!(reply["ok"], json!(false), "{reply}");
    assert_eq!(reply["code"], json!(1), "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("arrived after its deadline; not run"),
        "{reply}"
    );
    run(
        &server,
        &["region", "listener", "REGION1B", "off", "--pac", PAC],
    )
    .success();

    // Sent by a coordinator whose epoch (4) the PAC has moved past (a newer lease holder
    // took epoch 5): refused, not run.
    let _: () = conn.hset(key("meta"), "epoch", 5).unwrap();
    let fenced = json!({"id": "fenced-1", "action": "listener", "region": "REGION1B", "on": true,
                        "deadline_ms": deadline, "by": "old coordinator", "epoch": 4});
    send_raw(&mut conn, "host1", &fenced);
    let reply = wait_reply(&mut conn, "fenced-1");
    assert_eq!(
        (reply["ok"].clone(), reply["code"].clone()),
        (json!(false), json!(4)),
        "{reply}"
    );
    assert!(
        reply["message"].as_str().unwrap().contains("fenced"),
        "{reply}"
    );
    assert_eq!(
        region_field(&mut conn, "REGION1B", "listener").as_deref(),
        Some("off")
    );
    assert!(region_alive(&mut conn, "REGION1B"));
}

/// The PSOR stops answering (SIGSTOP) for 2.5 s, longer than the 1 s heartbeat TTL, while
/// jobs are in hand: the agent survives, its regions are alive again right after, no job is
/// lost or run twice, new jobs complete and control commands still work.
#[test]
fn a_psor_stall_longer_than_the_ttl_is_survived() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    let regions = HOST1_REGIONS;
    let mut agent = spawn_host1(
        &server,
        "cold",
        &["--job-time", "50ms", "--reclaim-idle", "5s"],
    );
    submit(&server, 60);
    wait_until(SOON, "jobs to be in hand", || {
        !in_hand(&mut conn, "REGION1").is_empty()
    });

    server.pause();
    let paused = Instant::now();
    while paused.elapsed() < Duration::from_millis(2500) {
        assert!(
            agent.is_running(),
            "the agent died while the PSOR was stalled"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server.resume();

    let mut conn = server.conn();
    for r in regions {
        wait_until(
            Duration::from_secs(5),
            &format!("{r} to be alive again"),
            || region_alive(&mut conn, r),
        );
    }
    let host_alive: bool = conn.exists(key("host:host1:alive")).unwrap();
    assert!(host_alive);
    assert_eq!(members(&mut conn, "1.0.0"), regions);
    let s = wait_all_done(&server, 60, SOON);
    assert!(
        n(&s, "max_completion_gap_ms") >= 2000,
        "the stall shows as a completion gap: {s}"
    );
    submit(&server, 10);
    let s = wait_all_done(&server, 70, SOON);
    assert_eq!(n(&s, "completed"), 70, "{s}");
    assert_eq!(n(&s, "duplicates"), 0, "{s}");
    assert_eq!(job_results(&mut conn).len(), 70);
    assert_eq!(runs(&mut conn, &regions), 70);
    run(
        &server,
        &["region", "listener", "REGION1", "off", "--pac", PAC],
    )
    .success();
    assert!(agent.is_running());
    let _ = stats(&server);
}

/// SIGTERM to an agent stops each of its regions gracefully (job in hand finished, store
/// left, listener off), withdraws the host and exits 0; jobs not yet taken wait for others.
#[test]
fn sigterm_stops_every_region_gracefully_and_leaves_the_rest_of_the_work() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    let regions = HOST1_REGIONS;
    let mut agent = spawn_host1(&server, "cold", &["--job-time", "300ms"]);
    submit(&server, 10);
    let entry = wait_for(SOON, "REGION1 to hold a job", || {
        in_hand(&mut conn, "REGION1").pop()
    });
    let job = job_of_entry(&mut conn, &entry.0);
    agent.signal(SIGTERM);
    let out = agent.wait_with_timeout(SOON);
    out.success();
    for r in regions {
        assert!(
            out.stdout.contains(&format!("Region {r} stopped\n")),
            "{out}"
        );
        assert_eq!(
            region_field(&mut conn, r, "state").as_deref(),
            Some("stopped")
        );
        assert_eq!(
            region_field(&mut conn, r, "listener").as_deref(),
            Some("off")
        );
        assert_eq!(in_hand(&mut conn, r), vec![], "{r} left a job in hand");
    }
    assert_eq!(members(&mut conn, "1.0.0"), Vec::<String>::new());
    let host_alive: bool = conn.exists(key("host:host1:alive")).unwrap();
    assert!(!host_alive, "the host was not withdrawn");
    assert_eq!(job_results(&mut conn)[&job].region, "REGION1");
    let s = stats(&server);
    assert!(n(&s, "pending") > 0, "{s}");
    assert_eq!(
        pending_entries(&mut conn),
        0,
        "jobs not taken stay in the queue, not in hand"
    );

    let _other = spawn_agent(&server, "host2", "1.0.0", &["REGION2"], "warm", &[]);
    let s = wait_all_done(&server, 10, SOON);
    assert_eq!((n(&s, "completed"), n(&s, "duplicates")), (10, 0), "{s}");
}

/// Setting a PAC up through an agent (`--autostart none`): a cold start of one region and,
/// right after, a warm start of the next. The cold start's reset must not leave the PAC
/// without host records (and so without any way to reach an agent) until each agent's next
/// host beat, a third of its TTL later (10 s here).
#[test]
fn region_commands_work_right_after_a_cold_start_through_an_agent() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    let beats = ["--heartbeat-interval", "1s", "--heartbeat-ttl", "30s"];
    let _h1 = spawn_host1(&server, "none", &beats);
    let _h2 = spawn_agent(&server, "host2", "1.0.0", &["REGION2"], "none", &beats);
    start_through_agent(&server, "REGION1", "cold")
        .success()
        .stdout_contains("region REGION1 started in store 1.0.0");
    for r in ["REGION1B", "REGION2"] {
        start_through_agent(&server, r, "warm")
            .success()
            .stdout_contains(&format!("region {r} started in store 1.0.0"));
    }
    assert_eq!(
        members(&mut conn, "1.0.0"),
        ["REGION1", "REGION1B", "REGION2"]
    );
    for h in ["host1", "host2"] {
        let alive: bool = conn.exists(key(&format!("host:{h}:alive"))).unwrap();
        assert!(alive, "host {h} looks dead after a cold start");
    }
}

/// Makes the next start of a region on this PAC wait: the PAC says a cold start elsewhere
/// has just reset it, so a start the rules refuse waits (up to 30 s) for that cold start's
/// store instead of refusing.
fn hold_starts(conn: &mut redis::Connection) {
    let now = redis_now_ms(conn);
    let _: () = conn.hset(key("meta"), "resetting", now).unwrap();
}

fn start_command(conn: &mut redis::Connection, id: &str, region: &str, start_type: &str) -> Value {
    json!({"id": id, "action": "start", "region": region, "start_type": start_type,
           "deadline_ms": redis_now_ms(conn) + 60_000, "by": "test", "epoch": null})
}

/// A start holds its own region, not the host: while REGION1B's start waits, a listener
/// change of REGION1 on the same host is carried out at once.
#[test]
fn a_held_up_start_does_not_delay_a_listener_change_of_another_region() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    let mut agent = spawn_host1(&server, "none", &["-v"]);
    start_through_agent(&server, "REGION1", "cold").success();
    // An upgrade start of a compatible version is refused by the rules, so this one waits.
    hold_starts(&mut conn);
    let held = start_command(&mut conn, "held-1", "REGION1B", "upgrade");
    send_raw(&mut conn, "host1", &held);
    agent.wait_for_stderr_line(|l| l.contains("control held-1:"), SOON);

    let t = Instant::now();
    run(
        &server,
        &["region", "listener", "REGION1", "off", "--pac", PAC],
    )
    .success()
    .stdout_contains("region REGION1: listener off");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the listener change waited {:?} for another region's start",
        t.elapsed()
    );
    let answered: bool = conn.exists(key("reply:held-1")).unwrap();
    assert!(
        !answered,
        "the start was not held up while the listener changed"
    );
    assert_eq!(
        region_field(&mut conn, "REGION1", "listener").as_deref(),
        Some("off")
    );

    // Released, the held start gets its refusal; REGION1 kept running throughout.
    let _: () = conn.hdel(key("meta"), "resetting").unwrap();
    let reply = wait_reply(&mut conn, "held-1");
    assert_eq!(reply["ok"], json!(false), "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("is compatible with running store 1.0.0"),
        "{reply}"
    );
    assert_eq!(
        reply["advice"],
        json!({"advice": "start_type", "start_type": "warm"}),
        "{reply}"
    );
    assert!(region_alive(&mut conn, "REGION1"));
    assert!(!region_alive(&mut conn, "REGION1B"));
}

/// SIGTERM while a start is in progress: the agent finishes the start it had taken, stops
/// that region again, and exits; no region of the host is left in any store.
#[test]
fn a_start_racing_shutdown_leaves_no_region_in_any_store() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    run(&server, &["pac", "init", PAC]).success();
    let mut agent = spawn_agent(&server, "host1", "1.0.0", &["REGION1"], "none", &["-v"]);
    // A warm start finds no store yet: it waits for the one a cold start elsewhere creates.
    hold_starts(&mut conn);
    let race = start_command(&mut conn, "race-1", "REGION1", "warm");
    send_raw(&mut conn, "host1", &race);
    agent.wait_for_stderr_line(|l| l.contains("control race-1:"), SOON);
    agent.signal(SIGTERM);
    agent.wait_for_stderr_line(|l| l.contains("host agent host1 shutting down"), SOON);

    // The store comes now, so REGION1's start lands after the shutdown began.
    let mut r0 = cli(&server)
        .args([
            "region",
            "run",
            "R0",
            "--pac",
            PAC,
            "--host",
            "host0",
            "--product-version",
            "1.0.0",
            "--start-type",
            "cold",
            "--heartbeat-interval",
            "200ms",
            "--heartbeat-ttl",
            "1s",
        ])
        .spawn();
    r0.wait_for_stdout_line(|l| l.starts_with("Region R0 started"), SOON);

    let out = agent.wait_with_timeout(SOON);
    out.success()
        .stdout_contains("Region REGION1 started (warm) in store 1.0.0")
        .stdout_contains("Region REGION1 stopped");
    let reply = wait_reply(&mut conn, "race-1");
    assert_eq!(reply["ok"], json!(false), "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("shutting down"),
        "{reply}"
    );
    assert_eq!(members(&mut conn, "1.0.0"), ["R0"]);
    assert_eq!(
        region_field(&mut conn, "REGION1", "state").as_deref(),
        Some("stopped")
    );
    assert!(!region_alive(&mut conn, "REGION1"));
    r0.signal(SIGTERM);
    r0.wait_with_timeout(SOON).success();
}

/// An agent restarted with its original `--product-version` after an update runs what is
/// installed (its host record), warning that the flag is stale; a different
/// `--product-version` is a new installation and is taken as given.
#[test]
fn a_restarted_agent_runs_the_installed_version_over_a_stale_flag() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    let mut first = spawn_host1(&server, "cold", &[]);
    let url = server.url();
    let pacup = |args: &[&str]| {
        crate::support::pacup()
            .args(["--psor", &url])
            .args(args)
            .run()
    };
    for r in HOST1_REGIONS {
        pacup(&["region", "stop", r, "--pac", PAC]).success();
    }
    pacup(&[
        "host",
        "update",
        "host1",
        "--pac",
        PAC,
        "--product-version",
        "2.0.0",
    ])
    .success();
    first.signal(SIGKILL);
    let _ = first.wait_with_timeout(Duration::from_secs(5));

    // The supervisor's original command line: --product-version 1.0.0 --autostart cold.
    let ready = "Host agent host1 ready for PAC MyPAC (product 2.0.0";
    let mut second = agent_cmd(&url, "host1", "1.0.0", &HOST1_REGIONS, "cold", &[]).spawn();
    second.wait_for_stdout_line(|l| l.starts_with(ready), SOON);
    for r in HOST1_REGIONS {
        wait_until(SOON, &format!("{r} to run"), || region_alive(&mut conn, r));
        assert_eq!(
            region_field(&mut conn, r, "product_version").as_deref(),
            Some("2.0.0")
        );
    }
    second.signal(SIGTERM);
    let out = second.wait_with_timeout(SOON);
    out.success().stderr_contains(
        "host host1: --product-version 1.0.0 is stale: the host's record shows 2.0.0 installed",
    );

    // A new installation: another --product-version wins over the record.
    let mut third = agent_cmd(&url, "host1", "3.0.0", &HOST1_REGIONS, "none", &[]).spawn();
    third.wait_for_stdout_line(
        |l| l.starts_with("Host agent host1 ready for PAC MyPAC (product 3.0.0"),
        SOON,
    );
    wait_until(SOON, "the record to show 3.0.0", || {
        conn.hget::<_, _, Option<String>>(key("host:host1"), "product_version")
            .unwrap()
            .as_deref()
            == Some("3.0.0")
    });
    third.signal(SIGTERM);
    assert!(!third.wait_with_timeout(SOON).stderr.contains("is stale"));
}
