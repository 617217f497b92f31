//! Logins off the event loop: a worker thread checks passwords (argon2 takes
//! tens of milliseconds) and a failure limiter says who must wait.
//!
//! The loop sends a [`LoginJob`] through a bounded channel (full: the loop
//! answers 503 at once) and the worker sends a [`LoginDone`] back, then
//! wakes the loop through the shared `mio::Waker`, like the feeds do. A job
//! carries the connection's key and serial, so an answer for a connection
//! that closed meanwhile (or whose key was reused) is recognised and dropped.
//!
//! Invariants: the limiter's tables hold at most [`MAX_TRACKED`] entries
//! each (oldest evicted); more than [`MAX_FAILURES`] failures within
//! [`FAILURE_WINDOW`] for one user name or one client address refuse further
//! attempts (429) until the oldest failure leaves the window.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::Role;
use super::users::{User, Verifier};

/// Failures allowed per user name or client address within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: usize = 5;
/// The failure window.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Entries per limiter table (user names, addresses).
pub const MAX_TRACKED: usize = 10_000;
/// Logins waiting for the worker; past it new ones get 503.
pub const QUEUE_LEN: usize = 32;

/// One password to check.
#[derive(Debug)]
pub struct LoginJob {
    pub conn: usize,
    pub serial: u64,
    pub username: String,
    pub password: String,
    pub peer: IpAddr,
}

/// The worker's answer.
#[derive(Debug)]
pub struct LoginDone {
    pub conn: usize,
    pub serial: u64,
    pub username: String,
    pub peer: IpAddr,
    /// The user's role, or `None` for an unknown user or a wrong password.
    pub role: Option<Role>,
}

/// The loop's handle on the worker thread.
pub struct LoginWorker {
    jobs: Sender<LoginJob>,
    done: Receiver<LoginDone>,
    /// New `[[users]]` after a reload (the worker builds their verifier).
    users: Sender<Vec<User>>,
}

impl LoginWorker {
    /// Starts the worker thread for `users`; `wake` is called after each answer.
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn spawn(
        users: Vec<User>,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<LoginWorker> {
        let (jobs, job_rx) = crossbeam_channel::bounded::<LoginJob>(QUEUE_LEN);
        // At most QUEUE_LEN + 1 answers can be outstanding: each needs a job.
        let (done_tx, done) = crossbeam_channel::unbounded();
        // One message per reload; each replaces the last, so it stays small.
        let (users_tx, users_rx) = crossbeam_channel::unbounded::<Vec<User>>();
        std::thread::Builder::new()
            .name("dockwire-login".into())
            .spawn(move || {
                let mut verifier = Verifier::new(&users);
                for job in job_rx {
                    // A reload sent before this job was queued is seen here.
                    if let Some(users) = users_rx.try_iter().last() {
                        verifier = Verifier::new(&users);
                    }
                    let role = verifier.check(&job.username, job.password.as_bytes());
                    let answer = LoginDone {
                        conn: job.conn,
                        serial: job.serial,
                        username: job.username,
                        peer: job.peer,
                        role,
                    };
                    if done_tx.send(answer).is_err() {
                        return;
                    }
                    wake();
                }
            })?;
        Ok(LoginWorker {
            jobs,
            done,
            users: users_tx,
        })
    }

    /// Checks logins against `users` from the next job on (a reload).
    pub fn set_users(&self, users: Vec<User>) {
        let _ = self.users.send(users);
    }

    /// Queues a job; gives it back when the queue is full (answer 503).
    ///
    /// # Errors
    /// The job, when the queue is full or the worker is gone.
    pub fn submit(&self, job: LoginJob) -> Result<(), LoginJob> {
        self.jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(j) | TrySendError::Disconnected(j) => j,
        })
    }

    /// An answer, if one is ready.
    pub fn try_done(&self) -> Option<LoginDone> {
        self.done.try_recv().ok()
    }
}

/// Recent failures of one key: a fixed ring of instants.
#[derive(Debug, Clone)]
struct Failures {
    at: [Option<Instant>; MAX_FAILURES],
    next: usize,
    last: Instant,
}

impl Failures {
    fn new(now: Instant) -> Self {
        Failures {
            at: [None; MAX_FAILURES],
            next: 0,
            last: now,
        }
    }

    /// Failures inside the window, and how long until the oldest of them leaves it.
    fn recent(&self, now: Instant) -> (usize, Duration) {
        let mut n = 0;
        // The oldest failure leaves first: the smallest time left wins.
        let mut wait = FAILURE_WINDOW;
        for t in self.at.iter().flatten() {
            let age = now.saturating_duration_since(*t);
            if age < FAILURE_WINDOW {
                n += 1;
                wait = wait.min(FAILURE_WINDOW - age);
            }
        }
        (n, wait)
    }

    fn record(&mut self, now: Instant) {
        self.at[self.next] = Some(now);
        self.next = (self.next + 1) % MAX_FAILURES;
        self.last = now;
    }
}

/// A bounded table of failures per key.
#[derive(Debug)]
struct Table<K> {
    map: HashMap<K, Failures>,
    cap: usize,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(cap: usize) -> Self {
        Table {
            map: HashMap::new(),
            cap,
        }
    }

    /// Refused when recent failures plus attempts still being checked
    /// reach [`MAX_FAILURES`]: how long to wait (at least a second).
    fn blocked_for(&self, key: &K, pending: u32, now: Instant) -> Option<Duration> {
        let (n, wait) = self
            .map
            .get(key)
            .map_or((0, FAILURE_WINDOW), |f| f.recent(now));
        if n >= MAX_FAILURES {
            return Some(wait.max(Duration::from_secs(1)));
        }
        // Attempts in flight count as failures until answered, so a burst
        // of parallel guesses cannot all pass before the first is counted.
        (n.saturating_add(pending as usize) >= MAX_FAILURES).then_some(Duration::from_secs(1))
    }

    fn record(&mut self, key: &K, now: Instant) {
        if let Some(f) = self.map.get_mut(key) {
            f.record(now);
            return;
        }
        if self.map.len() >= self.cap {
            // Forget what left the window; when still full, the entry whose
            // last failure is oldest. O(n), but only on a failed login past
            // the cap, and logins are paced by argon2 on one worker.
            self.map
                .retain(|_, f| now.saturating_duration_since(f.last) < FAILURE_WINDOW);
            if self.map.len() >= self.cap
                && let Some(oldest) = self
                    .map
                    .iter()
                    .min_by_key(|(_, f)| f.last)
                    .map(|(k, _)| k.clone())
            {
                self.map.remove(&oldest);
            }
        }
        let mut f = Failures::new(now);
        f.record(now);
        self.map.insert(key.clone(), f);
    }

    fn forget(&mut self, key: &K) {
        self.map.remove(key);
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// Failed logins per user name and per client address, and the attempts
/// still on the worker (at most [`QUEUE_LEN`] + 1 at a time, so those maps
/// stay small).
#[derive(Debug)]
pub struct LoginLimiter {
    users: Table<String>,
    addrs: Table<IpAddr>,
    pending_users: HashMap<String, u32>,
    pending_addrs: HashMap<IpAddr, u32>,
}

fn inc<K: Hash + Eq>(map: &mut HashMap<K, u32>, key: K) {
    let n = map.entry(key).or_default();
    *n = n.saturating_add(1);
}

fn dec<K: Hash + Eq>(map: &mut HashMap<K, u32>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Default for LoginLimiter {
    fn default() -> Self {
        Self::with_capacity(MAX_TRACKED)
    }
}

impl LoginLimiter {
    /// A limiter whose tables hold at most `cap` entries each.
    pub fn with_capacity(cap: usize) -> Self {
        LoginLimiter {
            users: Table::new(cap.max(1)),
            addrs: Table::new(cap.max(1)),
            pending_users: HashMap::new(),
            pending_addrs: HashMap::new(),
        }
    }

    /// `Some(retry_after)` when `user` or `addr` had [`MAX_FAILURES`]
    /// failures within the window (attempts being checked counted as
    /// failures): refuse the attempt.
    pub fn blocked_for(&self, user: &str, addr: IpAddr, now: Instant) -> Option<Duration> {
        let user = user.to_string();
        let pu = self.pending_users.get(&user).copied().unwrap_or(0);
        let pa = self.pending_addrs.get(&addr).copied().unwrap_or(0);
        let by_user = self.users.blocked_for(&user, pu, now);
        let by_addr = self.addrs.blocked_for(&addr, pa, now);
        match (by_user, by_addr) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// An attempt went to the worker; [`Self::failed`] or
    /// [`Self::succeeded`] ends it.
    pub fn started(&mut self, user: &str, addr: IpAddr) {
        inc(&mut self.pending_users, user.to_string());
        inc(&mut self.pending_addrs, addr);
    }

    fn finished(&mut self, user: &str, addr: IpAddr) {
        dec(&mut self.pending_users, &user.to_string());
        dec(&mut self.pending_addrs, &addr);
    }

    /// Counts one failure for both keys (and ends its attempt).
    pub fn failed(&mut self, user: &str, addr: IpAddr, now: Instant) {
        self.finished(user, addr);
        self.users.record(&user.to_string(), now);
        self.addrs.record(&addr, now);
    }

    /// A successful login ends its attempt and clears the user's failures
    /// (not the address's: one good password must not reopen guessing at
    /// other names).
    pub fn succeeded(&mut self, user: &str, addr: IpAddr) {
        self.finished(user, addr);
        self.users.forget(&user.to_string());
    }

    /// Entries held (users, addresses).
    pub fn tracked(&self) -> (usize, usize) {
        (self.users.len(), self.addrs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn sixth_attempt_within_a_minute_is_refused() {
        let mut l = LoginLimiter::default();
        let t0 = Instant::now();
        for i in 0..5 {
            let now = t0 + Duration::from_secs(i);
            assert_eq!(l.blocked_for("alice", ip(1), now), None, "attempt {i}");
            l.failed("alice", ip(1), now);
        }
        let now = t0 + Duration::from_secs(10);
        let wait = l.blocked_for("alice", ip(1), now).expect("blocked");
        assert_eq!(wait, Duration::from_secs(50));
        // The same user from elsewhere, and another user from the same address.
        assert!(l.blocked_for("alice", ip(2), now).is_some());
        assert!(l.blocked_for("bob", ip(1), now).is_some());
        assert!(l.blocked_for("bob", ip(2), now).is_none());
        // Once the oldest failure leaves the window, one more attempt is allowed.
        assert!(l.blocked_for("alice", ip(1), t0 + FAILURE_WINDOW).is_none());
    }

    #[test]
    fn success_clears_the_user_not_the_address() {
        let mut l = LoginLimiter::default();
        let now = Instant::now();
        for _ in 0..5 {
            l.failed("alice", ip(1), now);
        }
        l.succeeded("alice", ip(1));
        assert!(l.blocked_for("alice", ip(2), now).is_none());
        assert!(l.blocked_for("alice", ip(1), now).is_some());
    }

    #[test]
    fn attempts_in_flight_count_until_answered() {
        let mut l = LoginLimiter::default();
        let now = Instant::now();
        for i in 0..5 {
            assert!(l.blocked_for("alice", ip(1), now).is_none(), "attempt {i}");
            l.started("alice", ip(1));
        }
        assert_eq!(
            l.blocked_for("alice", ip(1), now),
            Some(Duration::from_secs(1))
        );
        assert!(l.blocked_for("bob", ip(2), now).is_none());
        l.succeeded("alice", ip(1));
        assert!(l.blocked_for("alice", ip(1), now).is_none());
        for _ in 0..4 {
            l.failed("alice", ip(1), now);
        }
        assert!(l.pending_users.is_empty() && l.pending_addrs.is_empty());
        assert!(l.blocked_for("alice", ip(1), now).is_none());
    }

    #[test]
    fn tables_are_bounded() {
        let mut l = LoginLimiter::with_capacity(100);
        let t0 = Instant::now();
        for i in 0..1000u32 {
            let now = t0 + Duration::from_millis(u64::from(i));
            l.failed(&format!("user{i}"), IpAddr::from(i.to_be_bytes()), now);
            let (u, a) = l.tracked();
            assert!(u <= 100 && a <= 100, "{u} {a}");
        }
        // The newest are kept, the oldest evicted.
        let now = t0 + Duration::from_secs(1);
        for _ in 0..4 {
            l.failed("user999", ip(9), now);
        }
        assert!(l.blocked_for("user999", ip(8), now).is_some());
    }
}
