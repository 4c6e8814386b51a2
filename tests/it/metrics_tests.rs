//! `--metrics-addr` (issue 13 item 7): real `pacup` processes serve Prometheus text at
//! `/metrics`, scraped here over real HTTP (a hand-written HTTP/1.1 GET to 127.0.0.1).
//!
//! - a host agent with two regions: regions by state and store, jobs taken and completed
//!   after submitting jobs, client requests after a client run; the port closes once the
//!   agent exited;
//! - `region run`: its region, and PSOR errors counted while the PSOR refuses writes;
//! - `rollout run`: the rollout's state, current step and step durations while it runs;
//! - bad addresses: malformed (exit 2) and already bound (exit 2, one line naming the
//!   address and the OS reason), with nothing written to the PSOR.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use serde_json::json;

use crate::rollout_tests::{Env, PAC, RUN_TIMEOUT, STATE_TIMEOUT};
use crate::support::pac::{self, HOST1_REGIONS};
use crate::support::{free_port, pacup, wait_for, Cmd, RedisServer, SIGTERM};

/// A free loopback address for a metrics server.
fn metrics_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// One HTTP/1.1 GET: (status, headers, body).
fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String, String)> {
    let sa: SocketAddr = addr.parse().expect("socket address");
    let mut s = TcpStream::connect_timeout(&sa, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: pacup-test\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, head.to_string(), body.to_string()))
}

/// The metrics text, once the server answers 200.
fn scrape(addr: &str) -> Option<String> {
    match http_get(addr, "/metrics") {
        Ok((200, _, body)) => Some(body),
        _ => None,
    }
}

/// Sum of the samples of `name` whose labels include every `k="v"` of `with`.
fn sum(text: &str, name: &str, with: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let wanted = n == name
                && with
                    .iter()
                    .all(|(k, v)| labels.split(',').any(|p| p == format!("{k}=\"{v}\"")));
            wanted.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Waits until a scrape satisfies `cond`; returns that scrape.
#[track_caller]
fn wait_scrape(addr: &str, what: &str, cond: impl Fn(&str) -> bool) -> String {
    wait_for(STATE_TIMEOUT, what, || scrape(addr).filter(|t| cond(t)))
}

#[track_caller]
fn assert_types(text: &str, types: &[(&str, &str)]) {
    for (name, ty) in types {
        let line = format!("# TYPE {name} {ty}");
        assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
    }
}

fn dbsize(server: &RedisServer) -> u64 {
    redis::cmd("DBSIZE")
        .query(&mut server.conn())
        .expect("DBSIZE")
}

fn config_set(server: &RedisServer, key: &str, value: &str) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(key)
        .arg(value)
        .query(&mut server.conn())
        .expect("CONFIG SET");
}

/// Regions reported active in store 1.0.0.
fn active_regions(text: &str) -> f64 {
    sum(
        text,
        "pacup_regions",
        &[("state", "active"), ("store", "1.0.0")],
    )
}

fn agent_cmd(url: &str, metrics: &str) -> Cmd {
    let extra = [
        "--job-time",
        "5ms",
        "--metrics-addr",
        metrics,
        // The default heartbeats: what an agent runs with unless told otherwise.
        "--heartbeat-interval",
        "1s",
        "--heartbeat-ttl",
        "3s",
    ];
    pac::agent_cmd(url, "host1", "1.0.0", &HOST1_REGIONS, "cold", &extra)
}

fn region_cmd(url: &str, metrics: &str) -> Cmd {
    pacup().args([
        "--psor",
        url,
        "region",
        "run",
        "REGION1",
        "--pac",
        PAC,
        "--host",
        "host1",
        "--product-version",
        "1.0.0",
        "--start-type",
        "cold",
        "--metrics-addr",
        metrics,
    ])
}

#[test]
fn agent_serves_regions_jobs_and_client_requests() {
    let server = RedisServer::start();
    let url = server.url();
    let addr = metrics_addr();
    let mut agent = agent_cmd(&url, &addr).spawn();

    let text = wait_scrape(&addr, "both regions active in store 1.0.0", |t| {
        active_regions(t) == 2.0
    });
    assert_eq!(sum(&text, "pacup_regions", &[]), 2.0, "{text}");
    assert_eq!(
        sum(&text, "pacup_info", &[("command", "agent")]),
        1.0,
        "{text}"
    );
    assert_types(
        &text,
        &[("pacup_regions", "gauge"), ("pacup_info", "gauge")],
    );
    // An agent runs no rollout: no rollout series (a metric shows once it has a sample).
    assert!(!text.contains("pacup_rollout"), "{text}");
    let (status, head, _) = http_get(&addr, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert_eq!(http_get(&addr, "/").expect("GET /").0, 404);

    pacup()
        .args(["--psor", &url, "jobs", "submit", PAC, "--count", "40"])
        .run()
        .success();
    let text = wait_scrape(&addr, "40 jobs completed", |t| {
        sum(t, "pacup_jobs_completed_total", &[]) >= 40.0
    });
    assert!(sum(&text, "pacup_jobs_taken_total", &[]) >= 40.0, "{text}");
    assert_types(
        &text,
        &[
            ("pacup_jobs_taken_total", "counter"),
            ("pacup_jobs_completed_total", "counter"),
        ],
    );

    pacup()
        .args([
            "--psor", &url, "clients", "run", PAC, "--count", "10", "--rate", "50/s",
        ])
        .run()
        .success();
    let text = wait_scrape(&addr, "10 client requests served", |t| {
        sum(t, "pacup_client_requests_total", &[("result", "ok")]) >= 10.0
    });
    assert_eq!(
        sum(&text, "pacup_client_requests_total", &[("result", "error")]),
        0.0,
        "{text}"
    );

    agent.signal(SIGTERM);
    agent.wait_with_timeout(Duration::from_secs(30)).success();
    assert!(
        http_get(&addr, "/metrics").is_err(),
        "the metrics port still answers after the agent exited"
    );
}

#[test]
fn region_run_serves_its_region_and_counts_psor_errors() {
    let server = RedisServer::start();
    let url = server.url();
    let addr = metrics_addr();
    let mut region = region_cmd(&url, &addr).spawn();
    let text = wait_scrape(&addr, "REGION1 active", |t| active_regions(t) == 1.0);
    assert_eq!(
        sum(&text, "pacup_info", &[("command", "region run")]),
        1.0,
        "{text}"
    );
    assert_eq!(sum(&text, "pacup_psor_errors_total", &[]), 0.0, "{text}");

    // The PSOR refuses writes (out of memory): the region's heartbeats and job claims fail.
    config_set(&server, "maxmemory", "1");
    let seen = wait_for(STATE_TIMEOUT, "PSOR errors counted", || {
        scrape(&addr).filter(|t| sum(t, "pacup_psor_errors_total", &[("kind", "command")]) >= 1.0)
    });
    config_set(&server, "maxmemory", "0");
    assert_types(&seen, &[("pacup_psor_errors_total", "counter")]);

    region.signal(SIGTERM);
    region.wait_with_timeout(Duration::from_secs(30)).success();
    assert!(http_get(&addr, "/metrics").is_err(), "port still open");
}

#[test]
fn rollout_run_serves_state_current_step_and_step_durations() {
    let env = Env::start();
    let plan = env.plan("p.json", "compatible-patch.json", json!({}));
    let addr = metrics_addr();
    let run = env.spawn_run(&plan, &["--metrics-addr", &addr]);
    let text = wait_scrape(&addr, "a finished step in the metrics while running", |t| {
        sum(t, "pacup_rollout_state", &[("state", "running")]) == 1.0
            && sum(
                t,
                "pacup_rollout_step_duration_seconds_count",
                &[("step", "listener_off"), ("status", "done")],
            ) >= 1.0
    });
    assert_eq!(sum(&text, "pacup_rollout_state", &[]), 1.0, "{text}");
    assert_eq!(
        sum(&text, "pacup_rollout_state", &[("state", "done")]),
        0.0,
        "{text}"
    );
    assert!(
        sum(&text, "pacup_rollout_current_step", &[]) >= 1.0,
        "{text}"
    );
    assert_eq!(
        sum(
            &text,
            "pacup_rollout_step_duration_seconds_count",
            &[("step", "preflight"), ("status", "done")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        sum(&text, "pacup_info", &[("command", "rollout run")]),
        1.0,
        "{text}"
    );
    assert_types(
        &text,
        &[
            ("pacup_rollout_state", "gauge"),
            ("pacup_rollout_current_step", "gauge"),
            ("pacup_rollout_step_duration_seconds", "histogram"),
        ],
    );
    // The histogram has its +Inf bucket for the finished listener_off step.
    let inf = sum(
        &text,
        "pacup_rollout_step_duration_seconds_bucket",
        &[("step", "listener_off"), ("le", "+Inf")],
    );
    assert!(inf >= 1.0, "{text}");

    run.wait_with_timeout(RUN_TIMEOUT).success();
    assert!(http_get(&addr, "/metrics").is_err(), "port still open");
    assert_eq!(env.journal("state").as_deref(), Some("done"));
}

/// Every command that takes `--metrics-addr`, with `addr` (the plan file is valid).
fn metrics_commands(env_url: &str, plan: &str, addr: &str) -> Vec<Cmd> {
    vec![
        agent_cmd(env_url, addr),
        region_cmd(env_url, addr),
        pacup().args([
            "--psor",
            env_url,
            "rollout",
            "run",
            plan,
            "--metrics-addr",
            addr,
        ]),
        pacup().args([
            "--psor",
            env_url,
            "rollout",
            "resume",
            PAC,
            "--metrics-addr",
            addr,
        ]),
    ]
}

fn write_plan(dir: &tempfile::TempDir) -> String {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/plans/compatible-patch.json");
    let dst = dir.path().join("plan.json");
    std::fs::copy(src, &dst).expect("copy plan");
    dst.display().to_string()
}

#[test]
fn malformed_metrics_address_is_invalid_input_and_writes_nothing() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let plan = write_plan(&dir);
    for bad in [
        "127.0.0.1",
        "localhost:9187",
        "127.0.0.1:0",
        "127.0.0.1:99999",
    ] {
        for cmd in metrics_commands(&server.url(), &plan, bad) {
            let out = cmd.run();
            out.code(2)
                .stderr_contains("invalid metrics address")
                .stderr_contains("IP:PORT");
        }
    }
    assert_eq!(dbsize(&server), 0, "a refused command wrote to the PSOR");
}

#[test]
fn metrics_address_in_use_names_address_and_os_reason_exit_2() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let plan = write_plan(&dir);
    let held = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = held.local_addr().expect("local addr").to_string();
    for cmd in metrics_commands(&server.url(), &plan, &addr) {
        let out = cmd.timeout(Duration::from_secs(20)).run();
        out.code(2);
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(
            lines,
            [format!(
                "error: cannot serve metrics on {addr}: Address already in use (os error 98)"
            )],
            "stderr: {}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "stdout: {}", out.stdout);
    }
    assert_eq!(dbsize(&server), 0, "a refused command wrote to the PSOR");
}
