//! Notifiers: every alert change POSTed to the webhooks of `[[notifiers]]`
//! (json, Slack, Discord, ntfy), never from the event loop.
//!
//! The hub calls [`Notifier::notify`] on the loop thread; it only filters
//! (events, rules) and `try_send`s onto one bounded crossbeam channel per
//! notifier. Each notifier has its own thread, so a slow or dead endpoint
//! delays nobody else. The thread posts with `ureq` (rustls for `https://`),
//! one change at a time and in order: a failed POST is retried with
//! exponential backoff (1 s doubling to 60 s) for up to [`RETRY_FOR`] after
//! the change, while later changes wait in the channel.
//!
//! Invariants:
//! - Memory is bounded: at most [`QUEUE`] changes wait per notifier; past
//!   it a change is dropped and counted (`outcome="dropped"`).
//! - Outcomes (`sent`, `retried` per retry, `failed`, `dropped`) are
//!   atomics shared with the loop, which renders them on `/metrics`.
//! - A webhook URL's path, query and user info are secrets: only
//!   `scheme://host[:port]` ([`redact_url`]) is ever logged or shown.
//! - A thread ends when its channel closes (the hub dropped the
//!   [`Notifier`]), also in the middle of a backoff.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use serde_json::{Value, json};

use crate::config::{NotifierConfig, NotifyFormat};

/// Changes waiting per notifier, at most.
pub const QUEUE: usize = 256;
/// How long after the change a POST is still retried.
pub const RETRY_FOR: Duration = Duration::from_secs(600);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Whole-request and connect timeouts of one POST.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Discord refuses `content` over 2,000 characters.
const MAX_CHAT_CHARS: usize = 1900;

/// Errors starting the notifiers. Fatal at start-up.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    // The cause is in the message, not a `source` (chains would repeat it).
    #[error("could not start the notifier thread for {0}: {1}")]
    Thread(String, std::io::Error),
}

/// What happened to notifications, per notifier.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub retried: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

/// One alert change on its way to a webhook.
#[derive(Debug)]
struct Job {
    alert: Arc<Value>,
    firing: bool,
    at: Instant,
}

#[derive(Debug)]
struct Target {
    config: NotifierConfig,
    tx: Sender<Job>,
    counters: Arc<Counters>,
}

/// The loop's side of the notifier threads. Dropping it ends them.
#[derive(Debug)]
pub struct Notifier {
    targets: Vec<Target>,
    /// Never sent on: its closing wakes threads out of a backoff.
    _alive: Sender<()>,
}

impl Notifier {
    /// Starts one thread per notifier.
    ///
    /// # Errors
    /// A thread could not be started.
    pub fn spawn(configs: &[NotifierConfig]) -> Result<Self, NotifyError> {
        let (alive, alive_rx) = crossbeam_channel::bounded::<()>(0);
        let mut targets = Vec::with_capacity(configs.len());
        for (i, c) in configs.iter().enumerate() {
            let (tx, rx) = crossbeam_channel::bounded(QUEUE);
            let counters = Arc::new(Counters::default());
            let thread = Worker {
                index: i,
                config: c.clone(),
                counters: counters.clone(),
                alive: alive_rx.clone(),
                agent: agent(),
            };
            std::thread::Builder::new()
                .name(format!("notifier-{i}"))
                .spawn(move || thread.run(&rx))
                .map_err(|e| NotifyError::Thread(c.redacted.clone(), e))?;
            log::info!(
                "notifier {i}: {} to {} (events: {}; rules: {})",
                c.format.as_str(),
                c.redacted,
                match (c.on_firing, c.on_resolved) {
                    (true, true) => "firing, resolved",
                    (true, false) => "firing",
                    _ => "resolved",
                },
                if c.rules.is_empty() {
                    "all".to_string()
                } else {
                    c.rules.join(", ")
                }
            );
            targets.push(Target {
                config: c.clone(),
                tx,
                counters,
            });
        }
        Ok(Notifier {
            targets,
            _alive: alive,
        })
    }

    /// Queues one alert change for every notifier that wants it; never
    /// blocks (a full queue drops the change and counts it).
    pub fn notify(&self, rule: &str, firing: bool, alert: &Value) {
        let mut shared: Option<Arc<Value>> = None;
        for (i, t) in self.targets.iter().enumerate() {
            let c = &t.config;
            let wanted = if firing { c.on_firing } else { c.on_resolved };
            if !wanted || !(c.rules.is_empty() || c.rules.iter().any(|r| r == rule)) {
                continue;
            }
            let alert = shared
                .get_or_insert_with(|| Arc::new(alert.clone()))
                .clone();
            let job = Job {
                alert,
                firing,
                at: Instant::now(),
            };
            match t.tx.try_send(job) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    let n = t.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    if n == 1 || n.is_multiple_of(100) {
                        log::warn!(
                            "notifier {i} ({}): {QUEUE} changes wait already; dropped {n} so far",
                            c.redacted
                        );
                    }
                }
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }

    /// Appends `dockwire_notifications_total` to a `/metrics` text.
    pub fn render_metrics(&self, out: &mut String) {
        let _ = write!(
            out,
            "# HELP dockwire_notifications_total Alert notifications by notifier (its index in \
             [[notifiers]]) and outcome.\n# TYPE dockwire_notifications_total counter\n"
        );
        for (i, t) in self.targets.iter().enumerate() {
            let c = &t.counters;
            for (outcome, v) in [
                ("sent", &c.sent),
                ("retried", &c.retried),
                ("failed", &c.failed),
                ("dropped", &c.dropped),
            ] {
                let _ = writeln!(
                    out,
                    "dockwire_notifications_total{{notifier=\"{i}\",outcome=\"{outcome}\"}} {}",
                    v.load(Ordering::Relaxed)
                );
            }
        }
    }
}

/// `scheme://host[:port]` of a notifier URL: all of it that may be logged.
///
/// # Errors
/// Not an `http://` or `https://` URL with a host. The message never
/// repeats the URL.
pub fn redact_url(url: &str) -> Result<String, String> {
    let url = url.trim();
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("is not a URL like \"https://hooks.example.com/...\"".into());
    };
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        let shown: String = scheme.chars().take(16).collect();
        return Err(format!("scheme {shown:?} is not http or https"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() || host.starts_with(':') {
        return Err("has no host".into());
    }
    if let Err(e) = ureq::http::Uri::try_from(url) {
        return Err(format!("is not a valid URL ({e})"));
    }
    Ok(format!("{scheme}://{}", host.to_ascii_lowercase()))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(REQUEST_TIMEOUT))
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("dockwire/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// One line for chat formats: `[FIRING] rule: message`.
fn summary(alert: &Value, firing: bool) -> String {
    let rule = alert["rule"].as_str().unwrap_or("alert");
    let message = alert["message"].as_str().unwrap_or("");
    let state = if firing { "FIRING" } else { "RESOLVED" };
    let mut s = format!("[{state}] {rule}: {message}");
    if s.chars().count() > MAX_CHAT_CHARS {
        s = s.chars().take(MAX_CHAT_CHARS).collect();
        s.push('…');
    }
    s
}

/// A header value from free text: printable ASCII only, at most 200 bytes.
fn header_text(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(200)
        .collect()
}

/// The request for one change: (content type, extra headers, body).
fn render(
    format: NotifyFormat,
    alert: &Value,
    firing: bool,
) -> (&'static str, Vec<(&'static str, String)>, Vec<u8>) {
    match format {
        NotifyFormat::Json => ("application/json", vec![], alert.to_string().into_bytes()),
        NotifyFormat::Slack => (
            "application/json",
            vec![],
            json!({ "text": summary(alert, firing) })
                .to_string()
                .into_bytes(),
        ),
        NotifyFormat::Discord => (
            "application/json",
            vec![],
            json!({ "content": summary(alert, firing) })
                .to_string()
                .into_bytes(),
        ),
        NotifyFormat::Ntfy => {
            let rule = alert["rule"].as_str().unwrap_or("alert");
            let state = if firing { "firing" } else { "resolved" };
            let headers = vec![
                ("Title", header_text(&format!("dockwire: {rule} {state}"))),
                (
                    "Priority",
                    if firing { "high" } else { "default" }.to_string(),
                ),
                (
                    "Tags",
                    if firing {
                        "rotating_light"
                    } else {
                        "white_check_mark"
                    }
                    .to_string(),
                ),
            ];
            let body = alert["message"]
                .as_str()
                .unwrap_or(state)
                .as_bytes()
                .to_vec();
            ("text/plain; charset=utf-8", headers, body)
        }
    }
}

/// What one POST came to.
enum Outcome {
    Sent,
    /// Worth another try (a transport error, 408, 429, 5xx).
    Retry(String),
    /// Not worth another try (another 3xx or 4xx, a bad URL).
    Fail(String),
}

/// One notifier's thread.
struct Worker {
    index: usize,
    config: NotifierConfig,
    counters: Arc<Counters>,
    alive: Receiver<()>,
    agent: ureq::Agent,
}

impl Worker {
    fn run(self, rx: &Receiver<Job>) {
        while let Ok(job) = rx.recv() {
            if !self.deliver(&job) {
                break;
            }
        }
        log::debug!("notifier {} ({}) stopped", self.index, self.config.redacted);
    }

    fn post(&self, job: &Job) -> Outcome {
        let (ctype, headers, body) = render(self.config.format, &job.alert, job.firing);
        let mut req = self
            .agent
            .post(self.config.url.as_str())
            .header("Content-Type", ctype);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        match req.send(&body[..]) {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match status {
                    200..=299 => Outcome::Sent,
                    408 | 429 | 500..=599 => Outcome::Retry(format!("HTTP {status}")),
                    _ => Outcome::Fail(format!("HTTP {status}")),
                }
            }
            // The URL may be in it: say only what kind of error it was.
            Err(ureq::Error::BadUri(_)) => Outcome::Fail("bad URL".into()),
            Err(e @ (ureq::Error::TooManyRedirects | ureq::Error::RedirectFailed)) => {
                Outcome::Fail(e.to_string())
            }
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }

    /// Posts one change until it is sent, fails for good, or [`RETRY_FOR`]
    /// has passed. False when the daemon is shutting down.
    fn deliver(&self, job: &Job) -> bool {
        let (i, host) = (self.index, &self.config.redacted);
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.post(job) {
                Outcome::Sent => {
                    self.counters.sent.fetch_add(1, Ordering::Relaxed);
                    log::debug!("notifier {i} ({host}): sent");
                    return true;
                }
                Outcome::Fail(why) => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    log::warn!("notifier {i} ({host}): not sent: {why}");
                    return true;
                }
                Outcome::Retry(why) => {
                    if job.at.elapsed() + backoff > RETRY_FOR {
                        self.counters.failed.fetch_add(1, Ordering::Relaxed);
                        log::warn!(
                            "notifier {i} ({host}): not sent after retrying for {}s: {why}",
                            RETRY_FOR.as_secs()
                        );
                        return true;
                    }
                    self.counters.retried.fetch_add(1, Ordering::Relaxed);
                    log::info!(
                        "notifier {i} ({host}): {why}; retrying in {}s",
                        backoff.as_secs()
                    );
                    // An interruptible sleep: the channel closes at shutdown.
                    if let Err(RecvTimeoutError::Disconnected) = self.alive.recv_timeout(backoff) {
                        return false;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted_to_scheme_and_host() {
        assert_eq!(
            redact_url("https://hooks.slack.com/services/T0/B0/SECRET").unwrap(),
            "https://hooks.slack.com"
        );
        assert_eq!(
            redact_url("http://user:pass@127.0.0.1:8080/x?token=SECRET").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            redact_url("HTTPS://Ntfy.sh?auth=SECRET").unwrap(),
            "https://ntfy.sh"
        );
        for bad in [
            "ftp://x/SECRET",
            "hooks.slack.com/SECRET",
            "https:///SECRET",
            "http://a b/SECRET",
        ] {
            let e = redact_url(bad).unwrap_err();
            assert!(!e.contains("SECRET"), "{e}");
        }
    }

    #[test]
    fn notify_filters_and_drops_past_the_queue_without_blocking() {
        // A receiver that takes the connection and never answers: the
        // thread waits on its first POST while changes pile up.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", silent.local_addr().unwrap());
        let config = NotifierConfig {
            redacted: redact_url(&url).unwrap(),
            url,
            format: NotifyFormat::Json,
            on_firing: true,
            on_resolved: false,
            rules: vec!["disk".into()],
        };
        let n = Notifier::spawn(&[config]).unwrap();
        let a = json!({"rule": "disk", "message": "m"});
        let c = &n.targets[0].counters;
        for _ in 0..50 {
            n.notify("disk", false, &a); // not a wanted event
            n.notify("cpu", true, &a); // not a wanted rule
        }
        assert_eq!(n.targets[0].tx.len(), 0);
        let started = Instant::now();
        for _ in 0..QUEUE + 50 {
            n.notify("disk", true, &a);
        }
        assert!(started.elapsed() < Duration::from_secs(5), "notify blocked");
        let dropped = c.dropped.load(Ordering::Relaxed);
        assert!((49..=50).contains(&dropped), "{dropped}");
        assert!(n.targets[0].tx.len() <= QUEUE);
        assert_eq!(c.sent.load(Ordering::Relaxed), 0);
        let mut text = String::new();
        n.render_metrics(&mut text);
        assert!(
            text.contains(&format!(
                "dockwire_notifications_total{{notifier=\"0\",outcome=\"dropped\"}} {dropped}"
            )),
            "{text}"
        );
    }

    #[test]
    fn bodies_per_format() {
        let a = json!({"rule": "r", "message": "m\nx", "state": "firing"});
        let (ct, h, b) = render(NotifyFormat::Slack, &a, true);
        assert_eq!(ct, "application/json");
        assert!(h.is_empty());
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["text"], "[FIRING] r: m\nx");
        let (_, _, b) = render(NotifyFormat::Discord, &a, false);
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["content"], "[RESOLVED] r: m\nx");
        let (_, _, b) = render(NotifyFormat::Json, &a, true);
        assert_eq!(serde_json::from_slice::<Value>(&b).unwrap(), a);
        let (ct, h, b) = render(
            NotifyFormat::Ntfy,
            &json!({"rule": "r\nX-Evil: 1", "message": "m"}),
            true,
        );
        assert!(ct.starts_with("text/plain"));
        assert_eq!(b, b"m");
        assert_eq!(h[0], ("Title", "dockwire: r?X-Evil: 1 firing".to_string()));
        assert_eq!(h[1], ("Priority", "high".to_string()));
    }
}
