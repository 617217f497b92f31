//! `dockwire-loadtest`: measures a WebSocket server on this host — delivery
//! latency, fan-out throughput, memory per connection, connection churn —
//! against dockwire or a comparison peer.
//!
//! Layout: cli (flags) → scenario (plans) → coord (worker processes, report);
//! worker/ is the mio event loop each worker process runs; wsproto, payload,
//! stats, procfs, target and report are the pieces both sides share.
//! Only loopback targets are accepted, and every run ends on its own.

mod attack;
mod cli;
mod container;
mod coord;
mod payload;
mod plan;
mod procfs;
mod report;
mod scenario;
mod stats;
mod target;
mod tls;
mod worker;
mod wsproto;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;

use cli::{Cli, Cmd};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = if cli.worker {
        worker::main()
    } else {
        match cli.cmd {
            Some(cmd) => run(cmd),
            None => {
                eprintln!(
                    "dockwire-loadtest: pick a scenario (fanout, idle, agents, storm, attack) or compare; see --help"
                );
                return ExitCode::from(2);
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dockwire-loadtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Cmd) -> anyhow::Result<()> {
    let spec = match cmd {
        Cmd::Fanout(a) => scenario::fanout(a)?,
        Cmd::Idle(a) => scenario::idle(a)?,
        Cmd::Agents(a) => scenario::agents(a)?,
        Cmd::Storm(a) => scenario::storm(a)?,
        Cmd::Compare(a) => return compare(&a.reports),
        Cmd::Attack(a) => return attack::run(a),
    };
    let json = spec.common.json;
    let report = coord::run(spec)?;
    let table = report::render(&report);
    if json {
        eprint!("{table}");
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{table}");
    }
    if !report.complete {
        anyhow::bail!("not every worker reported; numbers above are partial");
    }
    Ok(())
}

fn compare(items: &[String]) -> anyhow::Result<()> {
    let mut named = Vec::new();
    for item in items {
        let (name, path) = item
            .split_once('=')
            .with_context(|| format!("expected NAME=REPORT.json, got {item:?}"))?;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("could not read {path}"))?;
        let r: report::Report = serde_json::from_str(&text)
            .with_context(|| format!("could not parse report {path}"))?;
        named.push((name.to_string(), r));
    }
    print!("{}", report::compare(&named));
    Ok(())
}
