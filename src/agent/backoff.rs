//! Exponential reconnect backoff with jitter.
//!
//! Owns the delay between connection attempts. The nominal delay starts at
//! `base`, doubles after every failed attempt and never exceeds `max`; the
//! delay actually slept is the nominal one scaled by a random factor in
//! `[0.5, 1.0]` ("equal jitter"), so a fleet of agents cut off at the same
//! moment does not reconnect in lockstep, yet each still waits at least half
//! the nominal delay.
//!
//! Invariants: every delay returned is within `[base / 2, max]`; `reset`
//! goes back to `base`; `saturate` jumps straight to `max` (used when the hub
//! refused our key: retrying quickly cannot help).

use std::time::Duration;

/// Reconnect delays for the agent session.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    next_nominal: Duration,
}

impl Backoff {
    /// `base` is clamped to at least 1 ms and `max` to at least `base`.
    pub fn new(base: Duration, max: Duration) -> Self {
        let base = base.max(Duration::from_millis(1));
        let max = max.max(base);
        Self {
            base,
            max,
            next_nominal: base,
        }
    }

    /// The delay to sleep before the next attempt, with random jitter.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(rand::random_range(0.0..=1.0))
    }

    /// Like [`next_delay`](Self::next_delay) with the random draw given:
    /// `unit` in `[0, 1]` picks the point between half and all of the
    /// nominal delay (out-of-range values are clamped).
    pub fn next_delay_with(&mut self, unit: f64) -> Duration {
        let unit = if unit.is_nan() {
            1.0
        } else {
            unit.clamp(0.0, 1.0)
        };
        let nominal = self.next_nominal;
        self.next_nominal = nominal.saturating_mul(2).min(self.max);
        nominal.mul_f64(0.5 + 0.5 * unit)
    }

    /// The nominal delay the next attempt will use (before jitter).
    pub fn nominal(&self) -> Duration {
        self.next_nominal
    }

    /// Back to the base delay, after a connection that proved healthy.
    pub fn reset(&mut self) {
        self.next_nominal = self.base;
    }

    /// Straight to the maximum delay.
    pub fn saturate(&mut self) {
        self.next_nominal = self.max;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S1: Duration = Duration::from_secs(1);
    const S60: Duration = Duration::from_secs(60);

    #[test]
    fn doubles_up_to_the_max() {
        let mut b = Backoff::new(S1, S60);
        let seq: Vec<u64> = (0..9).map(|_| b.next_delay_with(1.0).as_secs()).collect();
        assert_eq!(seq, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn jitter_lower_edge_is_half() {
        let mut b = Backoff::new(S1, S60);
        assert_eq!(b.next_delay_with(0.0), Duration::from_millis(500));
        assert_eq!(b.next_delay_with(0.0), Duration::from_secs(1));
        assert_eq!(b.next_delay_with(0.5), Duration::from_secs(3));
    }

    #[test]
    fn random_delays_stay_in_bounds_and_vary() {
        let mut b = Backoff::new(S1, S60);
        let mut seen = std::collections::HashSet::new();
        for attempt in 0..200 {
            let nominal = b.nominal();
            let d = b.next_delay();
            assert!(
                d >= nominal / 2,
                "attempt {attempt}: {d:?} < half of {nominal:?}"
            );
            assert!(d <= nominal, "attempt {attempt}: {d:?} > {nominal:?}");
            assert!(d <= S60);
            seen.insert(d.as_micros());
        }
        // 200 draws of a continuous jitter are not all equal.
        assert!(
            seen.len() > 100,
            "jitter looks constant: {} values",
            seen.len()
        );
    }

    #[test]
    fn reset_and_saturate() {
        let mut b = Backoff::new(S1, S60);
        for _ in 0..4 {
            b.next_delay_with(1.0);
        }
        assert_eq!(b.nominal(), Duration::from_secs(16));
        b.reset();
        assert_eq!(b.next_delay_with(1.0), S1);
        b.saturate();
        assert_eq!(b.next_delay_with(1.0), S60);
        assert_eq!(b.nominal(), S60);
    }

    #[test]
    fn odd_inputs_are_clamped() {
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(b.next_delay_with(1.0), Duration::from_millis(1));
        let mut b = Backoff::new(S1, S60);
        assert_eq!(b.next_delay_with(f64::NAN), S1);
        assert_eq!(b.next_delay_with(7.0), Duration::from_secs(2));
        assert_eq!(b.next_delay_with(-3.0), Duration::from_secs(2));
    }
}
