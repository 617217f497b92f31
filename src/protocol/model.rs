//! Data models that appear on the wire (SPEC section 3.1).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One container of a server, as browsers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Container {
    /// Full 64-hex id.
    pub id: String,
    /// Name without Docker's leading `/`.
    pub name: String,
    #[serde(default)]
    pub image: String,
    /// Docker's state: created, running, paused, restarting, removing, exited, dead.
    pub state: String,
    /// Docker's human status, e.g. "Up 3 minutes".
    #[serde(default)]
    pub status: String,
    /// RFC 3339 creation time.
    #[serde(default)]
    pub created: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// RFC 3339 time the container last started; null when it never ran.
    #[serde(default)]
    pub started_at: Option<String>,
    /// The last exit code; null while it never exited.
    #[serde(default)]
    pub exit_code: Option<i64>,
    /// `healthy`, `unhealthy` or `starting`; null without a health check.
    #[serde(default)]
    pub health: Option<String>,
}

/// One mounted filesystem's usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskUsage {
    pub mount: String,
    pub used: u64,
    pub total: u64,
}

/// One network interface's byte counters since boot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkUsage {
    pub interface: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// A host metrics sample (local host or an agent's host).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub cpu_percent: f64,
    pub memory_percent: f64,
    pub memory_used: u64,
    pub memory_total: u64,
    pub disk_usage: Vec<DiskUsage>,
    pub network: Vec<NetworkUsage>,
    /// 1, 5 and 15 minute load averages.
    pub load_average: [f64; 3],
    /// RFC 3339 time of the sample.
    pub timestamp: String,
}

/// One running container's usage (`container_stats`, SPEC 6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerStats {
    pub id: String,
    #[serde(default)]
    pub cpu_percent: f64,
    /// Bytes in use, page cache excluded (as `docker stats` shows).
    #[serde(default)]
    pub memory_used: u64,
    #[serde(default)]
    pub memory_limit: u64,
    #[serde(default)]
    pub net_rx_bytes: u64,
    #[serde(default)]
    pub net_tx_bytes: u64,
}
