//! Runs the hub's `docker_command` requests on the local Docker engine.
//!
//! Owns one short-lived bollard call per request. bollard is async, so each
//! call gets its own current-thread tokio runtime on the (already dedicated)
//! request thread; tokio never runs anywhere else in the agent.
//!
//! Invariants: the container reference is validated before it reaches a
//! URL path (Docker ids and names only: `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most
//! 128 bytes), the action must be `start`, `stop` or `restart`, and every
//! call is bounded by a timeout. The answer is always a (success, message)
//! pair, never a panic.

use std::time::Duration;

use bollard::Docker;

use crate::feed::ContainerAction;

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
/// hub relays to the browser.
pub fn docker_action(
    docker_host: Option<&str>,
    action: Option<&str>,
    container_id: Option<&str>,
    timeout: Duration,
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

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return (false, format!("could not start a runtime: {e}")),
    };
    runtime.block_on(async move {
        // Connecting is lazy in bollard: no I/O happens until the request.
        let docker = match docker_host {
            Some(host) => Docker::connect_with_host(host),
            None => Docker::connect_with_defaults(),
        };
        let docker = match docker {
            Ok(d) => d,
            Err(e) => return (false, format!("could not reach Docker: {e}")),
        };
        let call = async {
            match action {
                ContainerAction::Start => docker.start_container(container, None).await,
                ContainerAction::Stop => docker.stop_container(container, None).await,
                ContainerAction::Restart => docker.restart_container(container, None).await,
            }
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(())) => (true, done_message(action).to_owned()),
            Ok(Err(e)) => (false, failure_message(action, container, &e)),
            Err(_) => (
                false,
                format!(
                    "could not {} container {container}: timed out after {}",
                    action.as_str(),
                    humantime::format_duration(timeout)
                ),
            ),
        }
    })
}

fn done_message(action: ContainerAction) -> &'static str {
    match action {
        ContainerAction::Start => "Container started",
        ContainerAction::Stop => "Container stopped",
        ContainerAction::Restart => "Container restarted",
    }
}

fn failure_message(action: ContainerAction, container: &str, e: &bollard::errors::Error) -> String {
    let detail = match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    };
    format!(
        "could not {} container {container}: {detail}",
        action.as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let t = Duration::from_secs(1);
        let host = Some("unix:///nonexistent/docker.sock");
        assert_eq!(
            docker_action(host, Some("explode"), Some("web"), t).1,
            "unknown action \"explode\" (expected start, stop or restart)"
        );
        assert_eq!(
            docker_action(host, None, Some("web"), t).1,
            "missing action"
        );
        assert_eq!(
            docker_action(host, Some("stop"), None, t).1,
            "missing container_id"
        );
        assert_eq!(
            docker_action(host, Some("stop"), Some("../x"), t),
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
            Duration::from_secs(5),
        );
        assert!(!ok);
        assert!(msg.starts_with("could not"), "{msg}");
        assert!(started.elapsed() < Duration::from_secs(6));
    }
}
