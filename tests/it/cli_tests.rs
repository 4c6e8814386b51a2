//! The command line as a script sees it: no input makes either binary panic, a closed
//! stdout is not an error, and the exit-code tables in `--help`, README and docs/ match
//! the codes the binaries use.

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::Duration;

use proptest::prelude::*;

use crate::support::{caspac, free_port, pacup, Cmd, RedisServer};

/// A PSOR URL nothing listens on: a command that connects fails fast with 5, and no
/// fuzzed command line can reach a developer's Redis.
fn dead_psor() -> String {
    format!("redis://127.0.0.1:{}", free_port())
}

/// Words that steer the fuzzer into real subcommands and options, so it explores past
/// the first parse error. Long-running commands (demo, agent, region run, clients, jobs
/// submit) are left out: a fuzz case must end on its own.
const WORDS: &[&str] = &[
    "pac",
    "status",
    "list",
    "init",
    "check-compat",
    "set-mode",
    "remove-old",
    "backup",
    "restore",
    "rollout",
    "plan",
    "history",
    "pause",
    "abort",
    "events",
    "region",
    "listener",
    "stop",
    "--json",
    "--force",
    "--product-version",
    "--psor",
    "-q",
    "-v",
    "--help",
    "--version",
    "MyPAC",
    "2.0.0",
    "running",
    "quiesce",
    "on",
    "off",
    "-a",
    "-aInitPac=MyPAC",
    "-aSetMode=Running",
    "-sredis,127.0.0.1:1",
    "-sredis_TLS,h:1",
    "-n",
    "/rREGION1",
    "-r",
    "/s:w",
    "/f",
    "/j",
    "/w5",
    "/?",
    "-",
    "",
];

fn arg() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::sample::select(WORDS).prop_map(|w| w.as_bytes().to_vec()),
        proptest::collection::vec(any::<u8>(), 0..12),
        // A word with a stray invalid-UTF-8 byte inside.
        (proptest::sample::select(WORDS), any::<u8>()).prop_map(|(w, b)| {
            let mut v = w.as_bytes().to_vec();
            v.insert(v.len() / 2, 0x80 | b);
            v
        }),
    ]
}

fn bytes_args(args: &[Vec<u8>]) -> Vec<std::ffi::OsString> {
    use std::os::unix::ffi::OsStringExt;
    args.iter()
        .map(|a| std::ffi::OsString::from_vec(a.iter().copied().filter(|b| *b != 0).collect()))
        .collect()
}

fn check_no_panic(cmd: Cmd, dir: &std::path::Path, args: &[Vec<u8>]) {
    let out = cmd
        .args(bytes_args(args))
        .env("PACUP_PSOR", dead_psor())
        .current_dir(dir)
        .timeout(Duration::from_secs(30))
        .run();
    assert!(
        (0..=9).contains(&out.code) && !out.stderr.contains("panicked"),
        "a documented exit code and no panic expected\n{out}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Arbitrary byte strings as argv never end in a panic (exit 101) or an undocumented code.
    #[test]
    fn arbitrary_argv_never_panics(
        args in proptest::collection::vec(arg(), 0..5),
        which in 0usize..5,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cmd = match which {
            0 => pacup(),
            1 => caspac(),
            2 => Cmd::new(env!("CARGO_BIN_EXE_casstart")),
            3 => Cmd::new(env!("CARGO_BIN_EXE_casstop")),
            _ => Cmd::new(env!("CARGO_BIN_EXE_casstate")),
        };
        check_no_panic(cmd, dir.path(), &args);
    }
}

#[test]
fn caspac_refuses_non_utf8_arguments_with_exit_2() {
    use std::os::unix::ffi::OsStringExt;
    let out = caspac()
        .arg(std::ffi::OsString::from_vec(
            b"-a\xffInitPac=MyPAC".to_vec(),
        ))
        .arg("-sredis,127.0.0.1:1")
        .run();
    out.code(2).stderr_contains("not valid UTF-8");
    assert!(!out.stderr.contains("panicked"), "{out}");
}

#[test]
fn caspac_version_and_unknown_long_options() {
    caspac()
        .arg("--version")
        .run()
        .success()
        .stdout_contains("caspac (pacup ");
    caspac()
        .args(["--frobnicate", "-sredis,127.0.0.1:1"])
        .run()
        .code(2)
        .stderr_contains("unknown option \"--frobnicate\"");
}

/// Runs `program args` with stdout a pipe whose reader is already gone, so every write
/// to stdout fails with EPIPE, as in `pacup pac list | head -0`.
fn run_with_closed_stdout(program: &str, args: &[&str], psor: &str) -> std::process::Output {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills two fresh descriptors that we own from here on.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe(2)");
    // SAFETY: both descriptors were just created and are owned by nothing else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read_end);
    let child = Command::new(program)
        .args(args)
        .env("PACUP_PSOR", psor)
        .stdin(Stdio::null())
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.wait_with_output().expect("wait")
}

#[test]
fn a_closed_stdout_is_not_an_error() {
    let s = RedisServer::start();
    pacup()
        .args(["--psor", &s.url(), "pac", "init", "MyPAC"])
        .run()
        .success();
    for args in [
        &["pac", "list"][..],
        &["--json", "pac", "list"],
        &["pac", "status", "MyPAC"],
        &["--json", "pac", "status", "MyPAC"],
        &["--help"],
        &["pac", "--help"],
    ] {
        let out = run_with_closed_stdout(env!("CARGO_BIN_EXE_pacup"), args, &s.url());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "pacup {args:?} with a closed stdout: {stderr}"
        );
        assert!(stderr.is_empty(), "pacup {args:?} printed: {stderr}");
    }
    let out = run_with_closed_stdout(env!("CARGO_BIN_EXE_caspac"), &["--help"], &s.url());
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

/// Lines `| N | meaning |` (or `N  meaning` in --help) of an exit-code table.
fn table_codes(text: &str, what: &str) -> Vec<i32> {
    let start = text
        .find("## Exit codes")
        .or_else(|| text.find("Exit codes:"))
        .unwrap_or_else(|| panic!("{what} has no exit-code table"));
    let mut codes = Vec::new();
    for line in text[start..].lines().skip(1) {
        let cell = line.trim().trim_start_matches('|').trim();
        let num: String = cell.chars().take_while(|c| c.is_ascii_digit()).collect();
        match num.parse::<i32>() {
            Ok(n) if cell[num.len()..].starts_with([' ', '|']) => codes.push(n),
            _ if codes.is_empty() => continue,
            _ if line.trim().is_empty() || line.contains("---") => continue,
            _ => break,
        }
    }
    codes
}

#[test]
fn exit_code_tables_match_the_code() {
    let all: Vec<i32> = pacup::ExitCode::ALL.iter().map(|c| c.code()).collect();
    let help = pacup().arg("--help").run();
    help.success();
    assert_eq!(
        table_codes(&help.stdout, "pacup --help"),
        all,
        "{}",
        help.stdout
    );
    let root = env!("CARGO_MANIFEST_DIR");
    for doc in ["README.md", "docs/reference.md"] {
        let Ok(text) = std::fs::read_to_string(format!("{root}/{doc}")) else {
            panic!("{doc} is missing");
        };
        assert_eq!(table_codes(&text, doc), all, "{doc}'s exit-code table");
    }
    // Each meaning in --help is the library's own sentence.
    for c in pacup::ExitCode::ALL {
        assert!(
            help.stdout.contains(c.meaning()),
            "--help lacks {:?}: {}",
            c,
            c.meaning()
        );
    }
}
