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

use super::probe::{parse_region_state, parse_store_state, Observed, StoreSeen};
use super::progress::{redact_command, CommandProgress, InHand, Progress};
pub use super::templates::{
    render, validate_templates, Vars, PLACEHOLDERS, REQUIRED_TEMPLATES, TEMPLATE_NAMES,
};
use crate::error::{Error, Result};
use crate::psor::control::ControlAction;
use crate::psor::{Mode, Pac};
use crate::region::StartType;
use std::collections::BTreeMap;
use std::time::Duration;

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
        /// PSOR URL for `{psor*}` placeholders (credentials stripped).
        psor: String,
        /// `{psor_user}`, also `PACUP_PSOR_USER` in the commands' environment.
        psor_user: String,
        /// The PSOR password, `PACUP_PSOR_PASSWORD` in the commands' environment only.
        psor_password: Option<String>,
        /// Whether the compatible process runs (`{min_comp_check}` is `YES`).
        compatible: bool,
        /// `{paths}` and `{min_free}` of `host_checks`.
        checks: (String, String),
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
            psor_user,
            compatible,
            checks,
            ..
        } = self
        else {
            return None;
        };
        let mut v = vars.clone();
        v.paths = checks.0.clone();
        v.min_free = checks.1.clone();
        v.psor = psor.clone();
        v.psor_user = psor_user.clone();
        v.min_comp_check = *compatible && v.start_type.is_some();
        Some((render(templates.get(name)?, &v), *timeout))
    }

    /// Whether the plan has template `name`.
    pub fn has(&self, name: &str) -> bool {
        matches!(self, Driver::Command { templates, .. } if templates.contains_key(name))
    }

    /// The credentials children get, through their environment only.
    fn env(&self) -> Vec<(&'static str, String)> {
        let Driver::Command {
            psor_user,
            psor_password,
            ..
        } = self
        else {
            return Vec::new();
        };
        let mut env = Vec::new();
        if !psor_user.is_empty() {
            env.push(("PACUP_PSOR_USER", psor_user.clone()));
        }
        if let Some(p) = psor_password {
            env.push(("PACUP_PSOR_PASSWORD", p.clone()));
        }
        env
    }

    /// Every template of the plan rendered for `vars` as a dry run shows it.
    pub fn rendered(&self, name: &str, vars: &Vars) -> Option<(String, Duration)> {
        self.template(name, vars)
    }

    /// Runs template `name` without journaling it (read-only probes polled often):
    /// (exit code, stdout, detail). `None` when the plan has no such template.
    async fn read(&self, name: &str, vars: &Vars) -> Option<Result<(i32, String, String)>> {
        let (cmd, timeout) = self.template(name, vars)?;
        Some(run_command(&cmd, timeout, &self.env(), None).await)
    }

    /// The `region_state` of a region (command driver): the parsed answer, or an error
    /// naming the region and the probe's output.
    pub async fn region_state(&self, pac: &Pac, host: &str, region: &str) -> Result<Observed> {
        let vars = Self::vars(pac, host, region, "", None);
        let Some(r) = self.read("region_state", &vars).await else {
            return Err(Error::refused("the plan has no region_state template"));
        };
        let (code, stdout, detail) = r?;
        if code != 0 {
            return Err(Error::refused(format!(
                "region_state of {region} on {host} failed: {detail}"
            )));
        }
        parse_region_state(&stdout)
            .map_err(|e| Error::refused(format!("region {region} on {host}: {e}")))
    }

    /// The PAC's stores as `store_state` prints them, if the plan has that template.
    pub async fn store_state(&self, pac: &Pac, version: &str) -> Option<Result<Vec<StoreSeen>>> {
        let vars = Self::vars(pac, "", "", version, None);
        let r = self.read("store_state", &vars).await?;
        Some(r.and_then(|(code, stdout, detail)| {
            if code != 0 {
                return Err(Error::refused(format!("store_state failed: {detail}")));
            }
            parse_store_state(&stdout).map_err(Error::refused)
        }))
    }

    /// Runs a read-only check template (`host_check`) for `host`: `None` without one.
    pub async fn check(&self, pac: &Pac, name: &str, host: &str) -> Option<Result<String>> {
        let vars = Self::vars(pac, host, "", "", None);
        let r = self.read(name, &vars).await?;
        Some(r.and_then(|(code, _, detail)| {
            if code == 0 {
                Ok(detail)
            } else {
                Err(Error::refused(detail))
            }
        }))
    }

    /// Runs template `name` for the whole PAC (`monitor_suspend`, `monitor_resume`),
    /// journaled as the command in hand: `None` without one.
    pub async fn pac_command(
        &self,
        pac: &Pac,
        epoch: u64,
        name: &str,
        version: &str,
    ) -> Option<Outcome> {
        self.shell(pac, epoch, name, &Self::vars(pac, "", "", version, None))
            .await
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
        let r = run_command(&cmd, timeout, &self.env(), Some(&prog)).await;
        Some(r.and_then(|(code, _, detail)| {
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
            ..Vars::default()
        }
    }

    /// Whether regions are observed through the plan's `region_state` template rather
    /// than pacup's records (the command driver: real regions write no pacup record).
    pub fn probes(&self) -> bool {
        matches!(self, Driver::Command { .. })
    }

    /// Whether host records in the PSOR show what this driver installed (agents publish
    /// them; real hosts driven by templates do not).
    pub fn observes_hosts(&self) -> bool {
        matches!(self, Driver::Agent)
    }

    /// Runs the `check_compat` template if there is one, with `{host}` the first
    /// upgraded host (it has the new product): (exit code, detail); 0 means compatible
    /// and 3 incompatible, as `caspac -aCheckCompat` answers.
    pub async fn check_compat(
        &self,
        pac: &Pac,
        host: &str,
        version: &str,
        epoch: u64,
    ) -> Option<Result<(i32, String)>> {
        let (cmd, timeout) =
            self.template("check_compat", &Self::vars(pac, host, "", version, None))?;
        let prog = self.progress(pac, epoch);
        let r = run_command(&cmd, timeout, &self.env(), Some(&prog)).await;
        Some(r.map(|(code, _, detail)| (code, detail)))
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
    pub async fn remove_old(&self, pac: &Pac, version: &str, epoch: u64, by: &str) -> Outcome {
        if let Some(r) = self
            .shell(
                pac,
                epoch,
                "remove_old",
                &Self::vars(pac, "", "", version, None),
            )
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
    run_command(cmd, timeout, &[], None)
        .await
        .map(|(code, _, detail)| (code, detail))
}

/// Runs one shell command with a timeout and `env` added to its environment, journaling
/// the command (redacted), its pid and start as the command in hand while it runs when
/// given `prog`, so `rollout status` can show it: (exit code, stdout, detail with the
/// command, exit code, stdout and stderr).
pub async fn run_command(
    cmd: &str,
    timeout: Duration,
    env: &[(&str, String)],
    prog: Option<&Progress<'_>>,
) -> Result<(i32, String, String)> {
    // Its own process group, so a timeout kills the whole command, not only `sh`.
    let mut child = tokio::process::Command::new("sh");
    child.arg("-c").arg(cmd).process_group(0);
    for (k, v) in env {
        child.env(k, v);
    }
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
    let detail = format!("`{cmd}` exit {code}; stdout: {stdout:?}; stderr: {stderr:?}");
    Ok((code, stdout, detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn credentials_reach_templates_through_the_environment_only() {
        let plan = crate::coordinator::plan::Plan::parse(
            r#"{"pac": "MyPAC", "target": {"version": "2.0.0"},
                "hosts": [{"name": "host1", "regions": ["R1"]}],
                "driver": {"kind": "command", "templates": {
                  "listener_off": "a", "listener_on": "b", "stop": "c", "apply_update": "d",
                  "start": "e",
                  "region_state": "test \"$PACUP_PSOR_PASSWORD:$PACUP_PSOR_USER\" = s3\"\"cret:ops && echo running {psor} {psor_user}"}}}"#,
        )
        .unwrap();
        let opts = crate::conn::PsorOptions::new("redis://ops:s3cret@psor:6380");
        let d = crate::coordinator::preflight::driver_of(
            &plan,
            &opts,
            crate::coordinator::steps::Process::Incompatible,
        );
        let (cmd, _) = d.rendered("region_state", &Vars::default()).unwrap();
        assert!(!cmd.contains("s3cret"), "{cmd}");
        let (code, stdout, detail) = d
            .read("region_state", &Vars::default())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (code, stdout.as_str()),
            (0, "running redis://psor:6380 ops"),
            "{detail}"
        );
        assert!(!detail.contains("s3cret"), "{detail}");
        // A password given apart from the URL (env, file) reaches them the same way.
        let mut opts = crate::conn::PsorOptions::new("redis://ops@psor:6380");
        opts.password = Some("s3cret".into());
        let d = crate::coordinator::preflight::driver_of(
            &plan,
            &opts,
            crate::coordinator::steps::Process::Incompatible,
        );
        let (code, _, detail) = d
            .read("region_state", &Vars::default())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(code, 0, "{detail}");
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
