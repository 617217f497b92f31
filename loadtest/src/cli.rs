//! Command-line interface: every flag, its default, and what it means.
//!
//! Owns argument parsing only; scenario.rs turns these into worker plans.
//! Every default lives here, in the `default_value` attributes.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "dockwire-loadtest",
    version,
    about = "Load generator for dockwire (and peer WebSocket/Socket.IO servers) on this host",
    long_about = "Load generator for dockwire and peer servers. Loopback targets only. \
                  Every run is bounded by --duration/--hold and by connection counts."
)]
pub struct Cli {
    /// Internal: run as a worker process driven over stdin/stdout.
    #[arg(long, hide = true)]
    pub worker: bool,
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// One publisher, N subscribers: delivery latency and throughput.
    Fanout(FanoutArgs),
    /// N connections that authenticate and sit idle: server RSS per connection.
    Idle(IdleArgs),
    /// N agents sending metrics, M browsers watching: agent→browser latency.
    Agents(AgentsArgs),
    /// Connect/disconnect churn: connections per second and failures.
    Storm(StormArgs),
    /// Print reports from earlier `--json` runs side by side (ratios vs the first).
    Compare(CompareArgs),
    /// Misbehaving clients (slowloris, ping/message flood, garbage, a
    /// non-reading log follower): how many the daemon ends, and how fast.
    Attack(AttackArgs),
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// Flags every scenario shares.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Target HOST:PORT (or ws://HOST:PORT); must be a loopback address.
    #[arg(long, default_value = "127.0.0.1:7575")]
    pub target: String,
    /// Hubs the agents and the publisher connect to (repeat or comma list,
    /// each loopback): agent i uses target i % n, the publisher the first;
    /// default: --target.
    #[arg(long, value_delimiter = ',')]
    pub agent_targets: Vec<String>,
    /// Hubs the subscribers/browsers connect to (repeat or comma list, each
    /// loopback): subscriber i uses target i % n (but see `agents
    /// --browser-placement`); default: --target.
    #[arg(long, value_delimiter = ',')]
    pub subscriber_targets: Vec<String>,
    /// Worker processes to spread connections over (0: enough for the open-file limit).
    #[arg(long, default_value_t = 0)]
    pub procs: usize,
    /// Print the final report as JSON on stdout (the table goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
    /// Name shown in the report (e.g. the server under test).
    #[arg(long)]
    pub label: Option<String>,
    /// Pid of the server, for CPU and RSS (default: whoever listens on each
    /// target's port). Repeat it (or give a comma list) for several hubs: the
    /// report sums their CPU seconds and RSS.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Do not look up or sample the server process.
    #[arg(long)]
    pub no_server_stats: bool,
    /// JWT for browser connections (JSON `auth` message / Socket.IO CONNECT auth).
    #[arg(long, conflicts_with = "token_file")]
    pub token: Option<String>,
    /// File holding the JWT.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Bound on one connection's setup: TCP connect + upgrade + auth/subscribe.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Connections in setup at once, whole run (split over workers). Kept
    /// under 128, the listen backlog many servers use, so SYN drops do not
    /// add 1 s retries.
    #[arg(long, default_value_t = 100)]
    pub connect_concurrency: usize,
    /// Connects started per second, whole run (0: as fast as --connect-concurrency allows).
    #[arg(long, default_value_t = 0.0)]
    pub connect_rate: f64,
    /// Bound on each setup phase (publishers/agents, then subscribers).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub setup_timeout: Duration,
    /// Connections per loopback source address (127.0.0.2, .3, ...); 0: no binding.
    #[arg(long, default_value_t = 10_000)]
    pub per_addr: u64,
    /// Pause between "all connected" and the start of the window (lets subscriptions settle).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub settle: Duration,
    /// Time after the window in which in-flight deliveries still count.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Spin instead of sleeping in epoll (costs a full core per worker; keeps
    /// the client's CPU awake so wake-up latency is not charged to the server).
    #[arg(long)]
    pub busy_poll: bool,
    /// Offer permessage-deflate on every connection and inflate what the
    /// server sends compressed (one inflater per worker, no context kept).
    #[arg(long)]
    pub deflate: bool,
    /// Largest server message accepted (bigger ones end that connection).
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Speak TLS (wss://) on every connection, verifying the server's
    /// certificate against the --target host; every connection makes a
    /// full handshake (no session resumption). Implied by a wss:// target.
    #[arg(long)]
    pub tls: bool,
    /// PEM CA certificate(s) to trust with --tls (default: the system's roots).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Source {
    /// An agent connection sending `log` messages; subscribers on /api/v1/ws/logs/{server_id}.
    Agent,
    /// A container printing stamp lines; subscribers send `start_log_stream`.
    Container,
    /// A Docker agent (SPEC 6) with one container whose lines it sends as
    /// `log_batch`; subscribers send `start_log_stream` with its server_id.
    RemoteAgent,
}

/// Which subscriber target a browser of the `agents` scenario uses.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, serde::Serialize, serde::Deserialize,
)]
pub enum Placement {
    /// Browser j on subscriber target j % m.
    #[default]
    Index,
    /// On the hub of the agent it watches: subscriber target i % m.
    Same,
    /// On the next hub: subscriber target (i + 1) % m.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DialectArg {
    Json,
    Socketio,
    /// `/api/v1/ws?format=msgpack`: the JSON dialect as MessagePack.
    Msgpack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Peer {
    /// Any Socket.IO v4 server implementing the relay in peers/README.md.
    Socketio,
    /// A plain WebSocket relay (peers/tokio-tungstenite).
    WsRelay,
}

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value_t = 100)]
    pub subscribers: u64,
    /// Publisher messages (or container lines) per second.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Payload size in bytes (the stamp line / relay payload).
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    #[arg(long, value_enum, default_value = "agent")]
    pub source: Source,
    /// Agent API key for `--source agent`.
    #[arg(long, conflicts_with = "api_key_file")]
    pub api_key: Option<String>,
    #[arg(long)]
    pub api_key_file: Option<PathBuf>,
    /// Container (id or name) whose logs subscribers follow, for `--source container`
    /// when you run the container yourself (lines must start with a ns timestamp).
    #[arg(long)]
    pub container: Option<String>,
    /// Start the container ourselves (`docker run IMAGE cat FIFO`) and feed it
    /// stamp lines at --rate.
    #[arg(long)]
    pub spawn_container: bool,
    /// Image for --spawn-container (needs `cat`).
    #[arg(long, env = "DOCKWIRE_TEST_IMAGE")]
    pub image: Option<String>,
    /// docker CLI to use for --spawn-container (DOCKER_HOST is honoured).
    #[arg(long, default_value = "docker")]
    pub docker: String,
    /// Subscriber dialect (socketio needs --source container).
    #[arg(long, value_enum, default_value = "json")]
    pub dialect: DialectArg,
    /// Drive a comparison peer instead of dockwire.
    #[arg(long, value_enum)]
    pub peer: Option<Peer>,
    /// Override the subscriber path (`{sid}` is replaced by the server_id).
    #[arg(long)]
    pub path: Option<String>,
    /// Fewest lines in one `log_batch` for `--source remote-agent` (lines
    /// due are held until this many are, e.g. 200 every 10 ms at 20,000/s).
    #[arg(long, default_value_t = 200)]
    pub batch: usize,
    /// With --source container: the server whose engine runs the container
    /// (a remote agent's server_id, sent in `start_log_stream`); default: the local one.
    #[arg(long)]
    pub server_id: Option<String>,
    /// With --source container: a server-side log filter sent in
    /// `start_log_stream` (SPEC 12), a JSON object such as
    /// '{"pattern":"^\\d+ \\d*00 "}' (stamp lines whose seq ends in 00: 1 in 100).
    /// `{i}` in it is replaced by the subscriber's number (distinct filters).
    #[arg(long)]
    pub filter: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value_t = 1000)]
    pub connections: u64,
    /// How long the connections sit idle once all are up.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub hold: Duration,
    #[arg(long, value_enum, default_value = "json")]
    pub dialect: DialectArg,
    /// Path to connect to (default /api/v1/ws, or the Socket.IO path).
    #[arg(long)]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct AgentsArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value_t = 100)]
    pub agents: u64,
    /// Metrics interval per agent (agents are staggered over it).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Browsers on /api/v1/ws/metrics/{server_id} (with --containers: on
    /// /api/v1/ws sending subscribe_containers), round robin over the agents.
    #[arg(long, default_value_t = 100)]
    pub browsers: u64,
    /// Play Docker agents (SPEC 6) with this many containers each: `hello`,
    /// the table, `container_stats` every --interval (always, not only after
    /// `subscribe_stats`) and stamped `container_state_change`s; 0: host metrics.
    #[arg(long, default_value_t = 0)]
    pub containers: u32,
    /// With --containers: one `container_state_change` every this many intervals.
    #[arg(long, default_value_t = 1)]
    pub change_every: u64,
    /// One API key per line; agent i uses line i.
    #[arg(long)]
    pub api_keys_file: PathBuf,
    /// Where a browser connects relative to the agent whose server it
    /// watches (agent i is on agent target i % n): `index` (browser j on
    /// subscriber target j % m, whatever it watches), `same` (subscriber
    /// target i % m: the agent's own hub when both lists name the same hubs
    /// in the same order), `other` (subscriber target (i + 1) % m: another hub).
    #[arg(long, value_enum, default_value = "index")]
    pub browser_placement: Placement,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct StormArgs {
    #[command(flatten)]
    pub common: Common,
    /// Most connections to make in total.
    #[arg(long, default_value_t = 1000)]
    pub connections: u64,
    /// Connections started per second.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    #[arg(long, value_enum, default_value = "json")]
    pub dialect: DialectArg,
    #[arg(long)]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// NAME=REPORT.json, the first is the baseline.
    #[arg(required = true)]
    pub reports: Vec<String>,
}

/// The attacks of `dockwire-loadtest attack` (see attack.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AttackKind {
    /// HTTP heads sent a byte at a time and never finished.
    Slowloris,
    /// Unauthenticated upgraded sockets sending pings and junk messages without reading.
    Flood,
    /// Random bytes as the HTTP head (even connections) or as frames (odd ones;
    /// every fourth negotiates permessage-deflate and sends a deflate bomb first).
    Garbage,
    /// Authenticated sockets following --container's logs that never read.
    Nonreader,
}

impl AttackKind {
    pub fn name(self) -> &'static str {
        match self {
            AttackKind::Slowloris => "slowloris",
            AttackKind::Flood => "flood",
            AttackKind::Garbage => "garbage",
            AttackKind::Nonreader => "nonreader",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct AttackArgs {
    /// Target HOST:PORT (or ws://HOST:PORT); must be a loopback address.
    #[arg(long, default_value = "127.0.0.1:7575")]
    pub target: String,
    #[arg(long, value_enum)]
    pub kind: AttackKind,
    /// Attacking connections, one thread each (at most 500).
    #[arg(long, default_value_t = 20)]
    pub connections: u64,
    /// How long the attack lasts; connections still open then count as held.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub duration: Duration,
    /// JWT for `nonreader` (sent in the `auth` message).
    #[arg(long)]
    pub token: Option<String>,
    /// Container (id or name) whose logs `nonreader` follows.
    #[arg(long)]
    pub container: Option<String>,
    /// Seed of the random bytes (a run can be replayed).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}
