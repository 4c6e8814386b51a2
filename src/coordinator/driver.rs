//! How the coordinator acts on regions and hosts.
//!
//! - `agent`: control commands to pacup host agents through the PSOR, fenced by the
//!   coordinator's epoch (an agent refuses a command from a fenced coordinator).
//! - `command`: shell command templates, for real Enterprise Server regions driven by
//!   `casstart`/`casstop`/`caspac` (see docs/runbook.md). Each command runs under
//!   `sh -c` with a timeout; its exit code, stdout and stderr go into the step's event.
//!
//! Store changes (`set_mode`, `remove_old`) go straight to the PSOR through the fenced
//! scripts unless the command driver is given a template for them.

use super::progress::{redact_command, CommandProgress, InHand, Progress};
use crate::error::{Error, Result};
use crate::psor::control::ControlAction;
use crate::psor::{Mode, Pac};
use crate::region::StartType;
use std::collections::BTreeMap;
use std::time::Duration;

/// Template names the command driver knows.
pub const TEMPLATE_NAMES: [&str; 9] = [
    "listener_off",
    "listener_on",
    "stop",
    "apply_update",
    "start",
    "check_compat",
    "set_mode_running",
    "set_mode_quiesce",
    "remove_old",
];

/// Templates every command-driven plan must have.
pub const REQUIRED_TEMPLATES: [&str; 5] = [
    "listener_off",
    "listener_on",
    "stop",
    "apply_update",
    "start",
];

/// Placeholders a template may use.
pub const PLACEHOLDERS: [&str; 9] = [
    "pac",
    "host",
    "region",
    "version",
    "start_type",
    "start_letter",
    "psor_host",
    "psor_port",
    "psor",
];

/// Checks template names and placeholders (exit 2 on anything unknown or missing).
pub fn validate_templates(t: &BTreeMap<String, String>) -> Result<()> {
    for name in t.keys() {
        if !TEMPLATE_NAMES.contains(&name.as_str()) {
            return Err(Error::invalid(
                "plan field driver.templates",
                name,
                format!("one of {}", TEMPLATE_NAMES.join(", ")),
            ));
        }
    }
    for need in REQUIRED_TEMPLATES {
        if !t.contains_key(need) {
            return Err(Error::invalid(
                "plan field driver.templates",
                format!("(missing {need})"),
                format!("templates for at least {}", REQUIRED_TEMPLATES.join(", ")),
            ));
        }
    }
    for (name, tpl) in t {
        let mut rest = tpl.as_str();
        while let Some(i) = rest.find('{') {
            let after = &rest[i + 1..];
            // `${VAR}` is the shell's, not ours.
            if rest[..i].ends_with('$') {
                rest = after.find('}').map(|j| &after[j + 1..]).unwrap_or("");
                continue;
            }
            let Some(j) = after.find('}') else {
                return Err(Error::invalid(
                    format!("plan field driver.templates.{name}"),
                    tpl,
                    "balanced {placeholder} braces",
                ));
            };
            let ph = &after[..j];
            if !PLACEHOLDERS.contains(&ph) {
                return Err(Error::invalid(
                    format!("plan field driver.templates.{name}"),
                    format!("{{{ph}}}"),
                    format!(
                        "placeholders {}",
                        PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(" ")
                    ),
                ));
            }
            rest = &after[j + 1..];
        }
    }
    Ok(())
}

/// Values substituted into templates.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    /// `{pac}`
    pub pac: String,
    /// `{host}`
    pub host: String,
    /// `{region}`
    pub region: String,
    /// `{version}`
    pub version: String,
    /// `{start_type}` (and `{start_letter}`)
    pub start_type: Option<StartType>,
    /// `{psor}` (URL), `{psor_host}`, `{psor_port}`
    pub psor: String,
}

/// Renders a template.
pub fn render(tpl: &str, v: &Vars) -> String {
    let (ph, pp) = psor_host_port(&v.psor);
    tpl.replace("{pac}", &v.pac)
        .replace("{host}", &v.host)
        .replace("{region}", &v.region)
        .replace("{version}", &v.version)
        .replace(
            "{start_type}",
            v.start_type.map(|s| s.as_str()).unwrap_or(""),
        )
        .replace(
            "{start_letter}",
            &v.start_type
                .map(|s| s.letter().to_string())
                .unwrap_or_default(),
        )
        .replace("{psor_host}", &ph)
        .replace("{psor_port}", &pp)
        .replace("{psor}", &v.psor)
}

fn psor_host_port(url: &str) -> (String, String) {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    let first = rest.split([',', '/']).next().unwrap_or("");
    match first.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.to_string()),
        None => (first.to_string(), "6379".to_string()),
    }
}

/// The coordinator's hands.
#[derive(Debug, Clone)]
pub enum Driver {
    /// Host agents.
    Agent,
    /// Shell templates.
    Command {
        /// Templates.
        templates: BTreeMap<String, String>,
        /// Per-command bound.
        timeout: Duration,
        /// PSOR URL for `{psor*}` placeholders (password stripped).
        psor: String,
        /// The templates running now, shown by `rollout status`.
        in_hand: InHand,
    },
}

/// What a driver call reports for the event detail.
pub type Outcome = Result<String>;

impl Driver {
    async fn agent(
        pac: &Pac,
        host: &str,
        action: ControlAction,
        wait: Duration,
        epoch: u64,
        by: &str,
    ) -> Outcome {
        let r = pac.control(host, action, wait, by, Some(epoch)).await?;
        Ok(r.message)
    }

    /// The rendered template `name` and the per-command bound, for the command driver.
    fn template(&self, name: &str, vars: &Vars) -> Option<(String, Duration)> {
        let Driver::Command {
            templates,
            timeout,
            psor,
            ..
        } = self
        else {
            return None;
        };
        let mut v = vars.clone();
        v.psor = psor.clone();
        Some((render(templates.get(name)?, &v), *timeout))
    }

    /// Runs template `name`, if the plan has one, journaling it as the command in hand.
    fn progress<'a>(&self, pac: &'a Pac, epoch: u64) -> Progress<'a> {
        match self {
            Driver::Command { in_hand, .. } => Progress::with_commands(pac, epoch, in_hand.clone()),
            Driver::Agent => Progress::new(pac, epoch),
        }
    }

    async fn shell(&self, pac: &Pac, epoch: u64, name: &str, vars: &Vars) -> Option<Outcome> {
        let (cmd, timeout) = self.template(name, vars)?;
        let prog = self.progress(pac, epoch);
        let r = run_shell_tracked(&cmd, timeout, Some(&prog)).await;
        Some(r.and_then(|(code, detail)| {
            if code == 0 {
                Ok(detail)
            } else {
                Err(Error::refused(detail))
            }
        }))
    }

    fn vars(pac: &Pac, host: &str, region: &str, version: &str, st: Option<StartType>) -> Vars {
        Vars {
            pac: pac.name().to_string(),
            host: host.into(),
            region: region.into(),
            version: version.into(),
            start_type: st,
            psor: String::new(),
        }
    }

    /// Whether host records in the PSOR show what this driver installed (agents publish
    /// them; real hosts driven by templates do not).
    pub fn observes_hosts(&self) -> bool {
        matches!(self, Driver::Agent)
    }

    /// Runs the `check_compat` template if there is one: (exit code, detail); 0 means
    /// compatible and 3 incompatible, as `caspac -aCheckCompat` answers.
    pub async fn check_compat(
        &self,
        pac: &Pac,
        version: &str,
        epoch: u64,
    ) -> Option<Result<(i32, String)>> {
        let (cmd, timeout) =
            self.template("check_compat", &Self::vars(pac, "", "", version, None))?;
        let prog = self.progress(pac, epoch);
        Some(run_shell_tracked(&cmd, timeout, Some(&prog)).await)
    }

    /// Listener on or off.
    pub async fn listener(
        &self,
        pac: &Pac,
        host: &str,
        region: &str,
        on: bool,
        epoch: u64,
        by: &str,
    ) -> Outcome {
        let name = if on { "listener_on" } else { "listener_off" };
        if let Some(r) = self
            .shell(pac, epoch, name, &Self::vars(pac, host, region, "", None))
            .await
        {
            return r;
        }
        let action = ControlAction::Listener {
            region: region.into(),
            on,
        };
        Self::agent(pac, host, action, Duration::from_secs(30), epoch, by).await
    }

    /// Graceful stop, forced past `timeout`.
    #[allow(clippy::too_many_arguments)]
    pub async fn stop(
        &self,
        pac: &Pac,
        host: &str,
        region: &str,
        drain: Duration,
        timeout: Duration,
        epoch: u64,
        by: &str,
    ) -> Outcome {
        if let Some(r) = self
            .shell(pac, epoch, "stop", &Self::vars(pac, host, region, "", None))
            .await
        {
            return r;
        }
        let action = ControlAction::Stop {
            region: region.into(),
            drain_timeout_ms: drain.as_millis() as u64,
            stop_timeout_ms: timeout.as_millis() as u64,
            force: false,
        };
        Self::agent(
            pac,
            host,
            action,
            timeout + Duration::from_secs(15),
            epoch,
            by,
        )
        .await
    }

    /// Installs `version` on `host`.
    pub async fn apply_update(
        &self,
        pac: &Pac,
        host: &str,
        version: &str,
        epoch: u64,
        by: &str,
    ) -> Outcome {
        if let Some(r) = self
            .shell(
                pac,
                epoch,
                "apply_update",
                &Self::vars(pac, host, "", version, None),
            )
            .await
        {
            return r;
        }
        let action = ControlAction::ApplyUpdate {
            version: version.into(),
        };
        Self::agent(pac, host, action, Duration::from_secs(60), epoch, by).await
    }

    /// Starts a region; an agent keeps its listener off (the coordinator turns it on
    /// after the wave's health gate).
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        &self,
        pac: &Pac,
        host: &str,
        region: &str,
        version: &str,
        st: StartType,
        epoch: u64,
        by: &str,
    ) -> Outcome {
        if let Some(r) = self
            .shell(
                pac,
                epoch,
                "start",
                &Self::vars(pac, host, region, version, Some(st)),
            )
            .await
        {
            return r;
        }
        let action = ControlAction::Start {
            region: region.into(),
            start_type: st,
            listener: Some(false),
        };
        Self::agent(pac, host, action, Duration::from_secs(60), epoch, by).await
    }

    /// Sets the PAC's mode (template if given, else the fenced PSOR script).
    pub async fn set_mode(
        &self,
        pac: &Pac,
        mode: Mode,
        version: &str,
        epoch: u64,
        by: &str,
    ) -> Outcome {
        let name = format!("set_mode_{mode}");
        if let Some(r) = self
            .shell(pac, epoch, &name, &Self::vars(pac, "", "", version, None))
            .await
        {
            return r;
        }
        let changed = pac.set_mode(mode, by, Some(epoch)).await?;
        Ok(format!("store {} now {mode}", changed.join(", ")))
    }

    /// Removes the old stores (template if given, else the fenced PSOR script).
    pub async fn remove_old(&self, pac: &Pac, epoch: u64, by: &str) -> Outcome {
        if let Some(r) = self
            .shell(pac, epoch, "remove_old", &Self::vars(pac, "", "", "", None))
            .await
        {
            return r;
        }
        let r = pac.remove_old(false, by, Some(epoch)).await?;
        Ok(if r.stores_removed.is_empty() {
            "no old store left".to_string()
        } else {
            format!(
                "removed store {} ({} keys)",
                r.stores_removed.join(", "),
                r.keys_removed
            )
        })
    }
}

/// Runs one shell command with a timeout; non-zero exit is an error carrying the exit
/// code, stdout and stderr.
pub async fn run_shell(cmd: &str, timeout: Duration) -> Outcome {
    let (code, detail) = run_shell_code(cmd, timeout).await?;
    if code == 0 {
        Ok(detail)
    } else {
        Err(Error::refused(detail))
    }
}

/// Runs one shell command with a timeout: (exit code, detail with stdout and stderr).
pub async fn run_shell_code(cmd: &str, timeout: Duration) -> Result<(i32, String)> {
    run_shell_tracked(cmd, timeout, None).await
}

/// [`run_shell_code`], journaling the command (redacted), its pid and start as the
/// command in hand while it runs, so `rollout status` can show it.
pub async fn run_shell_tracked(
    cmd: &str,
    timeout: Duration,
    prog: Option<&Progress<'_>>,
) -> Result<(i32, String)> {
    // Its own process group, so a timeout kills the whole command, not only `sh`.
    let mut child = tokio::process::Command::new("sh");
    child.arg("-c").arg(cmd).process_group(0);
    let child = child
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::Io {
            context: format!("cannot run `{cmd}`"),
            source: e,
        })?;
    let pgid = child.id();
    if let (Some(p), Some(pid)) = (prog, pgid) {
        p.command_started(&CommandProgress {
            command: redact_command(cmd),
            pid,
            started_ms: crate::psor::now_ms(),
            timeout_ms: timeout.as_millis() as u64,
        })
        .await;
    }
    let out = tokio::time::timeout(timeout, child.wait_with_output()).await;
    if let (Some(p), Some(pid)) = (prog, pgid) {
        p.command_ended(pid).await;
    }
    let out = match out {
        Ok(r) => r.map_err(|e| Error::Io {
            context: format!("running `{cmd}`"),
            source: e,
        })?,
        Err(_) => {
            if let Some(pg) = pgid.and_then(|p| i32::try_from(p).ok()).filter(|p| *p > 1) {
                // SAFETY: kill(2) with a negative pid signals exactly that process group,
                // which is the template's own (process_group(0) above).
                unsafe {
                    libc::kill(-pg, libc::SIGKILL);
                }
            }
            return Err(Error::refused(format!(
                "`{cmd}` did not finish within {}",
                crate::names::format_duration(timeout)
            )));
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let code = out.status.code().unwrap_or(-1);
    Ok((
        code,
        format!("`{cmd}` exit {code}; stdout: {stdout:?}; stderr: {stderr:?}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut m: BTreeMap<String, String> = REQUIRED_TEMPLATES
            .iter()
            .map(|n| (n.to_string(), "true".to_string()))
            .collect();
        for (k, v) in pairs {
            m.insert(k.to_string(), v.to_string());
        }
        m
    }

    #[test]
    fn renders_placeholders() {
        let v = Vars {
            pac: "MyPAC".into(),
            host: "host1".into(),
            region: "REGION1".into(),
            version: "2.0.0".into(),
            start_type: Some(StartType::Upgrade),
            psor: "redis://:pw@psor:6380".into(),
        };
        assert_eq!(
            render(
                "ssh {host} casstart /r{region} /s:{start_letter} # {start_type} {pac} {version}",
                &v
            ),
            "ssh host1 casstart /rREGION1 /s:u # upgrade MyPAC 2.0.0"
        );
        assert_eq!(
            render(
                "caspac -aSetMode=Running -sredis,{psor_host}:{psor_port}",
                &v
            ),
            "caspac -aSetMode=Running -sredis,psor:6380"
        );
    }

    #[test]
    fn refuses_unknown_placeholders_names_and_missing_templates() {
        assert!(validate_templates(&t(&[])).is_ok());
        let e = validate_templates(&t(&[("stop", "casstop -r{regoin}")])).unwrap_err();
        assert!(e.to_string().contains("{regoin}"), "{e}");
        assert!(validate_templates(&t(&[("stop", "casstop -r{region} -h${HOME}")])).is_ok());
        let e = validate_templates(&t(&[("explode", "x")])).unwrap_err();
        assert!(e.to_string().contains("explode"), "{e}");
        let mut m = t(&[]);
        m.remove("stop");
        let e = validate_templates(&m).unwrap_err();
        assert!(e.to_string().contains("missing stop"), "{e}");
        assert_eq!(e.exit_code().code(), 2);
    }

    #[tokio::test]
    async fn shell_outcomes() {
        assert!(run_shell("echo hi", Duration::from_secs(5))
            .await
            .unwrap()
            .contains("\"hi\""));
        let e = run_shell("echo oops >&2; exit 3", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("exit 3") && e.to_string().contains("oops"),
            "{e}"
        );
        let e = run_shell("sleep 5", Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("did not finish"), "{e}");
        // The whole group goes: a child of sh that would outlive it is killed too.
        let dir = std::env::temp_dir().join(format!("pacup-shell-{}", std::process::id()));
        let marker = dir.join("survived");
        let _ = std::fs::create_dir_all(&dir);
        let cmd = format!("(sleep 1; touch {}) & wait", marker.display());
        assert!(run_shell(&cmd, Duration::from_millis(200)).await.is_err());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!marker.exists(), "the command's child survived the timeout");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
