//! `cargo xtask` as a user runs it: help, bad input, and the install flow on a PATH without
//! Redis. Nothing here installs anything: the flow runs dry (PACUP_XTASK_DRY_RUN) or against
//! stand-in `apt-get` and `cargo` scripts in a temporary PATH directory.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const XTASK: &str = env!("CARGO_BIN_EXE_xtask");

/// xtask with `PATH` set to `path` only and no inherited dry-run or cargo settings. The
/// tests below are about Redis: the browser that `test` also wants is left out (its own
/// test unsets this).
fn xtask(path: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(XTASK);
    cmd.args(args)
        .env("PACUP_SKIP_BROWSER_TESTS", "1")
        .env("PATH", path)
        .env_remove("PACUP_XTASK_DRY_RUN")
        .env_remove("CARGO")
        .env_remove("DEBIAN_FRONTEND");
    cmd
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run xtask");
    (
        status.code().expect("exited"),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

fn script(dir: &Path, name: &str, body: &str) {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs its command as is, with sudo's `VAR=value` prefixes exported first.
fn fake_sudo(dir: &Path) {
    script(
        dir,
        "sudo",
        "while case \"$1\" in *=*) export \"$1\";; *) false;; esac; do shift; done\nexec \"$@\"",
    );
}

/// Stand-ins for the three Redis executables, so nothing needs installing.
fn fake_redis(dir: &Path) {
    for name in ["redis-server", "redis-sentinel", "redis-cli"] {
        script(dir, name, "exit 0");
    }
}

/// Whether this machine's plan is apt-get's (the tests below that depend on it say so).
fn debian_like() -> bool {
    std::fs::read_to_string("/etc/os-release").is_ok_and(|t| {
        t.lines().any(|l| {
            let l = l.replace('"', "");
            l == "ID=debian"
                || l == "ID=ubuntu"
                || (l.starts_with("ID_LIKE=")
                    && l.split(['=', ' ']).any(|w| w == "debian" || w == "ubuntu"))
        })
    })
}

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn help_explains_the_commands_what_they_install_and_the_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    for flag in ["--help", "-h", "help"] {
        let (code, out, err) = run(&mut xtask(dir.path(), &[flag]));
        assert_eq!(code, 0, "{err}");
        for want in [
            "Usage: cargo xtask <COMMAND> [ARGS]...",
            "  demo ",
            "  test ",
            "apt-get install redis-server redis-sentinel redis-tools",
            "brew install redis",
            "PACUP_XTASK_DRY_RUN=1",
            "Exit status",
        ] {
            assert!(out.contains(want), "{flag}: {want:?} missing from\n{out}");
        }
        assert!(err.is_empty(), "{err}");
    }
    let (code, out, _) = run(&mut xtask(dir.path(), &["help", "test"]));
    assert_eq!(code, 0);
    assert!(out.contains("Usage: cargo xtask test [ARGS]..."), "{out}");
}

#[test]
fn a_command_help_shows_examples_and_installs_nothing() {
    let dir = tempfile::tempdir().unwrap(); // no Redis on this PATH
    for (task, want) in [
        ("demo", "cargo xtask demo --job-rate"),
        ("test", "cargo xtask test --test it rollout"),
    ] {
        let (code, out, err) = run(&mut xtask(dir.path(), &[task, "--help"]));
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(want), "{out}");
        assert!(err.is_empty(), "help must not install: {err}");
    }
}

#[test]
fn unknown_commands_list_the_known_ones_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["bnech"][..], &["--frobnicate"], &["help", "nope"]] {
        let (code, out, err) = run(&mut xtask(dir.path(), args));
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{out}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(
            err.contains("unknown xtask command") && err.contains("demo, test, bench, help"),
            "{err}"
        );
    }
    // No command at all: the overview, as a usage error.
    let (code, out, err) = run(&mut xtask(dir.path(), &[]));
    assert_eq!(code, 2);
    assert!(
        out.is_empty() && err.contains("Usage: cargo xtask"),
        "{err}"
    );
}

#[test]
fn with_redis_on_path_nothing_is_installed_and_args_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    fake_redis(dir.path());
    let (code, _, err) =
        run(xtask(dir.path(), &["test", "--lib", "a b"]).env("PACUP_XTASK_DRY_RUN", "1"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(err, "xtask: would run: cargo test --lib 'a b'\n");
    let (code, _, err) =
        run(xtask(dir.path(), &["demo", "--job-rate", "5/s"]).env("PACUP_XTASK_DRY_RUN", "1"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        err,
        "xtask: would run: cargo run --release --bin pacup -- demo --job-rate 5/s\n"
    );
}

#[test]
fn dry_run_on_a_path_without_redis_prints_the_install_then_the_run() {
    let dir = tempfile::tempdir().unwrap();
    // sudo "exists" for a non-root run; the dry run never calls it.
    script(dir.path(), "sudo", "exit 99");
    let (code, out, err) =
        run(xtask(dir.path(), &["test", "--test", "it"]).env("PACUP_XTASK_DRY_RUN", "1"));
    assert!(out.is_empty(), "{out}");
    if !debian_like() {
        // Another platform's plan is covered by the unit tests; here only the shape.
        assert!(code == 0 || code == 1, "{err}");
        return;
    }
    assert_eq!(code, 0, "{err}");
    let sudo = if is_root() { "" } else { "sudo " };
    assert_eq!(
        err,
        format!(
            "xtask: redis-server, redis-sentinel and redis-cli not found on PATH; installing\n\
             xtask: would run: {sudo}apt-get update\n\
             xtask: would run: {sudo}DEBIAN_FRONTEND=noninteractive apt-get install -y \
             --no-install-recommends redis-server redis-sentinel redis-tools\n\
             xtask: would run: {sudo}service redis-server stop\n\
             xtask: would run: {sudo}service redis-sentinel stop\n\
             xtask: would run: cargo test --test it\n"
        )
    );
}

#[test]
fn a_failing_package_manager_shows_its_output_and_stops_everything() {
    if !debian_like() {
        eprintln!("skipped: the stand-in package manager is apt-get");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let log = log.display();
    fake_sudo(dir.path());
    script(
        dir.path(),
        "apt-get",
        &format!("echo \"apt-get $*\" >> {log}\necho 'E: Could not get lock /var/lib/apt/lists/lock' >&2\nexit 100"),
    );
    script(dir.path(), "cargo", &format!("echo \"cargo $*\" >> {log}"));
    let (code, _, err) = run(xtask(dir.path(), &["demo"]).env("CARGO", dir.path().join("cargo")));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("E: Could not get lock"),
        "its output is shown: {err}"
    );
    assert!(
        err.lines().last().unwrap().starts_with("error: `")
            && err
                .contains("apt-get update` failed (exit status: 100); nothing else was attempted"),
        "{err}"
    );
    let calls = std::fs::read_to_string(dir.path().join("calls.log")).unwrap();
    assert_eq!(calls, "apt-get update\n", "nothing after the failure");
}

#[test]
fn after_an_install_the_task_runs_and_its_exit_status_is_passed_through() {
    if !debian_like() {
        eprintln!("skipped: the stand-in package manager is apt-get");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    fake_sudo(dir.path());
    // "Installs" the executables into the PATH directory on `install`.
    script(
        dir.path(),
        "apt-get",
        &format!(
            "echo \"apt-get $*\" >> {d}/calls.log\n\
             case \"$1\" in install) for t in redis-server redis-sentinel redis-cli; do \
             printf '#!/bin/sh\\n' > {d}/$t; /bin/chmod 755 {d}/$t; done;; esac"
        ),
    );
    script(
        dir.path(),
        "cargo",
        &format!(
            "echo \"cargo $* (in $PWD; DEBIAN_FRONTEND=$DEBIAN_FRONTEND; \
             manifest dir=$CARGO_MANIFEST_DIR; pkg=$CARGO_PKG_NAME)\" >> {d}/calls.log\nexit 7"
        ),
    );
    // As `cargo run` starts xtask: with xtask's package variables, from anywhere.
    let (code, _, err) = run(xtask(dir.path(), &["test", "--", "--nocapture"])
        .env("CARGO", dir.path().join("cargo"))
        .env("CARGO_MANIFEST_DIR", env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_PKG_NAME", "xtask")
        .current_dir(dir.path()));
    assert_eq!(code, 7, "cargo test's status: {err}");
    let calls = std::fs::read_to_string(dir.path().join("calls.log")).unwrap();
    assert_eq!(
        calls,
        format!(
            "apt-get update\n\
         apt-get install -y --no-install-recommends redis-server redis-sentinel redis-tools\n\
         cargo test -- --nocapture (in {root}; DEBIAN_FRONTEND=; manifest dir=; pkg=)\n",
            root = Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap()
                .display()
        )
    );
    // `service` is not on this PATH: stopping the services is a precaution, not a failure.
    assert!(
        err.contains("service redis-server stop` failed") || err.contains("cannot run `"),
        "{err}"
    );
    assert!(
        err.contains("xtask: running: cargo test -- --nocapture"),
        "{err}"
    );
}

#[test]
fn an_install_that_leaves_an_executable_missing_is_a_failure() {
    if !debian_like() {
        eprintln!("skipped: the stand-in package manager is apt-get");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    fake_sudo(dir.path());
    script(dir.path(), "apt-get", "exit 0");
    let (code, _, err) = run(&mut xtask(dir.path(), &["test"]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the install finished but redis-server, redis-sentinel and redis-cli are still not on PATH"),
        "{err}"
    );
    assert!(!err.contains("running: cargo"), "{err}");
}

#[test]
fn test_also_installs_a_missing_browser_and_demo_does_not() {
    let dir = tempfile::tempdir().unwrap();
    fake_redis(dir.path());
    let dry = |args: &[&str]| {
        run(xtask(dir.path(), args)
            .env_remove("PACUP_SKIP_BROWSER_TESTS")
            .env("PACUP_XTASK_DRY_RUN", "1"))
    };
    let (code, _, err) = dry(&["demo"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("chromium"), "{err}");
    if !debian_like() || !is_root() {
        return;
    }
    let (code, _, err) = dry(&["test"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("chromium not found on PATH; installing")
            && err.contains("apt-get install -y --no-install-recommends chromium\n"),
        "{err}"
    );
}
