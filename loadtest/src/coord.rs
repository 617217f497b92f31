//! The coordinator: starts the workers, walks them through the phases, prints
//! progress, samples the server, and merges the results.
//!
//! Owns the worker processes (re-executions of this binary with `--worker`)
//! and the run's wall-clock bounds. Invariants: each phase wait has a
//! deadline; a worker that misses one is killed and the report says it is
//! incomplete; no worker outlives the coordinator (their stdin closes with it).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command as Proc, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::plan::{Command, WorkerEvent};
use crate::procfs::{self, ProcSample};
use crate::report::{self, Report, ServerSamples};
use crate::scenario::RunSpec;
use crate::stats::{Counters, WorkerResult, merge_results};

/// Slack on top of a phase's own bound before a silent worker is given up on.
const SLACK: Duration = Duration::from_secs(15);

struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
}

/// A line from a worker, or the end of its output.
enum FromWorker {
    Event(usize, WorkerEvent),
    Gone(usize),
}

fn send(w: &mut Worker, cmd: &Command) -> anyhow::Result<()> {
    let stdin = w.stdin.as_mut().context("worker stdin already closed")?;
    let mut line = serde_json::to_vec(cmd)?;
    line.push(b'\n');
    stdin
        .write_all(&line)
        .context("could not write to a worker")?;
    stdin.flush().context("could not write to a worker")?;
    Ok(())
}

fn spawn_workers(n: usize) -> anyhow::Result<(Vec<Worker>, Receiver<FromWorker>)> {
    let exe = std::env::current_exe().context("could not find own executable")?;
    let (tx, rx) = mpsc::channel();
    let mut workers = Vec::with_capacity(n);
    for i in 0..n {
        let mut child = Proc::new(&exe)
            .arg("--worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("could not start a worker process")?;
        let stdout = child.stdout.take().context("worker has no stdout")?;
        let stdin = child.stdin.take();
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match crate::plan::parse_event(&line) {
                    Ok(ev) => {
                        if tx.send(FromWorker::Event(i, ev)).is_err() {
                            return;
                        }
                    }
                    Err(e) => log::warn!("worker {i}: unreadable line ({e}): {line}"),
                }
            }
            let _ = tx.send(FromWorker::Gone(i));
        });
        workers.push(Worker { child, stdin });
    }
    Ok((workers, rx))
}

/// Progress line state: latest cumulative counters per worker.
struct Progress {
    latest: Vec<Counters>,
    p99: Vec<f64>,
    last_print: Instant,
    last_delivered: u64,
    started: Instant,
    quiet: bool,
}

impl Progress {
    fn update(&mut self, w: usize, c: Counters, p99: f64) {
        self.latest[w] = c;
        self.p99[w] = p99;
    }

    fn maybe_print(&mut self, phase: &str) {
        if self.quiet || self.last_print.elapsed() < Duration::from_secs(1) {
            return;
        }
        let dt = self.last_print.elapsed().as_secs_f64();
        self.last_print = Instant::now();
        let mut t = Counters::default();
        for c in &self.latest {
            t.add(c);
        }
        let rate = t.delivered.saturating_sub(self.last_delivered) as f64 / dt;
        self.last_delivered = t.delivered;
        let p99 = self.p99.iter().cloned().fold(0.0, f64::max);
        eprintln!(
            "[{:>5.1}s {phase:<8}] conns {}/{} failed {} dropped {} | sent {} delivered {} ({:.0}/s) p99 {:.2} ms | gaps {}",
            self.started.elapsed().as_secs_f64(),
            t.established.saturating_sub(t.closed),
            t.attempted,
            t.failed,
            t.dropped,
            t.sent,
            t.delivered,
            rate,
            p99 / 1000.0,
            t.gaps
        );
    }
}

/// Runs a scenario to the end and returns its report.
///
/// # Errors
/// Workers that cannot start, a fatal worker error, or no server_id where one is needed.
pub fn run(spec: RunSpec) -> anyhow::Result<Report> {
    let pids: Vec<u32> = if spec.common.no_server_stats {
        Vec::new()
    } else if !spec.common.server_pid.is_empty() {
        spec.common.server_pid.clone()
    } else {
        let mut found = Vec::new();
        for addr in crate::scenario::listen_addrs(&spec.base) {
            if let Some(p) = procfs::find_listener(&addr)
                && !found.contains(&p)
            {
                found.push(p);
            }
        }
        found
    };
    let baseline = procfs::sample_all(&pids);
    let (mut workers, rx) = spawn_workers(spec.procs)?;
    let result = drive(&spec, &mut workers, &rx, &pids, baseline);
    for w in &mut workers {
        w.stdin = None;
    }
    // Workers exit on their own after their result; give them a moment, then insist.
    let deadline = Instant::now() + Duration::from_secs(5);
    for w in &mut workers {
        while Instant::now() < deadline {
            if let Ok(Some(_)) = w.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Ok(None) = w.child.try_wait() {
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
    }
    result
}

fn wait_all<T>(
    rx: &Receiver<FromWorker>,
    n: usize,
    deadline: Instant,
    progress: &mut Progress,
    phase: &str,
    mut pick: impl FnMut(usize, WorkerEvent) -> anyhow::Result<Option<T>>,
) -> anyhow::Result<Vec<Option<T>>> {
    let mut got: Vec<Option<T>> = (0..n).map(|_| None).collect();
    let mut gone = vec![false; n];
    while got.iter().zip(&gone).any(|(g, d)| g.is_none() && !d) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match rx.recv_timeout((deadline - now).min(Duration::from_millis(200))) {
            Ok(FromWorker::Event(i, WorkerEvent::Progress { counters, p99_us })) => {
                progress.update(i, counters, p99_us)
            }
            Ok(FromWorker::Event(i, WorkerEvent::Fatal { message })) => {
                bail!("worker {i}: {message}")
            }
            Ok(FromWorker::Event(i, ev)) => {
                if let Some(v) = pick(i, ev)? {
                    got[i] = Some(v);
                }
            }
            Ok(FromWorker::Gone(i)) => gone[i] = true,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        progress.maybe_print(phase);
    }
    Ok(got)
}

fn drive(
    spec: &RunSpec,
    workers: &mut [Worker],
    rx: &Receiver<FromWorker>,
    pids: &[u32],
    baseline: Option<ProcSample>,
) -> anyhow::Result<Report> {
    let n = workers.len();
    let mut progress = Progress {
        latest: vec![Counters::default(); n],
        p99: vec![0.0; n],
        last_print: Instant::now(),
        last_delivered: 0,
        started: Instant::now(),
        quiet: spec.common.quiet,
    };
    for (i, w) in workers.iter_mut().enumerate() {
        send(w, &Command::Plan(Box::new(spec.plan_for(i))))?;
    }
    let setup_bound = Duration::from_millis(spec.base.setup_timeout_ms) + SLACK;

    // Phase 1: publishers and agents.
    let prepared = wait_all(
        rx,
        n,
        Instant::now() + setup_bound,
        &mut progress,
        "prepare",
        |_, ev| match ev {
            WorkerEvent::Prepared { sids, failed } => Ok(Some((sids, failed))),
            _ => Ok(None),
        },
    )?;
    if prepared.iter().any(Option::is_none) {
        bail!("a worker did not finish the prepare phase in time");
    }
    let mut pairs: Vec<(u64, String)> = prepared
        .into_iter()
        .flatten()
        .flat_map(|(s, _)| s)
        .collect();
    pairs.sort();
    let indices: Vec<u64> = pairs.iter().map(|(i, _)| *i).collect();
    let sids: Vec<String> = pairs.into_iter().map(|(_, s)| s).collect();
    let wants_sid = spec
        .base
        .sub
        .as_ref()
        .is_some_and(|s| s.path.contains("{sid}"));
    if wants_sid && sids.is_empty() && spec.base.subs_total > 0 {
        bail!("no publisher or agent authenticated, so there is no server_id to subscribe to");
    }

    // Phase 2: subscribers.
    for w in workers.iter_mut() {
        send(
            w,
            &Command::Connect {
                sids: sids.clone(),
                indices: indices.clone(),
            },
        )?;
    }
    let ready = wait_all(
        rx,
        n,
        Instant::now() + setup_bound,
        &mut progress,
        "connect",
        |_, ev| match ev {
            WorkerEvent::Ready { by_sid, .. } => Ok(Some(by_sid)),
            _ => Ok(None),
        },
    )?;
    if ready.iter().any(Option::is_none) {
        bail!("a worker did not finish connecting in time");
    }
    let mut watchers = vec![0u64; sids.len().max(1)];
    for by_sid in ready.into_iter().flatten() {
        for (k, v) in by_sid.into_iter().enumerate() {
            if let Some(w) = watchers.get_mut(k) {
                *w += v;
            }
        }
    }

    // Phase 3: the window.
    std::thread::sleep(spec.common.settle);
    let connected = procfs::sample_all(pids);
    let t_start = Instant::now();
    for w in workers.iter_mut() {
        send(
            w,
            &Command::Start {
                watchers: watchers.clone(),
            },
        )?;
    }
    let run_bound = Duration::from_millis(spec.base.duration_ms + spec.base.drain_ms) + SLACK;
    let results: Vec<Option<WorkerResult>> = wait_all(
        rx,
        n,
        Instant::now() + run_bound,
        &mut progress,
        "run",
        |_, ev| match ev {
            WorkerEvent::Result(r) => Ok(Some(*r)),
            _ => Ok(None),
        },
    )?;
    let end = procfs::sample_all(pids);
    let wall_s = t_start.elapsed().as_secs_f64();
    let complete = results.iter().all(Option::is_some);
    let results: Vec<WorkerResult> = results.into_iter().flatten().collect();
    let setup_wall_ms = results.iter().map(|r| r.setup_wall_ms).max().unwrap_or(0);
    let merged = merge_results(&results)?;
    let server = match (baseline, connected, end) {
        (Some(baseline), Some(connected), Some(end)) => Some(ServerSamples {
            pids: pids.to_vec(),
            baseline,
            connected,
            end,
            wall_s,
        }),
        _ => None,
    };
    let mut params = spec.params.clone();
    let spread = !spec.base.agent_targets.is_empty() || !spec.base.sub_targets.is_empty();
    if spec.base.tls.is_some()
        && let Some(m) = params.as_object_mut()
    {
        m.insert("tls".into(), true.into());
    }
    let target = if spread {
        // Several hubs: every address connected to, agents' list first.
        crate::scenario::listen_addrs(&spec.base)
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    } else if spec.base.tls.is_some() {
        format!("wss://{}", spec.target.host_header)
    } else {
        spec.target.host_header.clone()
    };
    let meta = report::RunMeta {
        scenario: spec.scenario.to_string(),
        label: spec.common.label.clone(),
        target,
        params,
    };
    Ok(report::build(
        meta,
        &merged,
        setup_wall_ms,
        server,
        complete,
    ))
}
