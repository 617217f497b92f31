//! Host metrics: a dedicated sysinfo thread (to be written).
//!
//! Interface (fixed; see docs/architecture.md):
//! - `MetricsCollector::new()` and `MetricsCollector::sample(&mut self) -> Metrics`
//! - `spawn(interval, tx: crossbeam_channel::Sender<FeedEvent>, waker: Arc<mio::Waker>)`
