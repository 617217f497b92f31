//! What the agent keeps while it is not connected to the hub.
//!
//! Owns the offline buffer of the session thread. Invariants, whatever the
//! outage length:
//! - at most one metrics sample (the latest; older ones are stale anyway);
//! - at most `log_cap` log entries: when full, the oldest is dropped and
//!   counted, so the hub gets the most recent lines after a reconnect;
//! - at most `response_cap` command/docker answers (the oldest dropped and
//!   counted; the hub may have given up on them anyway).
//!
//! On reconnect everything is handed back in the order: answers, metrics,
//! logs (answers are the most time-sensitive).

use std::collections::VecDeque;

use super::wire::Outgoing;

/// Bounded offline buffer. See the module docs.
#[derive(Debug)]
pub struct Backlog {
    metrics: Option<Outgoing>,
    logs: VecDeque<Outgoing>,
    responses: VecDeque<Outgoing>,
    log_cap: usize,
    response_cap: usize,
    dropped_logs: u64,
    dropped_responses: u64,
}

/// How many items were dropped since the last [`Backlog::take_dropped`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dropped {
    pub logs: u64,
    pub responses: u64,
}

impl Backlog {
    pub fn new(log_cap: usize, response_cap: usize) -> Self {
        Self {
            metrics: None,
            logs: VecDeque::new(),
            responses: VecDeque::new(),
            log_cap,
            response_cap,
            dropped_logs: 0,
            dropped_responses: 0,
        }
    }

    /// Keeps `item` for later, dropping what the bounds require.
    pub fn push(&mut self, item: Outgoing) {
        match item {
            Outgoing::Raw(_) => {}
            Outgoing::Metrics(_) => self.metrics = Some(item),
            Outgoing::Log(_) => {
                if self.log_cap == 0 {
                    self.dropped_logs += 1;
                    return;
                }
                if self.logs.len() >= self.log_cap {
                    self.logs.pop_front();
                    self.dropped_logs += 1;
                }
                self.logs.push_back(item);
            }
            Outgoing::Command(_) | Outgoing::Docker(_) => {
                if self.response_cap == 0 {
                    self.dropped_responses += 1;
                    return;
                }
                if self.responses.len() >= self.response_cap {
                    self.responses.pop_front();
                    self.dropped_responses += 1;
                }
                self.responses.push_back(item);
            }
        }
    }

    /// Number of items held.
    pub fn len(&self) -> usize {
        self.responses.len() + usize::from(self.metrics.is_some()) + self.logs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes and returns the next item to send (answers, then metrics,
    /// then logs in arrival order).
    pub fn pop(&mut self) -> Option<Outgoing> {
        self.responses
            .pop_front()
            .or_else(|| self.metrics.take())
            .or_else(|| self.logs.pop_front())
    }

    /// Puts back an item that could not be sent, so it goes first next time.
    /// Bounds still hold: a log beyond the cap is dropped and counted.
    pub fn unpop(&mut self, item: Outgoing) {
        match item {
            Outgoing::Raw(_) => {}
            Outgoing::Metrics(_) => {
                // A newer sample already waiting wins.
                if self.metrics.is_none() {
                    self.metrics = Some(item);
                }
            }
            Outgoing::Log(_) => {
                if self.logs.len() >= self.log_cap {
                    self.dropped_logs += 1;
                } else {
                    self.logs.push_front(item);
                }
            }
            Outgoing::Command(_) | Outgoing::Docker(_) => {
                if self.responses.len() >= self.response_cap {
                    self.dropped_responses += 1;
                } else {
                    self.responses.push_front(item);
                }
            }
        }
    }

    /// Returns and clears the drop counters.
    pub fn take_dropped(&mut self) -> Dropped {
        let d = Dropped {
            logs: self.dropped_logs,
            responses: self.dropped_responses,
        };
        self.dropped_logs = 0;
        self.dropped_responses = 0;
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::wire::{CommandResponse, LogEntry};
    use crate::protocol::model::Metrics;

    fn log(n: usize) -> Outgoing {
        Outgoing::Log(LogEntry {
            level: "INFO",
            message: format!("line {n}"),
            timestamp: String::new(),
        })
    }

    fn metrics(cpu: f64) -> Outgoing {
        Outgoing::Metrics(Metrics {
            cpu_percent: cpu,
            memory_percent: 0.0,
            memory_used: 0,
            memory_total: 0,
            disk_usage: vec![],
            network: vec![],
            load_average: [0.0; 3],
            timestamp: String::new(),
        })
    }

    fn response(id: u64) -> Outgoing {
        Outgoing::Command(CommandResponse {
            command_id: id.into(),
            output: String::new(),
            exit_code: 0,
            duration_ms: 0,
        })
    }

    fn message_of(item: &Outgoing) -> String {
        match item {
            Outgoing::Log(e) => e.message.clone(),
            Outgoing::Metrics(m) => format!("cpu {}", m.cpu_percent),
            Outgoing::Command(r) => format!("cmd {}", r.command_id),
            Outgoing::Docker(r) => format!("docker {}", r.command_id),
            Outgoing::Raw(t) => t.clone(),
        }
    }

    #[test]
    fn keeps_latest_metrics_and_newest_logs() {
        let mut b = Backlog::new(3, 2);
        for i in 0..5 {
            b.push(log(i));
        }
        b.push(metrics(1.0));
        b.push(metrics(2.0));
        b.push(response(1));
        b.push(response(2));
        b.push(response(3));
        assert_eq!(b.len(), 3 + 1 + 2);
        assert_eq!(
            b.take_dropped(),
            Dropped {
                logs: 2,
                responses: 1
            }
        );
        assert_eq!(b.take_dropped(), Dropped::default());

        let order: Vec<String> = std::iter::from_fn(|| b.pop())
            .map(|i| message_of(&i))
            .collect();
        assert_eq!(
            order,
            ["cmd 2", "cmd 3", "cpu 2", "line 2", "line 3", "line 4"]
        );
        assert!(b.is_empty());
    }

    #[test]
    fn stays_bounded_under_a_long_outage() {
        let mut b = Backlog::new(1000, 10);
        for i in 0..100_000 {
            b.push(log(i));
            if i % 10 == 0 {
                b.push(metrics(i as f64));
            }
        }
        assert_eq!(b.len(), 1001);
        assert_eq!(b.take_dropped().logs, 99_000);
    }

    #[test]
    fn unpop_goes_first_and_respects_caps() {
        let mut b = Backlog::new(2, 2);
        b.push(log(1));
        let first = b.pop().unwrap();
        b.push(log(2));
        b.unpop(first);
        assert_eq!(message_of(&b.pop().unwrap()), "line 1");
        b.push(log(3));
        b.unpop(log(0)); // full: dropped, counted
        assert_eq!(b.take_dropped().logs, 1);
        assert_eq!(message_of(&b.pop().unwrap()), "line 2");

        b.push(metrics(5.0));
        b.unpop(metrics(4.0)); // a newer sample is waiting: keep it
        assert_eq!(message_of(&b.pop().unwrap()), "cpu 5");
    }

    #[test]
    fn zero_caps_drop_everything_but_count_it() {
        let mut b = Backlog::new(0, 0);
        b.push(log(1));
        b.push(response(1));
        assert!(b.is_empty());
        assert_eq!(
            b.take_dropped(),
            Dropped {
                logs: 1,
                responses: 1
            }
        );
    }
}
