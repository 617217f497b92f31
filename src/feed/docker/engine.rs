//! One engine session: connect, send the container table (`Up`), then turn
//! the container event stream into `Changed`/`Removed` until the engine goes
//! away.
//!
//! Invariants:
//! - No change is lost between the table and the events: the event stream
//!   is opened with `since` = the engine's clock read *before* the listing,
//!   so every later event is replayed (Docker buffers recent events) and
//!   re-checked against the current state.
//! - Events are handled in Docker's order. Each batch of ready events costs
//!   one listing filtered by id, so `Changed` carries the same fields (and
//!   the same human `status`) as `Up`.
//! - `Changed` is sent only when a container differs from what was last sent
//!   for it, and `Removed` only for containers that were announced.

use std::collections::{BTreeMap, HashMap};

use bollard::Docker;
use bollard::models::{ContainerSummary, EventMessage};
use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{Sink, connect, error_text};
use crate::feed::DockerEvent;
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
pub(super) async fn session(host: String, sink: Sink, up: mpsc::UnboundedSender<Docker>) -> SessionEnd {
    let fail = |was_up, reason: String| SessionEnd { was_up, reason };
    let docker = match connect(&host).await {
        Ok(d) => d,
        Err(e) => return fail(false, format!("could not connect to docker at {host}: {}", error_text(&e))),
    };
    let since = match engine_time(&docker).await {
        Ok(t) => t,
        Err(e) => return fail(false, format!("could not read docker's clock: {}", error_text(&e))),
    };
    let (ev_tx, mut ev_rx) = mpsc::channel(EVENT_QUEUE);
    let reader = tokio::spawn(read_events(docker.clone(), since, ev_tx));
    let _reader = AbortOnDrop(reader);

    let table = match list_containers(&docker, None).await {
        Ok(t) => t,
        Err(e) => return fail(false, format!("could not list containers: {}", error_text(&e))),
    };
    let mut known: HashMap<String, Container> = table.iter().map(|c| (c.id.clone(), c.clone())).collect();
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
            Some(Err(e)) => return fail(true, format!("docker event stream failed: {}", error_text(&e))),
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
            return fail(true, format!("could not list containers: {}", error_text(&e)));
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
fn parse_rfc3339(s: &str) -> Option<(i64, u32)> {
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
    let (y, m) = if mo <= 2 { (y - 1, mo + 9) } else { (y, mo - 3) };
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
        ("event".to_string(), WATCHED_ACTIONS.iter().map(|s| s.to_string()).collect()),
    ]);
    let opts = EventsOptions { since: Some(since), until: None, filters: Some(filters) };
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
    let ids: Vec<Option<String>> = batch.iter().map(|ev| ev.actor.as_ref().and_then(|a| a.id.clone())).collect();
    let mut wanted: Vec<String> = ids.iter().flatten().cloned().collect();
    wanted.sort();
    wanted.dedup();
    if wanted.is_empty() {
        return Ok(());
    }
    let current: HashMap<String, Container> = list_containers(docker, Some(wanted))
        .await?
        .into_iter()
        .map(|c| (c.id.clone(), c))
        .collect();
    for (i, ev) in batch.iter().enumerate() {
        let Some(id) = ids[i].as_deref() else { continue };
        // Only the last event of a container in the batch matters: the
        // listing already shows the state after all of them.
        if ids[i + 1..].iter().any(|later| later.as_deref() == Some(id)) {
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
        // Missing from the listing: it is being removed; `destroy` follows.
        let Some(c) = current.get(id) else { continue };
        if known.get(id) != Some(c) {
            known.insert(id.to_string(), c.clone());
            sink.send(DockerEvent::Changed(c.clone()));
        }
    }
    Ok(())
}

/// Lists every container (`ids`: only those, by full id).
pub(super) async fn list_containers(
    docker: &Docker,
    ids: Option<Vec<String>>,
) -> Result<Vec<Container>, bollard::errors::Error> {
    let filters = ids.map(|ids| HashMap::from([("id".to_string(), ids)]));
    let opts = ListContainersOptions { all: true, limit: None, size: false, filters };
    let list = docker.list_containers(Some(opts)).await?;
    Ok(list.into_iter().filter_map(to_container).collect())
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
    Some(Container {
        id,
        name,
        image: s.image.unwrap_or_default(),
        state: s.state.map(|st| st.to_string()).unwrap_or_default(),
        status: s.status.unwrap_or_default(),
        created: rfc3339(s.created.unwrap_or(0)),
        labels: s.labels.unwrap_or_default().into_iter().collect::<BTreeMap<_, _>>(),
    })
}

/// Unix seconds as RFC 3339 UTC.
fn rfc3339(secs: i64) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_engine_clock() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(
            parse_rfc3339("2026-11-23T15:09:44.632261483Z"),
            Some((1_795_446_584, 632_261_483))
        );
        assert_eq!(parse_rfc3339("2026-11-23T17:09:44.5+02:00"), Some((1_795_446_584, 500_000_000)));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00-01:30"), Some((951_787_800, 0)));
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
}
