//! Alert rules (`[[alerts]] rule`) and notifiers (`[[notifiers]]`): their
//! grammar and validation. The grammar is documented in `docs/alerts.md`;
//! every error names the rule or the notifier's index (never its URL, whose
//! path and query are secrets).

use std::time::Duration;

use super::{ConfigError, NotifierSection, invalid};

/// What an alert rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertMetric {
    CpuPercent,
    MemoryPercent,
    /// The fullest mount of the server's `disk_usage` (used / total).
    DiskPercent,
    /// The agent has been disconnected.
    AgentOffline,
    /// A container stopped with a non-zero exit code, not by request.
    ContainerExited,
    /// A container's health check reports `unhealthy`.
    ContainerUnhealthy,
    /// A container restarted more than `threshold` times within `window`.
    ContainerRestarts,
    /// A log line of a container matched `pattern`.
    LogMatch,
}

impl AlertMetric {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CpuPercent => "cpu_percent",
            Self::MemoryPercent => "memory_percent",
            Self::DiskPercent => "disk_percent",
            Self::AgentOffline => "agent_offline",
            Self::ContainerExited => "container_exited",
            Self::ContainerUnhealthy => "container_unhealthy",
            Self::ContainerRestarts => "container_restarts",
            Self::LogMatch => "log_match",
        }
    }

    /// True for rules whose alerts are per container (not per server).
    pub fn per_container(self) -> bool {
        matches!(
            self,
            Self::ContainerExited
                | Self::ContainerUnhealthy
                | Self::ContainerRestarts
                | Self::LogMatch
        )
    }
}

/// A compiled `log_match` pattern (compared by its source text).
#[derive(Debug, Clone)]
pub struct LogPattern(pub regex::Regex);

impl PartialEq for LogPattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// One alert rule (grammar in `docs/alerts.md`).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRule {
    /// The `[[alerts]] name`, or the rule text when unnamed; unique.
    pub name: String,
    pub metric: AlertMetric,
    /// Percent threshold (cpu, memory, disk), the restart count
    /// (`container_restarts`), 0 otherwise.
    pub threshold: f64,
    /// How long the condition must hold before the alert fires (0: at once).
    pub hold: Duration,
    /// `container_restarts`: the window the restarts are counted in.
    pub window: Duration,
    /// `log_match`: the pattern.
    pub pattern: Option<LogPattern>,
    /// `log_match ... in "name"`: only this container (by name).
    pub container: Option<String>,
}

/// The longest `for` or `in` duration a rule may have.
const MAX_RULE_DURATION: Duration = Duration::from_secs(24 * 3600);
/// The largest `container_restarts` count (restart times kept per container
/// are bounded by it).
pub const MAX_RESTARTS_THRESHOLD: u32 = 1000;
/// The longest `log_match` pattern, in bytes.
const MAX_PATTERN_BYTES: usize = 1024;

/// Splits a rule into words and double-quoted strings. Inside quotes `\"`
/// is a quote and every other backslash is kept as written (so regex
/// escapes like `\d` need no doubling). Quoted strings come back marked
/// `Ok`, bare words `Err`, so `"for"` quoted is not the keyword.
fn rule_tokens(rule: &str) -> Result<Vec<Result<String, String>>, String> {
    let mut out = Vec::new();
    let mut chars = rule.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut s = String::new();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => match chars.next() {
                        Some('"') => s.push('"'),
                        Some(n) => {
                            s.push('\\');
                            s.push(n);
                        }
                        None => s.push('\\'),
                    },
                    c => s.push(c),
                }
            }
            if !closed {
                return Err("a quoted string is not closed".into());
            }
            out.push(Ok(s));
        } else {
            let mut w = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '"' {
                    break;
                }
                w.push(c);
                chars.next();
            }
            out.push(Err(w));
        }
    }
    Ok(out)
}

/// A rule's `for`/`in` duration: zero allowed (`for 0s`: at once), at most a day.
fn rule_duration(rule: &str, text: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        invalid(format!(
            "alert rule {rule:?}: {text:?} is not a duration like \"60s\" or \"5m\" ({e})"
        ))
    })?;
    if d > MAX_RULE_DURATION {
        return Err(invalid(format!(
            "alert rule {rule:?}: {text:?} is longer than the 24h a rule may hold"
        )));
    }
    Ok(d)
}

fn percent(rule: &str, text: &str) -> Result<f64, ConfigError> {
    match text.parse::<f64>() {
        Ok(t) if (0.0..=100.0).contains(&t) => Ok(t),
        _ => Err(invalid(format!(
            "alert rule {rule:?}: threshold {text:?} must be a number from 0 to 100"
        ))),
    }
}

/// Parses one alert rule. The shapes:
/// `cpu_percent > 90 for 60s`, `memory_percent > 95 for 30s`,
/// `disk_percent > 90 for 5m`, `agent_offline for 30s`,
/// `container_exited != 0`, `container_unhealthy for 1m`,
/// `container_restarts > 3 in 10m`, `log_match "regex"` and
/// `log_match "regex" in "container name"`.
///
/// # Errors
/// A message naming the rule and saying what shape a rule has.
pub fn parse_alert_rule(name: Option<&str>, rule: &str) -> Result<AlertRule, ConfigError> {
    let bad = || {
        invalid(format!(
            "alert rule {rule:?}: expected one of \"cpu_percent > 90 for 60s\", \
             \"memory_percent > 95 for 30s\", \"disk_percent > 90 for 5m\", \
             \"agent_offline for 30s\", \"container_exited != 0\", \
             \"container_unhealthy for 1m\", \"container_restarts > 3 in 10m\", \
             \"log_match \\\"regex\\\"\" or \"log_match \\\"regex\\\" in \\\"container name\\\"\" \
             (see docs/alerts.md)"
        ))
    };
    let tokens = rule_tokens(rule).map_err(|e| invalid(format!("alert rule {rule:?}: {e}")))?;
    let words: Vec<&str> = tokens
        .iter()
        .map(|t| match t {
            Err(w) => w.as_str(),
            Ok(_) => "\"",
        })
        .collect();
    let quoted = |i: usize| match tokens.get(i) {
        Some(Ok(s)) => Some(s.clone()),
        _ => None,
    };
    let mut r = AlertRule {
        name: name.map_or_else(|| rule.trim().to_string(), str::to_string),
        metric: AlertMetric::CpuPercent,
        threshold: 0.0,
        hold: Duration::ZERO,
        window: Duration::ZERO,
        pattern: None,
        container: None,
    };
    match words.as_slice() {
        ["agent_offline", "for", d] => {
            r.metric = AlertMetric::AgentOffline;
            r.hold = rule_duration(rule, d)?;
        }
        ["container_unhealthy", "for", d] => {
            r.metric = AlertMetric::ContainerUnhealthy;
            r.hold = rule_duration(rule, d)?;
        }
        ["container_exited", "!=", "0"] => r.metric = AlertMetric::ContainerExited,
        ["container_exited", ..] => {
            return Err(invalid(format!(
                "alert rule {rule:?}: the only container_exited rule is \"container_exited != 0\""
            )));
        }
        ["container_restarts", ">", n, "in", d] => {
            r.metric = AlertMetric::ContainerRestarts;
            let count: u32 = n.parse().ok().filter(|c| *c <= MAX_RESTARTS_THRESHOLD).ok_or_else(|| {
                invalid(format!(
                    "alert rule {rule:?}: restart count {n:?} must be a whole number from 0 to {MAX_RESTARTS_THRESHOLD}"
                ))
            })?;
            r.threshold = f64::from(count);
            r.window = rule_duration(rule, d)?;
            if r.window.is_zero() {
                return Err(invalid(format!(
                    "alert rule {rule:?}: the window after `in` must be longer than zero"
                )));
            }
        }
        ["log_match", "\"", rest @ ..] => {
            r.metric = AlertMetric::LogMatch;
            let text = quoted(1).unwrap_or_default();
            if text.is_empty() {
                return Err(invalid(format!(
                    "alert rule {rule:?}: the log_match pattern is empty"
                )));
            }
            if text.len() > MAX_PATTERN_BYTES {
                return Err(invalid(format!(
                    "alert rule {rule:?}: the log_match pattern is longer than {MAX_PATTERN_BYTES} bytes"
                )));
            }
            let re = regex::RegexBuilder::new(&text)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| {
                    invalid(format!(
                        "alert rule {rule:?}: the log_match pattern is not a valid regex: {e}"
                    ))
                })?;
            r.pattern = Some(LogPattern(re));
            match rest {
                [] => {}
                ["in", "\""] => {
                    let c = quoted(3).unwrap_or_default();
                    let c = c.strip_prefix('/').unwrap_or(&c).to_string();
                    if c.is_empty() {
                        return Err(invalid(format!(
                            "alert rule {rule:?}: the container name after `in` is empty"
                        )));
                    }
                    r.container = Some(c);
                }
                _ => return Err(bad()),
            }
        }
        [m, ">", n, "for", d] => {
            r.metric = match *m {
                "cpu_percent" => AlertMetric::CpuPercent,
                "memory_percent" => AlertMetric::MemoryPercent,
                "disk_percent" => AlertMetric::DiskPercent,
                _ => return Err(bad()),
            };
            r.threshold = percent(rule, n)?;
            r.hold = rule_duration(rule, d)?;
        }
        _ => return Err(bad()),
    }
    Ok(r)
}

/// The format of a notifier's POST body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyFormat {
    /// The alert object itself.
    Json,
    /// `{"text": "..."}` (Slack incoming webhooks).
    Slack,
    /// `{"content": "..."}` (Discord webhooks).
    Discord,
    /// Plain text with `Title`, `Priority` and `Tags` headers (ntfy).
    Ntfy,
}

impl NotifyFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Slack => "slack",
            Self::Discord => "discord",
            Self::Ntfy => "ntfy",
        }
    }
}

/// One `[[notifiers]]` entry, validated. `Debug` shows the URL redacted:
/// a webhook URL's path and query are its secret.
#[derive(Clone, PartialEq)]
pub struct NotifierConfig {
    pub url: String,
    /// `scheme://host[:port]`: all of the URL that may be logged.
    pub redacted: String,
    pub format: NotifyFormat,
    pub on_firing: bool,
    pub on_resolved: bool,
    /// Rule names; empty: every rule.
    pub rules: Vec<String>,
}

impl std::fmt::Debug for NotifierConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifierConfig")
            .field("url", &self.redacted)
            .field("format", &self.format)
            .field("on_firing", &self.on_firing)
            .field("on_resolved", &self.on_resolved)
            .field("rules", &self.rules)
            .finish()
    }
}

/// The most `[[notifiers]]` entries (one thread each).
pub const MAX_NOTIFIERS: usize = 32;

/// Validates one `[[notifiers]]` entry (`i`: its index, for messages).
pub(super) fn notifier(
    i: usize,
    n: &NotifierSection,
    rules: &[AlertRule],
) -> Result<NotifierConfig, ConfigError> {
    let redacted = crate::notify::redact_url(&n.url)
        .map_err(|e| invalid(format!("notifiers[{i}].url: {e}")))?;
    let format = match n.format.as_deref().unwrap_or("json") {
        "json" => NotifyFormat::Json,
        "slack" => NotifyFormat::Slack,
        "discord" => NotifyFormat::Discord,
        "ntfy" => NotifyFormat::Ntfy,
        other => {
            return Err(invalid(format!(
                "notifiers[{i}] ({redacted}): format {:?} is not one of \"json\", \"slack\", \"discord\", \"ntfy\"",
                other.chars().take(40).collect::<String>()
            )));
        }
    };
    let (mut on_firing, mut on_resolved) = (n.events.is_none(), n.events.is_none());
    for e in n.events.iter().flatten() {
        match e.as_str() {
            "firing" => on_firing = true,
            "resolved" => on_resolved = true,
            other => {
                return Err(invalid(format!(
                    "notifiers[{i}] ({redacted}): event {:?} is not \"firing\" or \"resolved\"",
                    other.chars().take(40).collect::<String>()
                )));
            }
        }
    }
    if !on_firing && !on_resolved {
        return Err(invalid(format!(
            "notifiers[{i}] ({redacted}): events is empty, so nothing would be sent; \
             leave it out for both \"firing\" and \"resolved\""
        )));
    }
    for name in &n.rules {
        if !rules.iter().any(|r| r.name == *name) {
            return Err(invalid(format!(
                "notifiers[{i}] ({redacted}): rules names {name:?}, which is no [[alerts]] \
                 name (an unnamed rule's name is its rule text)"
            )));
        }
    }
    Ok(NotifierConfig {
        url: n.url.trim().to_string(),
        redacted,
        format,
        on_firing,
        on_resolved,
        rules: n.rules.clone(),
    })
}
