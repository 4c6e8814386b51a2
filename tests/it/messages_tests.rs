//! Messages that lead somewhere, and the audit trail (issue 13, items 4 and 5), as an
//! operator meets them: real `redis-server`s, the real `pacup` and `caspac` binaries, and
//! for the lease and history cases a real rollout driven by real host agents.
//!
//! Every message is checked for its exit code, its stream (stderr, nothing on stdout) and
//! for being printed once.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::Commands;
use serde_json::{json, Value};

use crate::rollout_tests::{is_event, key, Env, PAC, RUN_TIMEOUT};
use crate::support::pac::spawn_agent;
use crate::support::{caspac, pacup, Cmd, Output, RedisServer};

/// The keys of a `rollout history --json` entry, as documented in docs/rollout.md.
const HISTORY_KEYS: [&str; 13] = [
    "id",
    "from_version",
    "target",
    "process",
    "result",
    "detail",
    "started_at",
    "finished_at",
    "duration_ms",
    "reason",
    "by",
    "plan",
    "amendments",
];

fn at(server: &RedisServer) -> Cmd {
    pacup().args(["--psor", &server.url()])
}

/// Asserts the message `needle` appears exactly once on stderr and nothing on stdout.
#[track_caller]
fn once_on_stderr(out: &Output, needle: &str) {
    let n = out.stderr.matches(needle).count();
    if n != 1 {
        out.fail(&format!(
            "expected {needle:?} once on stderr, found {n} times"
        ));
    }
    if !out.stdout.trim().is_empty() {
        out.fail("expected nothing on stdout");
    }
}

fn keys(server: &RedisServer, pattern: &str) -> Vec<String> {
    let mut k: Vec<String> = server.conn().keys(pattern).unwrap();
    k.sort();
    k
}

/// `pac:{P}:events` as `pacup events --json` shows them.
fn events(server: &RedisServer, pac: &str) -> Vec<Value> {
    at(server)
        .args(["events", pac, "--json"])
        .run()
        .success()
        .json()["events"]
        .as_array()
        .cloned()
        .unwrap()
}

#[test]
fn an_unknown_pac_is_refused_once_with_close_names_by_every_command() {
    let server = RedisServer::start();
    // With no PAC at all there is nothing to suggest, and nothing to create either.
    let out = at(&server).args(["jobs", "stats", "MyPAC"]).run();
    out.code(1);
    once_on_stderr(&out, "PAC MyPAC does not exist in the PSOR");
    assert!(out.stderr.contains("this PSOR holds no PAC"), "{out}");

    at(&server).args(["pac", "init", PAC]).run().success();
    let before = keys(&server, "*");
    let typo = "MyPAc";
    let commands: &[&[&str]] = &[
        &["pac", "status", typo],
        &["pac", "check-compat", typo, "--product-version", "2.0.0"],
        &["pac", "set-mode", typo, "running"],
        &["pac", "remove-old", typo],
        &["pac", "backup", typo, "--out", "/dev/null"],
        &["events", typo],
        &["jobs", "stats", typo],
        &["jobs", "submit", typo, "--count", "3"],
        &["clients", "run", typo, "--count", "1"],
        &["rollout", "status", typo],
        &["rollout", "history", typo],
        &["rollout", "pause", typo],
        &["rollout", "abort", typo],
        &["rollout", "resume", typo],
        &["rollout", "rollback", typo],
        &["region", "stop", "REGION1", "--pac", typo],
        &[
            "host",
            "update",
            "host1",
            "--pac",
            typo,
            "--product-version",
            "2.0.0",
        ],
    ];
    for args in commands {
        let out = at(&server).args(*args).run();
        out.code(1);
        once_on_stderr(&out, &format!("PAC {typo} does not exist in the PSOR"));
        once_on_stderr(&out, "hint: did you mean MyPAC?");
        assert!(!out.stderr.contains("init"), "suggests creating it: {out}");
    }
    // caspac users get the same facts and the same suggestion.
    let out = caspac()
        .args([
            &format!("-aRemOldPAC={typo}"),
            &format!("-sredis,127.0.0.1:{}", server.port()),
        ])
        .run();
    out.code(1);
    once_on_stderr(&out, "did you mean MyPAC?");
    // Far from every name: the PACs there are.
    let out = at(&server).args(["events", "Zebra"]).run();
    out.code(1);
    once_on_stderr(&out, "hint: PACs in this PSOR: MyPAC");
    // `--json` keeps its one document; the message is still on stderr only.
    let out = at(&server).args(["pac", "status", typo, "--json"]).run();
    out.code(1);
    assert_eq!(out.json()["exists"], false);
    assert_eq!(out.stderr.matches("does not exist").count(), 1, "{out}");

    assert_eq!(
        keys(&server, "*"),
        before,
        "a refused command wrote something"
    );
}

/// Answers every connection like a web server asked something it does not understand.
struct HttpServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    fn start() -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut c) = conn else { continue };
                let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf);
                let _ = c.write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
                      Content-Length: 11\r\nConnection: close\r\n\r\nBad Request",
                );
            }
        });
        HttpServer {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocked accept so the thread sees the flag.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_server_that_does_not_speak_resp_is_named_as_such_with_exit_5() {
    let http = HttpServer::start();
    let url = format!("redis://127.0.0.1:{}", http.port);
    for out in [
        pacup().args(["--psor", &url, "pac", "list"]).run(),
        pacup().args(["--psor", &url, "pac", "status", PAC]).run(),
        caspac()
            .args([
                "-aInitPac=MyPAC",
                &format!("-sredis,127.0.0.1:{}", http.port),
            ])
            .run(),
    ] {
        out.code(5);
        once_on_stderr(
            &out,
            &format!("the server at {url} does not speak the Redis protocol"),
        );
        assert!(
            !out.stderr.contains("Parse error") && !out.stderr.contains("Unexpected"),
            "{out}"
        );
    }
}

#[test]
fn region_commands_use_the_only_pac_and_refuse_to_guess_between_several() {
    let empty = RedisServer::start();
    let out = at(&empty).args(["region", "stop", "REGION1"]).run();
    out.code(1);
    once_on_stderr(&out, "the PSOR holds no PAC; name one with --pac");

    let server = RedisServer::start();
    let _agent = spawn_agent(&server, "host1", "1.0.0", &["REGION1"], "cold", &[]);
    let listener = |server: &RedisServer| -> Option<String> {
        server
            .conn()
            .hget(key("region:REGION1"), "listener")
            .unwrap()
    };
    // One PAC: it is the one, and -v says so.
    let out = at(&server)
        .args(["-v", "region", "listener", "REGION1", "off"])
        .run();
    out.success();
    assert!(
        out.stderr.contains("using MyPAC, the only PAC in the PSOR"),
        "{out}"
    );
    assert_eq!(listener(&server).as_deref(), Some("off"));
    // Quietly without -v.
    let out = at(&server)
        .args(["region", "listener", "REGION1", "on"])
        .run();
    out.success();
    assert!(!out.stderr.contains("only PAC"), "{out}");
    assert_eq!(listener(&server).as_deref(), Some("on"));

    // Two PACs: refused, naming both, and nothing happens to the region.
    at(&server).args(["pac", "init", "Other"]).run().success();
    let out = at(&server)
        .args(["region", "listener", "REGION1", "off"])
        .run();
    out.code(1);
    once_on_stderr(
        &out,
        "the PSOR holds several PACs (MyPAC, Other); name one with --pac",
    );
    assert_eq!(listener(&server).as_deref(), Some("on"));
    at(&server)
        .args(["region", "listener", "REGION1", "off", "--pac", PAC])
        .run()
        .success();
    assert_eq!(listener(&server).as_deref(), Some("off"));
}

/// `user@host` of this process's effective user, the way the OS tells it.
fn os_user_at_host() -> String {
    let user = std::process::Command::new("id")
        .arg("-un")
        .output()
        .expect("id -un");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    format!(
        "{}@{}",
        String::from_utf8_lossy(&user.stdout).trim(),
        host.trim()
    )
}

#[test]
fn the_audit_trail_names_user_at_host_or_by_and_labels_caspac() {
    let server = RedisServer::start();
    let init_by = |server: &RedisServer| -> String {
        let ev = events(server, PAC);
        let init: Vec<&Value> = ev.iter().filter(|e| e["action"] == "init").collect();
        assert_eq!(init.len(), 1, "{ev:?}");
        init[0]["by"].as_str().unwrap().to_string()
    };
    // Not `$USER`: a pipeline may set it to anything.
    at(&server)
        .env("USER", "someone-else")
        .args(["pac", "init", PAC])
        .run()
        .success();
    let me = os_user_at_host();
    assert_eq!(init_by(&server), me);

    at(&server)
        .args(["pac", "init", PAC, "--by", "release-bot@ci"])
        .run()
        .success();
    assert_eq!(init_by(&server), "release-bot@ci");

    caspac()
        .args([
            "-aInitPac=MyPAC",
            &format!("-sredis,127.0.0.1:{}", server.port()),
        ])
        .run()
        .success();
    assert_eq!(init_by(&server), format!("{me} (caspac)"));

    // A `--by` that is no name is refused before anything is written.
    let before = events(&server, PAC);
    for bad in ["", "two\nlines"] {
        at(&server)
            .args(["pac", "init", PAC, "--by", bad])
            .run()
            .code(2)
            .stderr_contains("--by");
    }
    assert_eq!(events(&server, PAC), before);
}

#[test]
fn history_reads_records_written_before_its_fields_existed() {
    let server = RedisServer::start();
    at(&server).args(["pac", "init", PAC]).run().success();
    // A summary as the previous version wrote it: no from_version, no duration_ms.
    let old = json!({
        "id": "MyPAC-old1", "pac": PAC, "target": "2.0.0", "process": "incompatible",
        "result": "done", "detail": "", "started_at": "2026-01-01T10:00:00Z",
        "finished_at": "2026-01-01T10:05:00Z", "reason": "", "by": "operator (pacup 0.1.0)",
        "plan": {"pac": PAC},
    });
    let _: () = server
        .conn()
        .lpush(key("rollout:history"), old.to_string())
        .unwrap();

    let h = at(&server)
        .args(["rollout", "history", PAC, "--json"])
        .run()
        .success()
        .json();
    let e = &h["rollouts"][0];
    let got: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
    let mut want = HISTORY_KEYS.to_vec();
    want.sort();
    assert_eq!(got, want, "{h}");
    assert!(
        e["from_version"].is_null() && e["duration_ms"].is_null(),
        "{h}"
    );
    assert_eq!(e["by"], "operator (pacup 0.1.0)");

    let out = at(&server).args(["rollout", "history", PAC]).run();
    out.success();
    let row = out
        .stdout
        .lines()
        .find(|l| l.contains("MyPAC-old1"))
        .unwrap_or_else(|| out.fail("no row for the old record"));
    let cells: Vec<&str> = row
        .trim_matches(|c| c == '│' || c == ' ')
        .split_whitespace()
        .collect();
    // ROLLOUT FROM TO STARTED DURATION RESULT BY...
    assert_eq!(
        &cells[..6],
        [
            "MyPAC-old1",
            "-",
            "2.0.0",
            "2026-01-01T10:00:00Z",
            "-",
            "done"
        ],
        "{out}"
    );
}

/// A real rollout held by one coordinator: a second one is refused naming the rollout, the
/// holder and what to do; after an abort everything points to the rollback; the history
/// records from, to, start, duration, result, reason and who.
#[test]
fn lease_refusals_and_aborts_lead_somewhere_and_the_history_tells_the_story() {
    let env = Env::start();
    let plan = env.plan(
        "p.json",
        "two-host-incompatible.json",
        json!({"health": {"min_healthy": "2s", "deadline": "20s"}}),
    );
    let mut first = env.spawn_run(&plan, &["--by", "alice@ci-host", "--reason", "msgs e2e"]);
    first.wait_for_stdout_line(|l| is_event(l, "health_gate", "started", None), RUN_TIMEOUT);
    let id = env.journal("id").expect("journal");
    let pid = first.pid().expect("pid");

    // A second run: exit 4 at once, the facts once, then what to do.
    let out = env.pacup().args(["rollout", "run"]).arg(&plan).run();
    out.code(4);
    once_on_stderr(&out, "another coordinator holds the lease of PAC MyPAC");
    for needle in [
        format!("drives its rollout {id} (running)"),
        format!("alice@ci-host, pid {pid}, since 20"),
        "hint: follow it with `pacup rollout status --watch MyPAC`".into(),
        "--wait-lock".into(),
    ] {
        assert!(out.stderr.contains(&needle), "no {needle:?} in\n{out}");
    }
    // A rollback while it runs: pause it first.
    let out = env.pacup().args(["rollout", "rollback", PAC]).run();
    out.code(4);
    once_on_stderr(&out, "`pacup rollout pause MyPAC` first");

    env.pacup().args(["rollout", "pause", PAC]).run().success();
    first.wait_with_timeout(RUN_TIMEOUT).code(6);

    // An abort leaves the regions where they are; every message says how to go back.
    let out = env.pacup().args(["rollout", "abort", PAC]).run();
    out.success()
        .stdout_contains("`pacup rollout rollback MyPAC` returns PAC MyPAC to 1.0.0");
    let out = env.pacup().args(["rollout", "resume", PAC]).run();
    out.code(1);
    once_on_stderr(&out, "nothing to resume");
    once_on_stderr(
        &out,
        &format!("hint: rollout {id} was aborted with its regions where they were; `pacup rollout rollback MyPAC` returns PAC MyPAC to 1.0.0"),
    );
    env.pacup()
        .args(["rollout", "status", PAC])
        .run()
        .success()
        .stdout_contains("`pacup rollout rollback MyPAC`");

    // Someone else rolls it back. (Exit 7 today; an operator's completed rollback may
    // come to exit 0, which is not what this test is about.)
    let out = env
        .pacup()
        .args([
            "--by",
            "bob@ops",
            "rollout",
            "rollback",
            PAC,
            "--lease-ttl",
            "2s",
        ])
        .timeout(RUN_TIMEOUT)
        .run();
    assert!(matches!(out.code, 0 | 7), "{out}");
    env.assert_all_at("1.0.0", "1.0.0");
    let rollback_by: Vec<Value> = env
        .rollout_events(&id)
        .into_iter()
        .filter(|e| e["action"] == "rollback")
        .collect();
    assert!(
        !rollback_by.is_empty() && rollback_by.iter().all(|e| e["by"] == "bob@ops"),
        "{rollback_by:?}"
    );

    // The history: newest first, every documented field.
    let h = env
        .pacup()
        .args(["rollout", "history", PAC, "--json"])
        .run()
        .success()
        .json();
    let rollouts = h["rollouts"].as_array().expect("rollouts");
    assert_eq!(rollouts.len(), 2, "{h:#}");
    let mut want = HISTORY_KEYS.to_vec();
    want.sort();
    for r in rollouts {
        let got: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(got, want, "{r:#}");
        assert_eq!(r["id"], id.as_str());
        assert_eq!(r["from_version"], "1.0.0", "{r:#}");
        assert_eq!(r["target"], "2.0.0", "{r:#}");
        assert_eq!(r["reason"], "msgs e2e", "{r:#}");
        assert_eq!(r["by"], "alice@ci-host", "{r:#}");
        assert!(
            r["started_at"]
                .as_str()
                .is_some_and(|s| s.starts_with("20")),
            "{r:#}"
        );
        assert!(r["finished_at"].as_str().is_some(), "{r:#}");
        // It ran at least through one 2 s health gate.
        assert!(
            r["duration_ms"].as_u64().is_some_and(|d| d >= 2000),
            "{r:#}"
        );
    }
    assert_eq!(rollouts[0]["result"], "rolled_back", "{h:#}");
    assert_eq!(rollouts[1]["result"], "aborted", "{h:#}");

    let out = env.pacup().args(["rollout", "history", PAC]).run();
    out.success();
    for needle in [
        "FROM",
        "DURATION",
        "1.0.0",
        "2.0.0",
        "alice@ci-host",
        "msgs e2e",
        "rolled_back",
        "aborted",
    ] {
        out.stdout_contains(needle);
    }
    assert_eq!(out.stdout.matches(id.as_str()).count(), 2, "{out}");
    assert!(!env.exists(&key("lock")));
}
