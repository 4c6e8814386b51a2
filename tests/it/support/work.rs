//! The workload as the tests see it: job statistics, results, jobs in hand.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use redis::Commands;
use serde_json::Value;

use super::pac::{key, region_field, run, PAC};
use super::{RedisServer, Running};

/// `pacup jobs stats P --json`.
pub(crate) fn stats(server: &RedisServer) -> Value {
    let out = run(server, &["jobs", "stats", PAC, "--json"]);
    out.success();
    out.json()
}

/// A counter of a stats document (0 when absent).
pub(crate) fn n(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or(0)
}

/// Jobs completed by `region` according to `jobs stats`.
pub(crate) fn by_region(v: &Value, region: &str) -> u64 {
    v["by_region"][region].as_u64().unwrap_or(0)
}

/// Submits `count` jobs at once; returns (first, last) job id.
pub(crate) fn submit(server: &RedisServer, count: u64) -> (u64, u64) {
    let out = run(
        server,
        &[
            "jobs",
            "submit",
            PAC,
            "--count",
            &count.to_string(),
            "--json",
        ],
    );
    out.success();
    let v = out.json();
    assert_eq!(n(&v, "submitted"), count, "{out}");
    (n(&v, "first_job"), n(&v, "last_job"))
}

/// Waits until `submitted` jobs were submitted and none is pending; returns the stats.
pub(crate) fn wait_all_done(server: &RedisServer, submitted: u64, timeout: Duration) -> Value {
    let start = Instant::now();
    loop {
        let last = stats(server);
        if n(&last, "submitted") == submitted && n(&last, "pending") == 0 {
            return last;
        }
        if start.elapsed() > timeout {
            panic!("not every one of {submitted} jobs completed within {timeout:?}: {last}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The PSOR's clock (ms), the clock results and idle times are measured with.
pub(crate) fn redis_now_ms(conn: &mut redis::Connection) -> u64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query(conn).unwrap();
    s * 1000 + us / 1000
}

/// One recorded job result (`pac:{P}:ds:results`, value `REGION STORE TS_MS STREAM_ID`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobResult {
    pub region: String,
    pub store: String,
    pub ts: u64,
    /// The stream entry the recording region ran.
    pub entry: String,
}

/// Every recorded result, by job id.
pub(crate) fn job_results(conn: &mut redis::Connection) -> BTreeMap<u64, JobResult> {
    let raw: HashMap<String, String> = conn.hgetall(key("ds:results")).unwrap();
    raw.into_iter()
        .map(|(job, v)| {
            let parts: Vec<&str> = v.split(' ').collect();
            assert_eq!(parts.len(), 4, "malformed result {job} => {v:?}");
            let r = JobResult {
                region: parts[0].to_string(),
                store: parts[1].to_string(),
                ts: parts[2].parse().unwrap(),
                entry: parts[3].to_string(),
            };
            (job.parse().unwrap(), r)
        })
        .collect()
}

/// Jobs a region holds (delivered, not yet acknowledged): (stream entry id, idle ms).
pub(crate) fn in_hand(conn: &mut redis::Connection, region: &str) -> Vec<(String, u64)> {
    let rows: redis::RedisResult<Vec<(String, String, u64, u64)>> = redis::cmd("XPENDING")
        .arg(key("ds:jobs"))
        .arg("regions")
        .arg("-")
        .arg("+")
        .arg(100)
        .arg(region)
        .query(conn);
    match rows {
        Ok(rows) => rows
            .into_iter()
            .map(|(id, _, idle, _)| (id, idle))
            .collect(),
        // No job was ever submitted: no stream, no group, nothing in hand.
        Err(e) if e.code() == Some("NOGROUP") => Vec::new(),
        Err(e) => panic!("XPENDING: {e}"),
    }
}

/// Every job delivered and not acknowledged, whoever holds it.
pub(crate) fn pending_entries(conn: &mut redis::Connection) -> u64 {
    let v: redis::Value = redis::cmd("XPENDING")
        .arg(key("ds:jobs"))
        .arg("regions")
        .query(conn)
        .unwrap();
    match v {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::Int(n)) => *n as u64,
            other => panic!("unexpected XPENDING summary {other:?}"),
        },
        other => panic!("unexpected XPENDING summary {other:?}"),
    }
}

/// The job id carried by stream entry `entry`.
pub(crate) fn job_of_entry(conn: &mut redis::Connection, entry: &str) -> u64 {
    let r: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(key("ds:jobs"))
        .arg(entry)
        .arg(entry)
        .query(conn)
        .unwrap();
    let e = r
        .ids
        .first()
        .unwrap_or_else(|| panic!("no stream entry {entry}"));
    let job: String = e.get("job").expect("entry has a job field");
    job.parse().unwrap()
}

/// Sum of `jobs_done` over region records: every run of a job, first or repeated.
pub(crate) fn runs(conn: &mut redis::Connection, regions: &[&str]) -> u64 {
    regions
        .iter()
        .map(|r| region_field(conn, r, "jobs_done").map_or(0, |v| v.parse::<u64>().unwrap()))
        .sum()
}

/// Waits for a background `pacup ... --json` to finish with exit 0 and returns its JSON.
pub(crate) fn finish_json(p: Running, timeout: Duration) -> Value {
    let out = p.wait_with_timeout(timeout);
    out.success();
    out.json()
}
