//! Turns a scenario's flags into one plan per worker.
//!
//! Owns: which endpoint each scenario talks to and in which dialect, how the
//! publisher is chosen (agent, remote Docker agent, container, peer relay), how connections,
//! agents and storm rates are split across workers, and how many workers a
//! run needs for the open-file limit.

use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::json;

use crate::cli::{AgentsArgs, Common, DialectArg, FanoutArgs, IdleArgs, Peer, Source, StormArgs};
use crate::container::SpawnedContainer;
use crate::payload::json_escape_into;
use crate::plan::{
    AgentSlot, Dialect, Endpoint, Extract, PubSpec, StormSpec, SubSpec, TlsPlan, WorkerPlan,
    split_range,
};
use crate::target::{SourceSpread, Target, parse_target};
use crate::worker::{MSGPACK_PATH, SIO_PATH, publish};

/// Sockets one worker may hold below its open-file limit.
const FD_HEADROOM: u64 = 200;

/// A whole run, before it is split over workers.
#[derive(Debug)]
pub struct RunSpec {
    pub scenario: &'static str,
    pub common: Common,
    pub target: Target,
    pub params: serde_json::Value,
    /// Plan shared by every worker; `split` fills in the per-worker parts.
    pub base: WorkerPlan,
    pub agents: Vec<AgentSlot>,
    pub storm: Option<StormSpec>,
    pub procs: usize,
    /// Kept alive for the run; removed on drop.
    #[allow(dead_code)] // held for its Drop, never read
    pub container: Option<SpawnedContainer>,
}

fn hard_nofile() -> u64 {
    // SAFETY: getrlimit on a struct we own.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        r.rlim_max
    }
}

/// Workers needed to hold `sockets` with `limit` open files each (at least 1).
pub fn procs_for(sockets: u64, limit: u64) -> usize {
    let per = limit.saturating_sub(FD_HEADROOM).max(1);
    sockets.div_ceil(per).max(1) as usize
}

fn token(c: &Common) -> anyhow::Result<Option<String>> {
    if let Some(t) = &c.token {
        return Ok(Some(t.trim().to_string()));
    }
    if let Some(f) = &c.token_file {
        let t = std::fs::read_to_string(f)
            .with_context(|| format!("could not read token file {}", f.display()))?;
        return Ok(Some(t.trim().to_string()));
    }
    Ok(None)
}

/// TLS settings for `--tls` (or a wss:// target), checked here so a bad
/// CA file or host fails the run before any worker starts.
fn tls_plan(c: &Common, target: &Target) -> anyhow::Result<Option<TlsPlan>> {
    if !(c.tls || target.tls) {
        if c.ca_file.is_some() {
            bail!("--ca-file needs --tls (or a wss:// target)");
        }
        return Ok(None);
    }
    let ca_pem = match &c.ca_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("could not read --ca-file {}", f.display()))?,
        ),
        None => None,
    };
    crate::tls::client_config(ca_pem.as_deref())?;
    crate::tls::server_name(&target.host)?;
    Ok(Some(TlsPlan {
        server_name: target.host.clone(),
        ca_pem,
    }))
}

/// Parses a `--agent-targets`/`--subscriber-targets` list; every entry
/// must be loopback (the same rule as `--target`).
///
/// # Errors
/// Any entry that does not parse or is not loopback.
pub fn endpoints(flag: &str, list: &[String]) -> anyhow::Result<Vec<Endpoint>> {
    list.iter()
        .map(|t| {
            let t = parse_target(t).with_context(|| format!("in {flag}"))?;
            Ok(Endpoint {
                addr: t.addr,
                host_header: t.host_header,
            })
        })
        .collect()
}

/// Every distinct address the run connects to (the --target default included
/// where a list is empty), in first-seen order: whose CPU the report sums.
pub fn listen_addrs(plan: &WorkerPlan) -> Vec<std::net::SocketAddr> {
    let mut out = Vec::new();
    for list in [&plan.agent_targets, &plan.sub_targets] {
        if list.is_empty() {
            out.push(plan.target);
        }
        out.extend(list.iter().map(|e| e.addr));
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|a| seen.insert(*a));
    out
}

fn base_plan(c: &Common, target: &Target, duration: Duration) -> anyhow::Result<WorkerPlan> {
    Ok(WorkerPlan {
        worker: 0,
        workers: 1,
        target: target.addr,
        host_header: target.host_header.clone(),
        spread: SourceSpread {
            per_addr: c.per_addr,
        },
        connect_timeout_ms: c.connect_timeout.as_millis() as u64,
        connect_concurrency: c.connect_concurrency.max(1),
        connect_rate: c.connect_rate,
        setup_timeout_ms: c.setup_timeout.as_millis() as u64,
        duration_ms: duration.as_millis() as u64,
        drain_ms: c.drain.as_millis() as u64,
        max_message: c.max_message_bytes,
        busy_poll: c.busy_poll,
        deflate: c.deflate,
        sub: None,
        subs: (0, 0),
        subs_total: 0,
        publisher: None,
        rate: 0.0,
        payload: 0,
        agents: Vec::new(),
        agents_total: 0,
        agent_interval_ms: 0,
        remote_containers: 0,
        change_every: 1,
        storm: None,
        tls: tls_plan(c, target)?,
        agent_targets: endpoints("--agent-targets", &c.agent_targets)?,
        sub_targets: endpoints("--subscriber-targets", &c.subscriber_targets)?,
        placement: crate::cli::Placement::Index,
    })
}

/// Fills in the worker count: `--procs`, or enough for the open-file limit.
fn with_procs(mut spec: RunSpec) -> RunSpec {
    let sockets = spec.base.subs_total + spec.agents.len() as u64 + 1;
    spec.procs = if spec.common.procs > 0 {
        spec.common.procs
    } else {
        procs_for(sockets, hard_nofile())
    };
    spec
}

fn json_string(s: &str) -> String {
    let mut out = Vec::new();
    json_escape_into(&mut out, s);
    String::from_utf8_lossy(&out).into_owned()
}

fn api_key(a: &FanoutArgs) -> anyhow::Result<String> {
    Ok(match (&a.api_key, &a.api_key_file) {
        (Some(k), _) => k.trim().to_string(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("could not read {}", f.display()))?
            .trim()
            .to_string(),
        (None, None) => bail!("fanout --source agent needs --api-key or --api-key-file"),
    })
}

/// # Errors
/// Bad target, missing API key or container, or a failing `docker run`.
pub fn fanout(a: FanoutArgs) -> anyhow::Result<RunSpec> {
    let target = parse_target(&a.common.target)?;
    let mut base = base_plan(&a.common, &target, a.duration)?;
    let tok = token(&a.common)?;
    base.rate = a.rate;
    base.payload = a.payload;
    base.subs_total = a.subscribers;
    let mut container = None;
    let mut source_desc = format!("{:?}", a.source).to_lowercase();
    let (publisher, sub) = match (a.peer, a.source) {
        (Some(Peer::Socketio), _) => {
            source_desc = "socketio relay".into();
            (
                Some(PubSpec::SioRelay),
                SubSpec {
                    path: a.path.clone().unwrap_or_else(|| SIO_PATH.into()),
                    dialect: Dialect::SocketIo,
                    token: tok,
                    subscribe: None,
                    extract: Extract::SioRelay,
                },
            )
        }
        (Some(Peer::WsRelay), _) => {
            source_desc = "ws relay".into();
            let path = a.path.clone().unwrap_or_else(|| "/".into());
            (
                Some(PubSpec::WsRelay { path: path.clone() }),
                SubSpec {
                    path,
                    dialect: Dialect::Raw,
                    token: None,
                    subscribe: None,
                    extract: Extract::WsRelay,
                },
            )
        }
        (None, Source::Agent) => {
            if a.dialect == DialectArg::Socketio {
                bail!("the Socket.IO dialect carries container logs only: use --source container");
            }
            let key = api_key(&a)?;
            (
                Some(PubSpec::Agent { api_key: key }),
                SubSpec {
                    path: a
                        .path
                        .clone()
                        .unwrap_or_else(|| "/api/v1/ws/logs/{sid}".into()),
                    dialect: Dialect::Json,
                    token: tok,
                    subscribe: None,
                    extract: Extract::LogMessage,
                },
            )
        }
        (None, Source::RemoteAgent) => {
            if a.dialect == DialectArg::Socketio {
                bail!("--source remote-agent speaks the JSON dialect only");
            }
            // One line is about 90 bytes of JSON around the payload; a batch
            // must stay under the hub's 64 KiB max_message_bytes.
            if a.batch.saturating_mul(a.payload + 90) > 60_000 {
                bail!(
                    "--batch {} of {}-byte lines would exceed 60 KB per log_batch",
                    a.batch,
                    a.payload
                );
            }
            let key = api_key(&a)?;
            let container_id = publish::remote_container_id(0, 0);
            let id = json_string(&container_id);
            (
                Some(PubSpec::RemoteAgent {
                    api_key: key,
                    container_id,
                    batch: a.batch.max(1),
                }),
                SubSpec {
                    path: a.path.clone().unwrap_or_else(|| "/api/v1/ws".into()),
                    dialect: Dialect::Json,
                    token: tok,
                    subscribe: Some(format!(
                        r#"{{"type":"start_log_stream","server_id":"{{sid}}","container_id":"{id}","tail":0}}"#
                    )),
                    extract: Extract::LogUpdate,
                },
            )
        }
        (None, Source::Container) => {
            let (name, publisher) = if a.spawn_container {
                let image = a
                    .image
                    .clone()
                    .context("--spawn-container needs --image or DOCKWIRE_TEST_IMAGE")?;
                let c = SpawnedContainer::start(&a.docker, &image)?;
                let out = (
                    c.name.clone(),
                    Some(PubSpec::Fifo {
                        path: c.fifo.to_string_lossy().into_owned(),
                    }),
                );
                container = Some(c);
                out
            } else {
                let name = a
                    .container
                    .clone()
                    .context("--source container needs --container NAME or --spawn-container")?;
                (name, None)
            };
            let id = json_string(&name);
            let server = a
                .server_id
                .as_deref()
                .map(|s| format!(r#""server_id":"{}","#, json_string(s)))
                .unwrap_or_default();
            let filter = match &a.filter {
                None => String::new(),
                Some(f) => {
                    let probe = f.replace("{i}", "0");
                    let v: serde_json::Value =
                        serde_json::from_str(&probe).context("--filter must be a JSON object")?;
                    anyhow::ensure!(v.is_object(), "--filter must be a JSON object");
                    format!(r#""filter":{f},"#)
                }
            };
            let sub = match a.dialect {
                DialectArg::Json | DialectArg::Msgpack => SubSpec {
                    path: a.path.clone().unwrap_or_else(|| {
                        if a.dialect == DialectArg::Msgpack {
                            MSGPACK_PATH.into()
                        } else {
                            "/api/v1/ws".into()
                        }
                    }),
                    dialect: if a.dialect == DialectArg::Msgpack {
                        Dialect::MsgPack
                    } else {
                        Dialect::Json
                    },
                    token: tok,
                    subscribe: Some(format!(
                        r#"{{"type":"start_log_stream",{server}{filter}"container_id":"{id}","tail":0}}"#
                    )),
                    extract: Extract::LogUpdate,
                },
                DialectArg::Socketio => SubSpec {
                    path: a.path.clone().unwrap_or_else(|| SIO_PATH.into()),
                    dialect: Dialect::SocketIo,
                    token: tok,
                    subscribe: Some(format!(
                        r#"42["start_log_stream",{{{filter}"container_id":"{id}","tail":0}}]"#
                    )),
                    extract: Extract::SioLogUpdate,
                },
            };
            (publisher, sub)
        }
    };
    base.publisher = publisher;
    base.sub = Some(sub);
    let params = json!({
        "subscribers": a.subscribers,
        "rate": a.rate,
        "payload": a.payload,
        "duration_s": a.duration.as_secs_f64(),
        "source": source_desc,
        "dialect": format!("{:?}", a.dialect).to_lowercase(),
        "container": container.as_ref().map(|c| c.name.clone()).or(a.container.clone()),
        "batch": (a.source == Source::RemoteAgent).then_some(a.batch),
        "agent_targets": a.common.agent_targets,
        "subscriber_targets": a.common.subscriber_targets,
    });
    Ok(with_procs(RunSpec {
        scenario: "fanout",
        common: a.common,
        target,
        params,
        base,
        agents: Vec::new(),
        storm: None,
        container,
        procs: 0,
    }))
}

/// Subscribers that only connect (and authenticate): `idle` and `storm`.
fn passive_subscriber(
    d: DialectArg,
    path: Option<&str>,
    common: &Common,
) -> anyhow::Result<SubSpec> {
    let (dialect, default_path) = match d {
        DialectArg::Json => (Dialect::Json, "/api/v1/ws"),
        DialectArg::Socketio => (Dialect::SocketIo, SIO_PATH),
        DialectArg::Msgpack => (Dialect::MsgPack, MSGPACK_PATH),
    };
    Ok(SubSpec {
        path: path.unwrap_or(default_path).to_string(),
        dialect,
        token: token(common)?,
        subscribe: None,
        extract: Extract::Nothing,
    })
}

/// # Errors
/// Bad target or token file.
pub fn idle(a: IdleArgs) -> anyhow::Result<RunSpec> {
    let target = parse_target(&a.common.target)?;
    let mut base = base_plan(&a.common, &target, a.hold)?;
    base.sub = Some(passive_subscriber(a.dialect, a.path.as_deref(), &a.common)?);
    base.subs_total = a.connections;
    let params = json!({
        "connections": a.connections,
        "hold_s": a.hold.as_secs_f64(),
        "dialect": format!("{:?}", a.dialect).to_lowercase(),
        "auth": base.sub.as_ref().is_some_and(|s| s.token.is_some()),
    });
    Ok(with_procs(RunSpec {
        scenario: "idle",
        common: a.common,
        target,
        params,
        base,
        agents: Vec::new(),
        storm: None,
        container: None,
        procs: 0,
    }))
}

/// # Errors
/// Bad target, or fewer keys in the file than agents.
pub fn agents(a: AgentsArgs) -> anyhow::Result<RunSpec> {
    let target = parse_target(&a.common.target)?;
    let text = std::fs::read_to_string(&a.api_keys_file)
        .with_context(|| format!("could not read {}", a.api_keys_file.display()))?;
    let keys: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if (keys.len() as u64) < a.agents {
        bail!(
            "{} holds {} keys but --agents is {}: the hub maps one key to one server",
            a.api_keys_file.display(),
            keys.len(),
            a.agents
        );
    }
    let mut base = base_plan(&a.common, &target, a.duration)?;
    if a.browser_placement == crate::cli::Placement::Other && base.sub_targets.len() < 2 {
        bail!("--browser-placement other needs at least two --subscriber-targets");
    }
    base.placement = a.browser_placement;
    base.sub = Some(if a.containers > 0 {
        SubSpec {
            path: "/api/v1/ws".into(),
            dialect: Dialect::Json,
            token: token(&a.common)?,
            subscribe: Some(r#"{"type":"subscribe_containers","server_id":"{sid}"}"#.into()),
            extract: Extract::ContainerChange,
        }
    } else {
        SubSpec {
            path: "/api/v1/ws/metrics/{sid}".into(),
            dialect: Dialect::Json,
            token: token(&a.common)?,
            subscribe: None,
            extract: Extract::Metrics,
        }
    });
    base.remote_containers = a.containers;
    base.change_every = a.change_every.max(1);
    base.subs_total = a.browsers;
    base.agents_total = a.agents;
    base.agent_interval_ms = a.interval.as_millis().max(1) as u64;
    let slots = (0..a.agents)
        .map(|i| AgentSlot {
            index: i,
            api_key: keys[i as usize].to_string(),
        })
        .collect();
    let params = json!({
        "agents": a.agents,
        "browsers": a.browsers,
        "interval_s": a.interval.as_secs_f64(),
        "duration_s": a.duration.as_secs_f64(),
        "containers": a.containers,
        "change_every": a.change_every,
        "browser_placement": format!("{:?}", a.browser_placement).to_lowercase(),
        "agent_targets": a.common.agent_targets,
        "subscriber_targets": a.common.subscriber_targets,
    });
    Ok(with_procs(RunSpec {
        scenario: "agents",
        common: a.common,
        target,
        params,
        base,
        agents: slots,
        storm: None,
        container: None,
        procs: 0,
    }))
}

/// # Errors
/// Bad target or token file.
pub fn storm(a: StormArgs) -> anyhow::Result<RunSpec> {
    let target = parse_target(&a.common.target)?;
    let mut base = base_plan(&a.common, &target, a.duration)?;
    base.sub = Some(passive_subscriber(a.dialect, a.path.as_deref(), &a.common)?);
    let params = json!({
        "connections": a.connections,
        "rate": a.rate,
        "duration_s": a.duration.as_secs_f64(),
        "dialect": format!("{:?}", a.dialect).to_lowercase(),
    });
    let storm = StormSpec {
        rate: a.rate,
        max: a.connections,
    };
    Ok(with_procs(RunSpec {
        scenario: "storm",
        common: a.common,
        target,
        params,
        base,
        agents: Vec::new(),
        storm: Some(storm),
        container: None,
        procs: 0,
    }))
}

impl RunSpec {
    /// The plan for worker `w` of `self.procs`.
    pub fn plan_for(&self, w: usize) -> WorkerPlan {
        let k = self.procs;
        let mut p = self.base.clone();
        p.worker = w;
        p.workers = k;
        p.subs = split_range(p.subs_total, k, w);
        let (a0, a1) = split_range(self.agents.len() as u64, k, w);
        p.agents = self.agents[a0 as usize..a1 as usize].to_vec();
        p.connect_rate = self.base.connect_rate / k as f64;
        p.connect_concurrency = (self.base.connect_concurrency / k).max(1);
        if w != 0 {
            p.publisher = None;
        }
        p.storm = self.storm.as_ref().map(|s| {
            let (m0, m1) = split_range(s.max, k, w);
            StormSpec {
                rate: s.rate / k as f64,
                max: m1 - m0,
            }
        });
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procs_follow_the_file_limit() {
        assert_eq!(procs_for(100, 20_000), 1);
        assert_eq!(procs_for(19_800, 20_000), 1);
        assert_eq!(procs_for(19_801, 20_000), 2);
        assert_eq!(procs_for(100_000, 20_000), 6);
        assert_eq!(procs_for(0, 20_000), 1);
    }

    #[test]
    fn storm_and_subscribers_split_across_workers() {
        use clap::Parser as _;
        let target = parse_target("127.0.0.1:7575").unwrap();
        let common = crate::cli::Cli::try_parse_from(["x", "storm", "--procs", "3"]).unwrap();
        let Some(crate::cli::Cmd::Storm(a)) = common.cmd else {
            panic!()
        };
        let mut spec = storm(a).unwrap();
        assert_eq!(spec.procs, 3);
        spec.base.subs_total = 10;
        spec.agents = (0..4)
            .map(|i| AgentSlot {
                index: i,
                api_key: format!("k{i}"),
            })
            .collect();
        let plans: Vec<WorkerPlan> = (0..3).map(|w| spec.plan_for(w)).collect();
        assert_eq!(plans.iter().map(|p| p.subs.1 - p.subs.0).sum::<u64>(), 10);
        assert_eq!(plans.iter().map(|p| p.agents.len()).sum::<usize>(), 4);
        assert_eq!(
            plans
                .iter()
                .map(|p| p.storm.as_ref().unwrap().max)
                .sum::<u64>(),
            1000
        );
        assert!((plans[1].storm.as_ref().unwrap().rate - 200.0 / 3.0).abs() < 1e-9);
        assert_eq!(plans[2].worker, 2);
        assert_eq!(plans[2].target, target.addr);
    }

    #[test]
    fn tls_flags_are_checked_before_any_worker() {
        use clap::Parser as _;
        let idle_of = |args: &[&str]| {
            let mut v = vec!["x", "idle"];
            v.extend_from_slice(args);
            let Some(crate::cli::Cmd::Idle(a)) = crate::cli::Cli::try_parse_from(v).unwrap().cmd
            else {
                panic!()
            };
            idle(a)
        };
        assert!(idle_of(&[]).unwrap().base.tls.is_none());
        let e = idle_of(&["--ca-file", "ca.pem"]).unwrap_err().to_string();
        assert!(e.contains("--ca-file needs --tls"), "{e}");
        let e = format!(
            "{:#}",
            idle_of(&["--tls", "--ca-file", "/nonexistent/ca.pem"]).unwrap_err()
        );
        assert!(e.contains("could not read --ca-file"), "{e}");
        let e = format!(
            "{:#}",
            idle_of(&[
                "--target",
                "wss://localhost:7443",
                "--ca-file",
                "/nonexistent/ca.pem"
            ])
            .unwrap_err()
        );
        assert!(e.contains("could not read --ca-file"), "{e}");
    }

    #[test]
    fn fanout_refuses_non_loopback_and_needs_a_key() {
        use clap::Parser as _;
        let cli = crate::cli::Cli::try_parse_from([
            "x",
            "fanout",
            "--target",
            "10.1.2.3:7575",
            "--api-key",
            "k",
        ])
        .unwrap();
        let Some(crate::cli::Cmd::Fanout(a)) = cli.cmd else {
            panic!()
        };
        assert!(fanout(a).unwrap_err().to_string().contains("only loopback"));
        let cli = crate::cli::Cli::try_parse_from(["x", "fanout"]).unwrap();
        let Some(crate::cli::Cmd::Fanout(a)) = cli.cmd else {
            panic!()
        };
        assert!(fanout(a).unwrap_err().to_string().contains("--api-key"));
        let cli = crate::cli::Cli::try_parse_from([
            "x",
            "fanout",
            "--source",
            "container",
            "--container",
            "web\"1",
        ])
        .unwrap();
        let Some(crate::cli::Cmd::Fanout(a)) = cli.cmd else {
            panic!()
        };
        let spec = fanout(a).unwrap();
        let sub = spec.base.sub.unwrap();
        let v: serde_json::Value = serde_json::from_str(sub.subscribe.as_deref().unwrap()).unwrap();
        assert_eq!(v["container_id"], "web\"1");
        assert_eq!(v["tail"], 0);
        assert!(spec.base.publisher.is_none());
    }

    fn agents_of(args: &[&str]) -> anyhow::Result<RunSpec> {
        use clap::Parser as _;
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let keys = std::env::temp_dir().join(format!("dw-lt-keys-{}-{n}", std::process::id()));
        std::fs::write(&keys, "k0\nk1\nk2\nk3\nk4\nk5\n").unwrap();
        let mut v = vec![
            "x".to_string(),
            "agents".into(),
            "--agents".into(),
            "6".into(),
            "--api-keys-file".into(),
            keys.to_string_lossy().into_owned(),
        ];
        v.extend(args.iter().map(|s| s.to_string()));
        let Some(crate::cli::Cmd::Agents(a)) = crate::cli::Cli::try_parse_from(v).unwrap().cmd
        else {
            panic!()
        };
        agents(a)
    }

    #[test]
    fn target_lists_take_commas_and_repeats_and_spread_round_robin() {
        let spec = agents_of(&[
            "--agent-targets",
            "127.0.0.1:7001,127.0.0.1:7002",
            "--agent-targets",
            "127.0.0.1:7003",
            "--subscriber-targets",
            "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003",
        ])
        .unwrap();
        let p = spec.plan_for(0);
        let port = |e: crate::plan::Endpoint| e.addr.port();
        let agent_ports: Vec<u16> = (0..6).map(|i| port(p.agent_endpoint(i))).collect();
        assert_eq!(agent_ports, vec![7001, 7002, 7003, 7001, 7002, 7003]);
        // Default placement: browser j on target j % n, whatever it watches.
        assert_eq!(port(p.sub_endpoint(4, Some(0))), 7002);
        assert_eq!(p.sub_endpoint(4, Some(0)).host_header, "127.0.0.1:7002");
        assert_eq!(
            listen_addrs(&p)
                .iter()
                .map(|a| a.port())
                .collect::<Vec<_>>(),
            vec![7001, 7002, 7003]
        );
        assert_eq!(spec.params["agent_targets"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn browser_placement_same_and_other() {
        let hubs = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003";
        let same = agents_of(&[
            "--agent-targets",
            hubs,
            "--subscriber-targets",
            hubs,
            "--browser-placement",
            "same",
        ])
        .unwrap()
        .plan_for(0);
        let other = agents_of(&[
            "--agent-targets",
            hubs,
            "--subscriber-targets",
            hubs,
            "--browser-placement",
            "other",
        ])
        .unwrap()
        .plan_for(0);
        for agent in 0..6u64 {
            let hub = same.agent_endpoint(agent).addr;
            // Browser number does not matter, the watched agent does.
            for j in [0u64, 1, 2, 17] {
                assert_eq!(same.sub_endpoint(j, Some(agent)).addr, hub);
                let o = other.sub_endpoint(j, Some(agent)).addr;
                assert_ne!(o, hub);
                assert_eq!(o, other.agent_endpoint(agent + 1).addr);
            }
        }
        // Without a known agent (idle, storm, fan-out) placement falls back to j % n.
        assert_eq!(other.sub_endpoint(2, None).addr.port(), 7003);
    }

    #[test]
    fn target_lists_default_to_target_and_stay_loopback() {
        let p = agents_of(&["--target", "127.0.0.1:7100"])
            .unwrap()
            .plan_for(0);
        assert_eq!(p.agent_endpoint(5).addr.port(), 7100);
        assert_eq!(p.sub_endpoint(5, Some(3)).addr.port(), 7100);
        assert_eq!(listen_addrs(&p).len(), 1);
        // Only --subscriber-targets given: agents stay on --target.
        let p = agents_of(&[
            "--target",
            "127.0.0.1:7100",
            "--subscriber-targets",
            "127.0.0.1:7101",
        ])
        .unwrap()
        .plan_for(0);
        assert_eq!(p.agent_endpoint(1).addr.port(), 7100);
        assert_eq!(p.sub_endpoint(1, None).addr.port(), 7101);
        assert_eq!(listen_addrs(&p).len(), 2);
        for flag in ["--agent-targets", "--subscriber-targets"] {
            let e = format!(
                "{:#}",
                agents_of(&[flag, "127.0.0.1:7001,10.0.0.7:7002"]).unwrap_err()
            );
            assert!(e.contains("only loopback") && e.contains(flag), "{e}");
        }
        let e = agents_of(&["--browser-placement", "other"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least two --subscriber-targets"), "{e}");
    }

    #[test]
    fn server_pid_repeats_and_lists() {
        use clap::Parser as _;
        let cli = crate::cli::Cli::try_parse_from([
            "x",
            "idle",
            "--server-pid",
            "11,12",
            "--server-pid",
            "13",
        ])
        .unwrap();
        let Some(crate::cli::Cmd::Idle(a)) = cli.cmd else {
            panic!()
        };
        assert_eq!(a.common.server_pid, vec![11, 12, 13]);
        let cli = crate::cli::Cli::try_parse_from(["x", "idle"]).unwrap();
        let Some(crate::cli::Cmd::Idle(a)) = cli.cmd else {
            panic!()
        };
        assert!(a.common.server_pid.is_empty());
    }
}
