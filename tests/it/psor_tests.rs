//! PSOR core (layout, rules, exit codes): the documented walk-through, every start-type and admin
//! rule of section 3, the atomicity races, exit codes, JSON documents and backup/restore.
//!
//! Every test drives the real `pacup` / `caspac` binaries against its own `redis-server` and
//! checks what a user sees: keys in Redis, exit codes, stdout and stderr. Regions run with
//! short heartbeats so liveness expiry takes about a second.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Commands;

use crate::support::region::{
    region_cmd, region_run, started_prefix, RegionRun as Region, START, STOP,
};
use crate::support::{
    caspac, free_port, pacup, wait_for, wait_until, Cmd, Output, RedisServer, Running, SIGKILL,
    SIGTERM,
};

/// Bound for a heartbeat (TTL 1 s) to expire after a region died.
const EXPIRY: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------

/// `pacup --psor <server> ...`
fn pac_cmd(s: &RedisServer) -> Cmd {
    pacup().args(["--psor", &s.url()])
}

/// [`region_cmd`] against any PSOR URL.
fn region_cmd_url(url: &str, pac: &str, region: &str, host: &str, v: &str, start: &str) -> Cmd {
    region_run(pacup().args(["--psor", url]), pac, region, host, v, start)
}

/// Spawns a region with short heartbeats and waits for its start line.
fn start_region(
    s: &RedisServer,
    pac: &str,
    region: &str,
    host: &str,
    v: &str,
    start: &str,
) -> (Region, String) {
    Region::start(s, pac, region, host, v, start)
}

/// SIGTERM (once settled), and the stop must be graceful (exit 0).
fn stop_region(r: Region) -> Output {
    r.stop()
}

fn keys(c: &mut redis::Connection, pattern: &str) -> BTreeSet<String> {
    let v: Vec<String> = c.keys(pattern).unwrap();
    v.into_iter().collect()
}

fn stores(c: &mut redis::Connection, pac: &str) -> Vec<String> {
    c.zrange(format!("pac:{{{pac}}}:stores"), 0, -1).unwrap()
}

fn members(c: &mut redis::Connection, pac: &str, v: &str) -> BTreeSet<String> {
    let m: Vec<String> = c
        .smembers(format!("pac:{{{pac}}}:store:{v}:members"))
        .unwrap();
    m.into_iter().collect()
}

fn store_mode(c: &mut redis::Connection, pac: &str, v: &str) -> Option<String> {
    c.hget(format!("pac:{{{pac}}}:store:{v}:meta"), "mode")
        .unwrap()
}

fn region_field(c: &mut redis::Connection, pac: &str, r: &str, field: &str) -> Option<String> {
    c.hget(format!("pac:{{{pac}}}:region:{r}"), field).unwrap()
}

fn alive(c: &mut redis::Connection, pac: &str, r: &str) -> bool {
    c.exists(format!("pac:{{{pac}}}:region:{r}:alive")).unwrap()
}

fn set<const N: usize>(items: [&str; N]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Everything a refused admin action must leave untouched: the PAC record, the store list,
/// each store's record and members, the pending deletions and the event count. (Region
/// records are left out: live regions rewrite their heartbeat time.)
fn fingerprint(c: &mut redis::Connection, pac: &str) -> String {
    let mut out = String::new();
    let meta: Vec<(String, String)> = c.hgetall(format!("pac:{{{pac}}}:meta")).unwrap();
    out.push_str(&format!("meta {meta:?}\n"));
    for v in stores(c, pac) {
        let mut m: Vec<(String, String)> =
            c.hgetall(format!("pac:{{{pac}}}:store:{v}:meta")).unwrap();
        m.sort();
        out.push_str(&format!(
            "store {v} {m:?} members {:?}\n",
            members(c, pac, &v)
        ));
    }
    let removing: BTreeSet<String> = c
        .smembers::<_, Vec<String>>(format!("pac:{{{pac}}}:removing"))
        .unwrap()
        .into_iter()
        .collect();
    let events: u64 = c.xlen(format!("pac:{{{pac}}}:events")).unwrap();
    out.push_str(&format!("removing {removing:?} events {events}\n"));
    out
}

/// `caspac -aSetMode=<action>`: store `changed.0` is now in mode `changed.1` and `region`
/// prints `heard` (the change reached it).
fn caspac_set_mode(
    sor: &str,
    c: &mut redis::Connection,
    action: &str,
    changed: (&str, &str),
    region: &mut Running,
    heard: &str,
) {
    caspac()
        .args([&format!("-aSetMode={action}"), sor])
        .run()
        .success()
        .stdout_contains(changed.0);
    assert_eq!(
        store_mode(c, "MyPAC", changed.0).as_deref(),
        Some(changed.1)
    );
    region.wait_for_stdout_line(|l| l == heard, START);
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    free_port()
}

// ---------------------------------------------------------------------------------------
// 1. the documented walk-through
// ---------------------------------------------------------------------------------------

/// The vendor's documented incompatible upgrade process, with its `caspac` command lines
/// verbatim, from InitPac to RemOldPAC.
#[test]
fn documented_walkthrough_with_caspac() {
    let s = RedisServer::start();
    let sor = format!("-sredis,127.0.0.1:{}", s.port());
    let mut c = s.conn();

    // The shared datastore already holds data: InitPac must keep it.
    let _: () = c.set("pac:{MyPAC}:ds:jobs", "queued work").unwrap();
    let _: () = c.hset("pac:{MyPAC}:ds:results", "job1", "done").unwrap();

    caspac()
        .args(["-aInitPac=MyPAC", &sor])
        .run()
        .success()
        .stdout_contains("MyPAC");
    assert!(c.exists::<_, bool>("pac:{MyPAC}:meta").unwrap());
    assert_eq!(
        c.get::<_, String>("pac:{MyPAC}:ds:jobs").unwrap(),
        "queued work"
    );
    assert_eq!(
        c.hget::<_, _, String>("pac:{MyPAC}:ds:results", "job1")
            .unwrap(),
        "done"
    );

    // Region 1 on host 1 and Region 2 on host 2, both at 1.0.0.
    let (r1, line) = start_region(&s, "MyPAC", "REGION1", "host1", "1.0.0", "cold");
    assert_eq!(
        line,
        "Region REGION1 started (cold) in store 1.0.0, mode running"
    );
    let (mut r2, line) = start_region(&s, "MyPAC", "REGION2", "host2", "1.0.0", "warm");
    assert_eq!(
        line,
        "Region REGION2 started (warm) in store 1.0.0, mode running"
    );
    assert_eq!(
        members(&mut c, "MyPAC", "1.0.0"),
        set(["REGION1", "REGION2"])
    );

    // Steps 1-4: stop Region 1 gracefully, "update" host 1.
    stop_region(r1);

    // Step 5: CheckCompat says incompatible (exit 3).
    let out = caspac()
        .args(["-aCheckCompat=MyPAC", &sor])
        .env("PACUP_PRODUCT_VERSION", "2.0.0")
        .run();
    out.code(3).stdout_contains("INCOMPATIBLE");
    // ...while a patch release would be compatible (exit 0).
    caspac()
        .args(["-aCheckCompat=MyPAC", &sor])
        .env("PACUP_PRODUCT_VERSION", "1.0.7")
        .run()
        .success()
        .stdout_contains("COMPATIBLE");

    // Step 6: Region 1 starts in upgrade mode: a new store beside the old one.
    let (mut r1, line) = start_region(&s, "MyPAC", "REGION1", "host1", "2.0.0", "upgrade");
    assert_eq!(
        line,
        "Region REGION1 started (upgrade) in store 2.0.0, mode upgrade"
    );
    assert_eq!(stores(&mut c, "MyPAC"), ["1.0.0", "2.0.0"]);
    assert_eq!(
        store_mode(&mut c, "MyPAC", "2.0.0").as_deref(),
        Some("upgrade")
    );
    assert!(c
        .exists::<_, bool>("pac:{MyPAC}:store:2.0.0:res:PCT")
        .unwrap());

    // Step 10: SetMode=Running: the new PAC takes batch work; its region hears of it.
    let heard = "Region REGION1: store mode changed from upgrade to running";
    caspac_set_mode(
        &sor,
        &mut c,
        "Running",
        ("2.0.0", "running"),
        &mut r1,
        heard,
    );
    // Step 12: SetMode=Quiesce: the old PAC stops taking batch work.
    let heard = "Region REGION2: store mode changed from running to quiesce";
    caspac_set_mode(
        &sor,
        &mut c,
        "Quiesce",
        ("1.0.0", "quiesce"),
        &mut r2,
        heard,
    );

    // Step 14 too early: Region 2 still runs in the old store, so RemOldPAC is refused
    // and names it.
    let out = caspac().args(["-aRemOldPAC=MyPAC", &sor]).run();
    out.code(1).stderr_contains("REGION2");
    assert_eq!(stores(&mut c, "MyPAC"), ["1.0.0", "2.0.0"]);
    assert!(!keys(&mut c, "pac:{MyPAC}:store:1.0.0:*").is_empty());

    // Step 13: shut Region 2 down; then RemOldPAC deletes the old store.
    stop_region(r2);
    caspac()
        .args(["-aRemOldPAC=MyPAC", &sor])
        .run()
        .success()
        .stdout_contains("1.0.0");
    assert_eq!(
        keys(&mut c, "pac:{MyPAC}:store:1.0.0:*"),
        BTreeSet::new(),
        "RemOldPAC left keys of the old store"
    );
    assert_eq!(stores(&mut c, "MyPAC"), ["2.0.0"]);
    assert_eq!(members(&mut c, "MyPAC", "2.0.0"), set(["REGION1"]));
    assert!(c
        .exists::<_, bool>("pac:{MyPAC}:store:2.0.0:res:PCT")
        .unwrap());
    assert_eq!(
        c.get::<_, String>("pac:{MyPAC}:ds:jobs").unwrap(),
        "queued work"
    );

    // Host 2 upgraded: Region 2 warm-starts into the new PAC.
    let (r2, line) = start_region(&s, "MyPAC", "REGION2", "host2", "2.0.0", "warm");
    assert_eq!(
        line,
        "Region REGION2 started (warm) in store 2.0.0, mode running"
    );
    assert!(r1.is_running(), "Region 1 must have kept running");
    stop_region(r2);
    stop_region(r1);
}

// ---------------------------------------------------------------------------------------
// 2. The PSOR rules (docs/PSOR.md sections 3-8), rule by rule
// ---------------------------------------------------------------------------------------

#[test]
fn init_pac_resets_stores_and_regions_but_keeps_the_datastore() {
    let s = RedisServer::start();
    let mut c = s.conn();
    let (r1, _) = start_region(&s, "MyPAC", "R1", "h1", "1.0.0", "cold");
    let (r2, _) = start_region(&s, "MyPAC", "R2", "h2", "2.0.0", "upgrade");
    stop_region(r2);
    stop_region(r1);
    let _: () = c.set("pac:{MyPAC}:ds:jobs", "kept").unwrap();
    let _: () = c.set("pac:{Other}:meta", "not ours").unwrap();
    let _: () = c.set("unrelated", "not ours").unwrap();

    pac_cmd(&s).args(["pac", "init", "MyPAC"]).run().success();

    assert_eq!(stores(&mut c, "MyPAC"), Vec::<String>::new());
    assert_eq!(keys(&mut c, "pac:{MyPAC}:store:*"), BTreeSet::new());
    assert_eq!(keys(&mut c, "pac:{MyPAC}:region*"), BTreeSet::new());
    assert!(c.exists::<_, bool>("pac:{MyPAC}:meta").unwrap());
    assert_eq!(c.get::<_, String>("pac:{MyPAC}:ds:jobs").unwrap(), "kept");
    assert_eq!(c.get::<_, String>("pac:{Other}:meta").unwrap(), "not ours");
    assert_eq!(c.get::<_, String>("unrelated").unwrap(), "not ours");
    let status = pac_cmd(&s).args(["pac", "status", "MyPAC", "--json"]).run();
    status.success();
    let doc = status.json();
    assert_eq!(doc["stores"], serde_json::json!([]), "{doc}");
    assert_eq!(doc["regions"], serde_json::json!([]), "{doc}");
}

/// InitPac "deletes every `pac:{P}:*` key except `pac:{P}:ds:*`".
#[test]
fn init_pac_deletes_every_key_but_the_datastore() {
    let s = RedisServer::start();
    let mut c = s.conn();
    pac_cmd(&s).args(["pac", "init", "MyPAC"]).run().success();
    // What a rollout and a host agent leave behind (rollout journal, control stream,
    // taken-command ids, a pending reply), with the types the crate gives them.
    let _: () = c
        .hset("pac:{MyPAC}:rollout:current", "state", "paused")
        .unwrap();
    let _: () = c.lpush("pac:{MyPAC}:rollout:history", "{}").unwrap();
    let _: String = c
        .xadd("pac:{MyPAC}:host:h1:ctl", "*", &[("cmd", "{}")])
        .unwrap();
    let _: () = c.hset("pac:{MyPAC}:host:h1:done", "1-0", "1").unwrap();
    let _: () = c.lpush("pac:{MyPAC}:reply:42", "{}").unwrap();
    let _: () = c.set("pac:{MyPAC}:ds:jobs", "kept").unwrap();
    pac_cmd(&s).args(["pac", "init", "MyPAC"]).run().success();
    let left: BTreeSet<String> = keys(&mut c, "pac:{MyPAC}:*")
        .into_iter()
        // The new PAC record and its audit trail (the init event) are fine.
        .filter(|k| k != "pac:{MyPAC}:meta" && k != "pac:{MyPAC}:events")
        .collect();
    assert_eq!(left, set(["pac:{MyPAC}:ds:jobs"]));
}

#[test]
fn cold_start_alone_creates_a_running_store_and_loads_resources() {
    let s = RedisServer::start();
    let mut c = s.conn();
    // No InitPac: a cold start on an empty PSOR creates the PAC.
    let (r1, line) = start_region(&s, "MyPAC", "R1", "h1", "1.0.0", "cold");
    assert_eq!(
        line,
        "Region R1 started (cold) in store 1.0.0, mode running"
    );
    assert_eq!(stores(&mut c, "MyPAC"), ["1.0.0"]);
    assert_eq!(
        store_mode(&mut c, "MyPAC", "1.0.0").as_deref(),
        Some("running")
    );
    assert_eq!(members(&mut c, "MyPAC", "1.0.0"), set(["R1"]));
    let meta: std::collections::HashMap<String, String> =
        c.hgetall("pac:{MyPAC}:store:1.0.0:meta").unwrap();
    assert_eq!(meta.get("version").map(String::as_str), Some("1.0.0"));
    assert_eq!(meta.get("created_by").map(String::as_str), Some("R1"));
    assert_eq!(meta.get("bitness").map(String::as_str), Some("64"));
    assert!(meta.contains_key("os") && meta.contains_key("created_at"));
    for kind in ["PCT", "PPT", "FCT", "DCT", "TST"] {
        let n: u64 = c
            .hlen(format!("pac:{{MyPAC}}:store:1.0.0:res:{kind}"))
            .unwrap();
        assert!(n > 0, "no {kind} resources loaded");
    }
    let tx01: String = c.hget("pac:{MyPAC}:store:1.0.0:res:PCT", "TX01").unwrap();
    assert!(tx01.contains("ACCT01"), "{tx01}");
    assert_eq!(
        region_field(&mut c, "MyPAC", "R1", "state").as_deref(),
        Some("active")
    );
    assert_eq!(
        region_field(&mut c, "MyPAC", "R1", "store").as_deref(),
        Some("1.0.0")
    );
    assert!(alive(&mut c, "MyPAC", "R1"));
    // Every key written is inside the PAC's hash-tagged prefix.
    let all = keys(&mut c, "*");
    assert!(all.iter().all(|k| k.starts_with("pac:{MyPAC}:")), "{all:?}");
    stop_region(r1);

    // With nothing alive, the next cold start resets the PAC: an earlier store of another
    // version disappears and the new one gets the region's own resource file.
    let dir = tempfile::tempdir().unwrap();
    let res = dir.path().join("res.json");
    std::fs::write(&res, r#"{"PCT": {"NEWTX": {"program": "NEWPGM"}}}"#).unwrap();
    let (r, line) = Region::spawn(
        s.client(),
        region_cmd(&s, "MyPAC", "R2", "h2", "3.1.0", "cold")
            .arg("--resources")
            .arg(&res),
        "MyPAC",
        "R2",
    );
    assert_eq!(
        line,
        "Region R2 started (cold) in store 3.1.0, mode running"
    );
    assert_eq!(stores(&mut c, "MyPAC"), ["3.1.0"]);
    assert_eq!(keys(&mut c, "pac:{MyPAC}:store:1.0.0:*"), BTreeSet::new());
    let pct: Vec<String> = c.hkeys("pac:{MyPAC}:store:3.1.0:res:PCT").unwrap();
    assert_eq!(pct, ["NEWTX"]);
    assert!(!c
        .exists::<_, bool>("pac:{MyPAC}:store:3.1.0:res:PPT")
        .unwrap());
    stop_region(r);
}

#[test]
fn cold_start_with_a_live_region_becomes_warm_with_the_warning() {
    let s = RedisServer::start();
    let mut c = s.conn();
    let (r1, _) = start_region(&s, "MyPAC", "R1", "h1", "1.0.0", "cold");
    let created: String = c.hget("pac:{MyPAC}:meta", "created_at").unwrap();

    let (r2, line) = start_region(&s, "MyPAC", "R2", "h2", "1.0.3", "cold");
    assert_eq!(
        line,
        "Region R2 started (warm) in store 1.0.0, mode running"
    );
    wait_until(START, "the cold-to-warm warning on stderr", || {
        r2.stderr_so_far().contains(
            "warning: Region R2 initializing in Warm startup mode because PAC MyPAC is already active",
        )
    });
    // Nothing was wiped: same PAC record, same store, R1 still a live member.
    assert_eq!(
        c.hget::<_, _, String>("pac:{MyPAC}:meta", "created_at")
            .unwrap(),
        created
    );
    assert_eq!(stores(&mut c, "MyPAC"), ["1.0.0"]);
    assert_eq!(members(&mut c, "MyPAC", "1.0.0"), set(["R1", "R2"]));
    assert!(alive(&mut c, "MyPAC", "R1"));
    assert_eq!(
        region_field(&mut c, "MyPAC", "R2", "start_type").as_deref(),
        Some("warm")
    );

    // A cold start that would become warm but is incompatible is refused like a warm one.
    let out = region_cmd(&s, "MyPAC", "R3", "h3", "2.0.0", "cold").run();
    out.code(1).stderr_contains("--start-type upgrade");
    assert_eq!(stores(&mut c, "MyPAC"), ["1.0.0"]);
    assert_eq!(members(&mut c, "MyPAC", "1.0.0"), set(["R1", "R2"]));

    stop_region(r2);
    stop_region(r1);
}

#[test]
fn warm_start_rules() {
    let s = RedisServer::start();
    let mut c = s.conn();

    // No PAC at all: nothing to join.
    region_cmd(&s, "MyPAC", "R0", "h0", "1.0.0", "warm")
        .run()
        .code(1)
        .stderr_contains("MyPAC");
    // A PAC without a store: nothing to join either, and the refusal says what to do.
    pac_cmd(&s).args(["pac", "init", "MyPAC"]).run().success();
    region_cmd(&s, "MyPAC", "R0", "h0", "1.0.0", "warm")
        .run()
        .code(1)
        .stderr_contains("cold");
    assert_eq!(stores(&mut c, "MyPAC"), Vec::<String>::new());

    let (r1, _) = start_region(&s, "MyPAC", "R1", "h1", "1.0.0", "cold");
    let (r2, _) = start_region(&s, "MyPAC", "R2", "h2", "2.0.0", "upgrade");

    // Compatible with the upgrade-mode store: joins it (even though 1.0.0 is running).
    let (r3, line) = start_region(&s, "MyPAC", "R3", "h3", "2.0.4", "warm");
    assert_eq!(
        line,
        "Region R3 started (warm) in store 2.0.0, mode upgrade"
    );
    // Not compatible with the upgrade store, compatible with the running one: joins that.
    let (r4, line) = start_region(&s, "MyPAC", "R4", "h4", "1.0.9", "warm");
    assert_eq!(
        line,
        "Region R4 started (warm) in store 1.0.0, mode running"
    );
    // Compatible with neither: refused, naming the versions and suggesting an upgrade start.
    let out = region_cmd(&s, "MyPAC", "R5", "h5", "3.0.0", "warm").run();
    out.code(1)
        .stderr_contains("--start-type upgrade")
        .stderr_contains("2.0.0")
        .stderr_contains("1.0.0");
    // Same version, other bitness: refused too.
    // Not newer than the newest store either, so no upgrade start is suggested.
    let out = region_cmd(&s, "MyPAC", "R6", "h6", "1.0.0", "warm")
        .args(["--bitness", "32"])
        .run();
    out.code(1)
        .stderr_contains("32-bit")
        .stderr_contains("install a version compatible with the running store");

    assert_eq!(members(&mut c, "MyPAC", "2.0.0"), set(["R2", "R3"]));
    assert_eq!(members(&mut c, "MyPAC", "1.0.0"), set(["R1", "R4"]));
    assert_eq!(stores(&mut c, "MyPAC"), ["1.0.0", "2.0.0"]);
    assert!(!c.exists::<_, bool>("pac:{MyPAC}:region:R5").unwrap());
    for r in [r4, r3, r2, r1] {
        stop_region(r);
    }
}

#[test]
fn upgrade_start_rules() {
    let s = RedisServer::start();
    let mut c = s.conn();
    let (r1, _) = start_region(&s, "MyPAC", "R1", "h1", "1.0.0", "cold");

    // Compatible with the running store: refused, use warm.
    let out = region_cmd(&s, "MyPAC", "R2", "h2", "1.0.5", "upgrade").run();
    out.code(1).stderr_contains("--start-type warm");
    assert_eq!(stores(&mut c, "MyPAC"), ["1.0.0"]);

    // Incompatible: creates a store at its version in upgrade mode, with resources.
    let (r2, line) = start_region(&s, "MyPAC", "R2", "h2", "2.0.0", "upgrade");
    assert_eq!(
        line,
        "Region R2 started (upgrade) in store 2.0.0, mode upgrade"
    );
    assert_eq!(stores(&mut c, "MyPAC"), ["1.0.0", "2.0.0"]);
    assert_eq!(
        store_mode(&mut c, "MyPAC", "1.0.0").as_deref(),
        Some("running")
    );
    assert_eq!(
        store_mode(&mut c, "MyPAC", "2.0.0").as_deref(),
        Some("upgrade")
    );
    assert!(c
        .exists::<_, bool>("pac:{MyPAC}:store:2.0.0:res:FCT")
        .unwrap());

    // Another region of the same version joins that upgrade store (no second store).
    let (r3, line) = start_region(&s, "MyPAC", "R3", "h3", "2.0.0", "upgrade");
    assert_eq!(
        line,
        "Region R3 started (upgrade) in store 2.0.0, mode upgrade"
    );
    assert_eq!(stores(&mut c, "MyPAC"), ["1.0.0", "2.0.0"]);
    assert_eq!(members(&mut c, "MyPAC", "2.0.0"), set(["R2", "R3"]));

    // Another version while 2.0.0 is in upgrade mode: refused, naming 2.0.0.
    let out = region_cmd(&s, "MyPAC", "R4", "h4", "3.0.0", "upgrade").run();
    out.code(1).stderr_contains("2.0.0");
    assert_eq!(stores(&mut c, "MyPAC"), ["1.0.0", "2.0.0"]);
    assert_eq!(keys(&mut c, "pac:{MyPAC}:store:3.0.0:*"), BTreeSet::new());
    assert_eq!(members(&mut c, "MyPAC", "1.0.0"), set(["R1"]));

    for r in [r3, r2, r1] {
        stop_region(r);
    }
}

#[test]
fn graceful_stop_leaves_the_store_and_marks_the_region_stopped() {
    let s = RedisServer::start();
    let mut c = s.conn();
    let (r1, _) = start_region(&s, "MyPAC", "R1", "h1", "1.0.0", "cold");
    let (r2, _) = start_region(&s, "MyPAC", "R2", "h2", "1.0.0", "warm");
    assert_eq!(members(&mut c, "MyPAC", "1.0.0"), set(["R1", "R2"]));

    let out = stop_region(r2);
    assert!(out.stdout.contains("Region R2 stopped"), "{out}");
    assert_eq!(members(&mut c, "MyPAC", "1.0.0"), set(["R1"]));
    assert_eq!(
        region_field(&mut c, "MyPAC", "R2", "state").as_deref(),
        Some("stopped")
    );
    assert!(!alive(&mut c, "MyPAC", "R2"));
    // The store itself stays, and the other region is untouched.
    assert_eq!(stores(&mut c, "MyPAC"), ["1.0.0"]);
    assert!(alive(&mut c, "MyPAC", "R1"));
    let doc = pac_cmd(&s)
        .args(["pac", "status", "MyPAC", "--json"])
        .run()
        .json();
    let r2_doc = doc["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "R2")
        .cloned()
        .unwrap_or_else(|| panic!("R2 missing from {doc}"));
    assert_eq!(r2_doc["state"], "stopped", "{doc}");
    assert_eq!(r2_doc["alive"], false, "{doc}");

    // SIGINT is a graceful stop too.
    r1.settle();
    let mut r1 = r1.into_running();
    r1.signal(crate::support::SIGINT);
    r1.wait_with_timeout(STOP).success();
    assert_eq!(members(&mut c, "MyPAC", "1.0.0"), BTreeSet::new());
    assert_eq!(
        region_field(&mut c, "MyPAC", "R1", "state").as_deref(),
        Some("stopped")
    );
}

/// A region that has announced its start must stop gracefully on SIGTERM, however soon
/// the signal comes (an orchestrator may stop it right away). Before the fix, `region run`
/// installs its SIGTERM handler only after printing the start line, so an early SIGTERM
/// kills it outright: exit 143, still a member, heartbeat alive until it expires.
#[test]
fn sigterm_right_after_the_start_line_is_a_graceful_stop() {
    let s = RedisServer::start();
    let mut c = s.conn();
    for round in 0..20 {
        let pac = format!("T{round}");
        let mut r = region_cmd(&s, &pac, "R1", "h1", "1.0.0", "cold").spawn();
        r.wait_for_stdout_line(|l| l.starts_with("Region R1 started ("), START);
        r.signal(SIGTERM);
        let out = r.wait_with_timeout(STOP);
        out.success();
        assert_eq!(members(&mut c, &pac, "1.0.0"), BTreeSet::new(), "{out}");
        assert_eq!(
            region_field(&mut c, &pac, "R1", "state").as_deref(),
            Some("stopped"),
            "round {round}: {out}"
        );
    }
}

#[test]
fn a_dead_region_no_longer_counts_as_live() {
    let s = RedisServer::start();
    let mut c = s.conn();
    let (mut r1, _) = start_region(&s, "MyPAC", "R1", "h1", "1.0.0", "cold");

    // Alive: InitPac is refused and names the region; nothing changes.
    let before = fingerprint(&mut c, "MyPAC");
    pac_cmd(&s)
        .args(["pac", "init", "MyPAC"])
        .run()
        .code(1)
        .stderr_contains("R1");
    assert_eq!(fingerprint(&mut c, "MyPAC"), before);

    // Crash (no graceful leave): the membership stays recorded, the heartbeat expires.
    r1.signal(SIGKILL);
    let _ = r1.into_running().wait_with_timeout(STOP);
    assert_eq!(members(&mut c, "MyPAC", "1.0.0"), set(["R1"]));
    wait_until(EXPIRY, "R1's heartbeat to expire", || {
        !alive(&mut c, "MyPAC", "R1")
    });

    // Dead: status says so, and a cold start is a real cold start again (no warning).
    let doc = pac_cmd(&s)
        .args(["pac", "status", "MyPAC", "--json"])
        .run()
        .json();
    assert_eq!(doc["regions"][0]["alive"], false, "{doc}");
    assert_eq!(doc["stores"][0]["live_members"], serde_json::json!([]));
    let (r2, line) = start_region(&s, "MyPAC", "R2", "h2", "1.0.0", "cold");
    assert_eq!(
        line,
        "Region R2 started (cold) in store 1.0.0, mode running"
    );
    assert!(!r2.stderr_so_far().contains("Warm startup mode"));
    stop_region(r2);

    // And InitPac works without --force.
    pac_cmd(&s).args(["pac", "init", "MyPAC"]).run().success();
    assert_eq!(stores(&mut c, "MyPAC"), Vec::<String>::new());
}

#[test]
fn remove_old_succeeds_once_the_old_region_died() {
    let s = RedisServer::start();
    let mut c = s.conn();
    let (mut r1, _) = start_region(&s, "MyPAC", "R1", "h1", "1.0.0", "cold");
    let (r2, _) = start_region(&s, "MyPAC", "R2", "h2", "2.0.0", "upgrade");
    pac_cmd(&s)
        .args(["pac", "set-mode", "MyPAC", "running"])
        .run()
        .success();
    pac_cmd(&s)
        .args(["pac", "set-mode", "MyPAC", "quiesce"])
        .run()
        .success();

    pac_cmd(&s)
        .args(["pac", "remove-old", "MyPAC"])
        .run()
        .code(1)
        .stderr_contains("R1");

    r1.signal(SIGKILL);
    let _ = r1.into_running().wait_with_timeout(STOP);
    wait_until(EXPIRY, "R1's heartbeat to expire", || {
        !alive(&mut c, "MyPAC", "R1")
    });
    pac_cmd(&s)
        .args(["pac", "remove-old", "MyPAC"])
        .run()
        .success();
    assert_eq!(stores(&mut c, "MyPAC"), ["2.0.0"]);
    assert_eq!(keys(&mut c, "pac:{MyPAC}:store:1.0.0:*"), BTreeSet::new());
    assert_eq!(members(&mut c, "MyPAC", "2.0.0"), set(["R2"]));
    stop_region(r2);
}

#[test]
fn init_is_refused_while_a_region_is_alive_and_forced_init_takes_the_pac_away() {
    let s = RedisServer::start();
    let mut c = s.conn();
    let _: () = c.set("pac:{MyPAC}:ds:jobs", "kept").unwrap();
    let (r1, _) = start_region(&s, "MyPAC", "R1", "h1", "1.0.0", "cold");

    let before = fingerprint(&mut c, "MyPAC");
    let out = caspac()
        .args([
            "-aInitPac=MyPAC",
            &format!("-sredis,127.0.0.1:{}", s.port()),
        ])
        .run();
    out.code(1).stderr_contains("R1");
    assert_eq!(fingerprint(&mut c, "MyPAC"), before);
    assert_eq!(members(&mut c, "MyPAC", "1.0.0"), set(["R1"]));

    pac_cmd(&s)
        .args(["pac", "init", "MyPAC", "--force"])
        .run()
        .success();
    assert_eq!(stores(&mut c, "MyPAC"), Vec::<String>::new());
    assert_eq!(keys(&mut c, "pac:{MyPAC}:store:*"), BTreeSet::new());
    assert_eq!(c.get::<_, String>("pac:{MyPAC}:ds:jobs").unwrap(), "kept");

    // The region notices it lost the PAC and stops (refused state: exit 1).
    let out = r1.into_running().wait_with_timeout(STOP);
    out.code(1);
    assert!(out.stdout.contains("Region R1 lost"), "{out}");
    assert!(!alive(&mut c, "MyPAC", "R1"));
}

#[test]
fn set_mode_refusals_exit_1_and_change_nothing() {
    let s = RedisServer::start();
    let mut c = s.conn();
    let set_mode = |mode: &str| pac_cmd(&s).args(["pac", "set-mode", "MyPAC", mode]).run();

    // No PAC / no store.
    set_mode("running").code(1);
    pac_cmd(&s).args(["pac", "init", "MyPAC"]).run().success();
    set_mode("running").code(1).stderr_contains("no store");

    let (r1, _) = start_region(&s, "MyPAC", "R1", "h1", "1.0.0", "cold");
    // One running store: nothing to set running, nothing older to quiesce.
    let before = fingerprint(&mut c, "MyPAC");
    set_mode("running").code(1).stderr_contains("upgrade mode");
    set_mode("quiesce")
        .code(1)
        .stderr_contains("nothing to quiesce");
    assert_eq!(fingerprint(&mut c, "MyPAC"), before);

    // Newest store still in upgrade mode: quiescing the old one would leave no running
    // store.
    let (r2, _) = start_region(&s, "MyPAC", "R2", "h2", "2.0.0", "upgrade");
    let before = fingerprint(&mut c, "MyPAC");
    set_mode("quiesce")
        .code(1)
        .stderr_contains("no running store")
        .stderr_contains("2.0.0");
    assert_eq!(fingerprint(&mut c, "MyPAC"), before);
    assert_eq!(
        store_mode(&mut c, "MyPAC", "1.0.0").as_deref(),
        Some("running")
    );

    // The documented order works; repeating either step is refused and changes nothing.
    set_mode("running")
        .success()
        .stdout_contains("store 2.0.0 now running");
    let before = fingerprint(&mut c, "MyPAC");
    set_mode("running").code(1);
    assert_eq!(fingerprint(&mut c, "MyPAC"), before);
    set_mode("quiesce")
        .success()
        .stdout_contains("store 1.0.0 now quiesce");
    let before = fingerprint(&mut c, "MyPAC");
    set_mode("quiesce").code(1);
    set_mode("running").code(1);
    assert_eq!(fingerprint(&mut c, "MyPAC"), before);
    assert_eq!(
        store_mode(&mut c, "MyPAC", "1.0.0").as_deref(),
        Some("quiesce")
    );
    assert_eq!(
        store_mode(&mut c, "MyPAC", "2.0.0").as_deref(),
        Some("running")
    );
    stop_region(r2);
    stop_region(r1);
}

#[test]
fn remove_old_without_an_old_store_does_nothing() {
    let s = RedisServer::start();
    let mut c = s.conn();
    let (r1, _) = start_region(&s, "MyPAC", "R1", "h1", "1.0.0", "cold");
    let before_keys = keys(&mut c, "pac:{MyPAC}:*");
    let before = fingerprint(&mut c, "MyPAC");
    pac_cmd(&s)
        .args(["pac", "remove-old", "MyPAC"])
        .run()
        .success()
        .stdout_contains("nothing removed");
    caspac()
        .args([
            "-aRemOldPAC=MyPAC",
            &format!("-sredis,127.0.0.1:{}", s.port()),
        ])
        .run()
        .success();
    assert_eq!(fingerprint(&mut c, "MyPAC"), before);
    assert_eq!(keys(&mut c, "pac:{MyPAC}:*"), before_keys);
    stop_region(r1);
}

#[test]
fn remove_old_finishes_an_interrupted_deletion() {
    let s = RedisServer::start();
    let mut c = s.conn();
    let (r1, _) = start_region(&s, "MyPAC", "R1", "h1", "1.0.0", "cold");
    let store_keys = keys(&mut c, "pac:{MyPAC}:store:1.0.0:*");

    // A previous remove-old detached store 0.9.0 and crashed half-way through its keys.
    let _: () = c.sadd("pac:{MyPAC}:removing", "0.9.0").unwrap();
    for k in ["x", "res:PCT", "members", "bulk:1", "bulk:2"] {
        let _: () = c
            .set(format!("pac:{{MyPAC}}:store:0.9.0:{k}"), "left")
            .unwrap();
    }
    // A datastore key that merely contains the same text is not touched.
    let _: () = c.set("pac:{MyPAC}:ds:store:0.9.0:x", "datastore").unwrap();

    let out = pac_cmd(&s)
        .args(["pac", "remove-old", "MyPAC", "--json"])
        .run();
    out.success();
    let doc = out.json();
    assert_eq!(doc["stores_removed"], serde_json::json!(["0.9.0"]), "{doc}");
    assert_eq!(doc["keys_removed"], 5, "{doc}");
    assert_eq!(keys(&mut c, "pac:{MyPAC}:store:0.9.0:*"), BTreeSet::new());
    assert!(!c.exists::<_, bool>("pac:{MyPAC}:removing").unwrap());
    assert_eq!(
        c.get::<_, String>("pac:{MyPAC}:ds:store:0.9.0:x").unwrap(),
        "datastore"
    );
    // The live store is intact.
    assert_eq!(keys(&mut c, "pac:{MyPAC}:store:1.0.0:*"), store_keys);
    assert_eq!(stores(&mut c, "MyPAC"), ["1.0.0"]);

    // Running it again is harmless.
    pac_cmd(&s)
        .args(["pac", "remove-old", "MyPAC"])
        .run()
        .success()
        .stdout_contains("nothing removed");
    assert_eq!(keys(&mut c, "pac:{MyPAC}:store:1.0.0:*"), store_keys);
    stop_region(r1);
}

#[test]
fn remove_old_deletes_a_large_store_incrementally_while_redis_keeps_answering() {
    const BULK: usize = 20_000;
    let s = RedisServer::start();
    let mut c = s.conn();
    let (r1, _) = start_region(&s, "MyPAC", "R1", "h1", "1.0.0", "cold");
    let (r2, _) = start_region(&s, "MyPAC", "R2", "h2", "2.0.0", "upgrade");
    pac_cmd(&s)
        .args(["pac", "set-mode", "MyPAC", "running"])
        .run()
        .success();
    stop_region(r1);
    let new_store = keys(&mut c, "pac:{MyPAC}:store:2.0.0:*");

    let mut p = redis::pipe();
    for n in 0..BULK {
        // Named in the store's key index, as every writer of a store key does.
        let k = format!("pac:{{MyPAC}}:store:1.0.0:bulk:{n}");
        p.set(&k, n).ignore();
        p.rpush("pac:{MyPAC}:store:1.0.0:index", &k).ignore();
    }
    let _: () = p.query(&mut c).unwrap();
    let old_store = keys(&mut c, "pac:{MyPAC}:store:1.0.0:*").len();
    assert!(old_store > BULK);
    let initial: u64 = redis::cmd("DBSIZE").query(&mut c).unwrap();

    // Another client pings (and samples DBSIZE) for the whole deletion.
    let done = Arc::new(AtomicBool::new(false));
    let pings = Arc::new(AtomicUsize::new(0));
    let pinger = {
        let done = Arc::clone(&done);
        let pings = Arc::clone(&pings);
        let client = s.client();
        std::thread::spawn(move || {
            let mut c = client
                .get_connection_with_timeout(Duration::from_secs(5))
                .unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut worst = Duration::ZERO;
            let mut sizes = Vec::new();
            while !done.load(Ordering::SeqCst) {
                let t = Instant::now();
                let pong: String = redis::cmd("PING").query(&mut c).expect("PING answered");
                assert_eq!(pong, "PONG");
                worst = worst.max(t.elapsed());
                pings.fetch_add(1, Ordering::SeqCst);
                sizes.push(redis::cmd("DBSIZE").query::<u64>(&mut c).unwrap());
            }
            (worst, sizes)
        })
    };
    wait_until(START, "the pinger to start", || {
        pings.load(Ordering::SeqCst) > 0
    });

    let out = pac_cmd(&s)
        .args(["pac", "remove-old", "MyPAC", "--json"])
        .run();
    done.store(true, Ordering::SeqCst);
    let (worst, sizes) = pinger.join().expect("pinger thread");
    out.success();
    let doc = out.json();
    assert_eq!(doc["stores_removed"], serde_json::json!(["1.0.0"]), "{doc}");
    // Every key of the store but its key index (bookkeeping, not counted).
    assert_eq!(doc["keys_removed"], old_store as u64 - 1, "{doc}");

    assert_eq!(keys(&mut c, "pac:{MyPAC}:store:1.0.0:*").len(), 0);
    assert_eq!(keys(&mut c, "pac:{MyPAC}:store:2.0.0:*"), new_store);
    assert_eq!(stores(&mut c, "MyPAC"), ["2.0.0"]);
    let end: u64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert!(end + old_store as u64 <= initial, "{end} {initial}");
    // Redis never stalled, and the other client saw the store shrink in steps (a single
    // blocking deletion would jump from the full size to the final one).
    assert!(worst < Duration::from_secs(2), "a PING took {worst:?}");
    let between: BTreeSet<u64> = sizes
        .iter()
        .copied()
        .filter(|&n| n > end && n < initial - 1000)
        .collect();
    assert!(
        between.len() >= 2,
        "the deletion was not seen in steps by another client: {} samples, intermediate sizes {between:?}",
        sizes.len()
    );
    stop_region(r2);
}

// ---------------------------------------------------------------------------------------
// 3. atomicity races
// ---------------------------------------------------------------------------------------

const RACE_ROUNDS: usize = 20;

/// Waits until `r` printed its start line or exited; returns the start line if any.
fn started_or_exited(r: &mut Running, region: &str) -> Option<String> {
    let prefix = started_prefix(region);
    wait_for(START, &format!("{region} to start or exit"), || {
        let out = r.stdout_so_far();
        if let Some(l) = out.lines().find(|l| l.starts_with(&prefix)) {
            return Some(Some(l.to_string()));
        }
        (!r.is_running()).then_some(None)
    })
}

#[test]
fn concurrent_upgrade_starts_create_exactly_one_store() {
    let s = RedisServer::start();
    let mut c = s.conn();
    for round in 0..RACE_ROUNDS {
        let pac = format!("U{round}");
        let (r0, _) = start_region(&s, &pac, "R0", "h0", "1.0.0", "cold");
        // Both processes are spawned back to back, before either can have connected.
        let mut a = region_cmd(&s, &pac, "RA", "ha", "2.0.0", "upgrade").spawn();
        let mut b = region_cmd(&s, &pac, "RB", "hb", "2.0.0", "upgrade").spawn();
        let la = a.wait_for_stdout_line(|l| l.starts_with("Region RA started ("), START);
        let lb = b.wait_for_stdout_line(|l| l.starts_with("Region RB started ("), START);
        for l in [&la, &lb] {
            assert!(
                l.ends_with("(upgrade) in store 2.0.0, mode upgrade"),
                "round {round}: {l}"
            );
        }
        let zcard: u64 = c.zcard(format!("pac:{{{pac}}}:stores")).unwrap();
        assert_eq!(zcard, 2, "round {round}: {:?}", stores(&mut c, &pac));
        assert_eq!(stores(&mut c, &pac), ["1.0.0", "2.0.0"], "round {round}");
        assert_eq!(
            members(&mut c, &pac, "2.0.0"),
            set(["RA", "RB"]),
            "round {round}"
        );
        assert_eq!(members(&mut c, &pac, "1.0.0"), set(["R0"]), "round {round}");
        // One creation event, one creator.
        let created_by: String = c
            .hget(format!("pac:{{{pac}}}:store:2.0.0:meta"), "created_by")
            .unwrap();
        assert!(created_by == "RA" || created_by == "RB", "{created_by}");
        drop((r0, a, b));
    }
}

/// Runs one cold-vs-warm race on PAC `pac` (which has a running store 1.0.0 and no live
/// region) and checks the invariants that must always hold. Returns `None` when the warm
/// region started, else its stderr (it was refused).
fn cold_warm_round(s: &RedisServer, pac: &str, round: usize, warm_first: bool) -> Option<String> {
    let mut c = s.conn();
    let cold = region_cmd(s, pac, "RC", "hc", "1.0.0", "cold");
    let warm = region_cmd(s, pac, "RW", "hw", "1.0.0", "warm");
    let (mut rc, mut rw) = if warm_first {
        let w = warm.spawn();
        (cold.spawn(), w)
    } else {
        let cl = cold.spawn();
        (cl, warm.spawn())
    };
    let lc = started_or_exited(&mut rc, "RC");
    let lw = started_or_exited(&mut rw, "RW");
    let (rc_running, rw_running) = (rc.is_running(), rw.is_running());
    let ctx = || {
        format!(
            "round {round} (warm first: {warm_first})\n--- RC stdout ---\n{}\n--- RC stderr ---\n{}\n--- RW stdout ---\n{}\n--- RW stderr ---\n{}",
            rc.stdout_so_far(),
            rc.stderr_so_far(),
            rw.stdout_so_far(),
            rw.stderr_so_far()
        )
    };
    // The cold start always succeeds, cold or turned warm.
    let lc = lc.unwrap_or_else(|| panic!("the cold start failed\n{}", ctx()));
    // Never two stores, never a second 1.0.0 instance beside a live one.
    assert_eq!(stores(&mut c, pac), ["1.0.0"], "{}", ctx());
    let m = members(&mut c, pac, "1.0.0");
    match &lw {
        Some(lw) => {
            assert_eq!(
                lw,
                "Region RW started (warm) in store 1.0.0, mode running",
                "{}",
                ctx()
            );
            // The warm region's membership survived whatever the cold start did.
            assert_eq!(m, set(["RC", "RW"]), "{}", ctx());
            assert!(alive(&mut c, pac, "RW"), "{}", ctx());
            if lc.contains("(warm)") {
                assert!(
                    rc.stderr_so_far().contains(&format!(
                        "Region RC initializing in Warm startup mode because PAC {pac} is already active"
                    )),
                    "{}",
                    ctx()
                );
            } else {
                assert_eq!(
                    lc,
                    "Region RC started (cold) in store 1.0.0, mode running",
                    "{}",
                    ctx()
                );
            }
        }
        None => {
            // The warm start lost the race: it was refused, and the cold one went first.
            assert_eq!(m, set(["RC"]), "{}", ctx());
            assert!(lc.contains("(cold)"), "{}", ctx());
        }
    }
    assert!(rc_running, "{}", ctx());
    if lw.is_some() {
        assert!(rw_running, "{}", ctx());
        None
    } else {
        Some(rw.stderr_so_far())
    }
}

/// Sets up PAC `pac` with a running store 1.0.0 and no live region.
fn pac_with_idle_store(s: &RedisServer, pac: &str) {
    let (r0, _) = start_region(s, pac, "R0", "h0", "1.0.0", "cold");
    stop_region(r0);
}

#[test]
fn cold_start_racing_a_warm_start_never_wipes_a_live_pac() {
    let s = RedisServer::start();
    for round in 0..RACE_ROUNDS {
        let pac = format!("C{round}");
        pac_with_idle_store(&s, &pac);
        cold_warm_round(&s, &pac, round, round % 2 == 0);
    }
}

/// The stronger form: a warm start that races a cold start is never refused; it joins
/// either the old store (and the cold start turns warm) or the new one.
#[test]
fn warm_start_racing_a_cold_start_always_joins() {
    let s = RedisServer::start();
    let mut refused = Vec::new();
    for round in 0..RACE_ROUNDS * 2 {
        let pac = format!("W{round}");
        pac_with_idle_store(&s, &pac);
        if let Some(stderr) = cold_warm_round(&s, &pac, round, round % 2 == 0) {
            refused.push((round, stderr));
        }
    }
    assert!(
        refused.is_empty(),
        "the warm start was refused in {} of {} rounds: {refused:#?}",
        refused.len(),
        RACE_ROUNDS * 2
    );
}

// ---------------------------------------------------------------------------------------
// 4. exit codes, JSON documents, backup/restore
// ---------------------------------------------------------------------------------------

#[test]
fn pacup_exit_codes() {
    let s = RedisServer::start();
    // 0
    pac_cmd(&s).args(["pac", "init", "MyPAC"]).run().success();
    let (r1, _) = start_region(&s, "MyPAC", "R1", "h1", "1.0.0", "cold");
    pac_cmd(&s)
        .args(["pac", "check-compat", "MyPAC", "--product-version", "1.0.1"])
        .run()
        .success()
        .stdout_contains("COMPATIBLE");
    // 1: state refusals
    pac_cmd(&s)
        .args(["pac", "set-mode", "MyPAC", "running"])
        .run()
        .code(1);
    pac_cmd(&s).args(["pac", "init", "MyPAC"]).run().code(1);
    pac_cmd(&s)
        .args(["pac", "status", "NoPAC"])
        .run()
        .code(1)
        .stderr_contains("NoPAC");
    pac_cmd(&s)
        .args(["pac", "check-compat", "NoPAC", "--product-version", "1.0.1"])
        .run()
        .code(1);
    // 3: incompatible (version, OS, bitness)
    for extra in [
        &["--product-version", "1.1.0"][..],
        &["--product-version", "1.0.0", "--os", "aix-7"],
        &["--product-version", "1.0.0", "--bitness", "32"],
    ] {
        pac_cmd(&s)
            .args(["pac", "check-compat", "MyPAC"])
            .args(extra)
            .run()
            .code(3)
            .stdout_contains("INCOMPATIBLE");
    }
    // 5: unreachable
    let port = dead_port();
    for args in [
        &["pac", "init", "MyPAC"][..],
        &["pac", "status", "MyPAC"],
        &["pac", "list"],
        &["pac", "check-compat", "MyPAC", "--product-version", "2.0.0"],
        &["pac", "set-mode", "MyPAC", "running"],
        &["pac", "remove-old", "MyPAC"],
    ] {
        pacup()
            .args(["--psor", &format!("redis://127.0.0.1:{port}")])
            .args(args)
            .run()
            .code(5)
            .stderr_contains(&port.to_string());
    }
    region_cmd_url(
        &format!("redis://127.0.0.1:{port}"),
        "MyPAC",
        "R2",
        "h2",
        "1.0.0",
        "warm",
    )
    .run()
    .code(5);
    // The PSOR also comes from the environment.
    pacup()
        .args(["pac", "status", "MyPAC"])
        .env("PACUP_PSOR", s.url())
        .run()
        .success()
        .stdout_contains("R1");
    stop_region(r1);
}

/// Every invalid input is exit 2 and writes nothing, whether or not the PSOR is reachable.
#[test]
fn invalid_input_exits_2_and_writes_nothing() {
    // `region run R1 --pac MyPAC --host h1` and the rest.
    let run_r1 = |rest: &[&str]| -> Vec<String> {
        ["region", "run", "R1", "--pac", "MyPAC", "--host", "h1"]
            .iter()
            .chain(rest)
            .map(|a| a.to_string())
            .collect()
    };
    let s = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let bad_matrix = dir.path().join("matrix.json");
    std::fs::write(
        &bad_matrix,
        r#"[{"from": "^1", "to": "not a req", "compatible": true}]"#,
    )
    .unwrap();
    let not_json = dir.path().join("notjson.json");
    std::fs::write(&not_json, "{ this is not json").unwrap();
    let bad_resources = dir.path().join("res.json");
    std::fs::write(&bad_resources, r#"{"XYZ": {"A": {}}}"#).unwrap();
    let missing = dir.path().join("missing.json");
    let p = |p: &std::path::Path| p.display().to_string();

    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["pac".into(), "init".into(), "NINECHARS".into()],
            "PAC name",
        ),
        (
            vec!["pac".into(), "init".into(), "bad name".into()],
            "PAC name",
        ),
        (vec!["pac".into(), "init".into(), "".into()], "PAC name"),
        (
            vec![
                "pac".into(),
                "check-compat".into(),
                "MyPAC".into(),
                "--product-version".into(),
                "2.0".into(),
            ],
            "product version",
        ),
        (
            vec![
                "pac".into(),
                "check-compat".into(),
                "MyPAC".into(),
                "--product-version".into(),
                "2.0.0".into(),
                "--bitness".into(),
                "48".into(),
            ],
            "bitness",
        ),
        (
            vec![
                "pac".into(),
                "check-compat".into(),
                "MyPAC".into(),
                "--product-version".into(),
                "2.0.0".into(),
                "--matrix".into(),
                p(&bad_matrix),
            ],
            "matrix",
        ),
        (
            vec![
                "pac".into(),
                "check-compat".into(),
                "MyPAC".into(),
                "--product-version".into(),
                "2.0.0".into(),
                "--matrix".into(),
                p(&not_json),
            ],
            "matrix",
        ),
        (
            vec![
                "pac".into(),
                "check-compat".into(),
                "MyPAC".into(),
                "--product-version".into(),
                "2.0.0".into(),
                "--matrix".into(),
                p(&missing),
            ],
            "matrix",
        ),
        (
            vec![
                "pac".into(),
                "set-mode".into(),
                "MyPAC".into(),
                "sideways".into(),
            ],
            "sideways",
        ),
        (
            vec![
                "pac".into(),
                "set-mode".into(),
                "MyPAC".into(),
                "upgrade".into(),
            ],
            "upgrade",
        ),
        (
            vec![
                "pac".into(),
                "restore".into(),
                "MyPAC".into(),
                "--in".into(),
                p(&not_json),
            ],
            "backup",
        ),
        (
            vec![
                "pac".into(),
                "restore".into(),
                "MyPAC".into(),
                "--in".into(),
                p(&missing),
            ],
            "backup",
        ),
        (vec!["pac".into(), "frobnicate".into()], "frobnicate"),
        (
            run_r1(&["--product-version", "1.0.0", "--start-type", "hot"]),
            "hot",
        ),
        (
            [
                "region",
                "run",
                &"R".repeat(33),
                "--pac",
                "MyPAC",
                "--host",
                "h1",
                "--product-version",
                "1.0.0",
                "--start-type",
                "cold",
            ]
            .map(String::from)
            .to_vec(),
            "region name",
        ),
        (
            [
                "region",
                "run",
                "R1",
                "--pac",
                "MyPAC",
                "--host",
                "h/1",
                "--product-version",
                "1.0.0",
                "--start-type",
                "cold",
            ]
            .map(String::from)
            .to_vec(),
            "host name",
        ),
        (
            run_r1(&["--product-version", "v1", "--start-type", "cold"]),
            "product version",
        ),
        (
            run_r1(&[
                "--product-version",
                "1.0.0",
                "--start-type",
                "cold",
                "--heartbeat-interval",
                "soon",
            ]),
            "duration",
        ),
        (
            run_r1(&[
                "--product-version",
                "1.0.0",
                "--start-type",
                "cold",
                "--heartbeat-interval",
                "2s",
                "--heartbeat-ttl",
                "1s",
            ]),
            "--heartbeat-ttl",
        ),
        (
            vec![
                "region".into(),
                "run".into(),
                "R1".into(),
                "--pac".into(),
                "MyPAC".into(),
                "--host".into(),
                "h1".into(),
                "--product-version".into(),
                "1.0.0".into(),
                "--start-type".into(),
                "cold".into(),
                "--resources".into(),
                p(&bad_resources),
            ],
            "XYZ",
        ),
    ];
    let dead = format!("redis://127.0.0.1:{}", dead_port());
    for (args, needle) in &cases {
        for url in [s.url(), dead.clone()] {
            pacup()
                .args(["--psor", &url])
                .args(args)
                .run()
                .code(2)
                .stderr_contains(needle);
        }
    }
    // A PSOR URL of an unknown scheme (or none) is invalid input too.
    for url in [
        "memcached://127.0.0.1:6379",
        "127.0.0.1:6379",
        "redis+sentinel://127.0.0.1:1",
    ] {
        pacup()
            .args(["--psor", url, "pac", "init", "MyPAC"])
            .run()
            .code(2)
            .stderr_contains("--psor");
    }
    let dbsize: u64 = redis::cmd("DBSIZE").query(&mut s.conn()).unwrap();
    assert_eq!(dbsize, 0, "an invalid command wrote to the PSOR");
}

#[test]
fn json_documents_of_status_list_and_check_compat() {
    let s = RedisServer::start();
    let (r1, _) = start_region(&s, "MyPAC", "R1", "h1", "1.0.0", "cold");
    let (r2, _) = start_region(&s, "MyPAC", "R2", "h2", "2.0.0", "upgrade");
    pac_cmd(&s).args(["pac", "init", "Other"]).run().success();

    let out = pac_cmd(&s).args(["pac", "status", "MyPAC", "--json"]).run();
    out.success();
    let doc = out.json();
    assert_eq!(doc["pac"], "MyPAC");
    assert_eq!(doc["exists"], true);
    let st = doc["stores"].as_array().unwrap();
    assert_eq!(st.len(), 2, "{doc}");
    assert_eq!(st[0]["version"], "1.0.0");
    assert_eq!(st[0]["mode"], "running");
    assert_eq!(st[0]["members"], serde_json::json!(["R1"]));
    assert_eq!(st[0]["live_members"], serde_json::json!(["R1"]));
    assert_eq!(st[0]["created_by"], "R1");
    assert_eq!(st[0]["bitness"], 64);
    assert_eq!(st[1]["version"], "2.0.0");
    assert_eq!(st[1]["mode"], "upgrade");
    assert_eq!(st[1]["members"], serde_json::json!(["R2"]));
    let regions = doc["regions"].as_array().unwrap();
    assert_eq!(regions.len(), 2, "{doc}");
    assert_eq!(regions[1]["name"], "R2");
    assert_eq!(regions[1]["host"], "h2");
    assert_eq!(regions[1]["product_version"], "2.0.0");
    assert_eq!(regions[1]["store"], "2.0.0");
    assert_eq!(regions[1]["state"], "active");
    assert_eq!(regions[1]["start_type"], "upgrade");
    assert_eq!(regions[1]["alive"], true);
    // Human output has the same facts.
    pac_cmd(&s)
        .args(["pac", "status", "MyPAC"])
        .run()
        .success()
        .stdout_contains("2.0.0")
        .stdout_contains("upgrade")
        .stdout_contains("R2");

    let out = pac_cmd(&s).args(["pac", "list", "--json"]).run();
    out.success();
    let doc = out.json();
    assert_eq!(
        doc,
        serde_json::json!({"pacs": [
            {"pac": "MyPAC", "live_regions": 2, "stores": [
                {"version": "1.0.0", "mode": "running"},
                {"version": "2.0.0", "mode": "upgrade"}]},
            {"pac": "Other", "live_regions": 0, "stores": []}
        ]})
    );

    // check-compat compares with the newest *running* store (1.0.0, not 2.0.0).
    let out = pac_cmd(&s)
        .args([
            "pac",
            "check-compat",
            "MyPAC",
            "--product-version",
            "2.0.1",
            "--json",
        ])
        .run();
    out.code(3);
    let doc = out.json();
    assert_eq!(doc["pac"], "MyPAC");
    assert_eq!(doc["compatible"], false);
    assert_eq!(doc["product"]["version"], "2.0.1");
    assert_eq!(doc["store"]["version"], "1.0.0");
    assert_eq!(doc["store"]["bitness"], 64);
    let reasons: Vec<String> = serde_json::from_value(doc["reasons"].clone()).unwrap();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons[0].starts_with("incompatible:"), "{reasons:?}");
    assert!(reasons[1].starts_with("ok:") && reasons[2].starts_with("ok:"));

    // Every reason is listed when several fail.
    let out = pac_cmd(&s)
        .args([
            "pac",
            "check-compat",
            "MyPAC",
            "--product-version",
            "3.0.0",
            "--os",
            "aix-7",
            "--bitness",
            "32",
            "--json",
        ])
        .run();
    out.code(3);
    let reasons = out.json()["reasons"].clone();
    let bad = reasons
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r.as_str().unwrap().starts_with("incompatible"))
        .count();
    assert_eq!(bad, 3, "{reasons}");

    // Exactly one document on stdout, even for a PAC that does not exist.
    let out = pac_cmd(&s).args(["pac", "status", "NoPAC", "--json"]).run();
    out.code(1);
    assert_eq!(out.json()["exists"], false);

    stop_region(r2);
    stop_region(r1);
}

#[test]
fn compatibility_matrix_overrides_the_version_rule() {
    let s = RedisServer::start();
    let (r1, _) = start_region(&s, "MyPAC", "R1", "h1", "1.0.0", "cold");
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("matrix.json");
    std::fs::write(
        &m,
        r#"[{"from": "^1", "to": ">=2.0.0, <2.1.0", "compatible": true, "note": "2.0 keeps the 1.x formats"},
            {"from": "*", "to": "^1", "compatible": false, "note": "1.0.9 is broken"}]"#,
    )
    .unwrap();
    let check = |v: &str| {
        pac_cmd(&s)
            .args([
                "pac",
                "check-compat",
                "MyPAC",
                "--product-version",
                v,
                "--matrix",
            ])
            .arg(&m)
            .run()
    };
    check("2.0.3")
        .success()
        .stdout_contains("2.0 keeps the 1.x formats");
    // The first rule that matches wins: 1.0.9 would be compatible by default.
    check("1.0.9").code(3).stdout_contains("1.0.9 is broken");
    // No rule matches: the default rule.
    check("3.0.0").code(3);
    // A matrix cannot override the OS.
    pac_cmd(&s)
        .args([
            "pac",
            "check-compat",
            "MyPAC",
            "--product-version",
            "2.0.3",
            "--os",
            "aix-7",
            "--matrix",
        ])
        .arg(&m)
        .run()
        .code(3)
        .stdout_contains("aix-7");
    stop_region(r1);
}

#[test]
fn backup_then_restore_with_force_and_into_another_pac() {
    let s = RedisServer::start();
    let mut c = s.conn();
    let (r1, _) = start_region(&s, "MyPAC", "R1", "h1", "1.0.0", "cold");
    let (r2, _) = start_region(&s, "MyPAC", "R2", "h2", "2.0.0", "upgrade");
    stop_region(r2);
    stop_region(r1);
    let _: () = c.hset("pac:{MyPAC}:ds:results", "job1", "done").unwrap();
    let original = keys(&mut c, "pac:{MyPAC}:*");
    let pct: Vec<(String, String)> = c.hgetall("pac:{MyPAC}:store:2.0.0:res:PCT").unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mypac.backup.json");
    let out = pac_cmd(&s)
        .args(["pac", "backup", "MyPAC", "--json", "--out"])
        .arg(&file)
        .run();
    out.success();
    assert_eq!(out.json()["keys"], original.len() as u64, "{out}");
    assert!(file.exists());

    // Over existing data: refused without --force, and nothing changes.
    let before = fingerprint(&mut c, "MyPAC");
    pac_cmd(&s)
        .args(["pac", "restore", "MyPAC", "--in"])
        .arg(&file)
        .run()
        .code(1)
        .stderr_contains("--force");
    assert_eq!(fingerprint(&mut c, "MyPAC"), before);

    // With --force the PAC is back exactly as saved, even after it was changed meanwhile.
    pac_cmd(&s).args(["pac", "init", "MyPAC"]).run().success();
    let _: () = c.set("pac:{MyPAC}:store:9.9.9:junk", "x").unwrap();
    pac_cmd(&s)
        .args(["pac", "restore", "MyPAC", "--force", "--in"])
        .arg(&file)
        .run()
        .success();
    assert_eq!(keys(&mut c, "pac:{MyPAC}:*"), original);
    assert_eq!(stores(&mut c, "MyPAC"), ["1.0.0", "2.0.0"]);
    let restored: Vec<(String, String)> = c.hgetall("pac:{MyPAC}:store:2.0.0:res:PCT").unwrap();
    assert_eq!(restored, pct);

    // Into another PAC name: every key renamed, the original untouched.
    pac_cmd(&s)
        .args(["pac", "restore", "Copy", "--in"])
        .arg(&file)
        .run()
        .success();
    let renamed: BTreeSet<String> = original
        .iter()
        .map(|k| k.replacen("pac:{MyPAC}:", "pac:{Copy}:", 1))
        .collect();
    assert_eq!(keys(&mut c, "pac:{Copy}:*"), renamed);
    assert_eq!(keys(&mut c, "pac:{MyPAC}:*"), original);
    assert_eq!(
        c.hget::<_, _, String>("pac:{Copy}:ds:results", "job1")
            .unwrap(),
        "done"
    );
    let doc = pac_cmd(&s)
        .args(["pac", "status", "Copy", "--json"])
        .run()
        .json();
    assert_eq!(doc["stores"][1]["version"], "2.0.0", "{doc}");
    // A restored PAC shows no region alive, and it works: a region can join it.
    assert!(doc["regions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["alive"] == false));
    let (r3, line) = start_region(&s, "Copy", "R3", "h3", "1.0.2", "warm");
    assert_eq!(
        line,
        "Region R3 started (warm) in store 1.0.0, mode running"
    );
    stop_region(r3);

    // Backup of a PAC that does not exist: refused.
    pac_cmd(&s)
        .args(["pac", "backup", "NoPAC", "--out"])
        .arg(dir.path().join("none.json"))
        .run()
        .code(1);
}
