//! The end-of-run report: JSON for machines, a table for people, and the
//! side-by-side comparison of several reports.
//!
//! Owns the report format (`--json` prints one [`Report`]) and every derived
//! number: rates are per second of the measurement window, deliveries per
//! server CPU-second divide deliveries by the server's utime+stime over the
//! window (plus drain), RSS per connection is the server's RSS growth over its
//! empty baseline divided by the connections established.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::procfs::ProcSample;
use crate::stats::{ErrorCounts, LatencySummary, Merged};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ConnReport {
    pub attempted: u64,
    pub established: u64,
    pub failed: u64,
    /// Established connections lost before the end (closed by the server or broken).
    pub dropped: u64,
    /// Storm: connections we closed cleanly.
    pub closed: u64,
    /// Connections established per second of setup wall time.
    pub setup_per_s: f64,
    pub setup_latency: LatencySummary,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MsgReport {
    pub sent: u64,
    /// Deliveries the sends should have produced (0 when unknown).
    pub expected: u64,
    pub delivered: u64,
    /// expected − delivered, when expected is known.
    pub lost: i64,
    pub frames: u64,
    pub bytes: u64,
    pub sent_per_s: f64,
    pub delivered_per_s: f64,
    pub bytes_per_s: f64,
    pub gaps: u64,
    pub reordered: u64,
    pub server_dropped: u64,
    pub send_skipped: u64,
    pub negative_latency: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServerReport {
    /// The first of `pids`.
    pub pid: u32,
    /// Every server process sampled (several hubs); CPU and RSS are their sums.
    #[serde(default)]
    pub pids: Vec<u32>,
    /// Server CPU seconds (utime+stime) from the window start to the end of the drain.
    pub cpu_s: f64,
    /// Share of one core the server used over that time.
    pub cpu_cores: f64,
    pub deliveries_per_cpu_s: f64,
    pub rss_baseline_bytes: u64,
    pub rss_connected_bytes: u64,
    pub rss_end_bytes: u64,
    /// (rss_end − rss_baseline) / established connections.
    pub rss_per_conn_bytes: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ClientReport {
    /// CPU seconds all workers used during the window.
    pub cpu_s: f64,
    /// Same as a share of one core: near 1.0 per worker means the client may be the bottleneck.
    pub cpu_cores: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub scenario: String,
    pub label: Option<String>,
    pub target: String,
    pub procs: usize,
    pub params: serde_json::Value,
    pub duration_s: f64,
    pub connections: ConnReport,
    pub messages: MsgReport,
    /// Delivery latency (send timestamp in the payload → receipt).
    pub latency: LatencySummary,
    pub errors: ErrorCounts,
    pub server: Option<ServerReport>,
    pub client: ClientReport,
    /// True when every worker returned a result.
    pub complete: bool,
}

/// Server samples around a run: before any connection, at window start, at the end.
#[derive(Debug, Clone)]
pub struct ServerSamples {
    /// Processes sampled; each sample is the sum over all of them.
    pub pids: Vec<u32>,
    pub baseline: ProcSample,
    pub connected: ProcSample,
    pub end: ProcSample,
    /// Wall time between `connected` and `end`, seconds.
    pub wall_s: f64,
}

/// What a run was, as the report names it.
#[derive(Debug, Clone)]
pub struct RunMeta {
    pub scenario: String,
    pub label: Option<String>,
    pub target: String,
    pub params: serde_json::Value,
}

/// Builds the report from merged worker results.
pub fn build(
    meta: RunMeta,
    merged: &Merged,
    setup_wall_ms: u64,
    server: Option<ServerSamples>,
    complete: bool,
) -> Report {
    let c = &merged.counters;
    let secs = merged.measured_ms as f64 / 1000.0;
    let per_s = |v: u64| if secs > 0.0 { v as f64 / secs } else { 0.0 };
    let server = server.map(|s| {
        let cpu_s = s.end.cpu_ns.saturating_sub(s.connected.cpu_ns) as f64 / 1e9;
        let conns = c.established.saturating_sub(c.closed);
        ServerReport {
            pid: s.pids.first().copied().unwrap_or(0),
            pids: s.pids.clone(),
            cpu_s,
            cpu_cores: if s.wall_s > 0.0 {
                cpu_s / s.wall_s
            } else {
                0.0
            },
            deliveries_per_cpu_s: if cpu_s > 0.0 {
                c.delivered as f64 / cpu_s
            } else {
                0.0
            },
            rss_baseline_bytes: s.baseline.rss_bytes,
            rss_connected_bytes: s.connected.rss_bytes,
            rss_end_bytes: s.end.rss_bytes,
            rss_per_conn_bytes: if conns > 0 {
                (s.end.rss_bytes as f64 - s.baseline.rss_bytes as f64) / conns as f64
            } else {
                0.0
            },
        }
    });
    let client_cpu = merged.self_cpu_ms as f64 / 1000.0;
    Report {
        scenario: meta.scenario,
        label: meta.label,
        target: meta.target,
        procs: merged.workers,
        params: meta.params,
        duration_s: secs,
        connections: ConnReport {
            attempted: c.attempted,
            established: c.established,
            failed: c.failed,
            dropped: c.dropped,
            closed: c.closed,
            setup_per_s: if setup_wall_ms > 0 {
                c.established as f64 * 1000.0 / setup_wall_ms as f64
            } else {
                0.0
            },
            setup_latency: merged.setup.summary(),
        },
        messages: MsgReport {
            sent: c.sent,
            expected: c.expected,
            delivered: c.delivered,
            lost: if c.expected > 0 {
                c.expected as i64 - c.delivered as i64
            } else {
                0
            },
            frames: c.frames,
            bytes: c.bytes,
            sent_per_s: per_s(c.sent),
            delivered_per_s: per_s(c.delivered),
            bytes_per_s: per_s(c.bytes),
            gaps: c.gaps,
            reordered: c.reordered,
            server_dropped: c.server_dropped,
            send_skipped: c.send_skipped,
            negative_latency: c.negative_latency,
        },
        latency: merged.latency.summary(),
        errors: merged.errors.clone(),
        server,
        client: ClientReport {
            cpu_s: client_cpu,
            cpu_cores: if secs > 0.0 { client_cpu / secs } else { 0.0 },
        },
        complete,
    }
}

fn ms(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn bytes(b: f64) -> String {
    if b.abs() >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / 1024.0 / 1024.0)
    } else if b.abs() >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

/// The human table printed at the end of a run.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let title = r.label.as_deref().unwrap_or(&r.scenario);
    let _ = writeln!(
        s,
        "== {title} ({}) → {} · {} worker(s){}",
        r.scenario,
        r.target,
        r.procs,
        if r.complete {
            ""
        } else {
            " · INCOMPLETE: a worker did not report"
        }
    );
    let c = &r.connections;
    let _ = writeln!(
        s,
        "connections   {} established / {} attempted, {} failed, {} dropped{}",
        c.established,
        c.attempted,
        c.failed,
        c.dropped,
        if c.closed > 0 {
            format!(", {} closed cleanly", c.closed)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        s,
        "setup         {:.0} conn/s   p50 {}   p99 {}   max {}",
        c.setup_per_s,
        ms(c.setup_latency.p50_us),
        ms(c.setup_latency.p99_us),
        ms(c.setup_latency.max_us)
    );
    let m = &r.messages;
    let _ = writeln!(s, "window        {:.1} s", r.duration_s);
    if m.sent > 0 || m.delivered > 0 || m.frames > 0 {
        let _ = writeln!(
            s,
            "messages      sent {} ({:.0}/s)   delivered {} ({:.0}/s)   {} frames   {}/s",
            m.sent,
            m.sent_per_s,
            m.delivered,
            m.delivered_per_s,
            m.frames,
            bytes(m.bytes_per_s)
        );
        let _ = writeln!(
            s,
            "integrity     expected {}   lost {}   gaps {}   reordered {}   server-dropped {}   send-skipped {}",
            m.expected, m.lost, m.gaps, m.reordered, m.server_dropped, m.send_skipped
        );
    }
    if r.latency.count > 0 {
        let l = &r.latency;
        let _ = writeln!(
            s,
            "latency       p50 {}   p90 {}   p99 {}   p99.9 {}   max {}   (n={})",
            ms(l.p50_us),
            ms(l.p90_us),
            ms(l.p99_us),
            ms(l.p999_us),
            ms(l.max_us),
            l.count
        );
    }
    if let Some(sv) = &r.server {
        let _ = writeln!(
            s,
            "server        pid {}   cpu {:.2} s ({:.2} cores)   {:.0} deliveries/cpu-s",
            if sv.pids.len() > 1 {
                format!(
                    "{} (sum)",
                    sv.pids
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join("+")
                )
            } else {
                sv.pid.to_string()
            },
            sv.cpu_s,
            sv.cpu_cores,
            sv.deliveries_per_cpu_s
        );
        let _ = writeln!(
            s,
            "server rss    baseline {}   connected {}   end {}   per conn {}",
            bytes(sv.rss_baseline_bytes as f64),
            bytes(sv.rss_connected_bytes as f64),
            bytes(sv.rss_end_bytes as f64),
            bytes(sv.rss_per_conn_bytes)
        );
    }
    let _ = writeln!(
        s,
        "client        cpu {:.2} s ({:.2} cores)",
        r.client.cpu_s, r.client.cpu_cores
    );
    if !r.errors.is_empty() {
        let _ = writeln!(s, "errors");
        for (k, v) in &r.errors {
            let _ = writeln!(s, "  {v:>8}  {k}");
        }
    }
    s
}

fn ratio(v: f64, base: f64) -> String {
    if base > 0.0 && v > 0.0 {
        format!("{:.2}x", v / base)
    } else {
        "-".into()
    }
}

/// Side-by-side table of several reports; ratios are relative to the first.
pub fn compare(named: &[(String, Report)]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<20} {:>12} {:>14} {:>7} {:>10} {:>10} {:>10} {:>7} {:>10} {:>7} {:>9}",
        "server",
        "deliv/s",
        "deliv/cpu-s",
        "ratio",
        "p50",
        "p99",
        "p99.9",
        "ratio",
        "rss/conn",
        "ratio",
        "lost"
    );
    let Some((_, base)) = named.first() else {
        return s;
    };
    let base_eff = base
        .server
        .as_ref()
        .map(|x| x.deliveries_per_cpu_s)
        .unwrap_or(0.0);
    let base_rss = base
        .server
        .as_ref()
        .map(|x| x.rss_per_conn_bytes)
        .unwrap_or(0.0);
    for (name, r) in named {
        let eff = r
            .server
            .as_ref()
            .map(|x| x.deliveries_per_cpu_s)
            .unwrap_or(0.0);
        let rss = r
            .server
            .as_ref()
            .map(|x| x.rss_per_conn_bytes)
            .unwrap_or(0.0);
        let _ = writeln!(
            s,
            "{:<20} {:>12.0} {:>14.0} {:>7} {:>10} {:>10} {:>10} {:>7} {:>10} {:>7} {:>9}",
            name,
            r.messages.delivered_per_s,
            eff,
            ratio(eff, base_eff),
            ms(r.latency.p50_us),
            ms(r.latency.p99_us),
            ms(r.latency.p999_us),
            // Latency ratio: how many times slower than the baseline at p99.
            ratio(r.latency.p99_us, base.latency.p99_us),
            bytes(rss),
            ratio(rss, base_rss),
            r.messages.lost
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Counters, Latency, WorkerResult, merge_results};

    fn meta(target: &str) -> RunMeta {
        RunMeta {
            scenario: "fanout".into(),
            label: None,
            target: target.into(),
            params: serde_json::json!({}),
        }
    }

    fn merged() -> Merged {
        let mut h = Latency::new();
        for v in 1..=100u64 {
            h.record(v * 10_000);
        }
        merge_results(&[WorkerResult {
            worker: 0,
            counters: Counters {
                attempted: 101,
                established: 100,
                failed: 1,
                sent: 1000,
                expected: 100_000,
                delivered: 99_990,
                frames: 99_990,
                bytes: 9_999_000,
                ..Default::default()
            },
            errors: [("connect: Connection refused".to_string(), 1)]
                .into_iter()
                .collect(),
            latency: h.encode(),
            setup: Latency::new().encode(),
            setup_wall_ms: 500,
            measured_ms: 10_000,
            self_cpu_ms: 2_500,
        }])
        .unwrap()
    }

    #[test]
    fn derived_numbers() {
        let samples = ServerSamples {
            pids: vec![42],
            baseline: ProcSample {
                cpu_ns: 0,
                rss_bytes: 10_000_000,
            },
            connected: ProcSample {
                cpu_ns: 1_000_000_000,
                rss_bytes: 10_100_000,
            },
            end: ProcSample {
                cpu_ns: 3_000_000_000,
                rss_bytes: 10_200_000,
            },
            wall_s: 11.0,
        };
        let r = build(meta("127.0.0.1:1"), &merged(), 500, Some(samples), true);
        assert_eq!(r.messages.lost, 10);
        assert!((r.messages.delivered_per_s - 9_999.0).abs() < 1e-6);
        assert!((r.connections.setup_per_s - 200.0).abs() < 1e-6);
        let sv = r.server.as_ref().unwrap();
        assert!((sv.cpu_s - 2.0).abs() < 1e-9);
        assert!((sv.deliveries_per_cpu_s - 49_995.0).abs() < 1e-6);
        assert!((sv.rss_per_conn_bytes - 2_000.0).abs() < 1e-9);
        assert!((r.client.cpu_cores - 0.25).abs() < 1e-9);
        assert!((r.latency.p50_us - 500.0).abs() < 1.0);
        // JSON round trip: what `--json` prints is what `compare` reads.
        let text = serde_json::to_string(&r).unwrap();
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back.messages, r.messages);
        assert_eq!(back.connections, r.connections);
        assert_eq!(back.errors, r.errors);
        assert!((back.server.unwrap().deliveries_per_cpu_s - 49_995.0).abs() < 1e-6);
        let table = render(&r);
        assert!(table.contains("99990 (9999/s)"), "{table}");
        assert!(table.contains("deliveries/cpu-s"));
        assert!(table.contains("connect: Connection refused"));
    }

    #[test]
    fn compare_ratios_against_first() {
        let mut a = build(meta("t"), &merged(), 1, None, true);
        a.server = Some(ServerReport {
            deliveries_per_cpu_s: 1_000_000.0,
            rss_per_conn_bytes: 2048.0,
            ..Default::default()
        });
        let mut b = a.clone();
        b.server = Some(ServerReport {
            deliveries_per_cpu_s: 250_000.0,
            rss_per_conn_bytes: 8192.0,
            ..Default::default()
        });
        let t = compare(&[("dockwire".into(), a), ("peer".into(), b)]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].starts_with("dockwire") && lines[1].contains("1.00x"));
        assert!(lines[2].contains("0.25x"), "{}", lines[2]);
        assert!(lines[2].contains("4.00x"), "{}", lines[2]);
    }
}
