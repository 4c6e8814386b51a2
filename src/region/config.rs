//! What a region is started with.

use crate::compat::Matrix;
use crate::metrics::Metrics;
use crate::names::{HostName, Product, RegionName};
use crate::psor::notify::Notices;
use crate::psor::StartType;
use crate::resources::Resources;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// When a region's client listener comes up at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerStart {
    /// On if the joined store is running, off in upgrade mode (the documented process
    /// keeps clients away from an upgrade-mode region until the new PAC runs).
    Auto,
    /// Always on.
    On,
    /// Always off (turned on later by `region listener on`).
    Off,
}

/// Everything a region needs to start and run.
#[derive(Debug, Clone)]
pub struct RegionConfig {
    /// Region name.
    pub region: RegionName,
    /// Host it runs on.
    pub host: HostName,
    /// Installed product.
    pub product: Product,
    /// Requested start type.
    pub start_type: StartType,
    /// Resource definitions to load into a store it creates.
    pub resources: Resources,
    /// Optional compatibility matrix.
    pub matrix: Option<Matrix>,
    /// Heartbeat interval (default 1 s).
    pub heartbeat_interval: Duration,
    /// Heartbeat TTL (default 3 s): past it without a heartbeat the region is dead.
    pub heartbeat_ttl: Duration,
    /// Client listener address (default an ephemeral port on 127.0.0.1).
    pub listen: SocketAddr,
    /// Listener state at start.
    pub listener_start: ListenerStart,
    /// Host name clients reach the listener by, when it binds a wildcard address (in
    /// containers): the endpoint published is `<advertise_host>:<port>`.
    pub advertise_host: Option<String>,
    /// Simulated duration of one batch job.
    pub job_time: Duration,
    /// A job held this long by an unresponsive region is taken over (default 2 x TTL).
    pub reclaim_idle: Duration,
    /// Pause between claims when no job is waiting.
    pub idle_poll: Duration,
    /// Where the region reports its state, jobs and client requests (disabled by default).
    pub metrics: Metrics,
    /// The PAC notifications of a process that runs several regions (a host agent), from
    /// its one subscription; `None`: the region subscribes itself.
    pub notices: Option<Notices>,
}

impl RegionConfig {
    /// Defaults: 1 s heartbeat, 3 s TTL, built-in resources, no matrix, listener on an
    /// ephemeral 127.0.0.1 port (auto), 20 ms jobs, reclaim after 6 s.
    pub fn new(
        region: RegionName,
        host: HostName,
        product: Product,
        start_type: StartType,
    ) -> Self {
        RegionConfig {
            region,
            host,
            product,
            start_type,
            resources: Resources::default_set(),
            matrix: None,
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_ttl: Duration::from_secs(3),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            listener_start: ListenerStart::Auto,
            advertise_host: None,
            job_time: Duration::from_millis(20),
            reclaim_idle: Duration::from_secs(6),
            idle_poll: Duration::from_millis(25),
            metrics: Metrics::disabled(),
            notices: None,
        }
    }
}
