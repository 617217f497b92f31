//! `dockwire`: args -> config -> logger -> threads -> server.run().
//!
//! Subcommands: `serve` (default), `agent`, `check-config`, `keygen`,
//! `token`, `passwd`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use dockwire::config::{Config, Overrides};
use dockwire::hub::Hub;
use dockwire::server::{Server, reload, system};
use dockwire::{agent, auth, feed};

mod password;

#[derive(Parser)]
#[command(
    name = "dockwire",
    version,
    about = "WebSocket hub for busy Docker hosts"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Serve(ServeArgs),
    /// Validate a config file and exit (non-zero with a message when invalid).
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Write a first, secure config (random JWT secret, an admin user with a
    /// generated password printed once) and say what to do next.
    Init {
        /// Where to write it (refused if it exists).
        #[arg(long, default_value = dockwire::init::DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Print a new agent API key: with --name, the hub's `[[agents]]` lines
    /// and the exact commands (and a systemd unit) for the new host.
    Keygen {
        /// The agent's name in the hub's server list.
        #[arg(long)]
        name: Option<String>,
        /// The hub's agent URL to put in the printed command.
        #[arg(long, requires = "name")]
        hub: Option<String>,
    },
    /// Print an HS256 JWT for a browser.
    Token {
        #[arg(long)]
        secret_file: PathBuf,
        #[arg(long)]
        sub: String,
        #[arg(long, default_value = "viewer")]
        role: String,
        /// How long the token is valid: at least 1s (e.g. 30m, 12h, 7d).
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: Duration,
    },
    /// Run as an agent connected to a hub: pushes host metrics and followed log
    /// files and, with a Docker engine (--docker-host, DOCKER_HOST or the local
    /// socket), its containers, their logs and usage; runs the allowed commands
    /// and the docker actions the hub relays.
    Agent(AgentArgs),
    /// Read a password (no echo on a terminal; one line from a pipe) and
    /// print the `[[users]]` lines holding its argon2id hash.
    Passwd {
        /// The user's login name.
        name: String,
        #[arg(long)]
        role: String,
    },
}

#[derive(clap::Args, Default)]
struct ServeArgs {
    /// Config file (default /etc/dockwire/dockwire.toml when it exists).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address, overrides `listen` in the file.
    #[arg(long)]
    listen: Option<String>,
}

#[derive(clap::Args)]
struct AgentArgs {
    /// wss://HOST:PORT/api/v1/agents/ws (ws:// only to this host, or with
    /// --insecure-plaintext). Repeatable: hubs are tried in order, the next
    /// one after a lost connection, each with its own backoff.
    #[arg(long, required = true)]
    hub: Vec<String>,
    /// Trust only the CA certificates in this PEM file for wss:// hubs
    /// (default: the system's root certificates).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Allow ws:// to a hub on another host: the API key and everything the
    /// agent sends cross the network in clear.
    #[arg(long)]
    insecure_plaintext: bool,
    #[arg(long)]
    api_key_file: PathBuf,
    /// An exact command the hub may run (argv split on whitespace, no shell). Repeatable.
    #[arg(long = "allow-command")]
    allow_command: Vec<String>,
    /// A log file to follow like `tail -F`. Repeatable.
    #[arg(long = "log-file")]
    log_file: Vec<PathBuf>,
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    metrics_interval: Duration,
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    command_timeout: Duration,
    /// The Docker engine whose containers, logs and usage this agent serves
    /// (and that docker_command acts on): unix:///path or tcp://host:port.
    /// Default: DOCKER_HOST, else unix:///var/run/docker.sock when it exists.
    /// Without an engine the agent serves metrics, log files and commands only.
    #[arg(long)]
    docker_host: Option<String>,
    /// Serve no Docker at all, even when a socket is there.
    #[arg(long, conflicts_with = "docker_host")]
    no_docker: bool,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(a) => serve(a),
        Command::CheckConfig { config } => check_config(config),
        Command::Init { config } => dockwire::init::write_initial_config(&config)
            .map(|w| print!("{}", dockwire::init::next_steps(&w))),
        Command::Keygen { name: None, .. } => {
            print!("{}", auth::keygen_output());
            Ok(())
        }
        Command::Keygen {
            name: Some(name),
            hub,
        } => keygen_for(&name, hub.as_deref()),
        Command::Token {
            secret_file,
            sub,
            role,
            ttl,
        } => token(&secret_file, &sub, &role, ttl),
        Command::Agent(a) => run_agent(a),
        Command::Passwd { name, role } => passwd(&name, &role),
    };
    if let Err(e) = result {
        eprintln!("dockwire: {e:#}");
        std::process::exit(1);
    }
}

fn keygen_for(name: &str, hub: Option<&str>) -> anyhow::Result<()> {
    dockwire::init::check_agent_name(name).map_err(anyhow::Error::msg)?;
    if let Some(url) = hub {
        let parsed = agent::HubUrl::parse(url)?;
        if !parsed.tls && !parsed.is_loopback() {
            bail!(
                "--hub {url}: an agent on another host needs wss:// (turn on [tls] on the hub); \
                 ws:// would send its key in clear"
            );
        }
    }
    let key = auth::generate_api_key();
    print!("{}", dockwire::init::keygen_text(&key, name, hub));
    Ok(())
}

fn check_config(path: Option<PathBuf>) -> anyhow::Result<()> {
    let c = Config::load(path.as_deref(), &Overrides::default())?;
    if let Some(note) = &c.listen_note {
        println!("{note}");
    }
    println!(
        "config OK: listen {}, server_id {}, {} agent key(s), browser auth {}",
        c.listen,
        c.server_id,
        c.agents.len(),
        if c.auth_enabled() { "on" } else { "off" }
    );
    Ok(())
}

fn token(
    secret_file: &std::path::Path,
    sub: &str,
    role: &str,
    ttl: Duration,
) -> anyhow::Result<()> {
    let role =
        auth::Role::parse(role).with_context(|| format!("role {role:?}: use viewer or admin"))?;
    if sub.is_empty() {
        bail!("--sub must not be empty");
    }
    // The error names the file.
    let secret = auth::load_secret(secret_file)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    println!("{}", auth::sign_token(&secret, sub, role, ttl, now)?);
    Ok(())
}

/// `--ttl`: a duration of at least a second. Tokens expire at whole seconds,
/// so a shorter one would be printed already expired.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if ttl < Duration::from_secs(1) {
        return Err(format!(
            "{text:?} would print a token that is already expired; give at least 1s, e.g. 1h"
        ));
    }
    Ok(ttl)
}

fn passwd(name: &str, role: &str) -> anyhow::Result<()> {
    let role =
        auth::Role::parse(role).with_context(|| format!("role {role:?}: use viewer or admin"))?;
    if name.is_empty()
        || name.len() > auth::users::MAX_NAME_LEN
        || name.chars().any(char::is_control)
    {
        bail!(
            "the name must be 1 to {} bytes without control characters",
            auth::users::MAX_NAME_LEN
        );
    }
    let password = password::read()?;
    let hash = auth::users::hash_password(password.as_bytes()).map_err(anyhow::Error::msg)?;
    print!("{}", auth::users::passwd_text(name, role, &hash));
    Ok(())
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        listen: args.listen,
    };
    let config = Config::load(args.config.as_deref(), &overrides)?;
    if let Some(note) = &config.listen_note {
        log::info!("{note}");
    }
    match system::raise_nofile_limit() {
        Ok(n) => log::debug!("open-file limit: {n}"),
        Err(e) => log::warn!("could not raise the open-file limit: {e}"),
    }
    let (poll, listener, waker) = Server::bind(&config)?;
    let shutdown = Arc::new(AtomicBool::new(false));
    let reload = reload::reload_flag();
    system::handle_signals(shutdown.clone(), reload.clone(), waker.clone())
        .context("could not install signal handlers")?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let docker = feed::docker::spawn(config.docker_host.clone(), tx.clone(), waker.clone())
        .context("could not start the Docker thread")?;
    let cluster = match &config.cluster {
        Some(settings) => Some((
            dockwire::cluster::spawn(settings.clone(), tx.clone(), waker.clone())
                .context("could not start the cluster thread")?,
            settings.hub_id.clone(),
        )),
        None => None,
    };
    feed::metrics::spawn(config.metrics_interval, tx, waker.clone())
        .context("could not start the metrics thread")?;
    log::info!(
        "dockwire listening on {}://{} (server_id {}, browser auth {}, {} agent key(s))",
        if config.tls.is_some() {
            "https"
        } else {
            "http"
        },
        config.listen,
        config.server_id,
        if config.auth_enabled() { "on" } else { "off" },
        config.agents.len()
    );
    if config.jwt_secret_generated {
        log::warn!(
            "[[users]] are set but [auth] jwt_secret_file is not: using a random session \
             secret, so logins do not survive a restart"
        );
    }
    let notifier = if config.notifiers.is_empty() {
        None
    } else {
        Some(
            dockwire::notify::Notifier::spawn(&config.notifiers)
                .context("could not start the notifiers")?,
        )
    };
    let tls = match &config.tls {
        Some(files) => Some(
            dockwire::transport::tls::load_server_config(&files.cert_file, &files.key_file)
                .context("could not set up TLS")?,
        ),
        None => None,
    };
    let mut hub = Hub::new(config, Some(docker), std::time::Instant::now());
    if let Some((link, hub_id)) = cluster {
        hub.set_cluster(link, hub_id);
    }
    if let Some(n) = notifier {
        hub.set_notifier(n);
    }
    let mut server = Server::new(poll, listener, hub, rx, shutdown);
    server.set_tls(tls);
    let login_waker = waker.clone();
    server
        .enable_logins(Arc::new(move || {
            let _ = login_waker.wake();
        }))
        .context("could not start the login thread")?;
    // SIGHUP reads the same file with the same flags again.
    let path = args.config;
    server.enable_reload(reload::ReloadSource {
        requested: reload,
        load: Box::new(move || Config::load(path.as_deref(), &overrides)),
    });
    system::sd_notify("READY=1");
    let result = server.run();
    system::sd_notify("STOPPING=1");
    result.context("event loop failed")
}

fn run_agent(a: AgentArgs) -> anyhow::Result<()> {
    let key = agent::read_api_key_file(&a.api_key_file)?;
    let mut opts = agent::AgentOptions::new(String::new(), key);
    opts.hubs = a.hub;
    opts.ca_file = a.ca_file;
    opts.insecure_plaintext = a.insecure_plaintext;
    opts.allow_commands = a.allow_command;
    opts.log_files = a.log_file;
    opts.metrics_interval = a.metrics_interval;
    opts.command_timeout = a.command_timeout;
    opts.docker_host = a.docker_host;
    opts.no_docker = a.no_docker;
    let shutdown = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(libc::SIGTERM, shutdown.clone())?;
    signal_hook::flag::register(libc::SIGINT, shutdown.clone())?;
    agent::run(opts, shutdown)
}
