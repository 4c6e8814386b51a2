//! Prometheus metrics served by `--metrics-addr` (`agent`, `region run`, `rollout run`
//! and `rollout resume`); every name, type, label and bucket is documented in
//! `docs/metrics.md`.
//!
//! This module owns the metric names: other modules call the small typed functions of
//! [`Metrics`] and never spell a name or a label. [`Metrics`] is a cheap handle passed
//! down explicitly (in the region configuration, the rollout options and the PSOR
//! connection) rather than a process-wide registry, so several regions or coordinators
//! running in one process (tests, the demo) keep their counts apart. Without
//! `--metrics-addr` the handle is disabled and every call is a no-op.
//!
//! Updating a metric touches memory only (atomics, a short lock for the per-region state
//! map): nothing here talks to the PSOR, so metrics add no PSOR round trip.

mod server;

pub use server::{MetricsListener, MetricsServer};

use crate::coordinator::Event;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// Where a region hosted by this process stands, for `pacup_regions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionState {
    /// Not running (never started, or stopped gracefully).
    Stopped,
    /// A member of its store, heartbeating.
    Active,
    /// Stopping gracefully (listener off, draining, finishing the job in hand).
    Stopping,
    /// Ended because it lost its record or its store (PAC reset, another instance).
    Lost,
    /// Killed abruptly on request (fault drills).
    Crashed,
}

impl RegionState {
    fn as_str(self) -> &'static str {
        match self {
            RegionState::Stopped => "stopped",
            RegionState::Active => "active",
            RegionState::Stopping => "stopping",
            RegionState::Lost => "lost",
            RegionState::Crashed => "crashed",
        }
    }

    /// Whether a region in this state is a member of its store.
    fn in_store(self) -> bool {
        matches!(self, RegionState::Active | RegionState::Stopping)
    }
}

/// The rollout states a coordinator journals; each gets a `pacup_rollout_state` series
/// (1 for the current one, 0 for the others) so a query need not know which exist.
const ROLLOUT_STATES: [&str; 8] = [
    "running",
    "paused",
    "held",
    "rolling_back",
    "done",
    "aborted",
    "failed",
    "rolled_back",
];

/// Event actions that mark the rollout's own progress rather than a step's work: their
/// `elapsed_ms` is not a step duration (the whole rollout for `done`, zero for `pause`).
const MARKER_ACTIONS: [&str; 3] = ["done", "pause", "rollback"];

/// Bounds (seconds) of the step-duration histogram: listener switches take milliseconds,
/// gates and stores' deletion minutes.
const STEP_BUCKETS: [f64; 14] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegionLabels {
    state: String,
    store: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegionLabel {
    region: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientLabels {
    region: String,
    result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    command: String,
    version: String,
}

fn step_histogram() -> Histogram {
    Histogram::new(STEP_BUCKETS)
}

struct Inner {
    registry: Registry,
    regions: Family<RegionLabels, Gauge>,
    /// Each hosted region's current series in `regions`, so a change moves it.
    region_now: Mutex<HashMap<String, RegionLabels>>,
    jobs_taken: Family<RegionLabel, Counter>,
    jobs_completed: Family<RegionLabel, Counter>,
    client_requests: Family<ClientLabels, Counter>,
    step_seconds: Family<StepLabels, Histogram, fn() -> Histogram>,
    rollout_state: Family<StateLabel, Gauge>,
    /// One unlabelled series, created by the first rollout event: a process that runs no
    /// rollout (an agent) shows no step rather than step 0.
    current_step: Family<[(String, String); 0], Gauge>,
    psor_errors: Family<KindLabel, Counter>,
}

/// The metrics of one process: a cheap, cloneable handle (disabled by default).
#[derive(Clone, Default)]
pub struct Metrics(Option<Arc<Inner>>);

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Metrics(enabled)"
        } else {
            "Metrics(disabled)"
        })
    }
}

impl Metrics {
    /// A handle whose every call is a no-op (no `--metrics-addr`).
    pub fn disabled() -> Metrics {
        Metrics(None)
    }

    /// A live registry for the process running `command` (e.g. `agent`, `rollout run`).
    pub fn new(command: &str) -> Metrics {
        let mut registry = Registry::default();
        registry.register(
            "pacup",
            "The pacup command this process runs, and its version",
            Info::new(InfoLabels {
                command: command.to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
            }),
        );
        let regions = Family::<RegionLabels, Gauge>::default();
        registry.register(
            "pacup_regions",
            "Regions hosted by this process, by state and by the store they are a member of \
             (empty when in none)",
            regions.clone(),
        );
        let jobs_taken = Family::<RegionLabel, Counter>::default();
        registry.register(
            "pacup_jobs_taken",
            "Batch jobs a region claimed from the shared queue (new or reclaimed)",
            jobs_taken.clone(),
        );
        let jobs_completed = Family::<RegionLabel, Counter>::default();
        registry.register(
            "pacup_jobs_completed",
            "Batch jobs a region completed and recorded",
            jobs_completed.clone(),
        );
        let client_requests = Family::<ClientLabels, Counter>::default();
        registry.register(
            "pacup_client_requests",
            "Client transactions a region's listener answered, by result (ok or error)",
            client_requests.clone(),
        );
        let step_seconds = Family::<StepLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            step_histogram,
        );
        registry.register(
            "pacup_rollout_step_duration_seconds",
            "Duration of finished rollout steps (rollback steps included), by step kind and \
             status (done, skipped or failed)",
            step_seconds.clone(),
        );
        let rollout_state = Family::<StateLabel, Gauge>::default();
        registry.register(
            "pacup_rollout_state",
            "The rollout's journaled state: 1 for the current state, 0 for the others",
            rollout_state.clone(),
        );
        let current_step = Family::<[(String, String); 0], Gauge>::default();
        registry.register(
            "pacup_rollout_current_step",
            "Step number of the rollout's latest event",
            current_step.clone(),
        );
        let psor_errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "pacup_psor_errors",
            "Failed PSOR commands and connections, by kind (unreachable, auth or command)",
            psor_errors.clone(),
        );
        Metrics(Some(Arc::new(Inner {
            registry,
            regions,
            region_now: Mutex::new(HashMap::new()),
            jobs_taken,
            jobs_completed,
            client_requests,
            step_seconds,
            rollout_state,
            current_step,
            psor_errors,
        })))
    }

    /// Whether this handle records anything.
    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Every metric in the Prometheus text exposition format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Some(m) = &self.0 {
            // Writing into a String cannot fail.
            let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &m.registry);
        }
        out
    }

    /// A hosted region moved to `state`; `store` is the store it joined (ignored for the
    /// states in which it is a member of none).
    pub fn region_state(&self, region: &str, state: RegionState, store: &str) {
        let Some(m) = &self.0 else { return };
        let new = RegionLabels {
            state: state.as_str().to_string(),
            store: if state.in_store() {
                store.to_string()
            } else {
                String::new()
            },
        };
        let mut now = m.region_now.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = now.insert(region.to_string(), new.clone()) {
            if old == new {
                return;
            }
            m.regions.get_or_create(&old).dec();
        }
        m.regions.get_or_create(&new).inc();
    }

    /// A region claimed a batch job.
    pub fn job_taken(&self, region: &str) {
        if let Some(m) = &self.0 {
            m.jobs_taken.get_or_create(&region_label(region)).inc();
        }
    }

    /// A region completed and recorded a batch job.
    pub fn job_completed(&self, region: &str) {
        if let Some(m) = &self.0 {
            m.jobs_completed.get_or_create(&region_label(region)).inc();
        }
    }

    /// A region's listener answered a client transaction.
    pub fn client_request(&self, region: &str, ok: bool) {
        if let Some(m) = &self.0 {
            let l = ClientLabels {
                region: region.to_string(),
                result: if ok { "ok" } else { "error" }.to_string(),
            };
            m.client_requests.get_or_create(&l).inc();
        }
    }

    /// A PSOR command or connection failed.
    pub fn psor_error(&self, e: &redis::RedisError) {
        if let Some(m) = &self.0 {
            let kind = if crate::error::is_unreachable(e) {
                "unreachable"
            } else if e.kind() == redis::ErrorKind::AuthenticationFailed
                || matches!(e.code(), Some("WRONGPASS" | "NOAUTH"))
            {
                "auth"
            } else {
                "command"
            };
            m.psor_errors
                .get_or_create(&KindLabel { kind: kind.into() })
                .inc();
        }
    }

    /// The coordinator journaled `fields` (its state among them when it changed) and
    /// possibly an event.
    pub fn rollout_journaled(&self, fields: &[(&str, String)], event: Option<&Event>) {
        let Some(m) = &self.0 else { return };
        if let Some((_, state)) = fields.iter().find(|(k, _)| *k == "state") {
            for s in ROLLOUT_STATES {
                m.rollout_state
                    .get_or_create(&StateLabel { state: s.into() })
                    .set(i64::from(s == state.as_str()));
            }
            if !ROLLOUT_STATES.contains(&state.as_str()) {
                m.rollout_state
                    .get_or_create(&StateLabel {
                        state: state.clone(),
                    })
                    .set(1);
            }
        }
        let Some(e) = event else { return };
        m.current_step.get_or_create(&[]).set(e.step as i64);
        if e.status != "started" && !MARKER_ACTIONS.contains(&e.action.as_str()) {
            let l = StepLabels {
                step: e.action.clone(),
                status: e.status.clone(),
            };
            m.step_seconds
                .get_or_create(&l)
                .observe(e.elapsed_ms as f64 / 1000.0);
        }
    }
}

fn region_label(region: &str) -> RegionLabel {
    RegionLabel {
        region: region.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(step: usize, action: &str, status: &str, ms: u64) -> Event {
        Event {
            ts: String::new(),
            rollout: "R".into(),
            seq: 1,
            step,
            action: action.into(),
            host: None,
            region: None,
            status: status.into(),
            detail: String::new(),
            elapsed_ms: ms,
        }
    }

    fn has(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    #[test]
    fn only_metrics_with_samples_are_shown() {
        let m = Metrics::new("agent");
        let t = m.encode();
        assert!(!t.contains("pacup_rollout"), "{t}");
        assert!(!t.contains("pacup_regions"), "{t}");
    }

    #[test]
    fn disabled_records_nothing() {
        let m = Metrics::disabled();
        m.job_taken("R1");
        m.region_state("R1", RegionState::Active, "1.0.0");
        assert!(!m.is_enabled());
        assert_eq!(m.encode(), "");
    }

    #[test]
    fn region_moves_between_series() {
        let m = Metrics::new("agent");
        m.region_state("R1", RegionState::Stopped, "");
        m.region_state("R2", RegionState::Stopped, "");
        m.region_state("R1", RegionState::Active, "1.0.0");
        m.region_state("R1", RegionState::Active, "1.0.0");
        let t = m.encode();
        assert!(
            has(&t, r#"pacup_regions{state="active",store="1.0.0"} 1"#),
            "{t}"
        );
        assert!(
            has(&t, r#"pacup_regions{state="stopped",store=""} 1"#),
            "{t}"
        );
        m.region_state("R1", RegionState::Lost, "1.0.0");
        let t = m.encode();
        assert!(
            has(&t, r#"pacup_regions{state="active",store="1.0.0"} 0"#),
            "{t}"
        );
        assert!(has(&t, r#"pacup_regions{state="lost",store=""} 1"#), "{t}");
        assert!(has(&t, "# TYPE pacup_regions gauge"), "{t}");
        assert!(
            has(
                &t,
                &format!(
                    r#"pacup_info{{command="agent",version="{}"}} 1"#,
                    env!("CARGO_PKG_VERSION")
                )
            ),
            "{t}"
        );
    }

    #[test]
    fn counters_have_total_suffix_and_labels() {
        let m = Metrics::new("region run");
        m.job_taken("R1");
        m.job_completed("R1");
        m.job_completed("R1");
        m.client_request("R1", true);
        m.client_request("R1", false);
        let t = m.encode();
        for line in [
            "# TYPE pacup_jobs_taken_total counter",
            r#"pacup_jobs_taken_total{region="R1"} 1"#,
            r#"pacup_jobs_completed_total{region="R1"} 2"#,
            r#"pacup_client_requests_total{region="R1",result="ok"} 1"#,
            r#"pacup_client_requests_total{region="R1",result="error"} 1"#,
        ] {
            assert!(has(&t, line), "{line} missing in\n{t}");
        }
    }

    #[test]
    fn journal_sets_state_step_and_durations() {
        let m = Metrics::new("rollout run");
        m.rollout_journaled(
            &[("state", "running".into())],
            Some(&event(0, "preflight", "done", 40)),
        );
        m.rollout_journaled(&[], Some(&event(3, "stop", "started", 0)));
        m.rollout_journaled(&[], Some(&event(3, "stop", "done", 1500)));
        m.rollout_journaled(
            &[("state", "held".into())],
            Some(&event(7, "pause", "done", 0)),
        );
        let t = m.encode();
        for line in [
            r#"pacup_rollout_state{state="held"} 1"#,
            r#"pacup_rollout_state{state="running"} 0"#,
            "pacup_rollout_current_step 7",
            "# TYPE pacup_rollout_step_duration_seconds histogram",
            r#"pacup_rollout_step_duration_seconds_count{step="stop",status="done"} 1"#,
            r#"pacup_rollout_step_duration_seconds_bucket{step="stop",status="done",le="2.5"} 1"#,
            r#"pacup_rollout_step_duration_seconds_bucket{step="stop",status="done",le="1"} 0"#,
            r#"pacup_rollout_step_duration_seconds_count{step="preflight",status="done"} 1"#,
        ] {
            assert!(has(&t, line), "{line} missing in\n{t}");
        }
        // Markers are not steps.
        assert!(!t.contains(r#"step="pause""#), "{t}");
    }
}
