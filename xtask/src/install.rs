//! Which Redis executables are missing, and how this system's package manager installs them.
//!
//! Choosing the package manager and building its commands is pure ([`plan_install`]), so every
//! platform's plan is unit tested on any machine; [`run_plan`] is the only part that acts.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// An executable the demo or the tests start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Server,
    Sentinel,
    Cli,
    /// A headless Chromium: the `rollout report` test renders the report in it.
    Browser,
}

impl Tool {
    /// What the demo needs.
    pub const ALL: [Tool; 3] = [Tool::Server, Tool::Sentinel, Tool::Cli];
    /// What the tests need.
    pub const TESTS: [Tool; 4] = [Tool::Server, Tool::Sentinel, Tool::Cli, Tool::Browser];

    pub fn executable(self) -> &'static str {
        match self {
            Tool::Server => "redis-server",
            Tool::Sentinel => "redis-sentinel",
            Tool::Cli => "redis-cli",
            Tool::Browser => "chromium",
        }
    }

    /// The package that provides it under `manager`; `None` where no package puts it on
    /// PATH (Homebrew installs Chromium as an app).
    fn package(self, manager: Manager) -> Option<&'static str> {
        Some(match (manager, self) {
            (Manager::Brew, Tool::Browser) => return None,
            (_, Tool::Browser) => "chromium",
            // Debian splits Redis in three; redis-cli comes with redis-tools.
            (Manager::Apt, Tool::Server) => "redis-server",
            (Manager::Apt, Tool::Sentinel) => "redis-sentinel",
            (Manager::Apt, Tool::Cli) => "redis-tools",
            // Elsewhere one package carries all three executables.
            (Manager::Dnf | Manager::Apk | Manager::Brew, _) => "redis",
        })
    }
}

/// The tools of `wanted` that no directory of `path` (a PATH value) holds as an executable.
pub fn missing_tools(path: Option<&OsStr>, wanted: &[Tool]) -> Vec<Tool> {
    let dirs: Vec<PathBuf> = path
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    wanted
        .iter()
        .copied()
        .filter(|t| !dirs.iter().any(|d| is_executable(&d.join(t.executable()))))
        .collect()
}

pub fn on_path(path: Option<&OsStr>, program: &str) -> bool {
    path.is_some_and(|p| std::env::split_paths(p).any(|d| is_executable(&d.join(program))))
}

fn is_executable(p: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        p.is_file()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    Apt,
    Dnf,
    Apk,
    Brew,
}

impl Manager {
    fn install_argv(self, packages: &[&str]) -> Vec<String> {
        let head: &[&str] = match self {
            Manager::Apt => &["apt-get", "install", "-y", "--no-install-recommends"],
            Manager::Dnf => &["dnf", "install", "-y"],
            // --no-cache fetches a fresh index, so no separate update step is needed.
            Manager::Apk => &["apk", "add", "--no-cache"],
            Manager::Brew => &["brew", "install"],
        };
        head.iter().chain(packages).map(|s| s.to_string()).collect()
    }
}

/// What the machine is, as far as choosing a package manager goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform<'a> {
    MacOs,
    /// Linux, with the contents of /etc/os-release when it could be read.
    Linux(Option<&'a str>),
    /// Any other OS (`std::env::consts::OS`).
    Other(&'a str),
}

impl<'a> Platform<'a> {
    /// `os_release`: the contents of /etc/os-release (read by the caller, so this stays pure).
    pub fn new(os: &'a str, os_release: Option<&'a str>) -> Platform<'a> {
        match os {
            "macos" => Platform::MacOs,
            "linux" => Platform::Linux(os_release),
            other => Platform::Other(other),
        }
    }

    fn manager(self) -> Option<Manager> {
        match self {
            Platform::MacOs => Some(Manager::Brew),
            Platform::Linux(Some(text)) => {
                let ids = os_ids(text);
                let any = |names: &[&str]| ids.iter().any(|id| names.contains(&id.as_str()));
                if any(&["debian", "ubuntu"]) {
                    Some(Manager::Apt)
                } else if any(&["fedora", "rhel", "centos"]) {
                    Some(Manager::Dnf)
                } else if any(&["alpine"]) {
                    Some(Manager::Apk)
                } else {
                    None
                }
            }
            Platform::Linux(None) | Platform::Other(_) => None,
        }
    }

    fn describe(self) -> String {
        match self {
            Platform::MacOs => "macOS".into(),
            Platform::Linux(Some(text)) => match os_ids(text).first() {
                Some(id) => format!("Linux (os-release ID={id})"),
                None => "Linux (os-release names no ID)".into(),
            },
            Platform::Linux(None) => "Linux (no /etc/os-release)".into(),
            Platform::Other(os) => os.to_string(),
        }
    }
}

/// `ID` followed by the `ID_LIKE` entries of an os-release file, unquoted and lower case
/// (Ubuntu derivatives say `ID_LIKE="ubuntu debian"`, Rocky says `ID_LIKE="rhel centos fedora"`).
fn os_ids(os_release: &str) -> Vec<String> {
    let value = |key: &str| {
        os_release.lines().find_map(|l| {
            let v = l.trim().strip_prefix(key)?.strip_prefix('=')?;
            Some(
                v.trim()
                    .trim_matches(|c| c == '"' || c == '\'')
                    .to_ascii_lowercase(),
            )
        })
    };
    let mut ids: Vec<String> = value("ID").into_iter().collect();
    if let Some(like) = value("ID_LIKE") {
        ids.extend(like.split_whitespace().map(str::to_string));
    }
    ids
}

/// One command of a plan: environment assignments, then the argv.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub env: Vec<(String, String)>,
    pub argv: Vec<String>,
    /// Best effort (stopping a service the package started): a failure is reported, not fatal.
    pub may_fail: bool,
}

impl Step {
    fn new(argv: Vec<String>) -> Step {
        Step {
            env: Vec::new(),
            argv,
            may_fail: false,
        }
    }
}

/// As a shell would need it typed, so the printed line can be copied and run.
impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words = self
            .env
            .iter()
            .map(|(k, v)| format!("{k}={}", shell_word(v)))
            .chain(self.argv.iter().map(|a| shell_word(a)));
        f.write_str(&words.collect::<Vec<_>>().join(" "))
    }
}

pub fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Why xtask cannot install the missing tools itself; the message says what to run instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CannotInstall(pub String);

impl fmt::Display for CannotInstall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The commands that install `missing` on `platform`, in order: a package index refresh where
/// the manager needs one, the install, and on Debian/Ubuntu stopping the system services the
/// packages start (on 6379 and 26379), so nothing talks to them by accident.
///
/// `sudo` is put in front when not root and sudo exists; Homebrew never runs as root.
pub fn plan_install(
    platform: Platform<'_>,
    is_root: bool,
    have_sudo: bool,
    missing: &[Tool],
) -> Result<Vec<Step>, CannotInstall> {
    let names = join_names(missing.iter().map(|t| t.executable()));
    let Some(manager) = platform.manager() else {
        return Err(CannotInstall(format!(
            "{names} {verb} not on PATH and xtask does not know the package manager of {}; \
             install Redis so that {names} {verb} on PATH (Debian/Ubuntu: `apt-get install \
             redis-server redis-sentinel redis-tools`; Fedora/RHEL: `dnf install redis`; \
             Alpine: `apk add redis`; macOS: `brew install redis`), then run this again",
            platform.describe(),
            verb = if missing.len() == 1 { "is" } else { "are" },
        )));
    };
    let mut packages: Vec<&str> = Vec::new();
    for t in missing {
        let Some(p) = t.package(manager) else {
            return Err(CannotInstall(format!(
                "{} is not on PATH and xtask cannot install it on {}: put a Chromium \
                 executable named {} on PATH, or set PACUP_SKIP_BROWSER_TESTS=1 to skip the \
                 report's browser check, then run this again",
                t.executable(),
                platform.describe(),
                t.executable()
            )));
        };
        if !packages.contains(&p) {
            packages.push(p);
        }
    }
    let mut steps = Vec::new();
    let mut install = Step::new(manager.install_argv(&packages));
    if manager == Manager::Apt {
        steps.push(Step::new(argv(&["apt-get", "update"])));
        // debconf must not stop at a question on a terminal-less CI machine.
        install.env = vec![("DEBIAN_FRONTEND".into(), "noninteractive".into())];
    }
    steps.push(install);
    if manager == Manager::Apt {
        for service in ["redis-server", "redis-sentinel"] {
            if packages.contains(&service) {
                steps.push(Step {
                    may_fail: true,
                    ..Step::new(argv(&["service", service, "stop"]))
                });
            }
        }
    }
    if manager == Manager::Brew || is_root {
        return Ok(steps);
    }
    if !have_sudo {
        let commands: Vec<String> = steps
            .iter()
            .filter(|s| !s.may_fail)
            .map(Step::to_string)
            .collect();
        return Err(CannotInstall(format!(
            "{names} {verb} not on PATH; installing {pkgs} needs root and there is no sudo here: \
             as root run `{}`, then run this again",
            commands.join(" && "),
            verb = if missing.len() == 1 { "is" } else { "are" },
            pkgs = join_names(packages.iter().copied()),
        )));
    }
    Ok(steps.into_iter().map(with_sudo).collect())
}

/// sudo resets the environment, so assignments move onto its command line (`sudo VAR=v cmd`).
fn with_sudo(step: Step) -> Step {
    let mut argv = vec!["sudo".to_string()];
    argv.extend(step.env.iter().map(|(k, v)| format!("{k}={v}")));
    argv.extend(step.argv);
    Step {
        env: Vec::new(),
        argv,
        may_fail: step.may_fail,
    }
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|s| s.to_string()).collect()
}

/// `a`, `a and b`, `a, b and c`.
pub fn join_names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    match names.split_last() {
        None => String::new(),
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// Runs the plan, printing each command first. The first required command that fails stops
/// everything (its own output, shown as it ran, says why).
pub fn run_plan(steps: &[Step], dry_run: bool) -> Result<(), String> {
    for step in steps {
        if dry_run {
            eprintln!("xtask: would run: {step}");
            continue;
        }
        eprintln!("xtask: running: {step}");
        let status = Command::new(&step.argv[0])
            .args(&step.argv[1..])
            .envs(step.env.iter().map(|(k, v)| (k, v)))
            .status();
        let failure = match status {
            Ok(s) if s.success() => continue,
            Ok(s) => format!("`{step}` failed ({s})"),
            Err(e) => format!("cannot run `{step}`: {e}"),
        };
        if step.may_fail {
            eprintln!("xtask: {failure}; continuing (this step is only a precaution)");
        } else {
            return Err(format!("{failure}; nothing else was attempted"));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "install_tests.rs"]
mod tests;
