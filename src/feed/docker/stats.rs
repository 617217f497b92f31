//! Per-container usage: while sampling is on, every interval, one
//! `stats?stream=false&one-shot=true` call per running container (a few at
//! a time) becomes one [`DockerEvent::Stats`].
//!
//! One-shot stats come without Docker's previous CPU sample, so CPU percent
//! is computed against this sampler's own previous reading of the container
//! (the first round of a container says 0). Memory is usage less the
//! inactive page cache, as `docker stats` shows it.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::ContainerStatsResponse;
use bollard::query_parameters::{ListContainersOptions, StatsOptions};
use futures_util::StreamExt;

use super::Sink;
use crate::feed::DockerEvent;
use crate::protocol::model::ContainerStats;

/// Stats calls in flight at once.
const CONCURRENCY: usize = 16;
/// Most containers sampled in one round.
const MAX_SAMPLED: usize = 2_000;

/// A container's previous CPU reading: (its total usage, the system's), in ns.
type CpuReading = (u64, u64);

/// Samples until aborted (the runtime aborts it when sampling stops or the
/// engine goes away).
pub(super) async fn sample_loop(docker: Docker, sink: Sink, interval: Duration) {
    let mut previous: HashMap<String, CpuReading> = HashMap::new();
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(200)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticker.tick().await;
        let ids = match running_ids(&docker).await {
            Ok(ids) => ids,
            Err(e) => {
                log::debug!("container stats: could not list running containers: {e}");
                continue;
            }
        };
        let docker_ref = &docker;
        let readings: Vec<(String, Option<ContainerStatsResponse>)> =
            futures_util::stream::iter(ids)
                .map(|id| async move {
                    let opts = StatsOptions {
                        stream: false,
                        one_shot: true,
                    };
                    let r = docker_ref.stats(&id, Some(opts)).next().await;
                    (id, r.and_then(Result::ok))
                })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
        let mut round = Vec::with_capacity(readings.len());
        let mut seen = HashMap::with_capacity(readings.len());
        for (id, r) in readings {
            let Some(r) = r else { continue };
            let (stats, cpu) = usage(&id, &r, previous.get(&id).copied());
            if let Some(cpu) = cpu {
                seen.insert(id, cpu);
            }
            round.push(stats);
        }
        previous = seen;
        round.sort_by(|a, b| a.id.cmp(&b.id));
        if !sink.send(DockerEvent::Stats(round)) {
            return;
        }
    }
}

async fn running_ids(docker: &Docker) -> Result<Vec<String>, bollard::errors::Error> {
    let filters = HashMap::from([("status".to_string(), vec!["running".to_string()])]);
    let opts = ListContainersOptions {
        all: false,
        limit: None,
        size: false,
        filters: Some(filters),
    };
    let list = docker.list_containers(Some(opts)).await?;
    Ok(list
        .into_iter()
        .filter_map(|c| c.id)
        .take(MAX_SAMPLED)
        .collect())
}

/// One reading as the wire shows it, and its CPU reading for the next round.
fn usage(
    id: &str,
    r: &ContainerStatsResponse,
    before: Option<CpuReading>,
) -> (ContainerStats, Option<CpuReading>) {
    let cpu = r.cpu_stats.as_ref();
    let total = cpu
        .and_then(|c| c.cpu_usage.as_ref())
        .and_then(|u| u.total_usage);
    let system = cpu.and_then(|c| c.system_cpu_usage);
    let cpus = cpu.and_then(|c| c.online_cpus).unwrap_or(1).max(1);
    let now = total.zip(system);
    let cpu_percent = match (before, now) {
        (Some((t0, s0)), Some((t1, s1))) if s1 > s0 && t1 >= t0 => {
            (t1 - t0) as f64 / (s1 - s0) as f64 * f64::from(cpus) * 100.0
        }
        _ => 0.0,
    };
    let mem = r.memory_stats.as_ref();
    let usage = mem.and_then(|m| m.usage).unwrap_or(0);
    let cache = mem
        .and_then(|m| m.stats.as_ref())
        .and_then(|s| {
            s.get("inactive_file")
                .or_else(|| s.get("total_inactive_file"))
        })
        .copied()
        .unwrap_or(0);
    let (rx, tx) = r.networks.as_ref().map_or((0, 0), |n| {
        n.values().fold((0u64, 0u64), |(rx, tx), i| {
            (
                rx.saturating_add(i.rx_bytes.unwrap_or(0)),
                tx.saturating_add(i.tx_bytes.unwrap_or(0)),
            )
        })
    });
    let stats = ContainerStats {
        id: id.to_string(),
        cpu_percent: (cpu_percent * 100.0).round() / 100.0,
        memory_used: usage.saturating_sub(cache),
        memory_limit: mem.and_then(|m| m.limit).unwrap_or(0),
        net_rx_bytes: rx,
        net_tx_bytes: tx,
    };
    (stats, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerCpuStats, ContainerCpuUsage, ContainerMemoryStats};

    fn reading(total: u64, system: u64, usage: u64, cache: u64) -> ContainerStatsResponse {
        ContainerStatsResponse {
            cpu_stats: Some(ContainerCpuStats {
                cpu_usage: Some(ContainerCpuUsage {
                    total_usage: Some(total),
                    ..Default::default()
                }),
                system_cpu_usage: Some(system),
                online_cpus: Some(2),
                ..Default::default()
            }),
            memory_stats: Some(ContainerMemoryStats {
                usage: Some(usage),
                limit: Some(1000),
                stats: Some(HashMap::from([("inactive_file".to_string(), cache)])),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn cpu_is_measured_against_the_previous_round() {
        let (first, cpu) = usage("a", &reading(100, 1_000, 500, 100), None);
        assert_eq!(first.cpu_percent, 0.0);
        assert_eq!(first.memory_used, 400);
        assert_eq!(first.memory_limit, 1000);
        // 50 ns of the container over 1000 ns of system time, 2 CPUs: 10 %.
        let (second, _) = usage("a", &reading(150, 2_000, 500, 0), cpu);
        assert_eq!(second.cpu_percent, 10.0);
        // A counter that went backwards (container restarted) says 0, not garbage.
        let (third, _) = usage("a", &reading(10, 3_000, 0, 10), Some((150, 2_000)));
        assert_eq!(third.cpu_percent, 0.0);
        assert_eq!(third.memory_used, 0);
    }
}
