//! Metrics history per server (SPEC section 7): every sample of the last
//! hour, and one-minute averages for 24 hours, for
//! `GET /api/v1/servers/{id}/metrics?range=1h|6h|24h`.
//!
//! Memory bound, per server (64-bit):
//! - a kept [`Sample`] is 96 bytes plus 24 bytes per mount and per
//!   interface; mounts and interfaces are capped at [`MAX_ENTRIES`] (16)
//!   each per sample, and their names are interned in a per-server table of
//!   at most [`MAX_NAMES`] (64) names of at most [`MAX_NAME_LEN`] bytes;
//! - the full ring keeps at most one sample per second (a faster sender,
//!   agents being outsiders, has its extra samples dropped) and at most one
//!   hour: [`MAX_FULL`] = 3,600 samples; at the default 5 s interval it
//!   holds 720;
//! - the minute ring holds at most [`MAX_MINUTES`] = 1,440 averages (plus
//!   one accumulator for the minute in progress).
//!
//! So at 5 s with 3 mounts and 3 interfaces: (720 + 1,440) x (96 + 6 x 24)
//! = 2,160 x 240 B ~ 506 KiB per server; the worst case (1 s samples, 16
//! mounts and 16 interfaces each) is 5,040 x 864 B ~ 4.2 MiB per server
//! (docs/architecture.md, "Metrics history").
//!
//! Invariants: peer numbers are taken as they parse (non-finite floats and
//! missing fields become 0) and summed with saturating arithmetic; time is
//! given (`now_unix`), never read here; rings are in time order.

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::Value;

use crate::feed::metrics::rfc3339_secs;
use crate::protocol::model::{DiskUsage, Metrics, NetworkUsage};

/// Mounts or interfaces kept per sample.
pub const MAX_ENTRIES: usize = 16;
/// Distinct mount and interface names kept per server.
pub const MAX_NAMES: usize = 64;
/// Longest mount or interface name kept, in bytes (longer ones are skipped).
pub const MAX_NAME_LEN: usize = 256;
/// Full samples kept: one hour at one per second.
pub const MAX_FULL: usize = 3600;
/// Minute averages kept: 24 hours.
pub const MAX_MINUTES: usize = 1440;
const HOUR: u64 = 3600;

/// A history request's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryRange {
    /// Every sample of the last hour.
    Hour,
    /// One-minute averages of the last 6 hours.
    SixHours,
    /// One-minute averages of the last 24 hours.
    Day,
}

impl HistoryRange {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "1h" => Some(Self::Hour),
            "6h" => Some(Self::SixHours),
            "24h" => Some(Self::Day),
            _ => None,
        }
    }

    fn seconds(self) -> u64 {
        match self {
            Self::Hour => HOUR,
            Self::SixHours => 6 * HOUR,
            Self::Day => 24 * HOUR,
        }
    }
}

/// One mount's or interface's two numbers, its name an index into the
/// server's name table.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Entry {
    name: u16,
    a: u64,
    b: u64,
}

/// One sample (or one minute's average), numbers only.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    /// Unix seconds: when the hub got it (a minute average: the minute's start).
    at: u64,
    cpu: f64,
    mem_pct: f64,
    mem_used: u64,
    mem_total: u64,
    load: [f64; 3],
    disks: Box<[Entry]>,
    nets: Box<[Entry]>,
}

/// Sums for the minute in progress.
#[derive(Debug, Default)]
struct Acc {
    minute: u64,
    n: u64,
    cpu: f64,
    mem_pct: f64,
    mem_used: u128,
    mem_total: u128,
    load: [f64; 3],
    /// (name, sum a, sum b, count): at most `MAX_NAMES` each.
    disks: Vec<(u16, u128, u128, u64)>,
    nets: Vec<(u16, u128, u128, u64)>,
}

fn add_entries(into: &mut Vec<(u16, u128, u128, u64)>, from: &[Entry]) {
    for e in from {
        if let Some(x) = into.iter_mut().find(|x| x.0 == e.name) {
            x.1 = x.1.saturating_add(u128::from(e.a));
            x.2 = x.2.saturating_add(u128::from(e.b));
            x.3 = x.3.saturating_add(1);
        } else if into.len() < MAX_NAMES {
            into.push((e.name, u128::from(e.a), u128::from(e.b), 1));
        }
    }
}

fn avg_u64(sum: u128, n: u64) -> u64 {
    u64::try_from(sum / u128::from(n.max(1))).unwrap_or(u64::MAX)
}

fn avg_entries(sums: &[(u16, u128, u128, u64)]) -> Box<[Entry]> {
    sums.iter()
        .take(MAX_ENTRIES)
        .map(|&(name, a, b, n)| Entry {
            name,
            a: avg_u64(a, n),
            b: avg_u64(b, n),
        })
        .collect()
}

impl Acc {
    fn start(minute: u64) -> Self {
        Acc {
            minute,
            ..Acc::default()
        }
    }

    fn add(&mut self, s: &Sample) {
        self.n = self.n.saturating_add(1);
        self.cpu += s.cpu;
        self.mem_pct += s.mem_pct;
        self.mem_used = self.mem_used.saturating_add(u128::from(s.mem_used));
        self.mem_total = self.mem_total.saturating_add(u128::from(s.mem_total));
        for (sum, v) in self.load.iter_mut().zip(s.load) {
            *sum += v;
        }
        add_entries(&mut self.disks, &s.disks);
        add_entries(&mut self.nets, &s.nets);
    }

    fn average(&self) -> Sample {
        let n = self.n.max(1) as f64;
        Sample {
            at: self.minute * 60,
            cpu: self.cpu / n,
            mem_pct: self.mem_pct / n,
            mem_used: avg_u64(self.mem_used, self.n),
            mem_total: avg_u64(self.mem_total, self.n),
            load: self.load.map(|v| v / n),
            disks: avg_entries(&self.disks),
            nets: avg_entries(&self.nets),
        }
    }
}

/// One server's history.
#[derive(Debug, Default)]
pub struct History {
    names: Vec<Arc<str>>,
    full: VecDeque<Sample>,
    minutes: VecDeque<Sample>,
    acc: Option<Acc>,
}

/// A finite float from JSON (anything else is 0).
fn num(v: Option<&Value>) -> f64 {
    v.and_then(Value::as_f64)
        .filter(|f| f.is_finite())
        .unwrap_or(0.0)
}

/// A non-negative integer from JSON (floats truncated, saturating; else 0).
fn count(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::Number(n)) => n.as_u64().unwrap_or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f > 0.0)
                // `as` saturates at u64::MAX for large floats.
                .map_or(0, |f| f as u64)
        }),
        _ => 0,
    }
}

impl History {
    /// Interns a name; `None` when the table is full or the name too long.
    fn intern(&mut self, name: &str) -> Option<u16> {
        if let Some(i) = self.names.iter().position(|n| &**n == name) {
            return u16::try_from(i).ok();
        }
        if self.names.len() >= MAX_NAMES || name.len() > MAX_NAME_LEN {
            return None;
        }
        self.names.push(Arc::from(name));
        u16::try_from(self.names.len() - 1).ok()
    }

    fn entries(&mut self, list: Option<&Value>, name_key: &str, a: &str, b: &str) -> Box<[Entry]> {
        let Some(items) = list.and_then(Value::as_array) else {
            return Box::default();
        };
        let mut out = Vec::with_capacity(items.len().min(MAX_ENTRIES));
        for item in items {
            if out.len() >= MAX_ENTRIES {
                break;
            }
            let Some(name) = item.get(name_key).and_then(Value::as_str) else {
                continue;
            };
            let Some(idx) = self.intern(name) else {
                continue;
            };
            if out.iter().any(|e: &Entry| e.name == idx) {
                continue;
            }
            out.push(Entry {
                name: idx,
                a: count(item.get(a)),
                b: count(item.get(b)),
            });
        }
        out.into_boxed_slice()
    }

    /// Records a sample (the metrics `data` object as JSON) received at
    /// `now_unix`. At most one sample per second is kept.
    pub fn record(&mut self, data: &Value, now_unix: u64) {
        if self.full.back().is_some_and(|s| s.at >= now_unix) {
            return;
        }
        let load = data.get("load_average").and_then(Value::as_array);
        let load_at = |i: usize| num(load.and_then(|l| l.get(i)));
        let sample = Sample {
            at: now_unix,
            cpu: num(data.get("cpu_percent")),
            mem_pct: num(data.get("memory_percent")),
            mem_used: count(data.get("memory_used")),
            mem_total: count(data.get("memory_total")),
            load: [load_at(0), load_at(1), load_at(2)],
            disks: self.entries(data.get("disk_usage"), "mount", "used", "total"),
            nets: self.entries(data.get("network"), "interface", "rx_bytes", "tx_bytes"),
        };
        let minute = now_unix / 60;
        match &mut self.acc {
            Some(acc) if acc.minute == minute => acc.add(&sample),
            _ => {
                if let Some(done) = self.acc.take() {
                    self.minutes.push_back(done.average());
                }
                let mut acc = Acc::start(minute);
                acc.add(&sample);
                self.acc = Some(acc);
            }
        }
        self.full.push_back(sample);
        self.prune(now_unix);
    }

    fn prune(&mut self, now_unix: u64) {
        let hour_ago = now_unix.saturating_sub(HOUR);
        while self.full.len() > MAX_FULL || self.full.front().is_some_and(|s| s.at <= hour_ago) {
            self.full.pop_front();
        }
        let day_ago = now_unix.saturating_sub(24 * HOUR);
        while self.minutes.len() > MAX_MINUTES
            || self.minutes.front().is_some_and(|s| s.at <= day_ago)
        {
            self.minutes.pop_front();
        }
    }

    /// The samples of `range` before `now_unix`, oldest first: every sample
    /// for an hour, one-minute averages (the minute in progress included)
    /// beyond.
    pub fn samples(&self, range: HistoryRange, now_unix: u64) -> Vec<Metrics> {
        let since = now_unix.saturating_sub(range.seconds());
        let pick = |s: &&Sample| s.at > since && s.at <= now_unix;
        match range {
            HistoryRange::Hour => self
                .full
                .iter()
                .filter(pick)
                .map(|s| self.view(s))
                .collect(),
            HistoryRange::SixHours | HistoryRange::Day => {
                let current = self.acc.as_ref().map(Acc::average);
                let since_minute = since - since % 60;
                self.minutes
                    .iter()
                    .chain(current.as_ref())
                    .filter(|s| s.at >= since_minute && s.at <= now_unix)
                    .map(|s| self.view(s))
                    .collect()
            }
        }
    }

    /// The gap between the last two samples, in seconds (an agent's
    /// interval as seen here); `None` before two samples.
    pub fn step_s(&self) -> Option<u64> {
        let mut last = self.full.iter().rev();
        let (b, a) = (last.next()?, last.next()?);
        Some(b.at.saturating_sub(a.at).max(1))
    }

    /// Samples held (full, minutes), for tests and docs.
    pub fn len(&self) -> (usize, usize) {
        (self.full.len(), self.minutes.len())
    }

    pub fn is_empty(&self) -> bool {
        self.full.is_empty() && self.minutes.is_empty() && self.acc.is_none()
    }

    fn name(&self, i: u16) -> String {
        self.names
            .get(usize::from(i))
            .map_or_else(String::new, |n| n.to_string())
    }

    fn view(&self, s: &Sample) -> Metrics {
        Metrics {
            cpu_percent: s.cpu,
            memory_percent: s.mem_pct,
            memory_used: s.mem_used,
            memory_total: s.mem_total,
            disk_usage: s
                .disks
                .iter()
                .map(|e| DiskUsage {
                    mount: self.name(e.name),
                    used: e.a,
                    total: e.b,
                })
                .collect(),
            network: s
                .nets
                .iter()
                .map(|e| NetworkUsage {
                    interface: self.name(e.name),
                    rx_bytes: e.a,
                    tx_bytes: e.b,
                })
                .collect(),
            load_average: s.load,
            timestamp: rfc3339_secs(s.at),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sample(cpu: f64, disk_used: u64) -> Value {
        json!({
            "cpu_percent": cpu, "memory_percent": 50.0,
            "memory_used": 100, "memory_total": 200,
            "disk_usage": [{"mount": "/", "used": disk_used, "total": 1000}],
            "network": [{"interface": "eth0", "rx_bytes": 10, "tx_bytes": 20}],
            "load_average": [1.0, 2.0, 3.0],
            "timestamp": "ignored",
        })
    }

    /// A minute boundary (1,800,000,000 is a multiple of 60).
    const T0: u64 = 1_800_000_000;

    #[test]
    fn last_hour_keeps_every_sample_in_order() {
        let mut h = History::default();
        for i in 0..10 {
            h.record(&sample(i as f64, 1), T0 + i * 5);
        }
        let s = h.samples(HistoryRange::Hour, T0 + 50);
        assert_eq!(s.len(), 10);
        assert_eq!(s[0].cpu_percent, 0.0);
        assert_eq!(s[9].cpu_percent, 9.0);
        assert_eq!(s[0].disk_usage[0].mount, "/");
        assert_eq!(s[0].network[0].interface, "eth0");
        assert_eq!(s[0].load_average, [1.0, 2.0, 3.0]);
        assert_eq!(s[1].timestamp, rfc3339_secs(T0 + 5));
        assert!(s[0].timestamp.ends_with('Z'), "{}", s[0].timestamp);
    }

    #[test]
    fn minutes_are_averaged_and_the_current_minute_included() {
        let mut h = History::default();
        // Minute 0: cpu 10 and 30; minute 1: cpu 50 (in progress).
        h.record(&sample(10.0, 100), T0);
        h.record(&sample(30.0, 300), T0 + 30);
        h.record(&sample(50.0, 500), T0 + 60);
        let s = h.samples(HistoryRange::SixHours, T0 + 61);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s[0].cpu_percent, 20.0);
        assert_eq!(s[0].disk_usage[0].used, 200);
        assert_eq!(s[0].timestamp, rfc3339_secs(T0));
        assert_eq!(s[1].cpu_percent, 50.0);
        assert_eq!(s[1].timestamp, rfc3339_secs(T0 + 60));
    }

    #[test]
    fn old_samples_leave_and_rings_stay_bounded() {
        let mut h = History::default();
        // 25 hours at one sample a second, and twice per second (the extra dropped).
        let end = 25 * HOUR;
        let mut t = 0;
        while t < end {
            h.record(&sample(1.0, 1), T0 + t);
            h.record(&sample(99.0, 1), T0 + t);
            t += 1;
        }
        let (full, minutes) = h.len();
        assert!(full <= MAX_FULL, "{full}");
        assert!(minutes <= MAX_MINUTES, "{minutes}");
        let now = T0 + end - 1;
        let hour = h.samples(HistoryRange::Hour, now);
        assert_eq!(hour.len(), 3600);
        assert!(hour.iter().all(|m| m.cpu_percent == 1.0));
        let day = h.samples(HistoryRange::Day, now);
        assert!(
            day.len() <= MAX_MINUTES + 1 && day.len() >= MAX_MINUTES - 1,
            "{}",
            day.len()
        );
        let six = h.samples(HistoryRange::SixHours, now);
        assert!((359..=361).contains(&six.len()), "{}", six.len());
    }

    #[test]
    fn hostile_samples_are_bounded_and_do_not_panic() {
        let mut h = History::default();
        let mounts: Vec<Value> = (0..1000)
            .map(|i| json!({"mount": format!("/m{i}"), "used": u64::MAX, "total": -5}))
            .collect();
        let bad = json!({
            "cpu_percent": "x", "memory_used": 1e300, "memory_total": -1,
            "disk_usage": mounts, "network": "nope", "load_average": [null, "x"],
        });
        for i in 0..100 {
            h.record(&bad, T0 + i);
        }
        h.record(&json!(null), T0 + 200);
        let s = h.samples(HistoryRange::Hour, T0 + 200);
        assert_eq!(s[0].disk_usage.len(), MAX_ENTRIES);
        assert_eq!(s[0].disk_usage[0].used, u64::MAX);
        assert_eq!(s[0].disk_usage[0].total, 0);
        assert_eq!(s[0].memory_used, u64::MAX);
        assert!(h.names.len() <= MAX_NAMES);
        let day = h.samples(HistoryRange::Day, T0 + 200);
        assert_eq!(day[0].disk_usage[0].used, u64::MAX, "saturating average");
    }
}
