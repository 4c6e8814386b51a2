//! `caspac`, the vendor's legacy syntax (docs/reference.md#caspac), end to end against a real
//! PSOR: the documented command lines verbatim, case-insensitive letters and actions, values
//! as the next argument, how SetMode finds its PAC, the CheckCompat environment, exit codes
//! and the usage text.

use std::collections::BTreeSet;

use redis::Commands;

use crate::support::region::{region_cmd, spawn_started, stop_gracefully};
use crate::support::{caspac, free_port, Cmd, Output, RedisServer, Running};

/// The first line of caspac's usage text.
const USAGE: &str = "usage: caspac -a<Action>[=<arg>] -s<redis|redis_TLS>,<host>:<port>";

fn sor(s: &RedisServer) -> String {
    format!("-sredis,127.0.0.1:{}", s.port())
}

/// A region (short heartbeats) that has printed its start line.
fn start_region(s: &RedisServer, pac: &str, region: &str, v: &str, start: &str) -> Running {
    spawn_started(region_cmd(s, pac, region, "h1", v, start), region).0
}

/// Graceful stop, once the region has heartbeated twice.
fn stop_region(s: &RedisServer, pac: &str, region: &str, r: Running) -> Output {
    stop_gracefully(&mut s.conn(), pac, region, r)
}

fn store_mode(c: &mut redis::Connection, pac: &str, v: &str) -> Option<String> {
    c.hget(format!("pac:{{{pac}}}:store:{v}:meta"), "mode")
        .unwrap()
}

fn stores(c: &mut redis::Connection, pac: &str) -> Vec<String> {
    c.zrange(format!("pac:{{{pac}}}:stores"), 0, -1).unwrap()
}

fn all_keys(c: &mut redis::Connection) -> BTreeSet<String> {
    let v: Vec<String> = c.keys("*").unwrap();
    v.into_iter().collect()
}

/// PAC `pac` with store 1.0.0 running and 2.0.0 in upgrade mode; the regions are stopped.
fn pac_mid_upgrade(s: &RedisServer, pac: &str) {
    let r1 = start_region(s, pac, "R1", "1.0.0", "cold");
    let r2 = start_region(s, pac, "R2", "2.0.0", "upgrade");
    stop_region(s, pac, "R2", r2);
    stop_region(s, pac, "R1", r1);
}

#[test]
fn documented_command_lines_verbatim() {
    let s = RedisServer::start();
    let mut c = s.conn();
    let sor = sor(&s);

    caspac()
        .args(["-aInitPac=MyPAC", &sor])
        .run()
        .success()
        .stdout_contains("PAC MyPAC initialised");
    assert!(c.exists::<_, bool>("pac:{MyPAC}:meta").unwrap());

    let r1 = start_region(&s, "MyPAC", "R1", "1.0.0", "cold");
    // CheckCompat: the product comes from the environment.
    let check = |env: &[(&str, &str)]| {
        let mut cmd = caspac().args(["-aCheckCompat=MyPAC", &sor]);
        for (k, v) in env {
            cmd = cmd.env(k, v);
        }
        cmd.run()
    };
    check(&[("PACUP_PRODUCT_VERSION", "1.0.2")])
        .success()
        .stdout_contains("COMPATIBLE");
    check(&[("PACUP_PRODUCT_VERSION", "2.0.0")])
        .code(3)
        .stdout_contains("INCOMPATIBLE")
        .stdout_contains("--start-type upgrade");
    check(&[("PACUP_PRODUCT_VERSION", "1.0.2"), ("PACUP_BITNESS", "32")])
        .code(3)
        .stdout_contains("32-bit");
    check(&[("PACUP_PRODUCT_VERSION", "1.0.2"), ("PACUP_OS", "aix-7")])
        .code(3)
        .stdout_contains("aix-7");

    let r2 = start_region(&s, "MyPAC", "R2", "2.0.0", "upgrade");
    caspac()
        .args(["-aSetMode=Running", &sor])
        .run()
        .success()
        .stdout_contains("store 2.0.0 now running");
    assert_eq!(
        store_mode(&mut c, "MyPAC", "2.0.0").as_deref(),
        Some("running")
    );
    caspac()
        .args(["-aSetMode=Quiesce", &sor])
        .run()
        .success()
        .stdout_contains("store 1.0.0 now quiesce");
    assert_eq!(
        store_mode(&mut c, "MyPAC", "1.0.0").as_deref(),
        Some("quiesce")
    );
    caspac()
        .args(["-aRemOldPAC=MyPAC", &sor])
        .run()
        .code(1)
        .stderr_contains("R1");
    stop_region(&s, "MyPAC", "R1", r1);
    caspac()
        .args(["-aRemOldPAC=MyPAC", &sor])
        .run()
        .success()
        .stdout_contains("removed store 1.0.0");
    assert_eq!(stores(&mut c, "MyPAC"), ["2.0.0"]);
    let left: Vec<String> = c.keys("pac:{MyPAC}:store:1.0.0:*").unwrap();
    assert!(left.is_empty(), "{left:?}");
    stop_region(&s, "MyPAC", "R2", r2);
}

#[test]
fn option_letters_actions_and_types_are_case_insensitive() {
    let s = RedisServer::start();
    let mut c = s.conn();
    let port = s.port();

    caspac()
        .args(["-AINITPAC=MyPAC", &format!("-SREDIS,127.0.0.1:{port}")])
        .run()
        .success();
    assert!(c.exists::<_, bool>("pac:{MyPAC}:meta").unwrap());
    caspac()
        .args(["-ainitpac=Other", &format!("-sReDiS,127.0.0.1:{port}")])
        .run()
        .success();
    assert!(c.exists::<_, bool>("pac:{Other}:meta").unwrap());
    // The PAC name itself is not folded: "mypac" is another PAC.
    caspac()
        .args(["-aInitPAC=mypac", &format!("-sredis,127.0.0.1:{port}")])
        .run()
        .success();
    assert!(c.exists::<_, bool>("pac:{mypac}:meta").unwrap());
    assert!(c.exists::<_, bool>("pac:{MyPAC}:meta").unwrap());

    pac_mid_upgrade(&s, "Up");
    let es = |cmd: Cmd| cmd.env("ES_PAC", "Up");
    es(caspac().args(["-ASETMODE=RUNNING", &format!("-Sredis,127.0.0.1:{port}")]))
        .run()
        .success();
    assert_eq!(
        store_mode(&mut c, "Up", "2.0.0").as_deref(),
        Some("running")
    );
    es(caspac().args(["-asetmode=quiesce", &format!("-sREDIS,127.0.0.1:{port}")]))
        .run()
        .success();
    assert_eq!(
        store_mode(&mut c, "Up", "1.0.0").as_deref(),
        Some("quiesce")
    );
    caspac()
        .args(["-ACHECKCOMPAT=Up", &format!("-sredis,127.0.0.1:{port}")])
        .env("PACUP_PRODUCT_VERSION", "2.0.9")
        .run()
        .success();
    caspac()
        .args(["-aremoldpac=Up", &format!("-sredis,127.0.0.1:{port}")])
        .run()
        .success();
    assert_eq!(stores(&mut c, "Up"), ["2.0.0"]);
}

#[test]
fn option_values_may_follow_as_the_next_argument() {
    let s = RedisServer::start();
    let mut c = s.conn();
    let hostport = format!("redis,127.0.0.1:{}", s.port());

    caspac()
        .args(["-a", "InitPac=MyPAC", "-s", &hostport])
        .run()
        .success();
    assert!(c.exists::<_, bool>("pac:{MyPAC}:meta").unwrap());
    // Mixed: one attached, one separate, in either order.
    caspac()
        .args(["-s", &hostport, "-aInitPac=Two"])
        .run()
        .success();
    assert!(c.exists::<_, bool>("pac:{Two}:meta").unwrap());
    let r = start_region(&s, "Two", "R1", "1.0.0", "cold");
    caspac()
        .args(["-A", "CheckCompat=Two", &format!("-s{hostport}")])
        .env("PACUP_PRODUCT_VERSION", "3.0.0")
        .run()
        .code(3);
    stop_region(&s, "Two", "R1", r);
    // A trailing option without its value is a usage error.
    caspac()
        .args(["-aInitPac=MyPAC", "-s"])
        .run()
        .code(2)
        .stderr_contains(USAGE);
}

#[test]
fn set_mode_finds_its_pac_alone_by_es_pac_or_refuses() {
    let s = RedisServer::start();
    let mut c = s.conn();
    let sor = sor(&s);

    // No PAC at all: refused, nothing written.
    caspac()
        .args(["-aSetMode=Running", &sor])
        .run()
        .code(1)
        .stderr_contains("ES_PAC");
    assert!(all_keys(&mut c).is_empty());

    pac_mid_upgrade(&s, "PacA");
    pac_mid_upgrade(&s, "PacB");
    let before = all_keys(&mut c);
    let meta_a: Vec<(String, String)> = c.hgetall("pac:{PacA}:meta").unwrap();

    // Several PACs and no ES_PAC: refused, naming them, and nothing changes.
    let out = caspac().args(["-aSetMode=Running", &sor]).run();
    out.code(1)
        .stderr_contains("ES_PAC")
        .stderr_contains("PacA")
        .stderr_contains("PacB");
    assert_eq!(
        store_mode(&mut c, "PacA", "2.0.0").as_deref(),
        Some("upgrade")
    );
    assert_eq!(
        store_mode(&mut c, "PacB", "2.0.0").as_deref(),
        Some("upgrade")
    );
    assert_eq!(all_keys(&mut c), before);
    // An empty ES_PAC counts as unset.
    caspac()
        .args(["-aSetMode=Running", &sor])
        .env("ES_PAC", "")
        .run()
        .code(1);

    // ES_PAC names the PAC: only that one changes.
    caspac()
        .args(["-aSetMode=Running", &sor])
        .env("ES_PAC", "PacB")
        .run()
        .success()
        .stdout_contains("PacB");
    assert_eq!(
        store_mode(&mut c, "PacB", "2.0.0").as_deref(),
        Some("running")
    );
    assert_eq!(
        store_mode(&mut c, "PacA", "2.0.0").as_deref(),
        Some("upgrade")
    );
    assert_eq!(
        c.hgetall::<_, Vec<(String, String)>>("pac:{PacA}:meta")
            .unwrap(),
        meta_a
    );
    caspac()
        .args(["-aSetMode=Quiesce", &sor])
        .env("ES_PAC", "PacB")
        .run()
        .success();
    assert_eq!(
        store_mode(&mut c, "PacB", "1.0.0").as_deref(),
        Some("quiesce")
    );
    assert_eq!(
        store_mode(&mut c, "PacA", "1.0.0").as_deref(),
        Some("running")
    );
    // An invalid ES_PAC is invalid input.
    caspac()
        .args(["-aSetMode=Running", &sor])
        .env("ES_PAC", "NINECHARS")
        .run()
        .code(2);

    // With one PAC left, SetMode needs no ES_PAC.
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    pac_mid_upgrade(&s, "Only");
    caspac()
        .args(["-aSetMode=Running", &sor])
        .run()
        .success()
        .stdout_contains("PAC Only: store 2.0.0 now running");
}

#[test]
fn check_compat_needs_the_product_version_from_the_environment() {
    let s = RedisServer::start();
    let mut c = s.conn();
    let r = start_region(&s, "MyPAC", "R1", "1.0.0", "cold");
    let before = all_keys(&mut c);
    for env in [None, Some("")] {
        let mut cmd = caspac().args(["-aCheckCompat=MyPAC", &sor(&s)]);
        if let Some(v) = env {
            cmd = cmd.env("PACUP_PRODUCT_VERSION", v);
        }
        cmd.run()
            .code(2)
            .stderr_contains("PACUP_PRODUCT_VERSION")
            .stderr_contains(USAGE);
    }
    // A malformed version or bitness is invalid input too.
    for (k, v) in [("PACUP_PRODUCT_VERSION", "2.0"), ("PACUP_BITNESS", "48")] {
        let mut cmd = caspac().args(["-aCheckCompat=MyPAC", &sor(&s)]).env(k, v);
        if k != "PACUP_PRODUCT_VERSION" {
            cmd = cmd.env("PACUP_PRODUCT_VERSION", "1.0.0");
        }
        cmd.run().code(2);
    }
    assert_eq!(all_keys(&mut c), before);
    stop_region(&s, "MyPAC", "R1", r);
}

#[test]
fn bad_arguments_exit_2_with_the_usage_text_and_write_nothing() {
    let s = RedisServer::start();
    let live = format!("127.0.0.1:{}", s.port());
    let dead = format!("127.0.0.1:{}", free_port());
    for hostport in [&live, &dead] {
        let sor = format!("-sredis,{hostport}");
        let cases: Vec<(Vec<String>, &str)> = vec![
            (vec![], "no action"),
            (vec![sor.clone()], "no action"),
            (vec!["-aInitPac=MyPAC".into()], "no PSOR"),
            (
                vec!["-aFrobnicate=MyPAC".into(), sor.clone()],
                "unknown action",
            ),
            (vec!["-aInitPac".into(), sor.clone()], "needs PAC"),
            (vec!["-aRemOldPAC=".into(), sor.clone()], "needs PAC"),
            (
                vec!["-aSetMode=Sideways".into(), sor.clone()],
                "unknown mode",
            ),
            (vec!["-aSetMode".into(), sor.clone()], "Running|Quiesce"),
            (
                vec!["-aInitPac=MyPAC".into(), format!("-smemcached,{hostport}")],
                "unknown PSOR type",
            ),
            (
                vec!["-aInitPac=MyPAC".into(), "-sredis".into()],
                "at least one",
            ),
            (
                vec!["-aInitPac=MyPAC".into(), "-sredis,localhost".into()],
                "not <host>:<port>",
            ),
            (
                vec!["-aInitPac=MyPAC".into(), "-sredis,localhost:99999".into()],
                "not <host>:<port>",
            ),
            (
                vec!["-aInitPac=MyPAC".into(), format!("{sor},{hostport}")],
                "-n<sorName>",
            ),
            (
                vec!["-aInitPac=MyPAC".into(), sor.clone(), "-x1".into()],
                "unknown option",
            ),
            (
                vec![
                    "-aInitPac=MyPAC".into(),
                    "-aInitPac=Other".into(),
                    sor.clone(),
                ],
                "twice",
            ),
            (
                vec!["InitPac=MyPAC".into(), sor.clone()],
                "unexpected argument",
            ),
        ];
        for (args, needle) in &cases {
            let out = caspac().args(args).run();
            out.code(2).stderr_contains(needle).stderr_contains(USAGE);
            assert!(out.stdout.is_empty(), "{out}");
        }
    }
    let n: u64 = redis::cmd("DBSIZE").query(&mut s.conn()).unwrap();
    assert_eq!(n, 0, "a refused caspac command wrote to the PSOR");

    // Asking for help prints the usage and succeeds.
    for flag in ["-h", "--help", "-?"] {
        caspac()
            .arg(flag)
            .run()
            .success()
            .stdout_contains(USAGE)
            .stdout_contains("InitPac=<PAC>")
            .stdout_contains("ES_PAC");
    }
}

/// A PAC name that is too long is caught by the shared name rules (exit 2, nothing
/// written), whether or not the PSOR answers.
#[test]
fn invalid_pac_names_exit_2_and_write_nothing() {
    let s = RedisServer::start();
    let dead = format!("-sredis,127.0.0.1:{}", free_port());
    for sor in [sor(&s), dead] {
        for action in [
            "-aInitPac=NINECHARS",
            "-aRemOldPAC=NINECHARS",
            "-aInitPac=bad.name",
        ] {
            caspac()
                .args([action, &sor])
                .run()
                .code(2)
                .stderr_contains("PAC name");
        }
        caspac()
            .args(["-aCheckCompat=NINECHARS", &sor])
            .env("PACUP_PRODUCT_VERSION", "1.0.0")
            .run()
            .code(2)
            .stderr_contains("PAC name");
    }
    let n: u64 = redis::cmd("DBSIZE").query(&mut s.conn()).unwrap();
    assert_eq!(n, 0);
}

/// caspac speaks its own language: a bad PAC name or product version is reported with
/// caspac's usage text, not with pacup's clap message (which names `<PAC>` and
/// `--product-version`, options a caspac user never typed, and repeats the reason on a
/// stray `: ...` line).
#[test]
fn invalid_names_and_versions_are_reported_in_caspac_terms() {
    let s = RedisServer::start();
    let out = caspac().args(["-aInitPac=NINECHARS", &sor(&s)]).run();
    out.code(2).stderr_contains(USAGE);
    assert!(!out.stderr.contains("\n: "), "{out}");
    let out = caspac()
        .args(["-aCheckCompat=MyPAC", &sor(&s)])
        .env("PACUP_PRODUCT_VERSION", "2.0")
        .run();
    out.code(2)
        .stderr_contains("PACUP_PRODUCT_VERSION")
        .stderr_contains(USAGE);
    assert!(!out.stderr.contains("--product-version"), "{out}");
}

#[test]
fn caspac_exit_codes() {
    let s = RedisServer::start();
    let sor = sor(&s);
    // 0
    caspac().args(["-aInitPac=MyPAC", &sor]).run().success();
    let r = start_region(&s, "MyPAC", "R1", "1.0.0", "cold");
    caspac()
        .args(["-aCheckCompat=MyPAC", &sor])
        .env("PACUP_PRODUCT_VERSION", "1.0.1")
        .run()
        .code(0);
    caspac().args(["-aRemOldPAC=MyPAC", &sor]).run().code(0);
    // 1: refused by the PAC's state
    caspac().args(["-aInitPac=MyPAC", &sor]).run().code(1);
    caspac().args(["-aSetMode=Running", &sor]).run().code(1);
    caspac().args(["-aSetMode=Quiesce", &sor]).run().code(1);
    caspac()
        .args(["-aCheckCompat=NoPAC", &sor])
        .env("PACUP_PRODUCT_VERSION", "1.0.1")
        .run()
        .code(1);
    // 2: invalid input
    caspac().args(["-aNope=MyPAC", &sor]).run().code(2);
    // 3: incompatible
    caspac()
        .args(["-aCheckCompat=MyPAC", &sor])
        .env("PACUP_PRODUCT_VERSION", "1.1.0")
        .run()
        .code(3);
    // 5: unreachable, for every action
    let dead = format!("-sredis,127.0.0.1:{}", free_port());
    for action in [
        "-aInitPac=MyPAC",
        "-aCheckCompat=MyPAC",
        "-aSetMode=Running",
        "-aSetMode=Quiesce",
        "-aRemOldPAC=MyPAC",
    ] {
        caspac()
            .args([action, &dead])
            .env("PACUP_PRODUCT_VERSION", "1.0.1")
            .run()
            .code(5)
            .stderr_contains("cannot reach");
        // ES_PAC given: SetMode goes straight to the action; still 5.
        caspac()
            .args([action, &dead])
            .env("PACUP_PRODUCT_VERSION", "1.0.1")
            .env("ES_PAC", "MyPAC")
            .run()
            .code(5);
    }
    stop_region(&s, "MyPAC", "R1", r);
}

/// Without `PACUP_PRODUCT_VERSION`, CheckCompat on a host checks the product installed
/// there (`PACUP_HOST`), as the real caspac checks the product it belongs to: the answer
/// follows `pacup host update`, with nothing to keep in step by hand.
#[test]
fn check_compat_on_a_host_checks_the_product_installed_there() {
    use crate::support::pac::{run, spawn_agent, PAC};
    let s = RedisServer::start();
    let _agent = spawn_agent(&s, "host1", "1.0.0", &["R1"], "cold", &[]);
    let check = || {
        caspac()
            .args([&format!("-aCheckCompat={PAC}"), &sor(&s)])
            .env("PACUP_HOST", "host1")
            .run()
    };
    check().code(0).stdout_contains("1.0.0");
    // An incompatible product installed on the host (its region stopped first).
    run(&s, &["region", "stop", "R1", "--pac", PAC]).success();
    run(
        &s,
        &[
            "host",
            "update",
            "host1",
            "--pac",
            PAC,
            "--product-version",
            "2.0.0",
        ],
    )
    .success();
    check().code(3).stdout_contains("2.0.0");
    // The same through pacup, and a host the PAC does not have.
    run(&s, &["pac", "check-compat", PAC, "--host", "host1"]).code(3);
    run(&s, &["pac", "check-compat", PAC, "--host", "nohost"])
        .code(1)
        .stderr_contains("nohost");
    run(
        &s,
        &[
            "pac",
            "check-compat",
            PAC,
            "--host",
            "host1",
            "--product-version",
            "1.0.0",
        ],
    )
    .code(2);
}
