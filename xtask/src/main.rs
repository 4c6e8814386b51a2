//! `cargo xtask <command>`: the repository's set-up-and-run tasks, so a machine with only the
//! Rust toolchain gets from a clone to a running demo or a passing test suite in one command.
//! The `cargo xtask` alias is in .cargo/config.toml (cargo's xtask convention).
//!
//! Arguments are parsed by hand: everything after the command name goes verbatim to
//! `pacup demo` or `cargo test`, which a derive parser would insist on interpreting.

mod install;

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use install::{join_names, missing_tools, plan_install, run_plan, shell_word, Platform, Tool};

/// A `cargo xtask` command. Adding one (e.g. `bench`) is one entry in [`TASKS`].
struct Task {
    name: &'static str,
    summary: &'static str,
    /// The body of `cargo xtask <name> --help`, after the usage line.
    help: &'static str,
    /// The command run once the Redis tools are on PATH: cargo subcommand and arguments
    /// placed before the user's ARGS.
    cargo_args: &'static [&'static str],
    /// The executables it needs on PATH (installed when missing).
    tools: &'static [Tool],
    /// A cargo command run first (the bench needs the release `pacup` it measures).
    before: &'static [&'static str],
    /// Builds in this subdirectory of the target directory (`CARGO_TARGET_DIR`, else
    /// `target/`), so its release build neither waits for nor replaces anyone else's.
    target_subdir: Option<&'static str>,
}

const TASKS: &[Task] = &[
    Task {
        name: "demo",
        summary: "Run `pacup demo` (release build): a full rollout under load on this machine",
        help: "Makes sure the Redis executables are on PATH (see `cargo xtask --help`), then runs\n\
               `cargo run --release --bin pacup -- demo ARGS`: a private redis-server, two host\n\
               agents and a job and client load, a full incompatible rollout 1.0.0 -> 2.0.0, and a\n\
               summary that ends with \"nothing lost\". The exit status is the demo's.\n\
               \n\
               ARGS are pacup demo's options (`cargo run --release -- demo --help` lists them).\n\
               \n\
               Examples:\n  \
                 cargo xtask demo\n  \
                 cargo xtask demo --job-rate 100/s --mode-flip after-all-waves",
        cargo_args: &["run", "--release", "--bin", "pacup", "--", "demo"],
        tools: &Tool::ALL,
        before: &[],
        target_subdir: None,
    },
    Task {
        name: "test",
        summary: "Run `cargo test`: the unit and integration tests",
        help: "Makes sure the Redis executables and a headless Chromium (for the `rollout report`\n\
               test) are on PATH (see `cargo xtask --help`), then runs\n\
               `cargo test ARGS` in the repository root. The integration tests start their own\n\
               redis-server and redis-sentinel processes on free loopback ports (never 6379).\n\
               The exit status is cargo test's.\n\
               \n\
               ARGS are cargo test's (`cargo test --help` lists them).\n\
               \n\
               Examples:\n  \
                 cargo xtask test\n  \
                 cargo xtask test --test it rollout\n  \
                 cargo xtask test --lib -- --nocapture",
        cargo_args: &["test"],
        tools: &Tool::TESTS,
        before: &[],
        target_subdir: None,
    },
    Task {
        name: "bench",
        summary: "Run the coordinator's benchmark (release build) and print its markdown table",
        help: "Makes sure the Redis executables are on PATH (see `cargo xtask --help`), builds the\n\
               release `pacup`, then runs `cargo run --release --example bench -- ARGS`: on private\n\
               redis-servers, rollouts of 100, 500 and 1000 regions under job and client load, a\n\
               mode change reaching every region, `pac remove-old` of a 1M-key store beside 4M keys\n\
               of another PAC, and `pac status --json`, as a markdown table (docs/performance.md).\n\
               It builds into its own target directory (`bench/` under CARGO_TARGET_DIR or\n\
               target/). The full run takes a while on 2 cores; `--quick` runs small sizes,\n\
               `--sizes 100,1000` picks the PACs, `--remove-keys N --foreign-keys N` sizes (c),\n\
               `--only a,b,c,d` picks the parts (`--help` after `--` lists them).\n\
               \n\
               Examples:\n  \
                 cargo xtask bench --quick\n  \
                 cargo xtask bench\n  \
                 cargo xtask bench --only a,d\n  \
                 cargo xtask bench --sizes 1000 --only b,c --remove-keys 200000 --foreign-keys 800000",
        cargo_args: &["run", "--release", "--example", "bench", "--"],
        tools: &Tool::ALL,
        before: &["build", "--release", "--bin", "pacup"],
        target_subdir: Some("bench"),
    },
];

const DRY_RUN_ENV: &str = "PACUP_XTASK_DRY_RUN";

/// Set-up failed (Redis missing and not installable, or the install failed).
const EXIT_SETUP: u8 = 1;
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(first) = args.next() else {
        eprint!("{}", overview());
        return ExitCode::from(EXIT_USAGE);
    };
    let rest: Vec<OsString> = args.collect();
    match first.to_str() {
        Some("-h" | "--help") => {
            print!("{}", overview());
            ExitCode::SUCCESS
        }
        Some("help") => match rest.first().map(|a| a.to_string_lossy()) {
            None => {
                print!("{}", overview());
                ExitCode::SUCCESS
            }
            Some(name) => match find_task(&name) {
                Some(task) => {
                    print!("{}", task_help(task));
                    ExitCode::SUCCESS
                }
                None => unknown(&name),
            },
        },
        Some(name) => match find_task(name) {
            // Only a help flag right after the command is xtask's; later ones belong to ARGS.
            Some(task)
                if matches!(rest.first().and_then(|a| a.to_str()), Some("-h" | "--help")) =>
            {
                print!("{}", task_help(task));
                ExitCode::SUCCESS
            }
            Some(task) => run_task(task, &rest),
            None => unknown(name),
        },
        None => unknown(&first.to_string_lossy()),
    }
}

fn find_task(name: &str) -> Option<&'static Task> {
    TASKS.iter().find(|t| t.name == name)
}

fn unknown(name: &str) -> ExitCode {
    let known: Vec<&str> = TASKS.iter().map(|t| t.name).chain(["help"]).collect();
    eprintln!(
        "error: unknown xtask command `{name}`; known commands: {} (`cargo xtask --help` \
         explains them)",
        known.join(", ")
    );
    ExitCode::from(EXIT_USAGE)
}

fn overview() -> String {
    let width = TASKS.iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
    let mut commands = String::new();
    for (name, summary) in TASKS.iter().map(|t| (t.name, t.summary)).chain([(
        "help",
        "Print this help, or a command's (`cargo xtask help demo`)",
    )]) {
        commands.push_str(&format!("  {name:<width$}  {summary}\n"));
    }
    format!(
        "Set up and run pacup's demo and tests on this machine.\n\
         \n\
         Usage: cargo xtask <COMMAND> [ARGS]...\n\
         \n\
         Commands:\n\
         {commands}\
         \n\
         Before running, every command makes sure redis-server, redis-sentinel and redis-cli\n\
         are on PATH. Missing ones are installed with the system's package manager, each\n\
         command printed before it runs, through sudo when not root (`test` also installs\n\
         the `chromium` package: the report test renders a page in it):\n  \
           Debian/Ubuntu  apt-get update; apt-get install redis-server redis-sentinel redis-tools\n  \
           Fedora/RHEL    dnf install redis\n  \
           Alpine         apk add redis\n  \
           macOS          brew install redis\n\
         On Debian/Ubuntu the services those packages start (ports 6379 and 26379) are stopped\n\
         again: the demo and the tests run private servers on free ports. Where xtask cannot\n\
         install (another system, or not root and no sudo) it says what to run, and exits 1.\n\
         \n\
         Environment:\n  \
           {DRY_RUN_ENV}=1  print the commands (install, then run) without running any\n  \
           PACUP_SKIP_BROWSER_TESTS=1  `test` needs no browser (the report test skips its\n  \
                                       rendering check)\n\
         \n\
         Exit status: the demo's or cargo test's; 1 when the set-up fails; 2 for a usage error.\n\
         \n\
         Examples:\n  \
           cargo xtask demo\n  \
           cargo xtask test --test it psor\n  \
           {DRY_RUN_ENV}=1 cargo xtask test\n"
    )
}

fn task_help(task: &Task) -> String {
    format!(
        "{}.\n\nUsage: cargo xtask {} [ARGS]...\n\n{}\n",
        task.summary, task.name, task.help
    )
}

/// `cargo ARGS` in the repository root, without the variables `cargo run` gave xtask.
fn cargo_command(args: &[&str]) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args(args).current_dir(workspace_root());
    // `cargo run` gave xtask its package's variables (CARGO_MANIFEST_DIR, CARGO_PKG_*, ...).
    // Passed on, they differ from a plain `cargo test`'s environment, and build scripts that
    // watch them (ring's watches CARGO_MANIFEST_DIR) would rebuild on every switch between
    // `cargo test` and `cargo xtask test`.
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(set_by_cargo_run) {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn run_task(task: &Task, args: &[OsString]) -> ExitCode {
    let dry_run = std::env::var_os(DRY_RUN_ENV).is_some_and(|v| !v.is_empty() && v != "0");
    if let Err(msg) = ensure_tools(task.tools, dry_run) {
        eprintln!("error: {msg}");
        return ExitCode::from(EXIT_SETUP);
    }
    // Both of a task's cargo commands build into the same directory (the bench finds the
    // `pacup` it measures beside itself).
    let target = task.target_subdir.map(|sub| {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target"))
            .join(sub)
    });
    let env_shown = target
        .as_ref()
        .map(|t| format!("CARGO_TARGET_DIR={} ", shell_word(&t.to_string_lossy())))
        .unwrap_or_default();
    let with_target = |mut cmd: Command| {
        if let Some(t) = &target {
            cmd.env("CARGO_TARGET_DIR", t);
        }
        cmd
    };
    if !task.before.is_empty() {
        let shown = format!("{env_shown}cargo {}", task.before.join(" "));
        if dry_run {
            eprintln!("xtask: would run: {shown}");
        } else {
            eprintln!("xtask: running: {shown}");
            match with_target(cargo_command(task.before)).status() {
                Ok(s) if s.success() => {}
                Ok(s) => return exit_code_of(s),
                Err(e) => {
                    eprintln!("error: cannot run `{shown}`: {e}");
                    return ExitCode::from(EXIT_SETUP);
                }
            }
        }
    }
    let mut cmd = with_target(cargo_command(task.cargo_args));
    cmd.args(args);
    // Shown as `cargo ...`: it is the cargo that runs xtask, whatever its full path.
    let shown: Vec<String> = task
        .cargo_args
        .iter()
        .map(|a| a.to_string())
        .chain(args.iter().map(|a| shell_word(&a.to_string_lossy())))
        .collect();
    let shown = format!("{env_shown}cargo {}", shown.join(" "));
    if dry_run {
        eprintln!("xtask: would run: {shown}");
        return ExitCode::SUCCESS;
    }
    eprintln!("xtask: running: {shown}");
    // Ctrl-C reaches the whole foreground group; xtask waits so the demo can stop its servers
    // and print its summary before the shell prompt comes back.
    ignore_sigint_in_this_process();
    match cmd.status() {
        Ok(status) => exit_code_of(status),
        Err(e) => {
            eprintln!(
                "error: cannot run `{shown}` ({}): {e}",
                PathBuf::from(cmd.get_program()).display()
            );
            ExitCode::from(EXIT_SETUP)
        }
    }
}

fn set_by_cargo_run(key: &str) -> bool {
    key.starts_with("CARGO_PKG_")
        || matches!(
            key,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
        )
}

/// Installs whichever of `tools` is missing; `Err` is the one-line reason. With
/// PACUP_SKIP_BROWSER_TESTS=1 the tests do not need a browser, so none is installed.
fn ensure_tools(tools: &[Tool], dry_run: bool) -> Result<(), String> {
    let path = std::env::var_os("PATH");
    let skip_browser =
        std::env::var_os("PACUP_SKIP_BROWSER_TESTS").is_some_and(|v| !v.is_empty() && v != "0");
    let wanted: Vec<Tool> = tools
        .iter()
        .copied()
        .filter(|t| !(skip_browser && *t == Tool::Browser))
        .collect();
    let missing = missing_tools(path.as_deref(), &wanted);
    if missing.is_empty() {
        return Ok(());
    }
    let os_release = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .ok();
    let platform = Platform::new(std::env::consts::OS, os_release.as_deref());
    let plan = plan_install(
        platform,
        is_root(),
        install::on_path(path.as_deref(), "sudo"),
        &missing,
    )
    .map_err(|e| e.to_string())?;
    let names = join_names(missing.iter().map(|t| t.executable()));
    eprintln!("xtask: {names} not found on PATH; installing");
    run_plan(&plan, dry_run)?;
    if dry_run {
        return Ok(());
    }
    let still = missing_tools(path.as_deref(), &missing);
    if !still.is_empty() {
        return Err(format!(
            "the install finished but {} {} still not on PATH ({})",
            join_names(still.iter().map(|t| t.executable())),
            if still.len() == 1 { "is" } else { "are" },
            path.as_deref()
                .map(OsStr::to_string_lossy)
                .unwrap_or_default()
        ));
    }
    Ok(())
}

/// The directory holding the root Cargo.toml: cargo runs xtask with CARGO_MANIFEST_DIR set
/// to xtask/ (read at run time, so a moved checkout still works).
fn workspace_root() -> PathBuf {
    let xtask_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    xtask_dir.parent().map(PathBuf::from).unwrap_or(xtask_dir)
}

#[cfg(unix)]
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(not(unix))]
fn is_root() -> bool {
    false
}

/// A handler that does nothing, not SIG_IGN: an ignored signal stays ignored across exec, so
/// the child would not see Ctrl-C either; a handler is reset to the default there.
#[cfg(unix)]
fn ignore_sigint_in_this_process() {
    extern "C" fn nothing(_: libc::c_int) {}
    // SAFETY: installs an async-signal-safe handler (it does nothing) for SIGINT.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = nothing as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        action.sa_flags = libc::SA_RESTART;
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
    }
}

#[cfg(not(unix))]
fn ignore_sigint_in_this_process() {}

/// The child's exit code; a child killed by a signal exits 128 + signal, as a shell reports it.
fn exit_code_of(status: std::process::ExitStatus) -> ExitCode {
    if let Some(code) = status.code() {
        return ExitCode::from(u8::try_from(code).unwrap_or(EXIT_SETUP));
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return ExitCode::from(u8::try_from(128 + sig).unwrap_or(EXIT_SETUP));
        }
    }
    ExitCode::from(EXIT_SETUP)
}
