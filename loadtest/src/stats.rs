//! Counters and latency histograms, per worker and merged.
//!
//! Owns the worker result format: a worker prints one [`WorkerResult`] as a
//! JSON line on stdout; histograms travel as base64 of the HdrHistogram V2
//! encoding, so the coordinator merges exact bucket counts rather than
//! averaging percentiles. Latencies are recorded in nanoseconds between 1 ns
//! and [`HIST_MAX_NS`] with 3 significant figures; larger values saturate.

use std::collections::BTreeMap;

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Highest latency a histogram tracks exactly (60 s); larger values count as this.
pub const HIST_MAX_NS: u64 = 60_000_000_000;

/// Errors reading another process's results; fatal for that worker's share.
#[derive(Debug, Error)]
pub enum StatsError {
    #[error("could not decode histogram: {0}")]
    Decode(String),
    #[error("could not merge histograms: {0}")]
    Merge(String),
}

/// A latency histogram in nanoseconds.
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        Latency {
            hist: Histogram::new_with_bounds(1, HIST_MAX_NS, 3)
                .expect("static histogram bounds are valid"),
        }
    }

    pub fn record(&mut self, ns: u64) {
        self.hist.saturating_record(ns.max(1));
    }

    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    pub fn reset(&mut self) {
        self.hist.reset();
    }

    /// Adds every sample of `other`.
    ///
    /// # Errors
    /// Only when the two histograms have incompatible bounds.
    pub fn merge(&mut self, other: &Latency) -> Result<(), StatsError> {
        self.hist
            .add(&other.hist)
            .map_err(|e| StatsError::Merge(format!("{e:?}")))
    }

    /// Base64 of the V2 encoding.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        // Serializing into a Vec cannot fail for a valid histogram.
        let _ = V2Serializer::new().serialize(&self.hist, &mut buf);
        base64::engine::general_purpose::STANDARD.encode(buf)
    }

    /// # Errors
    /// Bad base64 or a corrupt V2 encoding.
    pub fn decode(text: &str) -> Result<Latency, StatsError> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| StatsError::Decode(e.to_string()))?;
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut raw.as_slice())
            .map_err(|e| StatsError::Decode(format!("{e:?}")))?;
        let mut out = Latency::new();
        out.hist
            .add(&h)
            .map_err(|e| StatsError::Merge(format!("{e:?}")))?;
        Ok(out)
    }

    /// Percentile summary in microseconds.
    pub fn summary(&self) -> LatencySummary {
        let q = |p: f64| {
            if self.hist.is_empty() {
                0.0
            } else {
                self.hist.value_at_quantile(p) as f64 / 1000.0
            }
        };
        LatencySummary {
            count: self.hist.len(),
            mean_us: if self.hist.is_empty() {
                0.0
            } else {
                self.hist.mean() / 1000.0
            },
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if self.hist.is_empty() {
                0.0
            } else {
                self.hist.max() as f64 / 1000.0
            },
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

/// Plain counters a worker keeps; all cumulative since the measurement start
/// except the connection ones, which cover the whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Connections attempted (TCP connect started).
    pub attempted: u64,
    /// Connections that finished the upgrade and any auth/subscribe step.
    pub established: u64,
    /// Connections that failed before becoming established.
    pub failed: u64,
    /// Established connections the server closed (or that broke) afterwards.
    pub dropped: u64,
    /// Publisher messages or lines sent during the measurement.
    pub sent: u64,
    /// Deliveries the publishers' messages should produce (0 = unknown).
    pub expected: u64,
    /// Timestamped items (messages or log lines) received during the measurement.
    pub delivered: u64,
    /// Data frames received during the measurement.
    pub frames: u64,
    /// Payload bytes of those frames.
    pub bytes: u64,
    /// Sequence numbers skipped (items the server never delivered to a subscriber).
    pub gaps: u64,
    /// Items that arrived with a lower sequence than one already seen.
    pub reordered: u64,
    /// Lines the server said it dropped for slow consumers (`log_dropped`).
    pub server_dropped: u64,
    /// Sends skipped because the publisher's own socket was backed up.
    pub send_skipped: u64,
    /// Received items whose timestamp was in the future (clock trouble).
    pub negative_latency: u64,
    /// Storm: connections closed cleanly by us after being established.
    pub closed: u64,
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.attempted += o.attempted;
        self.established += o.established;
        self.failed += o.failed;
        self.dropped += o.dropped;
        self.sent += o.sent;
        self.expected += o.expected;
        self.delivered += o.delivered;
        self.frames += o.frames;
        self.bytes += o.bytes;
        self.gaps += o.gaps;
        self.reordered += o.reordered;
        self.server_dropped += o.server_dropped;
        self.send_skipped += o.send_skipped;
        self.negative_latency += o.negative_latency;
        self.closed += o.closed;
    }
}

/// Error counts by kind (e.g. "connect: Connection refused", "status 503").
pub type ErrorCounts = BTreeMap<String, u64>;

pub fn add_errors(into: &mut ErrorCounts, from: &ErrorCounts) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

/// What one worker hands back at the end (one JSON line on its stdout).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerResult {
    pub worker: usize,
    pub counters: Counters,
    pub errors: ErrorCounts,
    /// Delivery latency, base64 HdrHistogram V2.
    pub latency: String,
    /// Connection setup time (connect start → established), base64 V2.
    pub setup: String,
    /// Wall time from the first connect to the last connection established, ms.
    pub setup_wall_ms: u64,
    /// Measured window length actually run, ms.
    pub measured_ms: u64,
    /// This process's own CPU time during the measurement, ms (shows whether
    /// the load generator itself was near saturation).
    pub self_cpu_ms: u64,
}

/// Merged results of every worker.
#[derive(Debug, Clone, Default)]
pub struct Merged {
    pub workers: usize,
    pub counters: Counters,
    pub errors: ErrorCounts,
    pub latency: Latency,
    pub setup: Latency,
    pub measured_ms: u64,
    pub self_cpu_ms: u64,
}

/// Merges worker results: counters add, histograms add bucket by bucket,
/// the window is the longest any worker ran.
///
/// # Errors
/// A result with a corrupt histogram.
pub fn merge_results(results: &[WorkerResult]) -> Result<Merged, StatsError> {
    let mut m = Merged::default();
    for r in results {
        m.workers += 1;
        m.counters.add(&r.counters);
        add_errors(&mut m.errors, &r.errors);
        if !r.latency.is_empty() {
            m.latency.merge(&Latency::decode(&r.latency)?)?;
        }
        if !r.setup.is_empty() {
            m.setup.merge(&Latency::decode(&r.setup)?)?;
        }
        m.measured_ms = m.measured_ms.max(r.measured_ms);
        m.self_cpu_ms += r.self_cpu_ms;
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{WorkerEvent, parse_event};

    fn result_with(worker: usize, values_us: impl IntoIterator<Item = u64>) -> WorkerResult {
        let mut h = Latency::new();
        let mut n = 0;
        for v in values_us {
            h.record(v * 1000);
            n += 1;
        }
        WorkerResult {
            worker,
            counters: Counters {
                delivered: n,
                established: 10,
                ..Default::default()
            },
            errors: [("connect: refused".to_string(), worker as u64 + 1)]
                .into_iter()
                .collect(),
            latency: h.encode(),
            setup: String::new(),
            setup_wall_ms: 5,
            measured_ms: 1000 + worker as u64,
            self_cpu_ms: 100,
        }
    }

    #[test]
    fn merged_percentiles_come_from_all_workers() {
        // Worker 0 saw 1..=900 µs, worker 1 saw 901..=1000 µs: only the merge
        // has the right p50/p99, neither worker alone does.
        let a = result_with(0, 1..=900);
        let b = result_with(1, 901..=1000);
        // Round-trip through the JSON lines the workers print.
        let lines: Vec<String> = [a, b]
            .into_iter()
            .map(|r| serde_json::to_string(&WorkerEvent::Result(Box::new(r))).unwrap())
            .collect();
        let parsed: Vec<WorkerResult> = lines
            .iter()
            .map(|l| match parse_event(l).unwrap() {
                WorkerEvent::Result(r) => *r,
                other => panic!("not a result: {other:?}"),
            })
            .collect();
        let m = merge_results(&parsed).unwrap();
        let s = m.latency.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_us - 500.0).abs() <= 1.0, "p50 {}", s.p50_us);
        assert!((s.p99_us - 990.0).abs() <= 1.0, "p99 {}", s.p99_us);
        assert!((s.max_us - 1000.0).abs() <= 1.0, "max {}", s.max_us);
        assert_eq!(m.counters.delivered, 1000);
        assert_eq!(m.counters.established, 20);
        assert_eq!(m.errors["connect: refused"], 3);
        assert_eq!(m.measured_ms, 1001);
        assert_eq!(m.self_cpu_ms, 200);
        assert_eq!(m.workers, 2);
    }

    #[test]
    fn histogram_encoding_roundtrip_and_saturation() {
        let mut h = Latency::new();
        h.record(0); // counted as 1 ns
        h.record(250_000);
        h.record(HIST_MAX_NS * 10); // saturates
        let back = Latency::decode(&h.encode()).unwrap();
        assert_eq!(back.count(), 3);
        let s = back.summary();
        assert!(s.max_us >= HIST_MAX_NS as f64 / 1000.0 * 0.99);
        assert!(Latency::decode("not base64!").is_err());
        assert!(Latency::decode("AAAA").is_err());
    }

    #[test]
    fn empty_summary_is_zero() {
        let s = Latency::new().summary();
        assert_eq!(s, LatencySummary::default());
    }

    #[test]
    fn bad_result_lines_are_errors() {
        assert!(parse_event("{").is_err());
        assert!(parse_event(r#"{"event":"result","worker":"x"}"#).is_err());
        assert!(parse_event(r#"{"event":"nonsense"}"#).is_err());
        let WorkerEvent::Result(ok) = parse_event(r#"{"event":"result","worker":3,"counters":{"attempted":0,"established":0,"failed":0,"dropped":0,"sent":5,"expected":0,"delivered":0,"frames":0,"bytes":0,"gaps":0,"reordered":0,"server_dropped":0,"send_skipped":0,"negative_latency":0,"closed":0},"errors":{},"latency":"","setup":"","setup_wall_ms":0,"measured_ms":0,"self_cpu_ms":0}"#).unwrap() else {
            panic!("not a result")
        };
        assert_eq!(ok.worker, 3);
        assert_eq!(ok.counters.sent, 5);
    }
}
