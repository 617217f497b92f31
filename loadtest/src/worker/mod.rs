//! A worker process: one mio event loop holding this worker's share of the
//! connections.
//!
//! Owns the phase machine of plan.rs (prepare → connect → run → drain), the
//! pacing of publishers, agents and storm connects, timeouts, and progress.
//! Invariants: every connection has a setup deadline (`connect_timeout`) and
//! every phase a bound (`setup_timeout`, `duration`, `drain`), so a worker
//! always ends; at most `connect_concurrency` connections are in setup at
//! once; nothing is recorded outside the measurement window.

mod conn;
pub mod publish;

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::payload::now_ns;
use crate::plan::{Command, Dialect, Endpoint, Extract, PubSpec, WorkerEvent, WorkerPlan};
use crate::procfs;
use crate::stats::WorkerResult;
use crate::tls::Wire;
use crate::wsproto;
use conn::{Conn, Ctx, Death, Live, Rng, Role, State, io_kind, open_socket};
use publish::FifoWriter;

const WAKER: Token = Token(usize::MAX);
/// Publisher output backlog past which sends are skipped (and counted).
const MAX_PUBLISH_BACKLOG: usize = 8 * 1024 * 1024;
/// How long a storm connection waits for the server's close answer.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// File descriptors kept free for stdio, epoll, the FIFO and the like.
const FD_RESERVE: u64 = 64;

/// Everything the loop can be told from outside the sockets.
enum Input {
    Cmd(Command),
    /// stdin closed: the coordinator is gone.
    Eof,
    FifoOpened(Result<(), String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Prepare,
    AwaitConnect,
    Connect,
    AwaitStart,
    Run,
    Drain { until: Instant },
}

/// Prints one event line for the coordinator.
fn emit(ev: &WorkerEvent) {
    let mut line = serde_json::to_vec(ev).unwrap_or_default();
    line.push(b'\n');
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&line);
    let _ = out.flush();
}

/// Raises the soft open-file limit to the hard one; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur;
            }
        }
        r.rlim_cur
    }
}

/// Entry point of `dockwire-loadtest --worker`.
///
/// # Errors
/// A missing or malformed plan, or a plan this process cannot hold.
pub fn main() -> anyhow::Result<()> {
    let limit = raise_nofile();
    let mut poll = Poll::new().context("could not create poll")?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).context("could not create waker")?);
    let (tx, rx) = mpsc::channel::<Input>();
    {
        let (tx, waker) = (tx.clone(), waker.clone());
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Command>(&line) {
                    Ok(cmd) => {
                        let _ = tx.send(Input::Cmd(cmd));
                    }
                    Err(e) => log::warn!("ignoring bad command line: {e}"),
                }
                let _ = waker.wake();
            }
            let _ = tx.send(Input::Eof);
            let _ = waker.wake();
        });
    }
    let plan = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Input::Cmd(Command::Plan(p))) => *p,
        _ => bail!("worker got no plan on stdin"),
    };
    let local = (plan.subs.1 - plan.subs.0) + plan.agents.len() as u64 + 1;
    if let Some(st) = &plan.storm {
        // Storm sockets live about as long as a setup plus the close wait.
        let live = (st.rate * 3.0) as u64;
        if live.min(plan.connect_concurrency as u64) + FD_RESERVE > limit {
            bail!("storm needs more file descriptors than the limit {limit}");
        }
    }
    if local + FD_RESERVE > limit {
        let msg = format!(
            "worker {} needs {} sockets but its open-file limit is {limit}; use more --procs",
            plan.worker, local
        );
        emit(&WorkerEvent::Fatal {
            message: msg.clone(),
        });
        bail!(msg);
    }
    let tls = match &plan.tls {
        None => None,
        Some(t) => {
            let made = crate::tls::client_config(t.ca_pem.as_deref())
                .and_then(|c| Ok((c, crate::tls::server_name(&t.server_name)?)));
            match made {
                Ok(pair) => Some(pair),
                Err(e) => {
                    let message = format!("worker {}: TLS settings: {e:#}", plan.worker);
                    emit(&WorkerEvent::Fatal {
                        message: message.clone(),
                    });
                    bail!(message);
                }
            }
        }
    };
    let mut w = Worker::new(plan, waker);
    w.tls = tls;
    w.run(&mut poll, &rx, tx)
}

struct Worker {
    plan: WorkerPlan,
    waker: Arc<Waker>,
    /// Client settings and server name when the run speaks TLS.
    tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    conns: Slab<Conn>,
    scratch: Vec<u8>,
    /// `--deflate`: one inflater for every connection of this worker.
    inflate: crate::wsproto::Inflate,
    live: Live,
    rng: Rng,
    phase: Phase,
    phase_started: Instant,
    next_id: u64,
    setup_q: VecDeque<(Instant, usize, u64)>,
    close_q: VecDeque<(Instant, usize, u64)>,
    in_setup: usize,
    hot: Vec<usize>,
    publisher: Option<usize>,
    publisher_failed: Option<String>,
    fifo: Option<FifoWriter>,
    fifo_open: Option<Result<(), String>>,
    pub_sent: u64,
    pub_watchers: u64,
    next_agent: usize,
    agent_conn: Vec<Option<usize>>,
    agent_seq: Vec<u64>,
    agent_watchers: Vec<u64>,
    agent_cursor: usize,
    agent_cycle: u64,
    sids: Vec<String>,
    /// `sid_agents[k]`: run-wide agent index whose server is `sids[k]`.
    sid_agents: Vec<u64>,
    next_sub: u64,
    connects_started: u64,
    storm_started: u64,
    first_connect: Option<Instant>,
    last_established: Option<Instant>,
    t0: Instant,
    cpu0: Duration,
    next_progress: Instant,
}

impl Worker {
    fn new(plan: WorkerPlan, waker: Arc<Waker>) -> Worker {
        let n_agents = plan.agents.len();
        let now = Instant::now();
        Worker {
            rng: Rng::new(now_ns() ^ ((std::process::id() as u64) << 32) ^ plan.worker as u64),
            plan,
            waker,
            tls: None,
            conns: Slab::new(),
            scratch: vec![0; 256 * 1024],
            inflate: crate::wsproto::Inflate::default(),
            live: Live::default(),
            phase: Phase::Prepare,
            phase_started: now,
            next_id: 0,
            setup_q: VecDeque::new(),
            close_q: VecDeque::new(),
            in_setup: 0,
            hot: Vec::new(),
            publisher: None,
            publisher_failed: None,
            fifo: None,
            fifo_open: None,
            pub_sent: 0,
            pub_watchers: 0,
            next_agent: 0,
            agent_conn: vec![None; n_agents],
            agent_seq: vec![0; n_agents],
            agent_watchers: vec![0; n_agents],
            agent_cursor: 0,
            agent_cycle: 0,
            sids: Vec::new(),
            sid_agents: Vec::new(),
            next_sub: 0,
            connects_started: 0,
            storm_started: 0,
            first_connect: None,
            last_established: None,
            t0: now,
            cpu0: Duration::ZERO,
            next_progress: now + Duration::from_secs(1),
        }
    }

    fn run(
        &mut self,
        poll: &mut Poll,
        rx: &Receiver<Input>,
        tx: mpsc::Sender<Input>,
    ) -> anyhow::Result<()> {
        let mut events = Events::with_capacity(1024);
        self.next_sub = self.plan.subs.0;
        self.begin_prepare(poll, tx);
        loop {
            let timeout = if self.hot.is_empty() && !self.plan.busy_poll {
                self.poll_timeout(Instant::now())
            } else {
                Duration::ZERO
            };
            if let Err(e) = poll.poll(&mut events, Some(timeout))
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                return Err(e).context("could not poll");
            }
            let recv_ns = now_ns();
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                let writable = ev.is_writable() || ev.is_error();
                self.io(poll, ev.token().0, readable, writable, recv_ns);
            }
            for key in std::mem::take(&mut self.hot) {
                self.io(poll, key, true, false, recv_ns);
            }
            loop {
                match rx.try_recv() {
                    Ok(Input::Cmd(cmd)) => self.command(poll, cmd),
                    Ok(Input::FifoOpened(r)) => self.fifo_open = Some(r),
                    Ok(Input::Eof) | Err(TryRecvError::Disconnected) => return Ok(()),
                    Err(TryRecvError::Empty) => break,
                }
            }
            let now = Instant::now();
            self.expire(poll, now);
            if self.step(poll, now) {
                return Ok(());
            }
        }
    }

    fn poll_timeout(&self, now: Instant) -> Duration {
        let mut t =
            Duration::from_millis(100).min(self.next_progress.saturating_duration_since(now));
        if let Some(&(d, _, _)) = self.setup_q.front() {
            t = t.min(d.saturating_duration_since(now));
        }
        if let Some(&(d, _, _)) = self.close_q.front() {
            t = t.min(d.saturating_duration_since(now));
        }
        match self.phase {
            Phase::Run => {
                let el = now - self.t0;
                if self.publisher.is_some() {
                    // A remote agent waits for a whole batch, not the next line.
                    let ahead = match &self.plan.publisher {
                        Some(PubSpec::RemoteAgent { batch, .. }) => *batch as u64 - 1,
                        _ => 0,
                    };
                    t = t.min(publish::until_next(
                        self.plan.rate,
                        el,
                        self.pub_sent + ahead,
                    ));
                }
                // At the concurrency cap the next connect waits for a setup
                // to end, which is an I/O event (or a setup deadline, below):
                // no timer, or a run the setups cannot keep up with spins.
                if let Some(st) = &self.plan.storm
                    && self.in_setup < self.plan.connect_concurrency
                {
                    t = t.min(publish::until_next(st.rate, el, self.storm_started));
                }
                if let Some(due) = self.next_agent_due() {
                    t = t.min(due.saturating_duration_since(now));
                }
                t = t.min(
                    (self.t0 + Duration::from_millis(self.plan.duration_ms))
                        .saturating_duration_since(now),
                );
            }
            Phase::Connect | Phase::Prepare if self.plan.connect_rate > 0.0 => {
                t = t.min(Duration::from_millis(1));
            }
            Phase::Drain { until } => t = t.min(until.saturating_duration_since(now)),
            _ => {}
        }
        t
    }

    fn measuring(&self) -> bool {
        matches!(self.phase, Phase::Run | Phase::Drain { .. })
    }

    /// Handles readiness on one connection and its consequences.
    fn io(&mut self, poll: &mut Poll, key: usize, readable: bool, writable: bool, recv_ns: u64) {
        let measuring = self.measuring();
        let Worker {
            conns,
            live,
            rng,
            scratch,
            plan,
            hot,
            inflate,
            ..
        } = self;
        let Some(c) = conns.get_mut(key) else { return };
        let prev = c.s.state;
        let sub = plan.sub.as_ref();
        let mut ctx = Ctx {
            host: &plan.host_header,
            extract: sub.map(|s| s.extract).unwrap_or(Extract::Nothing),
            subscribe: sub.and_then(|s| s.subscribe.as_deref()),
            token: sub.and_then(|s| s.token.as_deref()),
            max_message: plan.max_message,
            measuring,
            recv_ns,
            live,
            rng,
            inflate: plan.deflate.then_some(inflate),
        };
        if writable {
            c.on_writable(&plan.host_header, plan.deflate);
        }
        if readable && c.s.dead.is_none() && c.on_readable(scratch, &mut ctx) {
            hot.push(key);
        }
        self.after_io(poll, key, prev);
    }

    /// Books state changes after I/O: established, dead.
    fn after_io(&mut self, poll: &mut Poll, key: usize, prev: State) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if prev < State::Established && c.s.state >= State::Established && c.s.dead.is_none() {
            self.in_setup -= 1;
            self.live.counters.established += 1;
            let now = Instant::now();
            self.live
                .setup
                .record((now - c.s.started).as_nanos() as u64);
            self.last_established = Some(now);
            if c.s.role == Role::Storm {
                c.start_close(&mut self.rng);
                self.close_q.push_back((now + CLOSE_WAIT, key, c.s.id));
            }
        }
        if c.s.dead.is_some() {
            self.kill(poll, key);
        }
    }

    fn kill(&mut self, poll: &mut Poll, key: usize) {
        let Some(mut c) = self.conns.try_remove(key) else {
            return;
        };
        let _ = poll.registry().deregister(&mut c.stream);
        let death = c.s.dead.take().unwrap_or(Death::Error("killed".into()));
        let established = c.s.state >= State::Established;
        match (&death, c.s.state) {
            (Death::Closed, _) | (Death::Error(_), State::Closing) => {
                self.live.counters.closed += 1
            }
            (Death::Error(kind), _) => {
                if established {
                    self.live.counters.dropped += 1;
                    self.live.error(&format!("dropped: {kind}"));
                } else {
                    self.live.counters.failed += 1;
                    self.live.error(kind);
                }
            }
        }
        if !established {
            self.in_setup -= 1;
        }
        if self.publisher == Some(key) {
            self.publisher = None;
            if let Death::Error(kind) = death {
                self.publisher_failed = Some(kind);
            }
        }
        if let Role::Agent { slot } = c.s.role {
            self.agent_conn[slot as usize] = None;
        }
    }

    /// Opens one connection to `ep`; `index` picks the source address.
    fn open(
        &mut self,
        poll: &mut Poll,
        index: u64,
        role: Role,
        dialect: Dialect,
        path: String,
        ep: Endpoint,
    ) -> Option<usize> {
        let src = self.plan.spread.source_for(index, &ep.addr);
        self.live.counters.attempted += 1;
        self.connects_started += 1;
        let now = Instant::now();
        self.first_connect.get_or_insert(now);
        let opened = open_socket(ep.addr, src).and_then(|s| match &self.tls {
            None => Ok(Wire::Plain(s)),
            Some((config, name)) => Wire::tls(s, config.clone(), name.clone()),
        });
        let mut stream = match opened {
            Ok(s) => s,
            Err(e) => {
                self.live.counters.failed += 1;
                self.live.error(&io_kind("connect", &e));
                return None;
            }
        };
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.live.counters.failed += 1;
            self.live.error(&io_kind("register", &e));
            return None;
        }
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&self.rng.next_u64().to_ne_bytes());
        raw[8..].copy_from_slice(&self.rng.next_u64().to_ne_bytes());
        self.next_id += 1;
        let id = self.next_id;
        let mut conn = Conn::new(stream, id, role, dialect, path, wsproto::make_key(raw));
        if ep.host_header != self.plan.host_header {
            conn.s.host = Some(ep.host_header.into_boxed_str());
        }
        entry.insert(conn);
        self.in_setup += 1;
        self.setup_q.push_back((
            now + Duration::from_millis(self.plan.connect_timeout_ms),
            key,
            id,
        ));
        Some(key)
    }

    /// Whether another connect may start now (concurrency and rate caps).
    fn may_connect(&self, phase_start: Instant, started_in_phase: u64) -> bool {
        if self.in_setup >= self.plan.connect_concurrency {
            return false;
        }
        if self.plan.connect_rate > 0.0 {
            let allowed = (phase_start.elapsed().as_secs_f64() * self.plan.connect_rate) as u64 + 1;
            return started_in_phase < allowed;
        }
        true
    }

    fn begin_prepare(&mut self, poll: &mut Poll, tx: mpsc::Sender<Input>) {
        self.phase = Phase::Prepare;
        self.phase_started = Instant::now();
        match self.plan.publisher.clone() {
            Some(PubSpec::Agent { api_key } | PubSpec::RemoteAgent { api_key, .. }) => {
                let mut auth = br#"{"type":"auth","api_key":""#.to_vec();
                crate::payload::json_escape_into(&mut auth, &api_key);
                auth.extend_from_slice(br#""}"#);
                let ep = self.plan.agent_endpoint(0);
                let key = self.open(
                    poll,
                    0,
                    Role::Publisher,
                    Dialect::Json,
                    "/api/v1/agents/ws".into(),
                    ep,
                );
                if let Some(k) = key {
                    self.conns[k].s.agent_auth = Some(String::from_utf8_lossy(&auth).into());
                    if matches!(self.plan.publisher, Some(PubSpec::RemoteAgent { .. })) {
                        self.conns[k].s.intro = publish::remote_intro(0, 1);
                    }
                }
                self.publisher = key;
            }
            Some(PubSpec::SioRelay) => {
                let ep = self.plan.agent_endpoint(0);
                self.publisher = self.open(
                    poll,
                    0,
                    Role::Publisher,
                    Dialect::SocketIo,
                    SIO_PATH.into(),
                    ep,
                );
            }
            Some(PubSpec::WsRelay { path }) => {
                let ep = self.plan.agent_endpoint(0);
                self.publisher = self.open(poll, 0, Role::Publisher, Dialect::Raw, path, ep);
            }
            Some(PubSpec::Fifo { path }) => {
                let waker = self.waker.clone();
                let timeout = Duration::from_millis(self.plan.setup_timeout_ms);
                self.fifo = Some(publish::spawn_fifo(
                    path,
                    self.plan.rate,
                    self.plan.payload,
                    timeout,
                    move |r| {
                        let _ = tx.send(Input::FifoOpened(r));
                        let _ = waker.wake();
                    },
                ));
            }
            None => {}
        }
        if self.plan.publisher.is_some() && self.publisher.is_none() && self.fifo.is_none() {
            self.publisher_failed = Some("publisher could not connect".into());
        }
    }

    fn setup_expired(&self, now: Instant) -> bool {
        now - self.phase_started > Duration::from_millis(self.plan.setup_timeout_ms)
    }

    /// Advances the phase machine; returns true when the worker is done.
    fn step(&mut self, poll: &mut Poll, now: Instant) -> bool {
        if now >= self.next_progress {
            self.next_progress = now + Duration::from_secs(1);
            let mut counters = self.live.counters.clone();
            self.fill_sent(&mut counters);
            emit(&WorkerEvent::Progress {
                counters,
                p99_us: self.live.interval.summary().p99_us,
            });
            self.live.interval.reset();
        }
        match self.phase {
            Phase::Prepare => self.step_prepare(poll, now),
            Phase::Connect => self.step_connect(poll, now),
            Phase::Run => self.step_run(poll, now),
            Phase::Drain { until } if now >= until => {
                self.finish();
                return true;
            }
            _ => {}
        }
        false
    }

    fn step_prepare(&mut self, poll: &mut Poll, now: Instant) {
        let started = self.next_agent as u64;
        while self.next_agent < self.plan.agents.len()
            && self.may_connect(self.phase_started, started)
        {
            let slot = self.next_agent;
            self.next_agent += 1;
            let a = self.plan.agents[slot].clone();
            let mut auth = br#"{"type":"auth","api_key":""#.to_vec();
            crate::payload::json_escape_into(&mut auth, &a.api_key);
            auth.extend_from_slice(br#""}"#);
            let ep = self.plan.agent_endpoint(a.index);
            let key = self.open(
                poll,
                a.index,
                Role::Agent { slot: slot as u32 },
                Dialect::Json,
                "/api/v1/agents/ws".into(),
                ep,
            );
            if let Some(k) = key {
                self.conns[k].s.agent_auth = Some(String::from_utf8_lossy(&auth).into());
                if self.plan.remote_containers > 0 {
                    self.conns[k].s.intro =
                        publish::remote_intro(a.index, self.plan.remote_containers);
                }
            }
            self.agent_conn[slot] = key;
        }
        let agents_started = self.next_agent == self.plan.agents.len();
        let publisher_settled = match (&self.publisher, &self.fifo) {
            (Some(k), _) => self
                .conns
                .get(*k)
                .is_none_or(|c| c.s.state >= State::Established),
            (None, Some(_)) => self.fifo_open.is_some(),
            (None, None) => true,
        };
        let timed_out = self.setup_expired(now);
        if !(timed_out || (agents_started && self.in_setup == 0 && publisher_settled)) {
            return;
        }
        if let Some(Err(e)) = &self.fifo_open {
            self.publisher_failed = Some(e.clone());
        } else if self.fifo.is_some() && self.fifo_open.is_none() {
            self.publisher_failed = Some("container never opened the FIFO".into());
        }
        if let Some(why) = self.publisher_failed.clone() {
            emit(&WorkerEvent::Fatal {
                message: format!("publisher failed: {why}"),
            });
            std::process::exit(2);
        }
        let mut sids = Vec::new();
        if let Some(sid) = self
            .publisher
            .and_then(|k| self.conns.get(k))
            .and_then(|c| c.s.server_id.clone())
        {
            sids.push((0, sid));
        }
        let mut failed = 0;
        for (slot, key) in self.agent_conn.iter().enumerate() {
            match key.and_then(|k| self.conns.get(k)) {
                Some(c) if c.s.state >= State::Established => {
                    if let Some(sid) = &c.s.server_id {
                        sids.push((self.plan.agents[slot].index, sid.clone()));
                    }
                }
                _ => failed += 1,
            }
        }
        emit(&WorkerEvent::Prepared { sids, failed });
        self.phase = Phase::AwaitConnect;
    }

    fn step_connect(&mut self, poll: &mut Poll, now: Instant) {
        let Some(spec) = self.plan.sub.clone() else {
            self.ready();
            return;
        };
        let started_before = self.next_sub - self.plan.subs.0;
        let mut started = started_before;
        while self.next_sub < self.plan.subs.1 && self.may_connect(self.phase_started, started) {
            let j = self.next_sub;
            self.next_sub += 1;
            started += 1;
            let (sid_idx, path) = if self.sids.is_empty() {
                (0, spec.path.clone())
            } else {
                let k = (j % self.sids.len() as u64) as usize;
                (k, spec.path.replace("{sid}", &self.sids[k]))
            };
            // Browsers come after agents in source-address order.
            let index = self.plan.agents_total + j;
            let agent = (!self.sids.is_empty())
                .then(|| self.sid_agents.get(sid_idx).copied())
                .flatten();
            let ep = self.plan.sub_endpoint(j, agent);
            let key = self.open(
                poll,
                index,
                Role::Sub {
                    sid: sid_idx as u32,
                },
                spec.dialect,
                path,
                ep,
            );
            if let (Some(k), Some(sid)) = (key, self.sids.get(sid_idx)) {
                self.conns[k].s.server_id = Some(sid.clone());
            }
        }
        let all_started = self.next_sub >= self.plan.subs.1;
        if (all_started && self.in_setup == 0) || self.setup_expired(now) {
            self.ready();
        }
    }

    fn ready(&mut self) {
        let mut by_sid = vec![0u64; self.sids.len().max(1)];
        let mut established = 0;
        for (_, c) in self.conns.iter() {
            if let Role::Sub { sid } = c.s.role
                && c.s.state >= State::Established
            {
                established += 1;
                if let Some(n) = by_sid.get_mut(sid as usize) {
                    *n += 1;
                }
            }
        }
        let setup_failed = self.live.counters.failed;
        emit(&WorkerEvent::Ready {
            established,
            failed: setup_failed,
            by_sid,
        });
        self.phase = Phase::AwaitStart;
    }

    fn command(&mut self, poll: &mut Poll, cmd: Command) {
        match cmd {
            Command::Plan(_) => {}
            Command::Connect { sids, indices } if self.phase == Phase::AwaitConnect => {
                let pos: HashMap<&str, usize> = sids
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.as_str(), i))
                    .collect();
                // Expected deliveries per agent message come from the position
                // of that agent's server_id; remember it now.
                let mut agent_pos = vec![usize::MAX; self.plan.agents.len()];
                for (slot, key) in self.agent_conn.iter().enumerate() {
                    if let Some(sid) = key
                        .and_then(|k| self.conns.get(k))
                        .and_then(|c| c.s.server_id.as_deref())
                        && let Some(&p) = pos.get(sid)
                    {
                        agent_pos[slot] = p;
                    }
                }
                self.agent_watchers = agent_pos.iter().map(|&p| p as u64).collect();
                self.sids = sids;
                self.sid_agents = indices;
                self.phase = Phase::Connect;
                self.phase_started = Instant::now();
                self.step_connect(poll, Instant::now());
            }
            Command::Start { watchers } if self.phase == Phase::AwaitStart => {
                self.pub_watchers = watchers.first().copied().unwrap_or(0);
                for w in self.agent_watchers.iter_mut() {
                    // Until now this held the sid position (usize::MAX = none).
                    *w = watchers.get(*w as usize).copied().unwrap_or(0);
                }
                let c = &mut self.live.counters;
                for v in [
                    &mut c.sent,
                    &mut c.expected,
                    &mut c.delivered,
                    &mut c.frames,
                    &mut c.bytes,
                    &mut c.gaps,
                    &mut c.reordered,
                    &mut c.server_dropped,
                    &mut c.send_skipped,
                    &mut c.negative_latency,
                ] {
                    *v = 0;
                }
                self.live.latency.reset();
                self.live.interval.reset();
                self.t0 = Instant::now();
                self.cpu0 = procfs::self_cpu();
                self.phase = Phase::Run;
                if let Some(f) = &self.fifo {
                    f.start(self.t0 + Duration::from_millis(self.plan.duration_ms));
                }
            }
            Command::Stop if self.phase == Phase::Run => self.begin_drain(),
            Command::Stop => {
                // Stopped before the window opened: report what there is.
                self.finish();
                std::process::exit(0);
            }
            _ => {}
        }
    }

    fn begin_drain(&mut self) {
        if let Some(f) = &self.fifo {
            f.stop();
        }
        self.phase = Phase::Drain {
            until: Instant::now() + Duration::from_millis(self.plan.drain_ms),
        };
    }

    fn step_run(&mut self, poll: &mut Poll, now: Instant) {
        let el = now - self.t0;
        if el >= Duration::from_millis(self.plan.duration_ms) {
            self.begin_drain();
            return;
        }
        self.publish_due(el);
        self.agents_due(now);
        self.storm_due(poll, el);
    }

    fn publish_due(&mut self, el: Duration) {
        let Some(key) = self.publisher else { return };
        let n = publish::due(self.plan.rate, el, self.pub_sent);
        if n == 0 {
            return;
        }
        if let Some(PubSpec::RemoteAgent { batch, .. }) = &self.plan.publisher
            && n < *batch as u64
        {
            return;
        }
        let Worker {
            conns,
            rng,
            live,
            plan,
            ..
        } = self;
        let Some(c) = conns.get_mut(key) else { return };
        if c.pending_out() > MAX_PUBLISH_BACKLOG {
            live.counters.send_skipped += n;
            self.pub_sent += n;
            return;
        }
        if let Some(PubSpec::RemoteAgent {
            container_id,
            batch,
            ..
        }) = &plan.publisher
        {
            // Only whole batches go (the rest waits for the next call), so
            // no message outgrows the hub's max_message_bytes after a stall.
            let k = *batch as u64;
            let mut left = n - n % k;
            let mut msg = Vec::new();
            while left > 0 {
                msg.clear();
                publish::remote_log_batch(
                    &mut msg,
                    container_id,
                    now_ns(),
                    self.pub_sent + 1,
                    k,
                    plan.payload,
                );
                c.send_text(&msg, rng);
                self.pub_sent += k;
                left -= k;
                live.counters.sent += k;
                live.counters.expected += k * self.pub_watchers;
            }
            c.flush();
            if c.s.dead.is_some() {
                self.publisher_failed = Some("publisher write failed".into());
            }
            return;
        }
        let mut msg = Vec::with_capacity(plan.payload + 256);
        for _ in 0..n {
            self.pub_sent += 1;
            msg.clear();
            let ns = now_ns();
            match &plan.publisher {
                Some(PubSpec::Agent { .. }) => {
                    let sid = c.s.server_id.as_deref().unwrap_or("");
                    publish::agent_log(&mut msg, sid, ns, self.pub_sent, plan.payload);
                }
                Some(PubSpec::SioRelay) => {
                    publish::sio_publish(&mut msg, ns, self.pub_sent, plan.payload)
                }
                _ => publish::relay_object(&mut msg, ns, self.pub_sent, plan.payload),
            }
            c.send_text(&msg, rng);
            live.counters.sent += 1;
            live.counters.expected += self.pub_watchers;
        }
        c.flush();
        if c.s.dead.is_some() {
            self.publisher_failed = Some("publisher write failed".into());
        }
    }

    /// When the agent under the cursor is next due.
    fn next_agent_due(&self) -> Option<Instant> {
        if self.plan.agents.is_empty() || self.phase != Phase::Run {
            return None;
        }
        let slot = self.agent_cursor;
        let interval = Duration::from_millis(self.plan.agent_interval_ms.max(1));
        // Stagger by run-wide index so all workers' agents spread over the interval.
        let total = self.plan.agents_total.max(1);
        let offset = interval.mul_f64(self.plan.agents[slot].index as f64 / total as f64);
        Some(self.t0 + interval * self.agent_cycle as u32 + offset)
    }

    fn agents_due(&mut self, now: Instant) {
        let mut budget = self.plan.agents.len();
        while budget > 0 {
            let Some(due) = self.next_agent_due() else {
                return;
            };
            if due > now {
                return;
            }
            budget -= 1;
            let slot = self.agent_cursor;
            self.agent_cursor += 1;
            if self.agent_cursor == self.plan.agents.len() {
                self.agent_cursor = 0;
                self.agent_cycle += 1;
            }
            let Some(key) = self.agent_conn[slot] else {
                continue;
            };
            let Worker {
                conns, rng, live, ..
            } = self;
            let Some(c) = conns.get_mut(key) else {
                continue;
            };
            if c.pending_out() > MAX_PUBLISH_BACKLOG {
                live.counters.send_skipped += 1;
                continue;
            }
            let n = self.plan.remote_containers;
            if n > 0 {
                // A Docker agent: stats every interval, a stamped state
                // change every `change_every` intervals (the measured item).
                let index = self.plan.agents[slot].index;
                let tick = self.agent_cycle;
                let mut msg = Vec::with_capacity(200 * n as usize);
                publish::remote_stats(&mut msg, index, n, tick);
                c.send_text(&msg, rng);
                if tick.is_multiple_of(self.plan.change_every) {
                    self.agent_seq[slot] += 1;
                    msg.clear();
                    publish::remote_change(&mut msg, index, n, now_ns(), self.agent_seq[slot]);
                    c.send_text(&msg, rng);
                    live.counters.sent += 1;
                    live.counters.expected += self.agent_watchers[slot];
                }
                c.flush();
                continue;
            }
            self.agent_seq[slot] += 1;
            let mut msg = Vec::with_capacity(512);
            let sid = c.s.server_id.as_deref().unwrap_or("");
            publish::agent_metrics(&mut msg, sid, now_ns(), self.agent_seq[slot]);
            c.send_text(&msg, rng);
            c.flush();
            live.counters.sent += 1;
            live.counters.expected += self.agent_watchers[slot];
        }
    }

    fn storm_due(&mut self, poll: &mut Poll, el: Duration) {
        let Some(st) = self.plan.storm.clone() else {
            return;
        };
        let Some(spec) = self.plan.sub.clone() else {
            return;
        };
        let n = publish::due(st.rate, el, self.storm_started);
        for _ in 0..n {
            if self.storm_started >= st.max || self.in_setup >= self.plan.connect_concurrency {
                if self.storm_started < st.max {
                    self.live
                        .error("storm: concurrency cap reached, connect delayed");
                }
                return;
            }
            let index = self.storm_started * self.plan.workers as u64 + self.plan.worker as u64;
            self.storm_started += 1;
            let ep = self.plan.sub_endpoint(index, None);
            self.open(
                poll,
                index,
                Role::Storm,
                spec.dialect,
                spec.path.clone(),
                ep,
            );
        }
    }

    /// Applies setup and close deadlines.
    fn expire(&mut self, poll: &mut Poll, now: Instant) {
        while let Some(&(d, key, id)) = self.setup_q.front() {
            if d > now {
                break;
            }
            self.setup_q.pop_front();
            if let Some(c) = self.conns.get_mut(key)
                && c.s.id == id
                && c.s.state < State::Established
            {
                c.s.dead = Some(Death::Error(
                    format!("setup timeout ({:?})", c.s.state).to_lowercase(),
                ));
                self.kill(poll, key);
            }
        }
        while let Some(&(d, key, id)) = self.close_q.front() {
            if d > now {
                break;
            }
            self.close_q.pop_front();
            if let Some(c) = self.conns.get_mut(key)
                && c.s.id == id
            {
                c.s.dead = Some(Death::Closed);
                self.live
                    .error("storm: server did not answer close within 1s");
                self.kill(poll, key);
            }
        }
    }

    fn fill_sent(&self, c: &mut crate::stats::Counters) {
        if let Some(f) = &self.fifo
            && self.measuring()
        {
            let sent = f.sent.load(Ordering::Relaxed);
            c.sent = sent;
            c.expected = sent * self.pub_watchers;
        }
    }

    fn finish(&mut self) {
        let mut counters = self.live.counters.clone();
        self.fill_sent(&mut counters);
        let measured = if self.measuring() {
            (Instant::now() - self.t0).min(Duration::from_millis(self.plan.duration_ms))
        } else {
            Duration::ZERO
        };
        let setup_wall = match (self.first_connect, self.last_established) {
            (Some(a), Some(b)) if b > a => b - a,
            _ => Duration::ZERO,
        };
        let cpu = if self.measuring() {
            procfs::self_cpu().saturating_sub(self.cpu0)
        } else {
            Duration::ZERO
        };
        emit(&WorkerEvent::Result(Box::new(WorkerResult {
            worker: self.plan.worker,
            counters,
            errors: self.live.errors.clone(),
            latency: self.live.latency.encode(),
            setup: self.live.setup.encode(),
            setup_wall_ms: setup_wall.as_millis() as u64,
            measured_ms: measured.as_millis() as u64,
            self_cpu_ms: cpu.as_millis() as u64,
        })));
    }
}

/// Engine.IO v4 over WebSocket, default namespace.
pub const SIO_PATH: &str = "/socket.io/?EIO=4&transport=websocket";
/// The MessagePack wire of `/api/v1/ws` (SPEC 12).
pub const MSGPACK_PATH: &str = "/api/v1/ws?format=msgpack";
