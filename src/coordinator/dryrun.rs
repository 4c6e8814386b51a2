//! `rollout plan --show-commands`: every command the rollout would run, rendered with its
//! placeholders filled, under the step that runs it, with its bound, and the plan's
//! settings; nothing is run (docs/reference.md#rollout-plan---show-commands).

use super::driver::{Driver, Vars};
use super::plan::{DriverSpec, Plan};
use super::preflight::driver_of;
use super::steps::{GateScope, Process, Step, StepKind};
use super::templates::{render, split_credentials};
use crate::conn::PsorOptions;
use crate::names::format_duration;
use crate::region::StartType;
use serde::Serialize;

/// One command as it would run.
#[derive(Debug, Clone, Serialize)]
pub struct Command {
    /// The template (or `monitor.suspend` / `monitor.resume`) it comes from.
    pub template: String,
    /// The command line, placeholders filled (credentials are never in it).
    pub command: String,
    /// Its bound (`driver.timeout`; 60 s for the monitoring hold).
    pub timeout: String,
}

/// The commands of one step.
#[derive(Debug, Clone, Serialize)]
pub struct StepCommands {
    /// Step number.
    pub n: usize,
    /// Its action.
    pub action: String,
    /// Host, if any.
    pub host: Option<String>,
    /// Region, if any.
    pub region: Option<String>,
    /// What it runs, in order (probes first); empty when the coordinator does it through
    /// the PSOR itself.
    pub commands: Vec<Command>,
}

/// The plan's settings, as the rollout will use them.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// `strategy`.
    pub strategy: super::plan::Strategy,
    /// The process preflight decided.
    pub process: Process,
    /// The waves (hosts), derived ones included.
    pub waves: Vec<Vec<String>>,
    /// `mode_flip`.
    pub mode_flip: super::plan::ModeFlip,
    /// `on_failure`.
    pub on_failure: super::plan::OnFailure,
    /// `hold_finalization`.
    pub hold_finalization: bool,
    /// `drain_timeout`.
    pub drain_timeout: String,
    /// `stop_timeout`.
    pub stop_timeout: String,
    /// `health.min_healthy`.
    pub min_healthy: String,
    /// `health.deadline`.
    pub health_deadline: String,
    /// `progress_deadline`.
    pub progress_deadline: String,
    /// `driver.kind`.
    pub driver: &'static str,
    /// `driver.timeout` (command driver).
    pub driver_timeout: Option<String>,
    /// `monitor.keep_suspended_on_pause`.
    pub keep_suspended_on_pause: bool,
}

/// The dry run.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    /// The settings.
    pub settings: Settings,
    /// Read-only commands of preflight (every region's probe, every host's check, the
    /// stores' probe).
    pub preflight: Vec<Command>,
    /// `monitor.suspend`, before the first step.
    pub monitor_suspend: Option<Command>,
    /// Every step with its commands.
    pub steps: Vec<StepCommands>,
    /// `monitor.resume`, after the last step (also on abort, and on pause unless
    /// `keep_suspended_on_pause`).
    pub monitor_resume: Option<Command>,
}

struct R<'a> {
    driver: Driver,
    plan: &'a Plan,
    timeout: String,
}

impl R<'_> {
    fn vars(&self, host: &str, region: &str, st: Option<StartType>) -> Vars {
        Vars {
            pac: self.plan.pac.to_string(),
            host: host.into(),
            region: region.into(),
            version: self.plan.target.version.to_string(),
            start_type: st,
            ..Vars::default()
        }
    }

    fn cmd(&self, name: &str, host: &str, region: &str, st: Option<StartType>) -> Option<Command> {
        let (command, _) = self.driver.rendered(name, &self.vars(host, region, st))?;
        Some(Command {
            template: name.to_string(),
            command,
            timeout: self.timeout.clone(),
        })
    }

    fn probe(&self, host: &str, region: &str) -> Option<Command> {
        self.cmd("region_state", host, region, None)
    }

    fn step(&self, s: &Step) -> Vec<Command> {
        let first_host = self.plan.waves[0][0].to_string();
        let mut out: Vec<Option<Command>> = Vec::new();
        match &s.kind {
            StepKind::Preflight => {}
            StepKind::ListenerOff(o) | StepKind::ListenerOn(o) => {
                let name = if matches!(s.kind, StepKind::ListenerOn(_)) {
                    "listener_on"
                } else {
                    "listener_off"
                };
                out.push(self.probe(&o.host, &o.region));
                out.push(self.cmd(name, &o.host, &o.region, None));
            }
            StepKind::Drain(o) => out.push(self.probe(&o.host, &o.region)),
            StepKind::Stop(o) => {
                out.push(self.probe(&o.host, &o.region));
                out.push(self.cmd("stop", &o.host, &o.region, None));
            }
            StepKind::ApplyUpdate { host } => out.push(self.cmd("apply_update", host, "", None)),
            StepKind::CheckCompat => out.push(self.cmd("check_compat", &first_host, "", None)),
            StepKind::StartUpgrade(o) | StepKind::StartWarm(o) => {
                let st = if matches!(s.kind, StepKind::StartUpgrade(_)) {
                    StartType::Upgrade
                } else {
                    StartType::Warm
                };
                out.push(self.probe(&o.host, &o.region));
                out.push(self.cmd("start", &o.host, &o.region, Some(st)));
            }
            StepKind::HealthGate(scope) => {
                let regions = match scope {
                    GateScope::Wave(w) => self.plan.wave_regions(*w),
                    GateScope::All => self.plan.all_regions(),
                };
                out.extend(regions.iter().map(|(h, r)| self.probe(h, r)));
            }
            StepKind::SetModeRunning | StepKind::SetModeQuiesce | StepKind::RemoveOld => {
                let name = s.action().name();
                if self.driver.has(name) {
                    out.push(self.cmd("store_state", "", "", None));
                    out.push(self.cmd(name, "", "", None));
                }
            }
            StepKind::Verify => {
                let all = self.plan.all_regions();
                out.extend(all.iter().map(|(h, r)| self.probe(h, r)));
                out.push(self.cmd("store_state", "", "", None));
            }
            StepKind::Backup(_) => out.push(self.cmd("backup", "", "", None)),
            StepKind::HostCheck(w) => out.extend(
                self.plan.waves[*w]
                    .iter()
                    .map(|h| self.cmd("host_check", h.as_str(), "", None)),
            ),
            StepKind::Unquiesce { .. } | StepKind::RemoveStore { .. } => {}
        }
        out.into_iter().flatten().collect()
    }
}

fn monitor(plan: &Plan, psor: &PsorOptions, name: &str, tpl: &Option<String>) -> Option<Command> {
    let (url, user, _) = split_credentials(&psor.url);
    let vars = Vars {
        pac: plan.pac.to_string(),
        version: plan.target.version.to_string(),
        psor: url,
        psor_user: user,
        ..Vars::default()
    };
    tpl.as_ref().map(|t| Command {
        template: name.to_string(),
        command: render(t, &vars),
        timeout: "60s".into(),
    })
}

/// The dry run of `plan` (as preflight left it) following `process` through `steps`.
pub fn dry_run(plan: &Plan, process: Process, steps: &[Step], psor: &PsorOptions) -> DryRun {
    let driver = driver_of(plan, psor, process);
    let driver_timeout = match &plan.driver {
        DriverSpec::Command { timeout, .. } => Some(format_duration(*timeout)),
        DriverSpec::Agent => None,
    };
    let r = R {
        driver,
        plan,
        timeout: driver_timeout.clone().unwrap_or_default(),
    };
    let mut preflight: Vec<Command> = plan
        .all_regions()
        .iter()
        .filter_map(|(h, reg)| r.probe(h, reg))
        .collect();
    preflight.extend(
        plan.hosts
            .iter()
            .filter_map(|h| r.cmd("host_check", h.name.as_str(), "", None)),
    );
    preflight.extend(r.cmd("store_state", "", "", None));
    DryRun {
        settings: Settings {
            strategy: plan.strategy,
            process,
            waves: plan
                .waves
                .iter()
                .map(|w| w.iter().map(|h| h.to_string()).collect())
                .collect(),
            mode_flip: plan.mode_flip,
            on_failure: plan.on_failure,
            hold_finalization: plan.hold_finalization,
            drain_timeout: format_duration(plan.drain_timeout),
            stop_timeout: format_duration(plan.stop_timeout),
            min_healthy: format_duration(plan.health.min_healthy),
            health_deadline: format_duration(plan.health.deadline),
            progress_deadline: format_duration(plan.progress_deadline),
            driver: match plan.driver {
                DriverSpec::Agent => "agent",
                DriverSpec::Command { .. } => "command",
            },
            driver_timeout,
            keep_suspended_on_pause: plan.monitor.keep_suspended_on_pause,
        },
        preflight,
        monitor_suspend: monitor(plan, psor, "monitor.suspend", &plan.monitor.suspend),
        steps: steps
            .iter()
            .map(|s| StepCommands {
                n: s.n,
                action: s.action().name().to_string(),
                host: s.host().map(String::from),
                region: s.region().map(String::from),
                commands: r.step(s),
            })
            .collect(),
        monitor_resume: monitor(plan, psor, "monitor.resume", &plan.monitor.resume),
    }
}

impl DryRun {
    /// The human form: the settings, then each step with its commands indented.
    pub fn lines(&self) -> Vec<String> {
        let s = &self.settings;
        let waves: Vec<String> = s
            .waves
            .iter()
            .map(|w| format!("[{}]", w.join(" ")))
            .collect();
        let mut out = vec![
            format!(
                "settings: strategy {}, process {}, waves {}, mode_flip {}, on_failure {}, \
                 hold_finalization {}",
                word(&s.strategy),
                s.process.as_str(),
                waves.join(" "),
                word(&s.mode_flip),
                word(&s.on_failure),
                s.hold_finalization
            ),
            format!(
                "timeouts: drain {}, stop {}, health min_healthy {} within {}, progress {}, \
                 driver {}{}",
                s.drain_timeout,
                s.stop_timeout,
                s.min_healthy,
                s.health_deadline,
                s.progress_deadline,
                s.driver,
                s.driver_timeout
                    .as_ref()
                    .map(|t| format!(" (each command within {t})"))
                    .unwrap_or_default()
            ),
        ];
        let show =
            |c: &Command| format!("      $ {}    [{}, {}]", c.command, c.template, c.timeout);
        out.push("preflight:".into());
        out.extend(self.preflight.iter().map(show));
        if let Some(c) = &self.monitor_suspend {
            out.push("before the first step:".into());
            out.push(show(c));
        }
        for st in &self.steps {
            let mut head = format!("{:>3}. {}", st.n, st.action);
            if let Some(r) = &st.region {
                head.push_str(&format!(" {r}"));
            }
            if let Some(h) = &st.host {
                head.push_str(&format!(" on {h}"));
            }
            out.push(head);
            out.extend(st.commands.iter().map(show));
        }
        if let Some(c) = &self.monitor_resume {
            out.push("after the last step (and on abort or pause):".into());
            out.push(show(c));
        }
        out
    }
}

/// A plan enum's name as serde writes it.
fn word<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}
