//! Runs the hub's `docker_command` requests on the local Docker engine.
//!
//! Owns one short-lived bollard call per request. bollard is async, so each
//! call gets its own current-thread tokio runtime on the (already dedicated)
//! request thread; tokio never runs anywhere else in the agent.
//!
//! Invariants: the container reference is validated before it reaches a
//! URL path (Docker ids and names only: `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most
//! 128 bytes), the action must be `start`, `stop` or `restart`, and every
//! call is bounded by the Docker client's request timeout. The answer is always a (success, message)
//! pair, never a panic.

use crate::feed::ContainerAction;
use crate::feed::docker::run_action_blocking;

/// Longest container reference accepted (ids are 64 hex digits; names are
/// short in practice).
const MAX_CONTAINER_REF: usize = 128;

/// Whether `s` looks like a Docker container id or name.
pub fn valid_container_ref(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_CONTAINER_REF
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Runs `action` on `container_id` and says how it went, in the words the
/// hub relays to the browser. The engine call itself is the feed's
/// [`run_action_blocking`] (bollard on a short-lived current-thread runtime,
/// bounded by the client's request timeout).
pub fn docker_action(
    docker_host: Option<&str>,
    action: Option<&str>,
    container_id: Option<&str>,
) -> (bool, String) {
    let Some(action_str) = action else {
        return (false, "missing action".to_owned());
    };
    let Some(action) = ContainerAction::parse(action_str) else {
        return (
            false,
            format!("unknown action {action_str:?} (expected start, stop or restart)"),
        );
    };
    let Some(container) = container_id else {
        return (false, "missing container_id".to_owned());
    };
    if !valid_container_ref(container) {
        return (false, "invalid container_id".to_owned());
    }
    match run_action_blocking(docker_host.map(str::to_owned), action, container) {
        Ok(message) => (true, message),
        Err(detail) => (
            false,
            format!(
                "could not {} container {container}: {detail}",
                action.as_str()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    #[test]
    fn container_refs() {
        assert!(valid_container_ref("web-1"));
        assert!(valid_container_ref("my_app.v2"));
        assert!(valid_container_ref(&"a".repeat(64)));
        assert!(!valid_container_ref(""));
        assert!(!valid_container_ref("-x"));
        assert!(!valid_container_ref("../../images/create"));
        assert!(!valid_container_ref("a/b"));
        assert!(!valid_container_ref("a?b=c"));
        assert!(!valid_container_ref("a b"));
        assert!(!valid_container_ref(&"a".repeat(129)));
    }

    #[test]
    fn bad_requests_fail_without_docker() {
        let host = Some("unix:///nonexistent/docker.sock");
        assert_eq!(
            docker_action(host, Some("explode"), Some("web")).1,
            "unknown action \"explode\" (expected start, stop or restart)"
        );
        assert_eq!(docker_action(host, None, Some("web")).1, "missing action");
        assert_eq!(
            docker_action(host, Some("stop"), None).1,
            "missing container_id"
        );
        assert_eq!(
            docker_action(host, Some("stop"), Some("../x")),
            (false, "invalid container_id".to_owned())
        );
    }

    #[test]
    fn unreachable_engine_is_a_failure_not_a_hang() {
        let started = std::time::Instant::now();
        let (ok, msg) = docker_action(
            Some("unix:///nonexistent/docker.sock"),
            Some("start"),
            Some("web"),
        );
        assert!(!ok);
        assert!(msg.starts_with("could not"), "{msg}");
        assert!(started.elapsed() < Duration::from_secs(6));
    }
}
