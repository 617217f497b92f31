//! Host metrics: a dedicated thread samples sysinfo and feeds the loop.
//!
//! [`MetricsCollector`] owns one sysinfo `System`, `Disks` and `Networks` and
//! refreshes only what a [`Metrics`] sample needs (global CPU, RAM, mounted
//! filesystems' space, interface counters). [`spawn`] runs it on its own OS
//! thread, sending [`FeedEvent::LocalMetrics`] and waking the event loop.
//!
//! Invariants:
//! - `cpu_percent` is the usage since the previous sample; the first sample
//!   waits out sysinfo's `MINIMUM_CPU_UPDATE_INTERVAL` after the priming
//!   refresh done in [`MetricsCollector::new`], so it is never a bogus 0.
//! - Percentages are within `0..=100`, load averages are non-negative, and
//!   NaN never leaves this module.
//! - A sample is bounded: at most [`MAX_DISKS`] filesystems and
//!   [`MAX_INTERFACES`] interfaces, whatever the host looks like (a busy
//!   Docker host has an overlay mount and a veth pair per container; those
//!   are left out, see [`keep_mount`] and [`keep_interface`]).
//! - The thread sleeps between samples and exits the first time a send fails
//!   because the receiver is gone (so within one interval of the drop).
//! - Timestamps are RFC 3339 UTC with exactly three fractional digits, see
//!   [`rfc3339`].

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Sender;
use sysinfo::{DiskRefreshKind, Disks, MemoryRefreshKind, Networks, System};
use time::OffsetDateTime;

use crate::feed::FeedEvent;
use crate::protocol::model::{DiskUsage, Metrics, NetworkUsage};

/// Most filesystems reported in one sample.
pub const MAX_DISKS: usize = 64;
/// Most network interfaces reported in one sample.
pub const MAX_INTERFACES: usize = 64;
/// Shortest interval [`spawn`] accepts; shorter ones are raised to it so a
/// zero interval cannot turn the thread into a busy loop.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// Filesystem types that never hold user data (sysinfo already drops proc,
/// sysfs, tmpfs, cgroup and a few more).
const PSEUDO_FS: &[&str] = &[
    "nsfs",
    "tracefs",
    "debugfs",
    "securityfs",
    "configfs",
    "fusectl",
    "binfmt_misc",
    "bpf",
    "efivarfs",
    "ramfs",
    "autofs",
    "fuse.lxcfs",
    "fuse.gvfsd-fuse",
    "fuse.portal",
];

/// Mount points below these belong to container runtimes: one per container
/// (overlay `merged` dirs, shm, netns), duplicates of the real disk below.
const RUNTIME_MOUNT_PREFIXES: &[&str] = &[
    "/var/lib/docker/",
    "/var/lib/containerd/",
    "/run/containerd/",
    "/run/docker/",
    "/var/lib/kubelet/pods/",
    "/snap/",
];

/// The RFC 3339 UTC form of `t` with millisecond precision, e.g.
/// `2024-01-01T00:00:00.000Z`. Times outside years 0..=9999 give the epoch.
pub fn rfc3339(t: SystemTime) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    let odt = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => time::Duration::try_from(d)
            .ok()
            .and_then(|d| OffsetDateTime::UNIX_EPOCH.checked_add(d)),
        Err(before) => time::Duration::try_from(before.duration())
            .ok()
            .and_then(|d| OffsetDateTime::UNIX_EPOCH.checked_sub(d)),
    };
    odt.and_then(|odt| odt.format(FORMAT).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_owned())
}

/// Unix seconds as RFC 3339 UTC, whole seconds (`2024-01-01T00:00:00Z`);
/// times past year 9999 give the epoch.
pub fn rfc3339_secs(secs: u64) -> String {
    use time::format_description::well_known::Rfc3339;
    i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

/// [`rfc3339`] of the current time.
pub fn rfc3339_now() -> String {
    rfc3339(SystemTime::now())
}

/// Samples host metrics. Not `Sync`; lives on the metrics thread.
pub struct MetricsCollector {
    /// `None` only on platforms sysinfo does not support; samples are then
    /// zeros rather than an error, so the daemon still runs.
    system: Option<System>,
    disks: Option<Disks>,
    networks: Option<Networks>,
    /// When CPU times were last read; the first [`sample`](Self::sample)
    /// waits until `MINIMUM_CPU_UPDATE_INTERVAL` has passed since.
    primed_at: Instant,
    first: bool,
}

impl Default for MetricsCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricsCollector {
    /// Creates the sysinfo handles and does the priming CPU refresh.
    pub fn new() -> Self {
        let system = System::new()
            .map_err(|e| log::warn!("could not read host CPU and memory: {e}"))
            .ok()
            .map(|mut s| {
                s.refresh_cpu_usage();
                s
            });
        let disks = Disks::new()
            .map_err(|e| log::warn!("could not read host disks: {e}"))
            .ok();
        let networks = Networks::new()
            .map_err(|e| log::warn!("could not read host network interfaces: {e}"))
            .ok();
        Self {
            system,
            disks,
            networks,
            primed_at: Instant::now(),
            first: true,
        }
    }

    /// Takes one sample. The first call may sleep up to
    /// `sysinfo::MINIMUM_CPU_UPDATE_INTERVAL` (200 ms on Linux) so its CPU
    /// figure covers a real interval.
    pub fn sample(&mut self) -> Metrics {
        if self.first {
            self.first = false;
            let since = self.primed_at.elapsed();
            if since < sysinfo::MINIMUM_CPU_UPDATE_INTERVAL {
                std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL - since);
            }
        }

        let (cpu_percent, memory_used, memory_total) = match self.system.as_mut() {
            Some(s) => {
                s.refresh_cpu_usage();
                s.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
                let total = s.total_memory();
                (
                    f64::from(s.global_cpu_usage()),
                    s.used_memory().min(total),
                    total,
                )
            }
            None => (0.0, 0, 0),
        };
        let memory_percent = if memory_total > 0 {
            memory_used as f64 * 100.0 / memory_total as f64
        } else {
            0.0
        };

        let disk_usage = match self.disks.as_mut() {
            Some(d) => {
                // List only (`true`: forget what was unmounted); the space of
                // the mounts that survive filtering is read by `fs_space`, so
                // Docker's per-container overlays are never statvfs'd.
                d.refresh_specifics(true, list_refresh());
                select_disks(
                    d.iter().map(|disk| MountInfo {
                        mount: disk.mount_point().to_string_lossy().into_owned(),
                        device: disk.name().to_string_lossy().into_owned(),
                        fs_type: disk.file_system().to_string_lossy().into_owned(),
                        dev_id: disk.id(),
                        reported: (disk.total_space(), disk.available_space()),
                    }),
                    fs_space,
                )
            }
            None => Vec::new(),
        };

        let network = match self.networks.as_mut() {
            Some(n) => {
                n.refresh(true);
                select_interfaces(n.iter().map(|(name, data)| NetworkUsage {
                    interface: name.to_string_lossy().into_owned(),
                    rx_bytes: data.total_received(),
                    tx_bytes: data.total_transmitted(),
                }))
            }
            None => Vec::new(),
        };

        let load_average = match System::load_average() {
            Ok(l) => [sane_load(l.one), sane_load(l.five), sane_load(l.fifteen)],
            Err(_) => [0.0; 3],
        };

        Metrics {
            cpu_percent: percent(cpu_percent),
            memory_percent: percent(memory_percent),
            memory_used,
            memory_total,
            disk_usage,
            network,
            load_average,
            timestamp: rfc3339_now(),
        }
    }
}

/// Clamps to `0..=100` (NaN -> 0) and rounds to two decimals for the wire.
fn percent(x: f64) -> f64 {
    if x.is_nan() {
        return 0.0;
    }
    (x.clamp(0.0, 100.0) * 100.0).round() / 100.0
}

fn sane_load(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 { x } else { 0.0 }
}

/// One mounted filesystem as sysinfo lists it.
#[derive(Debug, Clone)]
struct MountInfo {
    mount: String,
    device: String,
    fs_type: String,
    dev_id: Option<u64>,
    #[cfg_attr(unix, allow(dead_code))]
    /// sysinfo's (total, available); only filled where [`list_refresh`]
    /// asks sysinfo for storage (non-Unix).
    reported: (u64, u64),
}

/// What sysinfo refreshes on each listing: on Unix nothing but the list,
/// since [`fs_space`] reads the space itself.
fn list_refresh() -> DiskRefreshKind {
    if cfg!(unix) {
        DiskRefreshKind::nothing()
    } else {
        DiskRefreshKind::nothing().with_storage()
    }
}

/// `(total, used)` bytes of the filesystem mounted at `m`, as `df` counts
/// them: used = blocks - free blocks. (sysinfo only gives blocks available to
/// unprivileged users, which counts the root reserve as used.)
#[cfg(unix)]
fn fs_space(m: &MountInfo) -> Option<(u64, u64)> {
    use std::ffi::CString;
    use std::mem::MaybeUninit;

    let path = CString::new(m.mount.as_bytes()).ok()?;
    let mut st = MaybeUninit::<libc::statvfs>::uninit();
    loop {
        // SAFETY: `path` is NUL-terminated and outlives the call; `st` is a
        // properly sized out-buffer that statvfs fills when it returns 0.
        let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
        if rc == 0 {
            break;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return None;
        }
    }
    // SAFETY: statvfs returned 0, so `st` is initialized.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    let (frsize, blocks, free) = (st.f_frsize as u64, st.f_blocks as u64, st.f_bfree as u64);
    let total = frsize.saturating_mul(blocks);
    let used = frsize.saturating_mul(blocks.saturating_sub(free));
    Some((total, used))
}

#[cfg(not(unix))]
fn fs_space(m: &MountInfo) -> Option<(u64, u64)> {
    let (total, available) = m.reported;
    Some((total, total.saturating_sub(available)))
}

/// Whether a mount is worth a look: not a pseudo filesystem and not a
/// container runtime's per-container mount.
fn keep_mount(m: &MountInfo) -> bool {
    !PSEUDO_FS.contains(&m.fs_type.as_str())
        && !RUNTIME_MOUNT_PREFIXES
            .iter()
            .any(|p| m.mount.starts_with(p))
}

/// Filters and dedupes mounts, then reads their space with `space`
/// (`(total, used)`):
/// - one entry per mount point (the last one listed is the visible one);
/// - one entry per filesystem (same device and device id, e.g. bind mounts),
///   keeping the shortest mount point, as `df` does;
/// - filesystems whose space cannot be read or whose size is 0 are left out;
/// - sorted by mount point, at most [`MAX_DISKS`].
fn select_disks(
    mounts: impl Iterator<Item = MountInfo>,
    mut space: impl FnMut(&MountInfo) -> Option<(u64, u64)>,
) -> Vec<DiskUsage> {
    let mut by_mount: HashMap<String, MountInfo> = HashMap::new();
    for m in mounts.filter(keep_mount) {
        by_mount.insert(m.mount.clone(), m);
    }
    let mut by_fs: HashMap<(String, Option<u64>), MountInfo> = HashMap::new();
    for m in by_mount.into_values() {
        let key = (m.device.clone(), m.dev_id);
        match by_fs.get(&key) {
            Some(prev)
                if (prev.mount.len(), prev.mount.as_str()) <= (m.mount.len(), m.mount.as_str()) => {
            }
            _ => {
                by_fs.insert(key, m);
            }
        }
    }
    let mut kept: Vec<MountInfo> = by_fs.into_values().collect();
    kept.sort_by(|a, b| a.mount.cmp(&b.mount));
    kept.into_iter()
        .filter_map(|m| {
            let (total, used) = space(&m)?;
            (total > 0).then(|| DiskUsage {
                mount: m.mount,
                used: used.min(total),
                total,
            })
        })
        .take(MAX_DISKS)
        .collect()
}

/// Whether an interface is reported. The host ends of container veth pairs
/// are left out: there is one per container and their traffic already shows
/// on the bridge (`docker0`, `br-*`).
fn keep_interface(name: &str) -> bool {
    !name.starts_with("veth")
}

fn select_interfaces(ifaces: impl Iterator<Item = NetworkUsage>) -> Vec<NetworkUsage> {
    let mut out: Vec<NetworkUsage> = ifaces.filter(|n| keep_interface(&n.interface)).collect();
    out.sort_by(|a, b| a.interface.cmp(&b.interface));
    out.truncate(MAX_INTERFACES);
    out
}

/// Starts the metrics thread: a sample every `interval` (at least
/// [`MIN_INTERVAL`]), each sent as [`FeedEvent::LocalMetrics`] followed by
/// `waker.wake()`. The thread ends when a send finds the receiver gone.
///
/// # Errors
/// The OS refused to create the thread.
pub fn spawn(
    interval: Duration,
    tx: Sender<FeedEvent>,
    waker: Arc<mio::Waker>,
) -> std::io::Result<JoinHandle<()>> {
    let interval = interval.max(MIN_INTERVAL);
    std::thread::Builder::new()
        .name("dockwire-metrics".to_owned())
        .spawn(move || run(interval, &tx, &waker))
}

fn run(interval: Duration, tx: &Sender<FeedEvent>, waker: &mio::Waker) {
    let mut collector = MetricsCollector::new();
    let mut next = Instant::now();
    loop {
        let metrics = collector.sample();
        if tx.send(FeedEvent::LocalMetrics(metrics)).is_err() {
            log::debug!("metrics thread: event loop gone, stopping");
            return;
        }
        if let Err(e) = waker.wake() {
            log::warn!("could not wake the event loop from the metrics thread: {e}");
        }
        // Fixed-rate schedule; if a sample overran (slow statvfs), restart
        // the schedule from now instead of firing a burst to catch up.
        next += interval;
        let now = Instant::now();
        if next <= now {
            next = now + interval;
        }
        std::thread::sleep(next - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::format_description::well_known::Rfc3339;

    #[test]
    fn rfc3339_format() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_704_067_200_123) + Duration::from_nanos(999);
        assert_eq!(rfc3339(t), "2024-01-01T00:00:00.123Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_827_696); // leap day 2000
        assert_eq!(rfc3339(t), "2000-02-29T12:34:56.000Z");
        // Out of range: the epoch, not a panic.
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(400_000_000_000)),
            "1970-01-01T00:00:00.000Z"
        );
        let now = rfc3339_now();
        let parsed = OffsetDateTime::parse(&now, &Rfc3339).unwrap();
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((parsed.unix_timestamp() - secs).abs() <= 2, "{now}");
    }

    fn check_sane(m: &Metrics) {
        assert!(m.memory_total > 0, "{m:?}");
        assert!(m.memory_used <= m.memory_total, "{m:?}");
        assert!((0.0..=100.0).contains(&m.cpu_percent), "{m:?}");
        assert!((0.0..=100.0).contains(&m.memory_percent), "{m:?}");
        let expect = m.memory_used as f64 * 100.0 / m.memory_total as f64;
        assert!((m.memory_percent - expect).abs() < 0.01, "{m:?}");
        assert!(
            m.load_average.iter().all(|l| l.is_finite() && *l >= 0.0),
            "{m:?}"
        );
        OffsetDateTime::parse(&m.timestamp, &Rfc3339).unwrap();
        assert!(m.disk_usage.len() <= MAX_DISKS);
        for d in &m.disk_usage {
            assert!(d.total > 0 && d.used <= d.total, "{d:?}");
            assert!(d.mount.starts_with('/'), "{d:?}");
        }
        let mounts: Vec<&str> = m.disk_usage.iter().map(|d| d.mount.as_str()).collect();
        let mut sorted = mounts.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(mounts, sorted, "sorted and unique");
        assert!(m.network.len() <= MAX_INTERFACES);
        assert!(m.network.iter().all(|n| !n.interface.starts_with("veth")));
    }

    #[test]
    fn sample_is_sane() {
        let started = Instant::now();
        let mut c = MetricsCollector::new();
        let m1 = c.sample();
        // The first sample waited out a meaningful CPU interval after priming.
        assert!(started.elapsed() >= sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        check_sane(&m1);
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        let m2 = c.sample();
        check_sane(&m2);
        // This host's root filesystem and loopback are real and visible.
        if std::path::Path::new("/proc/mounts").exists() {
            assert!(
                m2.disk_usage.iter().any(|d| d.mount == "/"),
                "{:?}",
                m2.disk_usage
            );
            assert!(
                m2.network.iter().any(|n| n.interface == "lo"),
                "{:?}",
                m2.network
            );
        }
        // Counters since boot never go backwards between samples.
        for n2 in &m2.network {
            if let Some(n1) = m1.network.iter().find(|n| n.interface == n2.interface) {
                assert!(n2.rx_bytes >= n1.rx_bytes && n2.tx_bytes >= n1.tx_bytes);
            }
        }
        let json = serde_json::to_value(&m2).unwrap();
        for k in [
            "cpu_percent",
            "memory_percent",
            "memory_used",
            "memory_total",
            "disk_usage",
            "network",
            "load_average",
            "timestamp",
        ] {
            assert!(json.get(k).is_some(), "{k} missing in {json}");
        }
    }

    #[test]
    fn percent_clamps() {
        assert_eq!(percent(f64::NAN), 0.0);
        assert_eq!(percent(-3.0), 0.0);
        assert_eq!(percent(100.4), 100.0);
        assert_eq!(percent(12.3456), 12.35);
        assert_eq!(sane_load(f64::NAN), 0.0);
        assert_eq!(sane_load(-1.0), 0.0);
        assert_eq!(sane_load(0.5), 0.5);
    }

    /// A synthetic mount; its (total, used) is encoded in `reported` and
    /// read back by `fake_space`.
    fn mount(mount: &str, device: &str, fs: &str, dev: u64, total: u64, used: u64) -> MountInfo {
        MountInfo {
            mount: mount.into(),
            device: device.into(),
            fs_type: fs.into(),
            dev_id: Some(dev),
            reported: (total, used),
        }
    }

    fn fake_space(m: &MountInfo) -> Option<(u64, u64)> {
        (m.device != "unreadable").then_some(m.reported)
    }

    #[test]
    fn disks_filtered_and_deduped() {
        let mounts = vec![
            mount("/", "/dev/sda1", "ext4", 1, 1000, 600),
            mount("/home", "/dev/sda2", "xfs", 2, 500, 0),
            // Bind mount of the root filesystem: same device and dev id.
            mount("/srv/data", "/dev/sda1", "ext4", 1, 1000, 600),
            // Docker's per-container overlays and shm.
            mount(
                "/var/lib/docker/overlay2/abc/merged",
                "overlay",
                "overlay",
                50,
                1000,
                600,
            ),
            mount(
                "/var/lib/docker/containers/abc/mounts/shm",
                "shm",
                "tmpfs",
                51,
                64,
                0,
            ),
            mount("/run/docker/netns/1234", "nsfs", "nsfs", 3, 0, 0),
            // Pseudo filesystems, empty ones and unreadable ones.
            mount("/sys/kernel/tracing", "tracefs", "tracefs", 4, 10, 0),
            mount("/mnt/empty", "none", "ext4", 5, 0, 0),
            mount("/mnt/gone", "unreadable", "ext4", 8, 10, 1),
            // Mounted twice on the same point: the later mount is the visible one.
            mount("/mnt/usb", "/dev/sdb1", "vfat", 6, 100, 10),
            mount("/mnt/usb", "/dev/sdc1", "vfat", 7, 200, 150),
        ];
        let mut asked = Vec::new();
        let got = select_disks(mounts.into_iter(), |m| {
            asked.push(m.mount.clone());
            fake_space(m)
        });
        let want = vec![
            DiskUsage {
                mount: "/".into(),
                used: 600,
                total: 1000,
            },
            DiskUsage {
                mount: "/home".into(),
                used: 0,
                total: 500,
            },
            DiskUsage {
                mount: "/mnt/usb".into(),
                used: 150,
                total: 200,
            },
        ];
        assert_eq!(got, want);
        // Runtime mounts and pseudo filesystems are never even statvfs'd.
        assert_eq!(asked, ["/", "/home", "/mnt/empty", "/mnt/gone", "/mnt/usb"]);

        // A container's own root is overlay at "/": kept.
        let in_container = vec![mount("/", "overlay", "overlay", 9, 1000, 900)];
        assert_eq!(select_disks(in_container.into_iter(), fake_space).len(), 1);
    }

    #[test]
    fn disks_bounded() {
        let many = (0..1000).map(|i| {
            mount(
                &format!("/m/{i:04}"),
                &format!("/dev/x{i}"),
                "ext4",
                i,
                10,
                5,
            )
        });
        let got = select_disks(many, fake_space);
        assert_eq!(got.len(), MAX_DISKS);
        assert_eq!(got[0].mount, "/m/0000");
        assert!(got.windows(2).all(|w| w[0].mount < w[1].mount));
    }

    /// `fs_space` agrees with `df`'s notion of used: blocks minus free blocks.
    #[cfg(unix)]
    #[test]
    fn fs_space_of_root() {
        let root = mount("/", "/dev/root", "ext4", 0, 0, 0);
        let (total, used) = fs_space(&root).unwrap();
        assert!(total > 0 && used <= total, "{total} {used}");
        let missing = mount("/definitely/not/a/mount/point", "x", "ext4", 0, 0, 0);
        assert!(fs_space(&missing).is_none());
        // An interior NUL cannot be passed to statvfs.
        let nul = mount("/a\0b", "x", "ext4", 0, 0, 0);
        assert!(fs_space(&nul).is_none());
    }

    #[test]
    fn interfaces_filtered_sorted_bounded() {
        let n = |name: &str| NetworkUsage {
            interface: name.into(),
            rx_bytes: 1,
            tx_bytes: 2,
        };
        let got =
            select_interfaces(vec![n("veth12ab"), n("eth0"), n("docker0"), n("lo")].into_iter());
        let names: Vec<&str> = got.iter().map(|n| n.interface.as_str()).collect();
        assert_eq!(names, ["docker0", "eth0", "lo"]);
        let many = (0..500).map(|i| n(&format!("br-{i:03}")));
        assert_eq!(select_interfaces(many).len(), MAX_INTERFACES);
    }

    #[test]
    fn thread_delivers_through_waker_and_stops() {
        use mio::{Events, Poll, Token};

        const WAKER: Token = Token(7);
        let mut poll = Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER).unwrap());
        let (tx, rx) = crossbeam_channel::unbounded();
        let interval = Duration::from_millis(100);
        let handle = spawn(interval, tx, waker).unwrap();
        assert_eq!(handle.thread().name(), Some("dockwire-metrics"));

        let mut events = Events::with_capacity(8);
        let mut samples = Vec::new();
        let started = Instant::now();
        let deadline = started + Duration::from_secs(10);
        while samples.len() < 3 {
            assert!(
                Instant::now() < deadline,
                "only {} samples in 10 s",
                samples.len()
            );
            poll.poll(&mut events, Some(Duration::from_secs(2)))
                .unwrap();
            let woken = events.iter().any(|e| e.token() == WAKER);
            if !woken {
                continue;
            }
            // Every wake-up is backed by at least one sample in the channel.
            let mut got = 0;
            while let Ok(ev) = rx.try_recv() {
                match ev {
                    FeedEvent::LocalMetrics(m) => {
                        check_sane(&m);
                        samples.push((Instant::now(), m));
                        got += 1;
                    }
                    other => panic!("unexpected event {other:?}"),
                }
            }
            assert!(got > 0, "woken without a sample");
        }
        let elapsed = samples[2].0 - samples[0].0;
        // Three samples at 100 ms: about 200 ms apart, and not a busy loop.
        assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
        assert!(samples[0].1.timestamp <= samples[2].1.timestamp);

        // Dropping the receiver ends the thread at its next send.
        drop(rx);
        let stop_deadline = Instant::now() + Duration::from_secs(5);
        while !handle.is_finished() {
            assert!(Instant::now() < stop_deadline, "thread did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        handle.join().unwrap();
    }
}
