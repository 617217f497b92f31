//! The HTTP router: which request on the port gets which answer.
//!
//! One table for everything: WebSocket endpoints (upgraded after the RFC
//! 6455 checks and the Origin rule) and plain requests (`/healthz`,
//! `/metrics`, `/api/v1/containers`). The checks every request passes live
//! here and nowhere else:
//! - Host (DNS rebinding, SPEC section 8): a `Host` that is not a loopback
//!   name or address, the listen address, or in `[http] allowed_hosts` gets
//!   421, with auth on or off.
//! - Auth for browser HTTP endpoints: with auth on, `Authorization: Bearer
//!   <jwt>`; 401 otherwise. `/healthz`, `/metrics` and the dashboard's
//!   static files (`/`, `/assets/...`, answered by [`crate::web`]) stay open.
//!
//! The router computes answers only; the event loop owns the socket. What a
//! plain endpoint returns comes from an [`HttpApp`].

use std::net::{IpAddr, SocketAddr};

use crate::auth::JwtVerifier;
use crate::config::Config;
use crate::protocol::socketio;
use crate::stats::Endpoint;

use super::{RequestHead, check_upgrade, error_reply, origin_allowed, reply};

/// The bodies of the plain endpoints.
pub trait HttpApp {
    /// `/healthz` as JSON.
    fn healthz(&self) -> serde_json::Value;
    /// `/metrics` in Prometheus text format.
    fn metrics(&self) -> String;
    /// `/api/v1/containers` as JSON.
    fn containers(&self) -> Vec<u8>;
}

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// Upgrade to a WebSocket on `endpoint` (`target`: the server id in the path).
    Upgrade {
        endpoint: Endpoint,
        target: Option<String>,
        accept: String,
    },
    /// Answer with `bytes`; `keep_alive`: then read the next request.
    Reply {
        status: u16,
        bytes: Vec<u8>,
        keep_alive: bool,
        /// Why the request was refused, when it was (a `/metrics` label).
        refusal: Option<&'static str>,
    },
}

/// What the router needs from the daemon's configuration.
pub struct RouterConfig<'a> {
    pub config: &'a Config,
    pub jwt: Option<&'a JwtVerifier>,
    pub now_unix: u64,
}

/// The WebSocket endpoint a path names (and the server id in it).
fn websocket_endpoint(path: &str, echo: bool) -> Option<(Endpoint, Option<String>)> {
    match path {
        "/api/v1/ws" => Some((Endpoint::Browser, None)),
        "/api/v1/agents/ws" => Some((Endpoint::Agent, None)),
        "/socket.io" | "/socket.io/" => Some((Endpoint::SocketIo, None)),
        "/debug/echo" if echo => Some((Endpoint::Echo, None)),
        _ => {
            for (prefix, endpoint) in [
                ("/api/v1/ws/metrics/", Endpoint::ServerMetrics),
                ("/api/v1/ws/logs/", Endpoint::ServerLogs),
            ] {
                if let Some(id) = path.strip_prefix(prefix) {
                    return (!id.is_empty() && !id.contains('/'))
                        .then(|| (endpoint, Some(id.to_string())));
                }
            }
            None
        }
    }
}

/// Splits a `Host` header into its lower-cased name and optional port.
fn split_host(host: &str) -> (String, Option<u16>) {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        let (addr, after) = rest.split_once(']').unwrap_or((rest, ""));
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return (addr.to_ascii_lowercase(), port);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => (
            name.trim_end_matches('.').to_ascii_lowercase(),
            port.parse().ok(),
        ),
        _ => (host.trim_end_matches('.').to_ascii_lowercase(), None),
    }
}

/// The SPEC section 8 Host rule. A request without `Host` is not from a
/// browser (browsers always send it), so it cannot be a rebinding attack.
pub fn host_allowed(host: Option<&str>, listen: SocketAddr, allowed: &[String]) -> bool {
    let Some(raw) = host else {
        return true;
    };
    let (name, port) = split_host(raw);
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    if let Ok(ip) = name.parse::<IpAddr>() {
        if ip.is_loopback() {
            return true;
        }
        if ip == listen.ip() && port.is_none_or(|p| p == listen.port()) {
            return true;
        }
    }
    let full = raw.trim().to_ascii_lowercase();
    allowed.iter().any(|a| *a == name || *a == full)
}

/// The `Bearer` token of a request, if any.
fn bearer(head: &RequestHead) -> Option<&str> {
    let v = head.authorization.as_deref()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn refuse(status: u16, extra: &str, message: &str, keep_alive: bool, why: &'static str) -> Route {
    Route::Reply {
        status,
        bytes: error_reply(status, extra, message, keep_alive),
        keep_alive,
        refusal: Some(why),
    }
}

/// Decides the answer to one request head.
pub fn route(head: &RequestHead, rc: &RouterConfig<'_>, app: &dyn HttpApp) -> Route {
    let config = rc.config;
    if !host_allowed(head.host.as_deref(), config.listen, &config.allowed_hosts) {
        return refuse(
            421,
            "",
            "Host not served here: add it to [http] allowed_hosts",
            false,
            "host",
        );
    }
    if let Some((endpoint, target)) = websocket_endpoint(&head.path, config.echo_endpoint) {
        if endpoint == Endpoint::SocketIo
            && let Err(why) = socketio::check_query(&head.query)
        {
            return refuse(400, "", why, false, "bad_upgrade");
        }
        let accept = match check_upgrade(head) {
            Ok(a) => a,
            Err(r) => return refuse(r.status, r.extra_headers, &r.message, false, "bad_upgrade"),
        };
        let browser = !matches!(endpoint, Endpoint::Agent | Endpoint::Echo);
        if browser && !origin_allowed(head, &config.allowed_origins) {
            return refuse(403, "", "Origin not allowed", false, "origin");
        }
        return Route::Upgrade {
            endpoint,
            target,
            accept,
        };
    }
    let keep_alive = !head.connection_close;
    // The dashboard's static files: open, like /healthz (SPEC section 8).
    if let Some(answer) = crate::web::route(head, keep_alive) {
        return answer;
    }
    let readable = matches!(head.method.as_str(), "GET" | "HEAD");
    let needs_auth = match head.path.as_str() {
        "/healthz" | "/metrics" => false,
        "/api/v1/containers" => true,
        _ => return refuse(404, "", "not found", keep_alive, "not_found"),
    };
    if !readable {
        return refuse(
            405,
            "Allow: GET, HEAD\r\n",
            "method not allowed",
            keep_alive,
            "method",
        );
    }
    if needs_auth && let Some(verifier) = rc.jwt {
        let checked = bearer(head).map(|t| verifier.verify(t, rc.now_unix));
        match checked {
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                let msg = format!("Authentication failed: {e}");
                return refuse(
                    401,
                    "WWW-Authenticate: Bearer\r\n",
                    &msg,
                    keep_alive,
                    "bad_token",
                );
            }
            None => {
                return refuse(
                    401,
                    "WWW-Authenticate: Bearer\r\n",
                    "Authentication required: send Authorization: Bearer <token>",
                    keep_alive,
                    "no_token",
                );
            }
        }
    }
    let (ctype, body): (&str, Vec<u8>) = match head.path.as_str() {
        "/healthz" => ("application/json", app.healthz().to_string().into_bytes()),
        "/metrics" => ("text/plain; version=0.0.4", app.metrics().into_bytes()),
        _ => ("application/json", app.containers()),
    };
    let mut bytes = reply(200, ctype, "", &body, keep_alive);
    if head.method == "HEAD" {
        bytes.truncate(bytes.len() - body.len());
    }
    Route::Reply {
        status: 200,
        bytes,
        keep_alive,
        refusal: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen() -> SocketAddr {
        "127.0.0.1:7575".parse().unwrap()
    }

    #[test]
    fn host_rule_takes_loopback_listen_and_listed_names_only() {
        let none: Vec<String> = vec![];
        for ok in [
            "127.0.0.1:7575",
            "127.0.0.2",
            "localhost:7575",
            "LOCALHOST",
            "app.localhost:80",
            "[::1]:7575",
        ] {
            assert!(host_allowed(Some(ok), listen(), &none), "{ok}");
        }
        for bad in [
            "rebind.evil.example",
            "rebind.evil.example:7575",
            "10.0.0.5:7575",
            "[2001:db8::1]",
        ] {
            assert!(!host_allowed(Some(bad), listen(), &none), "{bad}");
        }
        let on_lan: SocketAddr = "10.0.0.5:7575".parse().unwrap();
        assert!(host_allowed(Some("10.0.0.5:7575"), on_lan, &none));
        assert!(host_allowed(Some("10.0.0.5"), on_lan, &none));
        assert!(!host_allowed(Some("10.0.0.5:8080"), on_lan, &none));
        let listed = vec!["dash.example.com".to_string()];
        assert!(host_allowed(
            Some("Dash.Example.com:443"),
            listen(),
            &listed
        ));
        assert!(host_allowed(None, listen(), &none));
    }

    #[test]
    fn bearer_is_found_case_insensitively() {
        let head = RequestHead {
            authorization: Some("bearer abc.def".into()),
            ..RequestHead::default()
        };
        assert_eq!(bearer(&head), Some("abc.def"));
        let basic = RequestHead {
            authorization: Some("Basic Zm9v".into()),
            ..RequestHead::default()
        };
        assert_eq!(bearer(&basic), None);
    }
}
