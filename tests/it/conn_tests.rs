//! Reaching the PSOR (`--psor`): TLS with a private CA and client
//! certificates, ACL users and where their password comes from (and that it is never
//! printed), Sentinel-resolved masters for both binaries, and unix sockets. Failures to
//! reach or authenticate are exit 5; a malformed address is exit 2.

use std::path::Path;
use std::time::Duration;

use redis::Commands;

use crate::support::region::{region_run, spawn_started, stop_gracefully, START};
use crate::support::{
    caspac, free_port, pacup, wait_until, Cmd, Output, RedisServer, Running, SentinelSet, TestPki,
};

fn meta_exists(c: &mut redis::Connection, pac: &str) -> bool {
    c.exists(format!("pac:{{{pac}}}:meta")).unwrap()
}

/// `--tls-ca/--tls-cert/--tls-key` for a TLS server's generated PKI.
fn tls_flags(s: &RedisServer) -> Vec<String> {
    let p = |p: &Path| p.display().to_string();
    vec![
        "--tls-ca".into(),
        p(s.ca_path()),
        "--tls-cert".into(),
        p(s.client_cert_path()),
        "--tls-key".into(),
        p(s.client_key_path()),
    ]
}

/// The same material through the environment.
fn tls_env(cmd: Cmd, s: &RedisServer) -> Cmd {
    cmd.env("PACUP_TLS_CA", s.ca_path())
        .env("PACUP_TLS_CERT", s.client_cert_path())
        .env("PACUP_TLS_KEY", s.client_key_path())
}

/// `region run` (short heartbeats) with the given connection arguments; waits for the start
/// line.
fn start_region(conn_args: &[String], pac: &str, region: &str, v: &str, start: &str) -> Running {
    start_region_cmd(pacup().args(conn_args), pac, region, v, start)
}

fn start_region_cmd(cmd: Cmd, pac: &str, region: &str, v: &str, start: &str) -> Running {
    spawn_started(region_run(cmd, pac, region, "h1", v, start), region).0
}

/// Graceful stop once the region has heartbeated twice (read through `c`).
fn stop_region(c: &mut redis::Connection, pac: &str, region: &str, r: Running) -> Output {
    stop_gracefully(c, pac, region, r)
}

fn region_state(c: &mut redis::Connection, pac: &str, region: &str) -> Option<String> {
    c.hget(format!("pac:{{{pac}}}:region:{region}"), "state")
        .unwrap()
}

/// Asserts `secret` appears nowhere in what the command printed.
#[track_caller]
fn never_printed(out: &Output, secret: &str) {
    assert!(
        !out.stdout.contains(secret) && !out.stderr.contains(secret),
        "the password {secret:?} was printed\n{out}"
    );
}

// ---------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------

#[test]
fn tls_with_private_ca_and_client_certificate() {
    let s = RedisServer::builder().with_tls().start();
    let mut c = s.conn();
    let url = s.tls_url();
    assert!(url.starts_with("rediss://127.0.0.1:"));

    // Flags.
    let mut args = vec!["--psor".to_string(), url.clone()];
    args.extend(tls_flags(&s));
    pacup()
        .args(&args)
        .args(["pac", "init", "MyPAC"])
        .run()
        .success();
    assert!(meta_exists(&mut c, "MyPAC"));

    // Environment (PACUP_PSOR too).
    tls_env(pacup(), &s)
        .env("PACUP_PSOR", &url)
        .args(["pac", "status", "MyPAC", "--json"])
        .run()
        .success()
        .stdout_contains("\"exists\":true");

    // A region runs over TLS (commands, heartbeats and notifications) and stops cleanly.
    let r = start_region(&args, "MyPAC", "R1", "1.0.0", "cold");
    let r2 = start_region_cmd(
        tls_env(pacup().args(["--psor", &url]), &s),
        "MyPAC",
        "R2",
        "2.0.0",
        "upgrade",
    );
    pacup()
        .args(&args)
        .args(["pac", "set-mode", "MyPAC", "running"])
        .run()
        .success();
    let mut r2 = r2;
    r2.wait_for_stdout_line(
        |l| l == "Region R2: store mode changed from upgrade to running",
        START,
    );
    stop_region(&mut c, "MyPAC", "R2", r2);
    stop_region(&mut c, "MyPAC", "R1", r);
    assert_eq!(
        region_state(&mut c, "MyPAC", "R1").as_deref(),
        Some("stopped")
    );

    // caspac: -sredis_TLS with the TLS material from the environment.
    tls_env(caspac(), &s)
        .args([
            "-aInitPac=Legacy",
            &format!("-sredis_TLS,127.0.0.1:{}", s.port()),
        ])
        .run()
        .success();
    assert!(meta_exists(&mut c, "Legacy"));
    // The server's certificate also names "localhost".
    tls_env(caspac(), &s)
        .args([
            "-aRemOldPAC=Legacy",
            &format!("-sREDIS_tls,localhost:{}", s.port()),
        ])
        .run()
        .success();
}

#[test]
fn tls_without_the_right_trust_or_client_certificate_is_exit_5() {
    let s = RedisServer::builder().with_tls().start();
    let url = s.tls_url();
    let other = tempfile::tempdir().unwrap();
    let foreign = TestPki::generate(other.path());
    let p = |p: &Path| p.display().to_string();
    let client = [
        "--tls-cert".to_string(),
        p(s.client_cert_path()),
        "--tls-key".into(),
        p(s.client_key_path()),
    ];

    // System roots only: our private CA is not trusted.
    pacup()
        .args(["--psor", &url])
        .args(&client)
        .args(["pac", "init", "MyPAC"])
        .run()
        .code(5);
    // Another CA.
    pacup()
        .args(["--psor", &url, "--tls-ca", &p(&foreign.ca_path)])
        .args(&client)
        .args(["pac", "init", "MyPAC"])
        .run()
        .code(5);
    // The right CA, but a client certificate the server's CA did not sign.
    pacup()
        .args(["--psor", &url, "--tls-ca", &p(s.ca_path())])
        .args(["--tls-cert", &p(&foreign.client_cert_path)])
        .args(["--tls-key", &p(&foreign.client_key_path)])
        .args(["pac", "init", "MyPAC"])
        .run()
        .code(5);
    // The right CA, no client certificate (the server requires one).
    pacup()
        .args(["--psor", &url, "--tls-ca", &p(s.ca_path())])
        .args(["pac", "init", "MyPAC"])
        .run()
        .code(5);
    // Plain TCP to a TLS port.
    pacup()
        .args(["--psor", &format!("redis://127.0.0.1:{}", s.port())])
        .args(["--connect-timeout", "2s", "--command-timeout", "2s"])
        .args(["pac", "init", "MyPAC"])
        .run()
        .code(5);
    // caspac, wrong CA from the environment.
    caspac()
        .args([
            "-aInitPac=MyPAC",
            &format!("-sredis_TLS,127.0.0.1:{}", s.port()),
        ])
        .env("PACUP_TLS_CA", &foreign.ca_path)
        .env("PACUP_TLS_CERT", s.client_cert_path())
        .env("PACUP_TLS_KEY", s.client_key_path())
        .run()
        .code(5);
    // Half a client identity, or an unreadable file, is invalid input (exit 2).
    pacup()
        .args(["--psor", &url, "--tls-ca", &p(s.ca_path())])
        .args(["--tls-cert", &p(s.client_cert_path())])
        .args(["pac", "init", "MyPAC"])
        .run()
        .code(2);
    pacup()
        .args(["--psor", &url, "--tls-ca", "/nonexistent/ca.pem"])
        .args(&client)
        .args(["pac", "init", "MyPAC"])
        .run()
        .code(2)
        .stderr_contains("/nonexistent/ca.pem");

    let n: u64 = redis::cmd("DBSIZE").query(&mut s.conn()).unwrap();
    assert_eq!(n, 0, "a refused connection wrote to the PSOR");
}

// ---------------------------------------------------------------------------------------
// ACL users and passwords
// ---------------------------------------------------------------------------------------

const PASSWORD: &str = "Sup3rS3cretPw";

/// The password of the `default` user in [`acl_password_from_url_env_or_file`].
const DEFAULT_PASSWORD: &str = "D3faultUserPw";

#[test]
fn acl_password_from_url_env_or_file() {
    // An ACL user, and a password on the default user (what a URL without a user name,
    // and caspac's -s, authenticate as).
    let s = RedisServer::builder()
        .with_acl_user("pacup", PASSWORD)
        .start();
    let mut c = s.conn();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("on")
        .arg(format!(">{DEFAULT_PASSWORD}"))
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .query(&mut c)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pwfile = dir.path().join("psor.pw");
    std::fs::write(&pwfile, format!("{PASSWORD}\n")).unwrap();

    // In the URL.
    let out = pacup()
        .args(["--psor", &s.url(), "pac", "init", "ViaUrl"])
        .run();
    out.success();
    never_printed(&out, PASSWORD);
    // From PACUP_PSOR_PASSWORD (URL with the user only, or with no user: default user).
    let out = pacup()
        .args(["--psor", &s.url_without_password(), "pac", "init", "ViaEnv"])
        .env("PACUP_PSOR_PASSWORD", PASSWORD)
        .run();
    out.success();
    never_printed(&out, PASSWORD);
    // From a password file (trailing newline stripped).
    let out = pacup()
        .args(["--psor", &s.url_without_password(), "--psor-password-file"])
        .arg(&pwfile)
        .args(["pac", "init", "ViaFile"])
        .run();
    out.success();
    never_printed(&out, PASSWORD);
    for p in ["ViaUrl", "ViaEnv", "ViaFile"] {
        assert!(meta_exists(&mut c, p), "{p}");
    }

    // A region authenticates every connection it opens (commands, notifications).
    let r = start_region_cmd(
        pacup()
            .args(["--psor", &s.url_without_password()])
            .env("PACUP_PSOR_PASSWORD", PASSWORD),
        "ViaEnv",
        "R1",
        "1.0.0",
        "cold",
    );
    let r2 = start_region(
        &["--psor".to_string(), s.url()],
        "ViaEnv",
        "R2",
        "2.0.0",
        "upgrade",
    );
    pacup()
        .args(["--psor", &s.url(), "pac", "set-mode", "ViaEnv", "running"])
        .run()
        .success();
    let mut r = r;
    r.wait_for_stdout_line(|l| l.starts_with("Region R1: listener"), START);
    let out = stop_region(&mut c, "ViaEnv", "R2", r2);
    never_printed(&out, PASSWORD);
    let out = stop_region(&mut c, "ViaEnv", "R1", r);
    never_printed(&out, PASSWORD);

    // No user name: the default user's password, from the environment...
    let out = pacup()
        .args(["--psor", &format!("redis://127.0.0.1:{}", s.port())])
        .args(["pac", "init", "Default"])
        .env("PACUP_PSOR_PASSWORD", DEFAULT_PASSWORD)
        .run();
    out.success();
    never_printed(&out, DEFAULT_PASSWORD);
    assert!(meta_exists(&mut c, "Default"));
    // ...which is also how caspac authenticates (its -s has no place for credentials).
    let out = caspac()
        .args([
            "-aInitPac=Legacy",
            &format!("-sredis,127.0.0.1:{}", s.port()),
        ])
        .env("PACUP_PSOR_PASSWORD", DEFAULT_PASSWORD)
        .run();
    out.success();
    never_printed(&out, DEFAULT_PASSWORD);
    assert!(meta_exists(&mut c, "Legacy"));
    let out = caspac()
        .args([
            "-aRemOldPAC=Legacy",
            &format!("-sredis,127.0.0.1:{}", s.port()),
        ])
        .env("PACUP_PSOR_PASSWORD", "not-the-password")
        .run();
    out.code(5);
    never_printed(&out, "not-the-password");
}

#[test]
fn wrong_or_missing_password_is_exit_5_and_never_printed() {
    let s = RedisServer::builder()
        .with_acl_user("pacup", PASSWORD)
        .start();
    let wrong = "Wr0ngPassw0rdX";
    let port = s.port();
    let dir = tempfile::tempdir().unwrap();
    let pwfile = dir.path().join("psor.pw");
    std::fs::write(&pwfile, wrong).unwrap();

    let attempts: Vec<Cmd> = vec![
        pacup().args(["--psor", &format!("redis://pacup:{wrong}@127.0.0.1:{port}")]),
        pacup()
            .args(["--psor", &format!("redis://pacup@127.0.0.1:{port}")])
            .env("PACUP_PSOR_PASSWORD", wrong),
        pacup()
            .args(["--psor", &format!("redis://pacup@127.0.0.1:{port}")])
            .arg("--psor-password-file")
            .arg(&pwfile),
        pacup().env(
            "PACUP_PSOR",
            format!("redis://pacup:{wrong}@127.0.0.1:{port}"),
        ),
        // With a password the URL wins over the environment: a wrong one in the URL fails.
        pacup()
            .args(["--psor", &format!("redis://pacup:{wrong}@127.0.0.1:{port}")])
            .env("PACUP_PSOR_PASSWORD", PASSWORD),
    ];
    for cmd in attempts {
        for args in [
            &["pac", "init", "MyPAC"][..],
            &["-vv", "pac", "status", "MyPAC", "--json"],
            &["pac", "list"],
        ] {
            let out = cmd.clone().args(args).run();
            out.code(5);
            assert!(
                out.stderr.contains("authentication") || out.stderr.contains("WRONGPASS"),
                "{out}"
            );
            never_printed(&out, wrong);
            never_printed(&out, PASSWORD);
        }
    }
    // A region refused by the PSOR exits 5 too.
    let out = pacup()
        .args(["--psor", &format!("redis://pacup:{wrong}@127.0.0.1:{port}")])
        .args(["region", "run", "R1", "--pac", "MyPAC", "--host", "h1"])
        .args(["--product-version", "1.0.0", "--start-type", "cold"])
        .run();
    out.code(5);
    never_printed(&out, wrong);

    // No password at all (the default user is disabled).
    pacup()
        .args([
            "--psor",
            &format!("redis://127.0.0.1:{port}"),
            "pac",
            "list",
        ])
        .run()
        .code(5);
    // caspac: wrong or missing password.
    let out = caspac()
        .args(["-aInitPac=MyPAC", &format!("-sredis,127.0.0.1:{port}")])
        .env("PACUP_PSOR_PASSWORD", wrong)
        .run();
    out.code(5);
    never_printed(&out, wrong);
    caspac()
        .args(["-aSetMode=Running", &format!("-sredis,127.0.0.1:{port}")])
        .run()
        .code(5);

    // A malformed URL with a password is exit 2, and the password is not echoed either.
    let out = pacup()
        .args([
            "--psor",
            &format!("memcached://pacup:{wrong}@127.0.0.1:{port}"),
        ])
        .args(["pac", "list"])
        .run();
    out.code(2);
    never_printed(&out, wrong);

    let n: u64 = redis::cmd("DBSIZE").query(&mut s.conn()).unwrap();
    assert_eq!(n, 0);
}

/// The password of a unix-socket URL (`?pass=`) must be hidden like any other.
#[test]
fn unix_socket_url_password_is_never_printed() {
    let s = RedisServer::builder()
        .with_acl_user("pacup", PASSWORD)
        .with_unix_socket()
        .start();
    let wrong = "Wr0ngPassw0rdX";
    let sock = s.unix_path();
    for scheme in ["unix", "redis+unix"] {
        let url = format!("{scheme}://{}?user=pacup&pass={wrong}", sock.display());
        let out = pacup().args(["--psor", &url, "pac", "list"]).run();
        out.code(5);
        never_printed(&out, wrong);
        // Unreachable socket path: same rule.
        let url = format!("{scheme}:///nonexistent/redis.sock?user=pacup&pass={wrong}");
        let out = pacup().args(["--psor", &url, "pac", "list"]).run();
        out.code(5);
        never_printed(&out, wrong);
    }
}

// ---------------------------------------------------------------------------------------
// Sentinel
// ---------------------------------------------------------------------------------------

#[test]
fn sentinel_resolves_the_master_for_pacup() {
    let set = SentinelSet::start("mymaster");
    let mut c = set.master().conn();
    let url = set.sentinel_url("mymaster");
    assert!(url.starts_with("redis+sentinel://127.0.0.1:"));

    pacup()
        .args(["--psor", &url, "pac", "init", "MyPAC"])
        .run()
        .success();
    assert!(meta_exists(&mut c, "MyPAC"));

    // A region runs through the Sentinel-resolved master.
    let args = ["--psor".to_string(), url.clone()];
    let r = start_region(&args, "MyPAC", "R1", "1.0.0", "cold");
    let members: Vec<String> = c.smembers("pac:{MyPAC}:store:1.0.0:members").unwrap();
    assert_eq!(members, ["R1"]);
    pacup()
        .env("PACUP_PSOR", &url)
        .args(["pac", "status", "MyPAC"])
        .run()
        .success()
        .stdout_contains("R1");
    stop_region(&mut c, "MyPAC", "R1", r);

    // A master name the sentinels do not know: cannot be reached (5), nothing written.
    let before: u64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    pacup()
        .args([
            "--psor",
            &set.sentinel_url("nosuchmaster"),
            "pac",
            "init",
            "Other",
        ])
        .run()
        .code(5);
    // No sentinel at all answering.
    pacup()
        .args([
            "--psor",
            &format!("redis+sentinel://127.0.0.1:{}/mymaster", free_port()),
            "pac",
            "init",
            "Other",
        ])
        .run()
        .code(5);
    let after: u64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(before, after);
}

#[test]
fn caspac_with_several_sentinels_and_a_sor_name() {
    let set = SentinelSet::builder("mymaster").sentinels(2).start();
    let mut c = set.master().conn();
    let ports: Vec<u16> = set.sentinels().iter().map(|s| s.port()).collect();
    let hosts = format!("-sredis,127.0.0.1:{},127.0.0.1:{}", ports[0], ports[1]);

    caspac()
        .args(["-aInitPac=MyPAC", &hosts, "-nmymaster"])
        .run()
        .success();
    assert!(meta_exists(&mut c, "MyPAC"));
    // The SOR name may follow as the next argument; letters are case-insensitive.
    caspac()
        .args(["-AINITPAC=Second", &hosts, "-N", "mymaster"])
        .run()
        .success();
    assert!(meta_exists(&mut c, "Second"));
    // The same PSOR through pacup's own sentinel URL.
    pacup()
        .args([
            "--psor",
            &set.sentinel_url("mymaster"),
            "pac",
            "list",
            "--json",
        ])
        .run()
        .success()
        .stdout_contains("\"Second\"");

    // The first sentinel being down does not matter while another answers.
    let down = format!("-sredis,127.0.0.1:{},127.0.0.1:{}", free_port(), ports[1]);
    caspac()
        .args(["-aInitPac=Third", &down, "-nmymaster"])
        .run()
        .success();
    assert!(meta_exists(&mut c, "Third"));

    // Several hosts without a SOR name is a usage error; an unknown SOR name is exit 5.
    caspac()
        .args(["-aInitPac=MyPAC", &hosts])
        .run()
        .code(2)
        .stderr_contains("-n<sorName>");
    caspac()
        .args(["-aInitPac=Fourth", &hosts, "-nnosuchmaster"])
        .run()
        .code(5);
    assert!(!meta_exists(&mut c, "Fourth"));
}

// ---------------------------------------------------------------------------------------
// unix socket
// ---------------------------------------------------------------------------------------

#[test]
fn unix_socket_urls() {
    let s = RedisServer::builder().with_unix_socket().start();
    let mut c = s.conn();
    let sock = s.unix_path();
    for (scheme, pac) in [("unix", "ViaUnix"), ("redis+unix", "ViaRUnix")] {
        let url = format!("{scheme}://{}", sock.display());
        pacup()
            .args(["--psor", &url, "pac", "init", pac])
            .run()
            .success();
        assert!(meta_exists(&mut c, pac), "{url}");
    }
    let url = format!("unix://{}", sock.display());
    let r = start_region(
        &["--psor".to_string(), url.clone()],
        "ViaUnix",
        "R1",
        "1.0.0",
        "cold",
    );
    pacup()
        .args(["--psor", &url, "pac", "status", "ViaUnix", "--json"])
        .run()
        .success()
        .stdout_contains("\"live_members\":[\"R1\"]");
    stop_region(&mut c, "ViaUnix", "R1", r);

    // A socket that does not exist: exit 5.
    pacup()
        .args([
            "--psor",
            "unix:///nonexistent/dir/redis.sock",
            "pac",
            "list",
        ])
        .run()
        .code(5);
}

/// ACL over the unix socket, the password from the environment.
#[test]
fn unix_socket_with_acl_password_from_env() {
    let s = RedisServer::builder()
        .with_acl_user("pacup", PASSWORD)
        .with_unix_socket()
        .start();
    let mut c = s.conn();
    let url = format!("redis+unix://{}?user=pacup", s.unix_path().display());
    let out = pacup()
        .args(["--psor", &url, "pac", "init", "MyPAC"])
        .env("PACUP_PSOR_PASSWORD", PASSWORD)
        .run();
    out.success();
    never_printed(&out, PASSWORD);
    assert!(meta_exists(&mut c, "MyPAC"));
    // The support's own URL (credentials in the query) works as well.
    pacup()
        .args(["--psor", &s.unix_url(), "pac", "list", "--json"])
        .run()
        .success()
        .stdout_contains("MyPAC");
}

/// Behind Sentinel the master can move: a running region follows it. After a failover
/// its heartbeats (first refused by the demoted master with READONLY, or cut) land on the
/// new master, and jobs submitted there are taken and completed.
#[test]
fn a_region_follows_a_sentinel_failover() {
    let set = SentinelSet::builder("mymaster").replicas(1).start();
    let url = set.sentinel_url("mymaster");
    let args = ["--psor".to_string(), url.clone()];
    let r = start_region(&args, "MyPAC", "R1", "1.0.0", "cold");
    let old_port = set.master().port();
    let new = set.replicas()[0].port();

    // A sentinel refuses (NOGOODSLAVE) until it has seen the replica's link up in a
    // recent INFO; ask until it accepts.
    wait_until(
        Duration::from_secs(30),
        "the sentinel to accept a failover",
        || {
            redis::cmd("SENTINEL")
                .arg("FAILOVER")
                .arg("mymaster")
                .query::<String>(&mut set.sentinels()[0].conn())
                .is_ok()
        },
    );
    wait_until(
        Duration::from_secs(30),
        "the sentinels to name the new master",
        || set.master_addr(0).is_some_and(|(_, p)| p != old_port),
    );
    assert_eq!(set.master_addr(0).map(|(_, p)| p), Some(new));
    let mut nc = set.replicas()[0].conn();
    let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut nc).unwrap();
    assert_eq!(
        role.first(),
        Some(&redis::Value::BulkString(b"master".to_vec()))
    );

    // Heartbeats reach the new master: heartbeat_at moves past the failover.
    let key = "pac:{MyPAC}:region:R1";
    let t0: u64 = {
        let t: Vec<String> = redis::cmd("TIME").query(&mut nc).unwrap();
        t[0].parse::<u64>().unwrap() * 1000
    };
    wait_until(
        Duration::from_secs(30),
        "a heartbeat written to the new master",
        || {
            let hb: Option<String> = nc.hget(key, "heartbeat_at").unwrap();
            hb.and_then(|h| h.parse::<u64>().ok())
                .is_some_and(|h| h > t0 + 500)
        },
    );
    assert!(nc.exists::<_, bool>("pac:{MyPAC}:region:R1:alive").unwrap());

    // Work goes on through the new master.
    pacup()
        .args(["--psor", &url, "jobs", "submit", "MyPAC", "--count", "10"])
        .run()
        .success();
    wait_until(Duration::from_secs(30), "the jobs to complete", || {
        let done: Option<u64> = nc.hget("pac:{MyPAC}:ds:stats", "completed").unwrap();
        done == Some(10)
    });
    stop_region(&mut nc, "MyPAC", "R1", r);
}
