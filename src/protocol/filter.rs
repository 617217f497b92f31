//! What a client may ask the hub to filter (SPEC 12): which containers'
//! events it hears (`set_event_filter`) and which lines of a log stream it
//! gets (`start_log_stream`'s `filter`).
//!
//! Everything here comes from a client, so everything is bounded: the
//! number of ids and labels, every string's length, the regex's source
//! (1 KiB) and its compiled size ([`REGEX_SIZE_LIMIT`]). The `regex` crate
//! matches in time linear in the line (no backtracking), so a hostile
//! pattern costs at most a bounded program run over each line.
//!
//! Levels are read from the line by the agent's level parser
//! ([`crate::agent::level::parse_level`], case-insensitive): a keyed
//! `level`/`lvl`/`severity` field (JSON or `key=value`), else a bracketed
//! level word (`[ERROR]`, `<warn>`), else the first bare level word. Its
//! canonical levels map onto the four a filter names: `error` (also
//! `ERROR`, `ERR`, `FATAL`, `CRITICAL`), `warn` (`WARN`, `WARNING`), `info`
//! (and a line that names no level), `debug` (`DEBUG`, `TRACE`). A filter
//! may spell its levels in any case and with those aliases.
//!
//! Invariant: two filters that select the same lines compare equal only
//! when their normalised specs are equal ([`LogFilterSpec`]); the hub
//! shares one encoded frame among the subscribers of equal specs.

use std::collections::BTreeMap;

use regex::{Regex, RegexBuilder};
use serde_json::{Map, Value};

use crate::feed::{LogLine, LogStream};
use crate::protocol::model::Container;

/// Most ids or names one event filter lists.
pub const MAX_FILTER_IDS: usize = 256;
/// Most labels one event filter lists.
pub const MAX_FILTER_LABELS: usize = 32;
/// Longest id, name, label key or label value in a filter (bytes).
pub const MAX_FILTER_STRING: usize = 256;
/// Longest log filter pattern (bytes of regex source).
pub const MAX_PATTERN_BYTES: usize = 1024;
/// Largest compiled regex program (and lazy DFA cache) a pattern may need.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A socket's choice of one server's container events: containers matching
/// any listed id or name, or all listed labels.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventFilter {
    pub ids: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

impl EventFilter {
    /// Neither ids nor labels: the filter clears (every container).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.labels.is_empty()
    }

    /// Whether `c`'s events pass.
    pub fn matches(&self, c: &Container) -> bool {
        self.matches_id(&c.id)
            || self.ids.iter().any(|x| names(c, x))
            || (!self.labels.is_empty()
                && self.labels.iter().all(|(k, v)| c.labels.get(k) == Some(v)))
    }

    /// Whether a container known only by its id passes (its record is gone).
    pub fn matches_id(&self, id: &str) -> bool {
        self.ids
            .iter()
            .any(|x| x == id || (x.len() >= 12 && id.starts_with(x.as_str())))
    }
}

fn names(c: &Container, x: &str) -> bool {
    x.strip_prefix('/').unwrap_or(x) == c.name
}

fn bounded_str<'a>(v: &'a Value, what: &str) -> Result<&'a str, String> {
    match v {
        Value::String(s) if s.is_empty() => Err(format!("{what} must not be empty")),
        Value::String(s) if s.len() > MAX_FILTER_STRING => Err(format!(
            "{what} is too long: {} bytes, at most {MAX_FILTER_STRING}",
            s.len()
        )),
        Value::String(s) => Ok(s),
        _ => Err(format!("{what} must be a string")),
    }
}

/// `set_event_filter`'s `container_ids` and `labels` (both optional).
///
/// # Errors
/// A message for the client's `error` reply.
pub fn parse_event_filter(obj: &Map<String, Value>) -> Result<EventFilter, String> {
    let mut f = EventFilter::default();
    match obj.get("container_ids") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) if a.len() > MAX_FILTER_IDS => {
            return Err(format!(
                "field \"container_ids\" lists {} entries, at most {MAX_FILTER_IDS}",
                a.len()
            ));
        }
        Some(Value::Array(a)) => {
            for v in a {
                let s = bounded_str(v, "every entry of \"container_ids\"")?;
                if !f.ids.iter().any(|x| x == s) {
                    f.ids.push(s.to_string());
                }
            }
        }
        Some(_) => return Err("field \"container_ids\" must be an array of strings".into()),
    }
    match obj.get("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) if m.len() > MAX_FILTER_LABELS => {
            return Err(format!(
                "field \"labels\" has {} entries, at most {MAX_FILTER_LABELS}",
                m.len()
            ));
        }
        Some(Value::Object(m)) => {
            for (k, v) in m {
                bounded_str(&Value::String(k.clone()), "a label key")?;
                let v = bounded_str(v, "every label value")?;
                f.labels.insert(k.clone(), v.to_string());
            }
        }
        Some(_) => {
            return Err("field \"labels\" must be an object of string values".into());
        }
    }
    Ok(f)
}

/// The four levels a log filter names, as bits.
pub const LEVEL_ERROR: u8 = 1;
pub const LEVEL_WARN: u8 = 2;
pub const LEVEL_INFO: u8 = 4;
pub const LEVEL_DEBUG: u8 = 8;

/// A level a client names (any case, with aliases) as its bit.
fn level_bit(name: &str) -> Option<u8> {
    match name.to_ascii_lowercase().as_str() {
        "error" | "err" | "fatal" | "critical" => Some(LEVEL_ERROR),
        "warn" | "warning" => Some(LEVEL_WARN),
        "info" => Some(LEVEL_INFO),
        "debug" | "trace" => Some(LEVEL_DEBUG),
        _ => None,
    }
}

/// The level a line names, as its bit (a line naming none is `info`).
pub fn line_level(text: &str) -> u8 {
    match crate::agent::level::parse_level(text) {
        "ERROR" | "CRITICAL" => LEVEL_ERROR,
        "WARNING" => LEVEL_WARN,
        "DEBUG" | "TRACE" => LEVEL_DEBUG,
        _ => LEVEL_INFO,
    }
}

/// Which output stream a log filter keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamSel {
    /// stdout (a TTY container's merged console counts as stdout).
    Stdout,
    Stderr,
}

/// A log filter as the client asked for it, normalised: equal specs select
/// the same lines and share one topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct LogFilterSpec {
    /// Regex source (at most [`MAX_PATTERN_BYTES`]); `None`: every line.
    pub pattern: Option<String>,
    /// Level bits; 0: every level.
    pub levels: u8,
    pub stream: Option<StreamSel>,
}

impl LogFilterSpec {
    /// Selects every line (the same as no filter).
    pub fn is_everything(&self) -> bool {
        self.pattern.is_none() && self.levels == 0 && self.stream.is_none()
    }
}

/// `start_log_stream`'s optional `filter`: `None` when absent, null or
/// selecting everything.
///
/// # Errors
/// A message for the client's `error` reply.
pub fn parse_log_filter(obj: &Map<String, Value>) -> Result<Option<LogFilterSpec>, String> {
    let f = match obj.get("filter") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(f)) => f,
        Some(_) => return Err("field \"filter\" must be an object".into()),
    };
    let mut spec = LogFilterSpec::default();
    for (k, v) in f {
        match (k.as_str(), v) {
            (_, Value::Null) => {}
            ("pattern", Value::String(p)) if p.len() > MAX_PATTERN_BYTES => {
                return Err(format!(
                    "filter pattern is too long: {} bytes, at most {MAX_PATTERN_BYTES}",
                    p.len()
                ));
            }
            ("pattern", Value::String(p)) => {
                spec.pattern = (!p.is_empty()).then(|| p.clone());
            }
            ("pattern", _) => return Err("filter \"pattern\" must be a string".into()),
            ("levels", Value::Array(a)) if a.is_empty() || a.len() > 8 => {
                return Err(
                    "filter \"levels\" must list 1 to 8 of \"error\", \"warn\", \"info\", \"debug\""
                        .into(),
                );
            }
            ("levels", Value::Array(a)) => {
                for l in a {
                    let bit = l.as_str().and_then(level_bit).ok_or_else(|| {
                        let shown: String = l.to_string().chars().take(40).collect();
                        format!(
                            "unknown level {shown} in filter \"levels\": use \"error\", \"warn\", \"info\" or \"debug\""
                        )
                    })?;
                    spec.levels |= bit;
                }
            }
            ("levels", _) => return Err("filter \"levels\" must be an array of strings".into()),
            ("stream", Value::String(s)) if s == "stdout" => spec.stream = Some(StreamSel::Stdout),
            ("stream", Value::String(s)) if s == "stderr" => spec.stream = Some(StreamSel::Stderr),
            ("stream", _) => {
                return Err("filter \"stream\" must be \"stdout\" or \"stderr\"".into());
            }
            (other, _) => {
                let shown: String = other.chars().take(40).collect();
                return Err(format!(
                    "unknown filter field {shown:?}: use \"pattern\", \"levels\" or \"stream\""
                ));
            }
        }
    }
    if spec.levels == LEVEL_ERROR | LEVEL_WARN | LEVEL_INFO | LEVEL_DEBUG {
        spec.levels = 0;
    }
    Ok((!spec.is_everything()).then_some(spec))
}

/// A compiled log filter.
#[derive(Debug, Clone)]
pub struct LogFilter {
    pub spec: LogFilterSpec,
    regex: Option<Regex>,
}

impl LogFilter {
    /// Compiles the spec's pattern under the size limits.
    ///
    /// # Errors
    /// "invalid filter pattern: …" with the regex crate's reason (syntax,
    /// look-around or backreferences it does not support, too large).
    pub fn compile(spec: LogFilterSpec) -> Result<LogFilter, String> {
        let regex = match &spec.pattern {
            None => None,
            Some(p) => Some(
                RegexBuilder::new(p)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .dfa_size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| {
                        let why: String = e.to_string().chars().take(400).collect();
                        format!("invalid filter pattern: {why}")
                    })?,
            ),
        };
        Ok(LogFilter { spec, regex })
    }

    /// Whether the line passes: its stream, then its level, then the pattern
    /// (cheapest test first).
    pub fn matches(&self, line: &LogLine) -> bool {
        self.matches_with_level(line, || line_level(&line.text))
    }

    /// [`LogFilter::matches`] with the line's level from `level`, asked only
    /// when this filter names levels (a stream with many filters reads each
    /// line's level once, not once per filter).
    pub fn matches_with_level(&self, line: &LogLine, level: impl FnOnce() -> u8) -> bool {
        let stream_ok = match (self.spec.stream, line.stream) {
            (None, _) => true,
            (Some(StreamSel::Stderr), s) => s == LogStream::Stderr,
            (Some(StreamSel::Stdout), s) => s != LogStream::Stderr,
        };
        stream_ok
            && (self.spec.levels == 0 || self.spec.levels & level() != 0)
            && self.regex.as_ref().is_none_or(|r| r.is_match(&line.text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn line(stream: LogStream, text: &str) -> LogLine {
        LogLine {
            stream,
            timestamp: String::new(),
            text: text.into(),
        }
    }

    fn container(id: &str, name: &str, labels: &[(&str, &str)]) -> Container {
        serde_json::from_value(json!({
            "id": id, "name": name, "state": "running",
            "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
        }))
        .unwrap()
    }

    #[test]
    fn event_filter_matches_ids_names_and_all_labels() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let c = container(id, "web", &[("app", "shop"), ("tier", "front")]);
        let f = |v| parse_event_filter(&obj(v)).unwrap();
        assert!(f(json!({"container_ids": ["web"]})).matches(&c));
        assert!(f(json!({"container_ids": ["/web"]})).matches(&c));
        assert!(f(json!({"container_ids": [id]})).matches(&c));
        assert!(f(json!({"container_ids": ["0123456789ab"]})).matches(&c));
        assert!(!f(json!({"container_ids": ["0123"]})).matches(&c));
        assert!(!f(json!({"container_ids": ["db"]})).matches(&c));
        assert!(f(json!({"labels": {"app": "shop"}})).matches(&c));
        assert!(f(json!({"labels": {"app": "shop", "tier": "front"}})).matches(&c));
        assert!(!f(json!({"labels": {"app": "shop", "tier": "back"}})).matches(&c));
        assert!(f(json!({"container_ids": ["db"], "labels": {"tier": "front"}})).matches(&c));
        assert!(f(json!({})).is_empty());
        assert!(f(json!({"container_ids": [], "labels": {}})).is_empty());
    }

    #[test]
    fn event_filter_input_is_bounded() {
        let many: Vec<String> = (0..=MAX_FILTER_IDS).map(|i| format!("c{i}")).collect();
        let long = "x".repeat(MAX_FILTER_STRING + 1);
        for bad in [
            json!({"container_ids": many}),
            json!({"container_ids": [long]}),
            json!({"container_ids": [""]}),
            json!({"container_ids": "web"}),
            json!({"container_ids": [1]}),
            json!({"labels": ["a"]}),
            json!({"labels": {"a": 1}}),
            json!({"labels": {long.clone(): "v"}}),
        ] {
            let e = parse_event_filter(&obj(bad.clone())).unwrap_err();
            assert!(
                e.contains("container_ids") || e.contains("label"),
                "{bad}: {e}"
            );
        }
        let labels: Map<String, Value> = (0..=MAX_FILTER_LABELS)
            .map(|i| (format!("k{i}"), json!("v")))
            .collect();
        assert!(parse_event_filter(&obj(json!({ "labels": labels }))).is_err());
    }

    #[test]
    fn log_filter_parses_and_normalises() {
        let p = |v: Value| parse_log_filter(&obj(json!({ "filter": v })));
        assert_eq!(p(json!(null)).unwrap(), None);
        assert_eq!(p(json!({})).unwrap(), None);
        assert_eq!(
            p(json!({"levels": ["error", "warn", "info", "debug"]})).unwrap(),
            None
        );
        let a = p(json!({"levels": ["ERROR", "Warning"], "stream": "stderr"})).unwrap();
        let b = p(json!({"stream": "stderr", "levels": ["warn", "err"]})).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.unwrap().levels, LEVEL_ERROR | LEVEL_WARN);
        for (bad, says) in [
            (json!("error"), "must be an object"),
            (json!({"levels": []}), "levels"),
            (json!({"levels": ["loud"]}), "unknown level"),
            (json!({"levels": "error"}), "levels"),
            (json!({"stream": "both"}), "stream"),
            (json!({"pattern": 5}), "pattern"),
            (
                json!({"pattern": "a".repeat(MAX_PATTERN_BYTES + 1)}),
                "too long",
            ),
            (json!({"colour": "red"}), "unknown filter field"),
        ] {
            let e = p(bad.clone()).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_and_oversized_patterns_are_refused() {
        let spec = |p: &str| LogFilterSpec {
            pattern: Some(p.into()),
            ..Default::default()
        };
        for bad in ["(", "a{", r"(a)\1", "(?=x)"] {
            let e = LogFilter::compile(spec(bad)).unwrap_err();
            assert!(e.starts_with("invalid filter pattern"), "{bad}: {e}");
        }
        // Small source, huge program: refused by the size limit.
        let e = LogFilter::compile(spec(r"\w{1000}\w{1000}")).unwrap_err();
        assert!(e.contains("invalid filter pattern"), "{e}");
        assert!(LogFilter::compile(spec("timeout|refused")).is_ok());
    }

    #[test]
    fn log_filter_matches_stream_level_and_pattern() {
        let f = |v: Value| {
            LogFilter::compile(
                parse_log_filter(&obj(json!({ "filter": v })))
                    .unwrap()
                    .unwrap(),
            )
            .unwrap()
        };
        let err = line(LogStream::Stderr, "2024-01-01 ERROR db timeout");
        let json_warn = line(LogStream::Stdout, r#"{"level":"warning","msg":"slow"}"#);
        let sev = line(LogStream::Stdout, r#"{"severity":"ERROR","msg":"x"}"#);
        let plain = line(LogStream::Stdout, "listening on :80");
        let dbg = line(LogStream::Console, "[debug] tick");
        let errors = f(json!({"levels": ["error"]}));
        assert!(errors.matches(&err) && errors.matches(&sev));
        assert!(!errors.matches(&json_warn) && !errors.matches(&plain));
        let warn = f(json!({"levels": ["WARN"]}));
        assert!(warn.matches(&json_warn) && !warn.matches(&err));
        let info = f(json!({"levels": ["info"]}));
        assert!(info.matches(&plain), "a line naming no level is info");
        assert!(f(json!({"levels": ["debug"]})).matches(&dbg));
        let stderr = f(json!({"stream": "stderr"}));
        assert!(stderr.matches(&err) && !stderr.matches(&plain) && !stderr.matches(&dbg));
        let stdout = f(json!({"stream": "stdout"}));
        assert!(stdout.matches(&plain) && stdout.matches(&dbg) && !stdout.matches(&err));
        let pat = f(json!({"pattern": "time(out)?$"}));
        assert!(pat.matches(&err) && !pat.matches(&plain));
        let none = f(json!({"pattern": "^never$"}));
        assert!(
            ![&err, &json_warn, &sev, &plain, &dbg]
                .iter()
                .any(|l| none.matches(l))
        );
        let both = f(json!({"pattern": "db", "levels": ["error"], "stream": "stdout"}));
        assert!(!both.matches(&err), "all parts must match");
    }
}
