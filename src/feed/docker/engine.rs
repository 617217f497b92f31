//! One engine session: connect, send the container table (`Up`), then turn
//! the container event stream into `Changed`/`Removed` until the engine goes
//! away.
//!
//! Invariants:
//! - No change is lost between the table and the events: the event stream
//!   is opened with `since` = the engine's clock read *before* the listing,
//!   so every later event is replayed (Docker buffers recent events) and
//!   re-checked against the current state.
//! - Events are handled in Docker's order; for each container of a batch of
//!   ready events, the last one triggers one inspection (see
//!   [`inspect_container`] for why not a listing). Its human `status` is
//!   computed the way Docker computes the listing's, so `Changed` and `Up`
//!   read alike.
//! - `Changed` is sent only when a container differs from what was last sent
//!   for it in something a client sees (see [`visibly_changed`]; the human
//!   `status` alone, which ages with the clock, is not a change), and
//!   `Removed` only for containers that were announced.

use std::collections::{BTreeMap, HashMap};

use bollard::Docker;
use bollard::models::{
    ContainerInspectResponse, ContainerState, ContainerStateStatusEnum, ContainerSummary,
    EventMessage, HealthStatusEnum,
};
use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{Sink, connect, error_text};
use crate::feed::DockerEvent;
use crate::feed::metrics::rfc3339_secs;
use crate::protocol::model::Container;

/// Container event actions that can change what a [`Container`] shows.
/// `destroy` is handled as removal. Health checks' `exec_*` noise is left out.
const WATCHED_ACTIONS: &[&str] = &[
    "create",
    "start",
    "restart",
    "stop",
    "die",
    "kill",
    "oom",
    "pause",
    "unpause",
    "rename",
    "update",
    "health_status",
    "destroy",
];
/// Events buffered between the stream reader and the handler.
const EVENT_QUEUE: usize = 1024;
/// Most events handled with one listing.
const EVENT_BATCH: usize = 256;

/// How a session ended.
#[derive(Debug)]
pub(super) struct SessionEnd {
    /// True when `Up` had been sent (so the loss must be reported).
    pub was_up: bool,
    pub reason: String,
}

/// Runs until the engine is unreachable or its event stream ends. Sends `Up`
/// and then hands the connected client to the main loop through `up`.
pub(super) async fn session(
    host: String,
    sink: Sink,
    up: mpsc::UnboundedSender<Docker>,
) -> SessionEnd {
    let fail = |was_up, reason: String| SessionEnd { was_up, reason };
    let docker = match connect(&host).await {
        Ok(d) => d,
        Err(e) => {
            return fail(
                false,
                format!("could not connect to docker at {host}: {}", error_text(&e)),
            );
        }
    };
    let since = match engine_time(&docker).await {
        Ok(t) => t,
        Err(e) => {
            return fail(
                false,
                format!("could not read docker's clock: {}", error_text(&e)),
            );
        }
    };
    let (ev_tx, mut ev_rx) = mpsc::channel(EVENT_QUEUE);
    let reader = tokio::spawn(read_events(docker.clone(), since, ev_tx));
    let _reader = AbortOnDrop(reader);

    let table = match list_containers(&docker, None).await {
        Ok(t) => t,
        Err(e) => {
            return fail(
                false,
                format!("could not list containers: {}", error_text(&e)),
            );
        }
    };
    let mut known: HashMap<String, Container> =
        table.iter().map(|c| (c.id.clone(), c.clone())).collect();
    log::info!("docker is up: {} containers", table.len());
    if !sink.send(DockerEvent::Up { containers: table }) {
        return fail(true, "the event loop is gone".into());
    }
    // The main loop cannot be gone while this task runs; ignore the result.
    let _ = up.send(docker.clone());

    let mut batch = Vec::with_capacity(EVENT_BATCH);
    loop {
        match ev_rx.recv().await {
            Some(Ok(ev)) => batch.push(ev),
            Some(Err(e)) => {
                return fail(
                    true,
                    format!("docker event stream failed: {}", error_text(&e)),
                );
            }
            None => return fail(true, "docker event stream ended".into()),
        }
        // Take whatever else is ready, so a burst costs one listing.
        let mut failure = None;
        while batch.len() < EVENT_BATCH {
            match ev_rx.try_recv() {
                Ok(Ok(ev)) => batch.push(ev),
                Ok(Err(e)) => {
                    failure = Some(format!("docker event stream failed: {}", error_text(&e)));
                    break;
                }
                Err(_) => break,
            }
        }
        if let Err(e) = apply_events(&docker, &sink, &mut known, &batch).await {
            return fail(
                true,
                format!("could not list containers: {}", error_text(&e)),
            );
        }
        batch.clear();
        if let Some(reason) = failure {
            return fail(true, reason);
        }
    }
}

/// Aborts a task when dropped (the session's event reader).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The engine's clock as Docker's `since` wants it (`seconds.nanoseconds`).
/// Falls back to this host's clock minus a second when the engine's time
/// cannot be read (for a local socket both are the same clock).
async fn engine_time(docker: &Docker) -> Result<String, bollard::errors::Error> {
    let info = docker.info().await?;
    if let Some(t) = info.system_time.as_deref().and_then(parse_rfc3339) {
        return Ok(format!("{}.{:09}", t.0, t.1));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(now.saturating_sub(1).to_string())
}

/// Parses RFC 3339 (`2026-11-23T15:09:44.632261483Z` or with `+02:00`) into
/// Unix seconds and nanoseconds.
pub fn parse_rfc3339(s: &str) -> Option<(i64, u32)> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut nanos: u32 = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = s.get(start..i)?;
        let digits = &frac[..frac.len().min(9)];
        nanos = format!("{digits:0<9}").parse().ok()?;
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' => 0,
        sign @ (b'+' | b'-') => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            let off = oh * 3600 + om * 60;
            if *sign == b'+' { off } else { -off }
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60 + sec - offset, nanos))
}

/// Reads the container event stream into `out` until it ends or fails (the
/// error is forwarded; dropping `out` tells the session the stream ended).
async fn read_events(
    docker: Docker,
    since: String,
    out: mpsc::Sender<Result<EventMessage, bollard::errors::Error>>,
) {
    let filters: HashMap<String, Vec<String>> = HashMap::from([
        ("type".to_string(), vec!["container".to_string()]),
        (
            "event".to_string(),
            WATCHED_ACTIONS.iter().map(|s| s.to_string()).collect(),
        ),
    ]);
    let opts = EventsOptions {
        since: Some(since),
        until: None,
        filters: Some(filters),
    };
    let mut stream = docker.events(Some(opts));
    while let Some(item) = stream.next().await {
        let failed = item.is_err();
        if out.send(item).await.is_err() || failed {
            break;
        }
    }
}

/// Sends what a batch of events changed, in Docker's order.
async fn apply_events(
    docker: &Docker,
    sink: &Sink,
    known: &mut HashMap<String, Container>,
    batch: &[EventMessage],
) -> Result<(), bollard::errors::Error> {
    let ids: Vec<Option<&str>> = batch
        .iter()
        .map(|ev| ev.actor.as_ref().and_then(|a| a.id.as_deref()))
        .collect();
    for (i, ev) in batch.iter().enumerate() {
        let Some(id) = ids[i] else { continue };
        // Only the last event of a container in the batch matters: the
        // inspection shows the state after all of them.
        if ids[i + 1..].contains(&Some(id)) {
            continue;
        }
        let action = ev.action.as_deref().unwrap_or("");
        log::debug!("docker event: {action} {id}");
        if action == "destroy" {
            if known.remove(id).is_some() {
                sink.send(DockerEvent::Removed { id: id.to_string() });
            }
            continue;
        }
        let known_image = known.get(id).map(|c| c.image.clone());
        let c = match inspect_container(docker, id, known_image).await {
            Ok(Some(c)) => c,
            // Gone already: `destroy` follows.
            Ok(None) => continue,
            Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => {
                log::warn!("could not inspect container {id}: {message}");
                continue;
            }
            Err(e) => return Err(e),
        };
        if visibly_changed(known.get(id), &c) {
            known.insert(id.to_string(), c.clone());
            sink.send(DockerEvent::Changed(c));
        }
    }
    Ok(())
}

/// Whether `new` shows a client something that `old` (what was last sent)
/// did not. Docker's human `status` is left out: it is derived from the
/// other fields plus the clock, so it differs between two inspections of an
/// unchanged container ("Up 3 seconds", "Up 5 seconds"). Comparing it made
/// `docker stop`'s `kill` event, seen while the container still runs, go out
/// as a `container_state_change` with `state: "running"` before `exited`.
fn visibly_changed(old: Option<&Container>, new: &Container) -> bool {
    let Some(old) = old else { return true };
    // Destructured so that a new field must be judged here.
    let Container {
        id,
        name,
        image,
        state,
        status: _,
        created,
        labels,
        started_at,
        exit_code,
        health,
    } = new;
    *id != old.id
        || *name != old.name
        || *image != old.image
        || *state != old.state
        || *created != old.created
        || *labels != old.labels
        || *started_at != old.started_at
        || *exit_code != old.exit_code
        || *health != old.health
}

/// One container's current state, `None` when it does not exist.
///
/// Inspection, not a listing: Docker emits some events (`pause`, `die`)
/// before it updates the snapshot that listings read, but while it holds the
/// container's lock, which inspection waits for. `known_image` keeps the
/// image as the table showed it (a listing shows the image id once the
/// container's tag points elsewhere; an inspection cannot tell).
pub(super) async fn inspect_container(
    docker: &Docker,
    id: &str,
    known_image: Option<String>,
) -> Result<Option<Container>, bollard::errors::Error> {
    match docker.inspect_container(id, None).await {
        Ok(r) => Ok(from_inspect(r, known_image, now_secs())),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn from_inspect(
    r: ContainerInspectResponse,
    known_image: Option<String>,
    now: f64,
) -> Option<Container> {
    let id = r.id?;
    let config = r.config.unwrap_or_default();
    let state = r.state.unwrap_or_default();
    let created = r
        .created
        .as_deref()
        .and_then(parse_rfc3339)
        .map_or(0, |t| t.0);
    Some(Container {
        id,
        name: r
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        image: known_image.or(config.image).unwrap_or_default(),
        state: state.status.map(|s| s.to_string()).unwrap_or_default(),
        status: human_status(&state, now),
        created: rfc3339_secs(u64::try_from(created).unwrap_or(0)),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        started_at: set_time(&state.started_at),
        exit_code: set_time(&state.finished_at).and(state.exit_code),
        health: state
            .health
            .as_ref()
            .and_then(|h| h.status)
            .filter(|h| {
                matches!(
                    h,
                    HealthStatusEnum::HEALTHY
                        | HealthStatusEnum::UNHEALTHY
                        | HealthStatusEnum::STARTING
                )
            })
            .map(|h| h.to_string()),
    })
}

/// Docker's time, or `None` for its zero time ("0001-01-01T00:00:00Z").
fn set_time(t: &Option<String>) -> Option<String> {
    t.as_deref()
        .filter(|t| !t.is_empty() && !t.starts_with("0001-01-01"))
        .map(str::to_string)
}

/// Docker's human status ("Up 3 minutes (healthy)", "Exited (0) 2 seconds
/// ago"), computed like the engine's `State.String()` so `Changed` reads
/// like the listing behind `Up`.
fn human_status(st: &ContainerState, now: f64) -> String {
    let at = |t: &Option<String>| -> Option<f64> {
        let t = t.as_deref()?;
        if t.starts_with("0001-01-01") {
            return None;
        }
        parse_rfc3339(t).map(|(s, n)| s as f64 + f64::from(n) / 1e9)
    };
    let since = |t: &Option<String>| human_duration(now - at(t).unwrap_or(now));
    let code = st.exit_code.unwrap_or(0);
    if st.running == Some(true) {
        if st.paused == Some(true) {
            return format!("Up {} (Paused)", since(&st.started_at));
        }
        if st.restarting == Some(true) {
            return format!("Restarting ({code}) {} ago", since(&st.finished_at));
        }
        let health = st.health.as_ref().and_then(|h| h.status);
        return match health {
            Some(HealthStatusEnum::STARTING) => {
                format!("Up {} (health: starting)", since(&st.started_at))
            }
            Some(h @ (HealthStatusEnum::HEALTHY | HealthStatusEnum::UNHEALTHY)) => {
                format!("Up {} ({h})", since(&st.started_at))
            }
            _ => format!("Up {}", since(&st.started_at)),
        };
    }
    if st.status == Some(ContainerStateStatusEnum::REMOVING) {
        return "Removal In Progress".into();
    }
    if st.dead == Some(true) {
        return "Dead".into();
    }
    if at(&st.started_at).is_none() {
        return "Created".into();
    }
    if at(&st.finished_at).is_none() {
        return String::new();
    }
    format!("Exited ({code}) {} ago", since(&st.finished_at))
}

/// go-units' `HumanDuration`, which Docker uses for statuses.
fn human_duration(secs: f64) -> String {
    let s = secs.max(0.0);
    let seconds = s as i64;
    let minutes = (s / 60.0) as i64;
    let hours = (s / 3600.0 + 0.5) as i64;
    match () {
        _ if seconds < 1 => "Less than a second".into(),
        _ if seconds == 1 => "1 second".into(),
        _ if seconds < 60 => format!("{seconds} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", (s / 3600.0) as i64 / 24 / 365),
    }
}

/// Lists every container (`ids`: only those, by full id).
pub(super) async fn list_containers(
    docker: &Docker,
    ids: Option<Vec<String>>,
) -> Result<Vec<Container>, bollard::errors::Error> {
    let filters = ids.map(|ids| HashMap::from([("id".to_string(), ids)]));
    let opts = ListContainersOptions {
        all: true,
        limit: None,
        size: false,
        filters,
    };
    let list = docker.list_containers(Some(opts)).await?;
    let table: Vec<Container> = list.into_iter().filter_map(to_container).collect();
    Ok(with_start_times(docker, table).await)
}

/// Inspections run at once while completing a listing.
const INSPECT_CONCURRENCY: usize = 16;

/// A listing has no start time; containers that ever ran get theirs (and
/// the exact exit code and health) from an inspection, a few at a time. A
/// container that vanished meanwhile keeps its listed form.
async fn with_start_times(docker: &Docker, table: Vec<Container>) -> Vec<Container> {
    futures_util::stream::iter(table)
        .map(|c| async move {
            if c.state == "created" {
                return c;
            }
            match inspect_container(docker, &c.id, Some(c.image.clone())).await {
                Ok(Some(full)) => full,
                _ => c,
            }
        })
        .buffered(INSPECT_CONCURRENCY)
        .collect()
        .await
}

/// Maps Docker's listing entry to the wire model.
fn to_container(s: ContainerSummary) -> Option<Container> {
    let id = s.id?;
    let names = s.names.unwrap_or_default();
    // A linked container also lists "/other/alias"; its own name has no
    // further slash.
    let name = names
        .iter()
        .map(|n| n.strip_prefix('/').unwrap_or(n))
        .find(|n| !n.contains('/'))
        .or_else(|| names.first().map(|n| n.trim_start_matches('/')))
        .unwrap_or_default()
        .to_string();
    let status = s.status.unwrap_or_default();
    Some(Container {
        id,
        name,
        image: s.image.unwrap_or_default(),
        state: s.state.map(|st| st.to_string()).unwrap_or_default(),
        created: rfc3339_secs(u64::try_from(s.created.unwrap_or(0)).unwrap_or(0)),
        labels: s
            .labels
            .unwrap_or_default()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        started_at: None,
        exit_code: exit_code_in(&status),
        health: health_in(&status),
        status,
    })
}

/// The exit code in a listing's status ("Exited (137) 2 hours ago").
fn exit_code_in(status: &str) -> Option<i64> {
    let rest = status
        .strip_prefix("Exited (")
        .or_else(|| status.strip_prefix("Restarting ("))?;
    rest.split(')').next()?.parse().ok()
}

/// The health in a listing's status ("Up 3 minutes (healthy)").
fn health_in(status: &str) -> Option<String> {
    let h = if status.ends_with("(health: starting)") {
        "starting"
    } else if status.ends_with("(unhealthy)") {
        "unhealthy"
    } else if status.ends_with("(healthy)") {
        "healthy"
    } else {
        return None;
    };
    Some(h.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A running container as an inspection shows it.
    fn running_inspect() -> ContainerInspectResponse {
        ContainerInspectResponse {
            id: Some("abc".into()),
            name: Some("/web".into()),
            created: Some("2026-11-23T15:00:00Z".into()),
            config: Some(bollard::models::ContainerConfig {
                image: Some("busybox:latest".into()),
                ..Default::default()
            }),
            state: Some(ContainerState {
                status: Some(ContainerStateStatusEnum::RUNNING),
                running: Some(true),
                started_at: Some("2026-11-23T15:00:01Z".into()),
                finished_at: Some("0001-01-01T00:00:00Z".into()),
                exit_code: Some(0),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_visible_differences_are_changes() {
        // `docker stop`'s `kill` event: inspected a few seconds after the
        // table, the container still runs; only the status text aged.
        let t0 = 1_795_446_005.0;
        let held = from_inspect(running_inspect(), None, t0).unwrap();
        let at_kill = from_inspect(running_inspect(), None, t0 + 4.0).unwrap();
        assert_eq!(held.status, "Up 4 seconds");
        assert_eq!(at_kill.status, "Up 8 seconds");
        assert_ne!(held, at_kill);
        assert!(!visibly_changed(Some(&held), &at_kill));

        // The `die` that follows: exited, with an exit code.
        let mut r = running_inspect();
        let st = r.state.as_mut().unwrap();
        st.status = Some(ContainerStateStatusEnum::EXITED);
        st.running = Some(false);
        st.finished_at = Some("2026-11-23T15:00:10Z".into());
        st.exit_code = Some(143);
        let exited = from_inspect(r, None, t0 + 5.0).unwrap();
        assert!(visibly_changed(Some(&held), &exited));

        // A container never sent is always a change; so is each other field.
        assert!(visibly_changed(None, &held));
        let edits: [fn(&mut Container); 9] = [
            |c| c.id.push('x'),
            |c| c.name.push('x'),
            |c| c.image.push('x'),
            |c| c.state = "paused".into(),
            |c| c.created.push('x'),
            |c| {
                c.labels.insert("k".into(), "v".into());
            },
            |c| c.started_at = Some("2026-11-23T15:09:00Z".into()),
            |c| c.exit_code = Some(1),
            |c| c.health = Some("unhealthy".into()),
        ];
        for (i, edit) in edits.iter().enumerate() {
            let mut c = held.clone();
            edit(&mut c);
            assert!(visibly_changed(Some(&held), &c), "field {i}");
        }
    }

    #[test]
    fn parses_engine_clock() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(
            parse_rfc3339("2026-11-23T15:09:44.632261483Z"),
            Some((1_795_446_584, 632_261_483))
        );
        assert_eq!(
            parse_rfc3339("2026-11-23T17:09:44.5+02:00"),
            Some((1_795_446_584, 500_000_000))
        );
        assert_eq!(
            parse_rfc3339("2000-02-29T00:00:00-01:30"),
            Some((951_787_800, 0))
        );
        assert_eq!(parse_rfc3339("garbage"), None);
        assert_eq!(parse_rfc3339("2026-11-23T15:09:44"), None);
    }

    #[test]
    fn maps_summary_to_container() {
        use bollard::models::ContainerSummaryStateEnum;
        let s = ContainerSummary {
            id: Some("abc".into()),
            names: Some(vec!["/web/db".into(), "/db".into()]),
            image: Some("busybox:latest".into()),
            state: Some(ContainerSummaryStateEnum::EXITED),
            status: Some("Exited (0) 2 seconds ago".into()),
            created: Some(1_795_446_584),
            labels: Some(HashMap::from([("k".to_string(), "v".to_string())])),
            ..Default::default()
        };
        let c = to_container(s).unwrap();
        assert_eq!(c.name, "db");
        assert_eq!(c.state, "exited");
        assert_eq!(c.created, "2026-11-23T15:09:44Z");
        assert_eq!(c.labels.get("k").map(String::as_str), Some("v"));
        assert!(to_container(ContainerSummary::default()).is_none());
    }

    #[test]
    fn human_durations_match_go_units() {
        assert_eq!(human_duration(0.4), "Less than a second");
        assert_eq!(human_duration(1.2), "1 second");
        assert_eq!(human_duration(59.9), "59 seconds");
        assert_eq!(human_duration(61.0), "About a minute");
        assert_eq!(human_duration(59.0 * 60.0), "59 minutes");
        assert_eq!(human_duration(3600.0), "About an hour");
        assert_eq!(human_duration(47.0 * 3600.0), "47 hours");
        assert_eq!(human_duration(3.0 * 86400.0), "3 days");
        assert_eq!(human_duration(20.0 * 86400.0), "2 weeks");
        assert_eq!(human_duration(100.0 * 86400.0), "3 months");
        assert_eq!(human_duration(800.0 * 86400.0), "2 years");
    }

    #[test]
    fn human_status_like_docker() {
        let t0 = "2026-11-23T15:09:44.5Z";
        let now = 1_795_446_584.5;
        let st = |f: &dyn Fn(&mut ContainerState)| {
            let mut s = ContainerState {
                started_at: Some("0001-01-01T00:00:00Z".into()),
                finished_at: Some("0001-01-01T00:00:00Z".into()),
                ..Default::default()
            };
            f(&mut s);
            human_status(&s, now)
        };
        assert_eq!(st(&|_| {}), "Created");
        assert_eq!(
            st(&|s| {
                s.running = Some(true);
                s.started_at = Some(t0.into());
            }),
            "Up Less than a second"
        );
        assert_eq!(
            st(&|s| {
                s.running = Some(true);
                s.paused = Some(true);
                s.started_at = Some("2026-11-23T15:08:44.5Z".into());
            }),
            "Up About a minute (Paused)"
        );
        assert_eq!(
            st(&|s| {
                s.running = Some(true);
                s.started_at = Some(t0.into());
                s.health = Some(bollard::models::Health {
                    status: Some(HealthStatusEnum::STARTING),
                    ..Default::default()
                });
            }),
            "Up Less than a second (health: starting)"
        );
        assert_eq!(
            st(&|s| {
                s.started_at = Some(t0.into());
                s.finished_at = Some("2026-11-23T15:09:42.5Z".into());
                s.exit_code = Some(137);
            }),
            "Exited (137) 2 seconds ago"
        );
    }
}
