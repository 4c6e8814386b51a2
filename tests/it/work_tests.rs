//! Batch jobs and client transactions as users audit them: honest duplicate counting, the
//! completion gap, the JSON documents of `jobs submit`, `jobs stats` and `clients run`, and
//! refused input that must not touch the PSOR.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::support::pac::*;
use crate::support::state::*;
use crate::support::work::*;
use crate::support::{wait_until, RedisServer, SIGTERM};

fn keys_of(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

/// A job held longer than `--reclaim-idle` by a live region is taken over by an idle one and
/// so runs twice: it still has one result and counts once as completed, and the extra run is
/// counted as a duplicate (runs = completed + duplicates).
#[test]
fn a_job_run_twice_records_one_result_and_counts_a_duplicate() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    let regions = HOST1_REGIONS;
    let mut agent = spawn_host1(
        &server,
        "cold",
        &["--job-time", "600ms", "--reclaim-idle", "150ms"],
    );
    // One job at a time: one region runs it, the idle one takes it over after 150 ms and
    // runs it again; the first to finish records the result.
    for i in 1..=2 {
        submit(&server, 1);
        wait_until(
            SOON,
            &format!("job {i} to complete and be run again"),
            || {
                let s = stats(&server);
                n(&s, "completed") == i && n(&s, "duplicates") == i
            },
        );
    }
    // A graceful stop lets any run still in hand finish, so the counts are final.
    agent.signal(SIGTERM);
    agent.wait_with_timeout(SOON).success();
    let s = stats(&server);
    assert_eq!(
        (n(&s, "completed"), n(&s, "duplicates"), n(&s, "pending")),
        (2, 2, 0),
        "{s}"
    );
    assert_eq!(job_results(&mut conn).len(), 2, "one result per job");
    assert_eq!(
        runs(&mut conn, &regions),
        2 + 2,
        "every run is counted: {s}"
    );
    let by: u64 = s["by_region"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(by, 2, "by_region counts first completions only: {s}");
    assert_eq!(pending_entries(&mut conn), 0);
}

/// `max_completion_gap_ms` is the longest time jobs waited with none completing, counting
/// a gap still going on; it survives the end of the gap.
#[test]
fn the_completion_gap_measures_time_with_jobs_waiting_and_none_completing() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    let _agent = spawn_agent(&server, "host1", "1.0.0", &["REGION1"], "cold", &[]);
    submit(&server, 5);
    let s = wait_all_done(&server, 5, SOON);
    assert!(n(&s, "max_completion_gap_ms") < 1000, "{s}");

    run(&server, &["region", "stop", "REGION1", "--pac", PAC]).success();
    submit(&server, 3);
    wait_until(SOON, "the gap of waiting jobs to pass 800 ms", || {
        let s = stats(&server);
        n(&s, "pending") == 3 && n(&s, "max_completion_gap_ms") >= 800
    });
    start_through_agent(&server, "REGION1", "warm").success();
    assert!(region_alive(&mut conn, "REGION1"));
    let s = wait_all_done(&server, 8, SOON);
    assert!(n(&s, "max_completion_gap_ms") >= 800, "{s}");
    // Idle time with nothing waiting is no gap.
    let before = n(&s, "max_completion_gap_ms");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(n(&stats(&server), "max_completion_gap_ms"), before);
}

/// The JSON documents users script against, field for field.
#[test]
fn jobs_and_clients_print_one_stable_json_document() {
    let server = RedisServer::start();
    let _agent = spawn_host1(&server, "cold", &[]);
    // Before anything was submitted the stats are zeros, not an error (before the PAC
    // exists they are an error, like every command's on a missing PAC).
    let empty = stats(&server);
    assert_eq!(
        empty,
        serde_json::json!({"pac": PAC, "submitted": 0, "completed": 0, "pending": 0, "duplicates": 0,
                           "by_region": {}, "max_completion_gap_ms": 0, "transactions": 0,
                           "transaction_duplicates": 0})
    );
    let out = run(&server, &["jobs", "submit", PAC, "--count", "7", "--json"]);
    out.success();
    assert_eq!(
        out.json(),
        serde_json::json!({"pac": PAC, "submitted": 7, "first_job": 1, "last_job": 7})
    );
    let out = run(
        &server,
        &[
            "jobs", "submit", PAC, "--count", "3", "--rate", "100/s", "--json",
        ],
    );
    out.success();
    assert_eq!(
        out.json(),
        serde_json::json!({"pac": PAC, "submitted": 3, "first_job": 8, "last_job": 10})
    );
    let s = wait_all_done(&server, 10, SOON);
    assert_eq!(
        keys_of(&s),
        set(&[
            "pac",
            "submitted",
            "completed",
            "pending",
            "duplicates",
            "by_region",
            "max_completion_gap_ms",
            "transactions",
            "transaction_duplicates",
        ])
    );

    let mut conn = server.conn();
    for r in ["REGION1", "REGION1B"] {
        wait_until(SOON, &format!("{r}'s listener to be on"), || {
            region_field(&mut conn, r, "listener").as_deref() == Some("on")
        });
    }
    let out = run(
        &server,
        &[
            "clients", "run", PAC, "--count", "20", "--rate", "200/s", "--json",
        ],
    );
    out.success();
    let report = out.json();
    assert_eq!(
        keys_of(&report),
        set(&[
            "pac",
            "sent",
            "ok",
            "failed",
            "retried",
            "by_region",
            "elapsed_ms"
        ])
    );
    assert_eq!(
        (n(&report, "sent"), n(&report, "ok"), n(&report, "failed")),
        (20, 20, 0),
        "{report}"
    );
    let served: u64 = report["by_region"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(served, 20, "{report}");
    assert_eq!(
        report["by_region"].as_object().unwrap().len(),
        2,
        "round robin over both regions: {report}"
    );
    let s = stats(&server);
    assert_eq!(
        (n(&s, "transactions"), n(&s, "transaction_duplicates")),
        (20, 0),
        "{s}"
    );

    // Nobody listening: every transaction fails; the report is still printed, exit 1.
    for r in ["REGION1", "REGION1B"] {
        run(&server, &["region", "listener", r, "off", "--pac", PAC]).success();
    }
    let out = run(
        &server,
        &[
            "clients",
            "run",
            PAC,
            "--count",
            "2",
            "--rate",
            "50/s",
            "--tx-timeout",
            "200ms",
            "--json",
        ],
    );
    out.code(1)
        .stderr_contains("2 client transactions could not be served");
    let report = out.json();
    assert_eq!(
        (n(&report, "sent"), n(&report, "ok"), n(&report, "failed")),
        (2, 0, 2),
        "{report}"
    );
}

/// Malformed counts, rates and durations are usage errors (exit 2) refused before anything
/// is written.
#[test]
fn malformed_work_input_is_refused_before_anything_is_written() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    let _agent = spawn_agent(&server, "host1", "1.0.0", &["REGION1"], "cold", &[]);
    submit(&server, 2);
    wait_all_done(&server, 2, SOON);
    let before = psor_state(&mut conn);
    let cases: &[(&[&str], &str)] = &[
        (&["jobs", "submit", PAC, "--count", "0"], "--count"),
        (&["jobs", "submit", PAC, "--count=-3"], "--count"),
        (
            &["jobs", "submit", PAC, "--count", "5", "--rate", "0"],
            "--rate",
        ),
        (
            &["jobs", "submit", PAC, "--count", "5", "--rate=-2/s"],
            "--rate",
        ),
        (
            &["jobs", "submit", PAC, "--rate", "5/s", "--duration", "soon"],
            "--duration",
        ),
        (&["jobs", "submit", PAC, "--duration", "1s"], "--rate"),
        (&["jobs", "submit", PAC], "--count"),
        (
            &["jobs", "submit", "TOOLONGPAC", "--count", "1"],
            "PAC name",
        ),
        (&["jobs", "stats", "bad pac"], "PAC name"),
        (
            &["clients", "run", PAC, "--count", "5", "--rate", "0"],
            "--rate",
        ),
        (
            &["clients", "run", PAC, "--count", "5", "--duration", "1s"],
            "--duration",
        ),
        (
            &["clients", "run", PAC, "--duration", "later"],
            "--duration",
        ),
    ];
    for (args, message) in cases {
        run(&server, args).code(2).stderr_contains(message);
        assert_psor_unchanged(&mut conn, &before, &format!("`pacup {}`", args.join(" ")));
    }
    assert_eq!(n(&stats(&server), "submitted"), 2);
}

/// A PSOR stall longer than `--command-timeout` while a region records a job: the region
/// retries the completion, and every queued attempt reaches Redis after the stall. No job ran
/// twice, so `duplicates` should stay 0 (and `jobs_done` should equal the jobs run).
#[test]
fn a_retried_completion_is_not_counted_as_a_duplicate_run() {
    let server = RedisServer::start();
    let _agent = spawn_agent(
        &server,
        "host1",
        "1.0.0",
        &["REGION1"],
        "cold",
        &[
            "--command-timeout",
            "500ms",
            "--job-time",
            "100ms",
            "--reclaim-idle",
            "3s",
        ],
    );
    submit(&server, 20);
    wait_until(SOON, "REGION1 to be working", || {
        n(&stats(&server), "completed") >= 2
    });
    server.pause();
    std::thread::sleep(Duration::from_millis(2500));
    server.resume();
    let s = wait_all_done(&server, 20, Duration::from_secs(20));
    let mut conn = server.conn();
    assert_eq!(job_results(&mut conn).len(), 20, "one result per job");
    // A single region and a reclaim time longer than the stall: every job ran exactly once.
    assert_eq!(n(&s, "duplicates"), 0, "phantom duplicates: {s}");
    assert_eq!(
        runs(&mut conn, &["REGION1"]),
        20,
        "jobs_done counts retries as runs: {s}"
    );
}
