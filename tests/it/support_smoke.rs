//! Smoke tests for the test support itself: if these fail, every other integration test's
//! failure is suspect, so they check each server flavour end to end with the redis crate.

use std::time::Duration;

use redis::Commands;

use crate::support::{self, RedisServer, SentinelSet};

#[test]
fn plain_server_ping_set_get() {
    let server = RedisServer::start();
    assert!(server.url().starts_with("redis://127.0.0.1:"));
    assert_ne!(server.port(), 6379);
    let mut conn = server.conn();
    let pong: String = redis::cmd("PING").query(&mut conn).unwrap();
    assert_eq!(pong, "PONG");
    let _: () = conn.set("smoke:key", "value").unwrap();
    let got: String = conn.get("smoke:key").unwrap();
    assert_eq!(got, "value");
    assert!(server.log().contains("Ready to accept connections"));
    assert!(server.dir().join("redis.conf").exists());
}

#[tokio::test]
async fn async_connection_works() {
    let server = RedisServer::builder().notify_keyspace_events("KEA").start();
    let mut conn = server.aconn().await;
    let _: () = redis::AsyncCommands::set(&mut conn, "k", 1).await.unwrap();
    let v: i64 = redis::AsyncCommands::get(&mut conn, "k").await.unwrap();
    assert_eq!(v, 1);
    let flags: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(&mut conn)
        .await
        .unwrap();
    // Redis normalises the flags; "A" and "K"/"E" must survive.
    assert!(
        flags[1].contains('A') && flags[1].contains('K'),
        "{flags:?}"
    );
}

#[test]
fn port_race_retries_on_another_port() {
    // Hold a port so the first attempt collides, as if another process had won the race.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    let server = RedisServer::builder().port_hint(taken).start();
    assert_ne!(server.port(), taken);
    let pong: String = redis::cmd("PING").query(&mut server.conn()).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
#[should_panic(expected = "failed to start")]
fn startup_failure_reports_the_log() {
    // An unknown directive makes redis-server exit at once; start() must say so, not hang.
    let _ = RedisServer::builder()
        .conf_line("no-such-directive yes")
        .start();
}

#[test]
fn unix_socket() {
    let server = RedisServer::builder().with_unix_socket().start();
    assert!(server.unix_path().exists());
    let mut conn = server.unix_client().get_connection().unwrap();
    let _: () = conn.set("via", "unix").unwrap();
    // Same server over TCP.
    let got: String = server.conn().get("via").unwrap();
    assert_eq!(got, "unix");
}

#[test]
fn acl_user_required() {
    let server = RedisServer::builder()
        .with_acl_user("pacup", "s3cret")
        .with_unix_socket()
        .start();
    assert_eq!(
        server.url(),
        format!("redis://pacup:s3cret@127.0.0.1:{}", server.port())
    );
    assert_eq!(
        server.url_without_password(),
        format!("redis://pacup@127.0.0.1:{}", server.port())
    );

    // Right credentials (TCP and unix socket).
    let _: () = server.conn().set("k", "v").unwrap();
    let got: String = server
        .unix_client()
        .get_connection()
        .unwrap()
        .get("k")
        .unwrap();
    assert_eq!(got, "v");

    // Wrong password: refused at connect time.
    let wrong = format!("redis://pacup:wrong@127.0.0.1:{}", server.port());
    let err = redis::Client::open(wrong)
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .err()
        .expect("wrong password must be refused");
    assert!(
        err.to_string().contains("WRONGPASS")
            || err.kind() == redis::ErrorKind::AuthenticationFailed,
        "{err:?}"
    );

    // No credentials: the default user is off, so commands are refused.
    let anonymous = redis::Client::open(format!("redis://127.0.0.1:{}", server.port())).unwrap();
    let refused = anonymous
        .get_connection_with_timeout(Duration::from_secs(5))
        .and_then(|mut c| redis::cmd("GET").arg("k").query::<Option<String>>(&mut c));
    assert!(refused.is_err(), "anonymous access must fail: {refused:?}");
}

#[test]
fn tls_with_client_certificate() {
    let server = RedisServer::builder().with_tls().start();
    let url = server.tls_url();
    assert_eq!(url, format!("rediss://127.0.0.1:{}", server.port()));
    for f in [
        server.ca_path(),
        server.client_cert_path(),
        server.client_key_path(),
    ] {
        assert!(f.exists(), "{}", f.display());
    }

    let mut conn = server.conn();
    let _: () = conn.set("tls", "yes").unwrap();
    let got: String = conn.get("tls").unwrap();
    assert_eq!(got, "yes");

    // The certificate also validates for "localhost".
    support::tls::ensure_crypto_provider();
    let by_name = redis::Client::build_with_tls(
        server.url_for_host("localhost"),
        server.pki().redis_certificates(),
    )
    .unwrap();
    let got: String = by_name.get_connection().unwrap().get("tls").unwrap();
    assert_eq!(got, "yes");

    // tls-auth-clients yes: no client certificate, no service.
    let no_cert =
        redis::Client::build_with_tls(url, server.pki().redis_certificates_without_client_cert())
            .unwrap();
    let refused = no_cert
        .get_connection_with_timeout(Duration::from_secs(5))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
    assert!(refused.is_err(), "connection without client cert must fail");
}

#[tokio::test]
async fn tls_optional_client_auth_async() {
    let server = RedisServer::builder().tls_auth_clients(false).start();
    support::tls::ensure_crypto_provider();
    let client = redis::Client::build_with_tls(
        server.tls_url(),
        server.pki().redis_certificates_without_client_cert(),
    )
    .unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn sentinel_resolves_master() {
    let set = SentinelSet::start("psor");
    let port = set.sentinels()[0].port();
    assert_eq!(
        set.sentinel_url("psor"),
        format!("redis+sentinel://127.0.0.1:{port}/psor")
    );
    let addr: (String, u16) = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg("psor")
        .query(&mut set.sentinels()[0].conn())
        .unwrap();
    assert_eq!(addr, ("127.0.0.1".to_string(), set.master().port()));
    let _: () = set.master().conn().set("k", "v").unwrap();
}

#[test]
fn sentinel_set_with_two_sentinels_replica_and_acl() {
    let set = SentinelSet::builder("psor")
        .sentinels(2)
        .replicas(1)
        .master(RedisServer::builder().with_acl_user("pacup", "pw"))
        .start();
    let ports: Vec<u16> = set.sentinels().iter().map(|s| s.port()).collect();
    assert_eq!(
        set.sentinel_url("psor"),
        format!(
            "redis+sentinel://127.0.0.1:{},127.0.0.1:{}/psor",
            ports[0], ports[1]
        )
    );
    for i in 0..2 {
        assert_eq!(
            set.master_addr(i),
            Some(("127.0.0.1".to_string(), set.master().port()))
        );
    }
    // The replica follows the master.
    let _: () = set.master().conn().set("replicated", "yes").unwrap();
    let mut replica = set.replicas()[0].conn();
    support::wait_until(Duration::from_secs(10), "key to reach the replica", || {
        replica
            .get::<_, Option<String>>("replicated")
            .unwrap()
            .is_some()
    });
}

#[test]
fn restart_keeps_port_and_dir() {
    let mut server = RedisServer::builder().with_acl_user("u", "p").start();
    let (port, dir) = (server.port(), server.dir().to_path_buf());
    let first_pid = server.pid().unwrap();
    let _: () = server.conn().set("k", "v").unwrap();

    server.kill();
    assert!(!server.is_running());
    assert!(server
        .client()
        .get_connection_with_timeout(Duration::from_secs(1))
        .is_err());

    server.restart();
    assert_eq!(server.port(), port);
    assert_eq!(server.dir(), dir);
    assert_ne!(server.pid().unwrap(), first_pid);
    // No persistence: a restarted PSOR is empty.
    let got: Option<String> = server.conn().get("k").unwrap();
    assert_eq!(got, None);

    // Graceful stop works too, and so does a second restart.
    server.stop();
    assert!(!server.is_running());
    server.restart();
    let pong: String = redis::cmd("PING").query(&mut server.conn()).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn pause_and_resume() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    conn.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    server.pause();
    let stalled = redis::cmd("PING").query::<String>(&mut conn);
    assert!(stalled.is_err(), "a paused server must not answer");
    server.resume();
    let pong: String = redis::cmd("PING").query(&mut server.conn()).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn cmd_helpers_run_a_process() {
    // The crate's binaries may not do anything yet; exercise the machinery with `sh`.
    let out = support::Cmd::new("sh")
        .args(["-c", "echo out; echo err >&2; cat; exit 3"])
        .stdin("from stdin")
        .env("PACUP_PSOR", "redis://example")
        .run();
    out.code(3)
        .stdout_contains("out")
        .stdout_contains("from stdin");
    out.stderr_contains("err");

    // The developer's environment is scrubbed, explicit settings win.
    let out = support::Cmd::new("sh")
        .args(["-c", "echo \"[$PACUP_PSOR][$RUST_LOG][$EXPLICIT]\""])
        .env("EXPLICIT", "x")
        .run();
    out.success().stdout_contains("[][][x]");

    let mut running = support::Cmd::new("sh")
        .args(["-c", "echo ready; exec sleep 30"])
        .spawn();
    running.wait_for_stdout_line(|l| l == "ready", Duration::from_secs(10));
    running.signal(support::SIGTERM);
    let out = running.wait_with_timeout(Duration::from_secs(10));
    assert_eq!(out.signal, Some(support::SIGTERM));
    assert_eq!(out.code, 128 + support::SIGTERM);

    // The binaries themselves are found (built by cargo for this test run).
    assert!(std::path::Path::new(env!("CARGO_BIN_EXE_pacup")).exists());
    assert!(std::path::Path::new(env!("CARGO_BIN_EXE_caspac")).exists());
    let _ = (support::pacup(), support::caspac());
}

/// Re-runs this test binary on `path` with only the named server tests, as a machine
/// without Redis would run them.
fn run_smoke_tests_with_path(path: &std::path::Path) -> std::process::Output {
    std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "support_smoke::plain_server_ping_set_get",
            "support_smoke::async_connection_works",
            "support_smoke::port_race_retries_on_another_port",
            "support_smoke::sentinel_resolves_master",
        ])
        .env("PATH", path)
        .output()
        .expect("re-run the test binary")
}

#[test]
fn without_redis_on_path_the_run_stops_once_with_one_line() {
    let empty = tempfile::tempdir().unwrap();
    let out = run_smoke_tests_with_path(empty.path());
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(101), "{stdout}\n{stderr}");
    assert_eq!(
        stderr,
        "error: redis-server and redis-sentinel are not on PATH: the integration tests start \
         their own redis-server and redis-sentinel; `cargo xtask test` installs them and runs \
         the tests\n"
    );
    // No test got as far as failing on its own.
    assert!(
        !stdout.contains("panicked") && !stdout.contains("FAILED"),
        "{stdout}"
    );

    // Only the sentinel missing: the line names it alone.
    let server_only = tempfile::tempdir().unwrap();
    let fake = server_only.path().join("redis-server");
    std::fs::write(&fake, "#!/bin/sh\nexit 1\n").unwrap();
    let mut perms = std::fs::metadata(&fake).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&fake, perms).unwrap();
    let out = run_smoke_tests_with_path(server_only.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(101), "{stderr}");
    assert!(
        stderr.starts_with("error: redis-sentinel is not on PATH: ") && stderr.lines().count() == 1,
        "{stderr}"
    );
}
