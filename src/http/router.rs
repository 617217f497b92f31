//! The HTTP router: which request on the port gets which answer.
//!
//! One table for everything: WebSocket endpoints (upgraded after the RFC
//! 6455 checks and the Origin rule) and plain requests (`/healthz`,
//! `/metrics`, `/api/v1/containers`, `/api/v1/alerts`). The checks every request passes live
//! here and nowhere else:
//! - Host (DNS rebinding, SPEC section 8): a `Host` that is not a loopback
//!   name or address, the listen address, or in `[http] allowed_hosts` gets
//!   421, with auth on or off.
//! - Auth for browser HTTP endpoints: with auth on, `Authorization: Bearer
//!   <jwt>` or the `dockwire_session` cookie; 401 otherwise. `/healthz`,
//!   `/metrics` and the dashboard's static files (`/`, `/assets/...`,
//!   answered by [`crate::web`]) stay open. A request authenticated by its
//!   cookie (ambient credentials) must also pass the Origin rule (403), and
//!   so must a login
//!   or logout POST. A browser upgrade carrying a valid session token
//!   (cookie or Bearer) opens already authenticated ([`Route::Upgrade`]'s
//!   `claims`); a missing or bad one leaves the first-message `auth`.
//! - `POST /api/v1/login` is parsed here and answered by the loop once the
//!   login worker has checked the password ([`Route::Login`]).
//! - `GET /api/v1/servers/{id}/metrics` of a server another hub of the
//!   cluster owns is answered by the loop once that hub has
//!   ([`Route::RemoteMetrics`]).
//!
//! The router computes answers only; the event loop owns the socket. What a
//! plain endpoint returns comes from an [`HttpApp`].

use std::net::{IpAddr, SocketAddr};

use crate::auth::users::{self, clear_cookie, cookie_token};
use crate::auth::{Claims, JwtVerifier};
use crate::config::Config;
use crate::hub::HistoryRange;
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
    /// `/api/v1/servers` as JSON.
    fn servers(&self) -> Vec<u8>;
    /// `/api/v1/servers/{id}/containers` as JSON; `None`: unknown server.
    fn server_containers(&self, server_id: &str) -> Option<Vec<u8>>;
    /// `/api/v1/servers/{id}/metrics` as JSON; `None` for an unknown server.
    fn server_metrics(&self, server_id: &str, range: HistoryRange) -> Option<Vec<u8>>;
    /// `/api/v1/alerts` as JSON: `{"firing":[...],"recent":[...]}`.
    fn alerts(&self) -> Vec<u8>;
    /// Whether another hub of the cluster holds `server_id`'s history.
    fn metrics_elsewhere(&self, _server_id: &str) -> bool {
        false
    }
}

/// The server id in `/api/v1/servers/{id}/{what}`.
fn server_path<'a>(path: &'a str, what: &str) -> Option<&'a str> {
    let id = path
        .strip_prefix("/api/v1/servers/")?
        .strip_suffix(what)?
        .strip_suffix('/')?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// Upgrade to a WebSocket on `endpoint` (`target`: the server id in the path).
    Upgrade {
        endpoint: Endpoint,
        target: Option<String>,
        accept: String,
        /// The session token (cookie or Bearer) was valid: the socket opens authenticated.
        claims: Option<Claims>,
        /// The client offered permessage-deflate in a form we accept, and
        /// `[limits] compression` is on.
        deflate: bool,
        /// The wire it asked for (`format=msgpack`, SPEC 12).
        dialect: crate::protocol::Dialect,
    },
    /// `POST /api/v1/login` with a well-formed body: check the password
    /// off the loop, then answer (and close the connection).
    Login { username: String, password: String },
    /// `GET /api/v1/servers/{id}/metrics` of a server another hub owns:
    /// ask that hub, then answer (and close the connection).
    RemoteMetrics {
        server_id: String,
        range: HistoryRange,
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
    /// Served over TLS: cookies get `Secure`.
    pub secure: bool,
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

/// Where a request's session token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenSource {
    Bearer,
    /// Ambient: the browser sends it by itself, so the Origin rule applies.
    Cookie,
}

/// The session token of a request: `Authorization: Bearer` first, then the cookie.
fn session_token(head: &RequestHead) -> Option<(&str, TokenSource)> {
    if let Some(t) = bearer(head) {
        return Some((t, TokenSource::Bearer));
    }
    head.cookie
        .as_deref()
        .and_then(cookie_token)
        .map(|t| (t, TokenSource::Cookie))
}

/// The 403 of the Origin rule (counted and logged by the loop as "origin").
fn origin_refusal(keep_alive: bool) -> Route {
    refuse(
        403,
        "",
        "Origin not allowed: add it to [auth] allowed_origins",
        keep_alive,
        "origin",
    )
}

/// The `range` query parameter (default 1h).
fn history_range(query: &str) -> Result<HistoryRange, String> {
    match super::query_param(query, "range") {
        None => Ok(HistoryRange::Hour),
        Some(v) => HistoryRange::parse(v).ok_or_else(|| {
            let shown: String = v.chars().take(20).collect();
            format!("range {shown:?} is not one of 1h, 6h, 24h")
        }),
    }
}

/// `POST /api/v1/login`: method, Origin and body checks; the password is
/// checked later, off the loop.
fn login(head: &RequestHead, rc: &RouterConfig<'_>, keep_alive: bool) -> Route {
    if head.method != "POST" {
        return refuse(405, "Allow: POST\r\n", "use POST", keep_alive, "method");
    }
    if rc.config.users.is_empty() {
        return refuse(
            404,
            "",
            "logins are off: no [[users]] in the config",
            keep_alive,
            "not_found",
        );
    }
    if !origin_allowed(head, &rc.config.allowed_origins) {
        return origin_refusal(false);
    }
    let bad = || {
        refuse(
            400,
            "",
            "expected a JSON body {\"username\":\"...\",\"password\":\"...\"}",
            false,
            "bad_request",
        )
    };
    let Ok(serde_json::Value::Object(mut obj)) = serde_json::from_slice(&head.body) else {
        return bad();
    };
    let (Some(serde_json::Value::String(username)), Some(serde_json::Value::String(password))) =
        (obj.remove("username"), obj.remove("password"))
    else {
        return bad();
    };
    if username.len() > 4 * users::MAX_NAME_LEN || password.len() > users::MAX_PASSWORD_LEN {
        return refuse(
            400,
            "",
            "username or password too long",
            false,
            "bad_request",
        );
    }
    Route::Login { username, password }
}

/// `POST /api/v1/logout`: clears the cookie (the token itself stays valid
/// until its `exp`; there is no server-side session to end).
fn logout(head: &RequestHead, rc: &RouterConfig<'_>, keep_alive: bool) -> Route {
    if head.method != "POST" {
        return refuse(405, "Allow: POST\r\n", "use POST", keep_alive, "method");
    }
    if !origin_allowed(head, &rc.config.allowed_origins) {
        return origin_refusal(keep_alive);
    }
    let extra = format!("Set-Cookie: {}\r\n", clear_cookie(rc.secure));
    Route::Reply {
        status: 200,
        bytes: reply(
            200,
            "application/json",
            &extra,
            br#"{"status":"logged out"}"#,
            keep_alive,
        ),
        keep_alive,
        refusal: None,
    }
}

/// An error answer, counted as refused for `why` (a `/metrics` label).
pub(crate) fn refuse(
    status: u16,
    extra: &str,
    message: &str,
    keep_alive: bool,
    why: &'static str,
) -> Route {
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
        let dialect = match crate::protocol::Dialect::for_request(
            endpoint,
            super::query_param(&head.query, "format"),
            super::query_param(&head.query, "parser"),
        ) {
            Ok(d) => d,
            Err(why) => return refuse(400, "", why, false, "bad_upgrade"),
        };
        let accept = match check_upgrade(head) {
            Ok(a) => a,
            Err(r) => return refuse(r.status, r.extra_headers, &r.message, false, "bad_upgrade"),
        };
        let browser = !matches!(endpoint, Endpoint::Agent | Endpoint::Echo);
        if browser && !origin_allowed(head, &config.allowed_origins) {
            return origin_refusal(false);
        }
        // A valid session token opens the socket authenticated; a bad one
        // is ignored here (the first-message `auth` still works).
        let claims = match (browser, rc.jwt, session_token(head)) {
            (true, Some(v), Some((token, _))) => v.verify(token, rc.now_unix).ok(),
            _ => None,
        };
        let deflate = config.compression
            && head
                .ws_extensions
                .as_deref()
                .is_some_and(crate::ws::deflate::negotiate);
        return Route::Upgrade {
            endpoint,
            target,
            accept,
            claims,
            deflate,
            dialect,
        };
    }
    let keep_alive = !head.connection_close;
    // The dashboard's static files: open, like /healthz (SPEC section 8).
    if let Some(answer) = crate::web::route(head, keep_alive) {
        return answer;
    }
    match head.path.as_str() {
        "/api/v1/login" => return login(head, rc, keep_alive),
        "/api/v1/logout" => return logout(head, rc, keep_alive),
        _ => {}
    }
    let readable = matches!(head.method.as_str(), "GET" | "HEAD");
    let needs_auth = match head.path.as_str() {
        "/healthz" | "/metrics" => false,
        "/api/v1/containers" | "/api/v1/servers" | "/api/v1/alerts" => true,
        p if server_path(p, "containers").is_some() || server_path(p, "metrics").is_some() => true,
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
        let found = session_token(head);
        if found.is_some_and(|(_, src)| src == TokenSource::Cookie)
            && !origin_allowed(head, &config.allowed_origins)
        {
            return origin_refusal(keep_alive);
        }
        let checked = found.map(|(t, _)| verifier.verify(t, rc.now_unix));
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
                    "Authentication required: log in (POST /api/v1/login) or send \
                     Authorization: Bearer <token>",
                    keep_alive,
                    "no_token",
                );
            }
        }
    }
    let (ctype, body): (&str, Vec<u8>) = match head.path.as_str() {
        "/healthz" => ("application/json", app.healthz().to_string().into_bytes()),
        "/metrics" => ("text/plain; version=0.0.4", app.metrics().into_bytes()),
        "/api/v1/servers" => ("application/json", app.servers()),
        "/api/v1/containers" => ("application/json", app.containers()),
        "/api/v1/alerts" => ("application/json", app.alerts()),
        p if let Some(id) = server_path(p, "containers") => match app.server_containers(id) {
            Some(body) => ("application/json", body),
            None => return refuse(404, "", "Unknown server_id", keep_alive, "not_found"),
        },
        p => {
            let id = server_path(p, "metrics").unwrap_or_default();
            let range = match history_range(&head.query) {
                Ok(r) => r,
                Err(msg) => return refuse(400, "", &msg, keep_alive, "bad_request"),
            };
            if head.method == "GET" && app.metrics_elsewhere(id) {
                return Route::RemoteMetrics {
                    server_id: id.to_string(),
                    range,
                };
            }
            match app.server_metrics(id, range) {
                Some(body) => ("application/json", body),
                None => {
                    let shown: String = id.chars().take(80).collect();
                    let msg = format!("Unknown server_id: {shown}");
                    return refuse(404, "", &msg, keep_alive, "not_found");
                }
            }
        }
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

    struct NoApp;
    impl HttpApp for NoApp {
        fn healthz(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
        fn metrics(&self) -> String {
            String::new()
        }
        fn containers(&self) -> Vec<u8> {
            b"[]".to_vec()
        }
        fn servers(&self) -> Vec<u8> {
            b"[]".to_vec()
        }
        fn server_containers(&self, id: &str) -> Option<Vec<u8>> {
            (id == "local").then(|| b"[]".to_vec())
        }
        fn server_metrics(&self, id: &str, range: HistoryRange) -> Option<Vec<u8>> {
            (id == "local").then(|| format!("{range:?}").into_bytes())
        }
        fn alerts(&self) -> Vec<u8> {
            br#"{"firing":[],"recent":[]}"#.to_vec()
        }
    }

    fn status(r: &Route) -> u16 {
        match r {
            Route::Reply { status, .. } => *status,
            Route::Upgrade { .. } => 101,
            Route::Login { .. } | Route::RemoteMetrics { .. } => 0,
        }
    }

    #[test]
    fn cookie_auth_history_and_login_routes() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let f: crate::config::FileConfig = toml::from_str("").unwrap();
        let config = Config::from_file(f, &crate::config::Overrides::default()).unwrap();
        let jwt = JwtVerifier::new(secret.to_vec());
        let rc = RouterConfig {
            config: &config,
            jwt: Some(&jwt),
            now_unix: 1_800_000_000,
            secure: false,
        };
        let token = crate::auth::sign_token(
            secret,
            "u",
            crate::auth::Role::Viewer,
            std::time::Duration::from_secs(60),
            1_800_000_000,
        )
        .unwrap();
        let get = |path: &str, query: &str, cookie: Option<String>, origin: Option<&str>| {
            let head = RequestHead {
                method: "GET".into(),
                path: path.into(),
                query: query.into(),
                host: Some("127.0.0.1:7575".into()),
                cookie,
                origin: origin.map(str::to_string),
                ..RequestHead::default()
            };
            status(&route(&head, &rc, &NoApp))
        };
        let cookie = Some(format!("a=b; dockwire_session={token}"));
        let m = "/api/v1/servers/local/metrics";
        assert_eq!(get(m, "range=6h", cookie.clone(), None), 200);
        assert_eq!(get(m, "range=6h", None, None), 401);
        assert_eq!(get(m, "range=7h", cookie.clone(), None), 400);
        assert_eq!(
            get("/api/v1/servers/x/metrics", "", cookie.clone(), None),
            404
        );
        assert_eq!(
            get("/api/v1/servers//metrics", "", cookie.clone(), None),
            404
        );
        let same = Some("http://127.0.0.1:7575");
        assert_eq!(get(m, "", cookie.clone(), same), 200);
        assert_eq!(get(m, "", cookie.clone(), Some("http://evil.example")), 403);
        assert_eq!(get(m, "", Some("dockwire_session=x.y.z".into()), None), 401);
        // Logins: POST only, and no [[users]] here.
        assert_eq!(get("/api/v1/login", "", None, None), 405);
        let post = RequestHead {
            method: "POST".into(),
            path: "/api/v1/login".into(),
            body: br#"{"username":"a","password":"b"}"#.to_vec(),
            ..RequestHead::default()
        };
        assert_eq!(status(&route(&post, &rc, &NoApp)), 404);
        assert_eq!(history_range("x=1&range=24h").unwrap(), HistoryRange::Day);
        assert_eq!(history_range("").unwrap(), HistoryRange::Hour);
        assert!(history_range("range").is_err());
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
