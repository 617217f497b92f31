//! HTTP requests on a connection: request heads are parsed, the router
//! decides, and the answer is queued (keep-alive or close) or the socket is
//! upgraded to a WebSocket and handed to the hub.

use std::time::Instant;

use crate::http::router::{self, HttpApp, Route, RouterConfig};
use crate::http::{self, Parse};
use crate::hub::{HistoryRange, Hub, Input};
use crate::stats::{Endpoint, Stats};
use crate::ws::{self, MessageReader};

use super::conn::Phase;
use super::outbox::mark_dirty;
use super::{LINGER, MAX_BODY, MAX_REQUESTS_PER_EVENT, Server};
use crate::auth::Claims;

/// The plain endpoints' bodies, from the loop's view of the daemon.
struct AppView<'a> {
    hub: &'a Hub,
    stats: &'a Stats,
    deflate: crate::ws::deflate::DeflateStats,
    connections: usize,
}

impl HttpApp for AppView<'_> {
    fn healthz(&self) -> serde_json::Value {
        let mut health = serde_json::json!({
            "status": "ok",
            "docker": if self.hub.state().docker_up { "up" } else { "down" },
            "docker_error": self.hub.state().docker_error,
            "connections": self.connections,
        });
        if let (Some(c), Some(m)) = (self.hub.state().cluster_health(), health.as_object_mut()) {
            m.insert("cluster".into(), c);
        }
        health
    }
    fn metrics(&self) -> String {
        let mut text = self.stats.render();
        crate::stats::render_deflate(&mut text, &self.deflate);
        self.hub.state().render_alert_metrics(&mut text);
        self.hub.state().render_cluster_metrics(&mut text);
        text
    }
    fn containers(&self) -> Vec<u8> {
        self.hub.state().containers_json()
    }
    fn servers(&self) -> Vec<u8> {
        self.hub.state().servers_body()
    }
    fn server_containers(&self, server_id: &str) -> Option<Vec<u8>> {
        self.hub.state().server_containers_body(server_id)
    }
    fn server_metrics(&self, server_id: &str, range: HistoryRange) -> Option<Vec<u8>> {
        self.hub
            .state()
            .metrics_history_json(server_id, range, crate::hub::unix_now())
    }
    fn alerts(&self) -> Vec<u8> {
        self.hub.state().alerts_json()
    }
    fn metrics_elsewhere(&self, server_id: &str) -> bool {
        self.hub.state().metrics_owner(server_id).is_some()
    }
}

impl Server {
    /// A server another hub owns: its history is asked of that hub and the
    /// connection waits (it is answered and closed when the answer comes,
    /// 504 after `ASK_TIMEOUT` and a margin, 503 when it cannot be asked).
    fn start_remote_metrics(
        &mut self,
        key: usize,
        server_id: &str,
        range: HistoryRange,
        now: Instant,
    ) {
        let Some(serial) = self.conns.get(key).map(|c| c.serial) else {
            return;
        };
        if !self.hub.state().ask_history(server_id, range, key, serial) {
            let r = http::error_response(503, "Retry-After: 1\r\n", "the cluster is busy");
            return self.reply_and_close(key, r, 503, now);
        }
        let deadline = now + crate::cluster::ASK_TIMEOUT + std::time::Duration::from_secs(2);
        if let Some(c) = self.conns.get_mut(key) {
            c.phase = Phase::Waiting { deadline };
        }
    }

    /// Another hub's answer for a waiting history request (dropped when
    /// its connection is gone or is another one now).
    pub(super) fn finish_remote_metrics(
        &mut self,
        conn: usize,
        serial: u64,
        status: u16,
        body: &[u8],
        now: Instant,
    ) {
        let waiting = self
            .conns
            .get(conn)
            .is_some_and(|c| c.serial == serial && matches!(c.phase, Phase::Waiting { .. }));
        if !waiting {
            return;
        }
        let r = if status == 200 {
            http::response(200, "application/json", "", body)
        } else {
            let why = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| "the server's hub refused".into());
            http::error_response(status, "", &why)
        };
        self.reply_and_close(conn, r, status, now);
    }

    /// Queues a plain HTTP reply and closes after it.
    pub(super) fn reply_and_close(
        &mut self,
        key: usize,
        bytes: Vec<u8>,
        status: u16,
        now: Instant,
    ) {
        self.stats.http_request(status);
        if let Some(c) = self.conns.get_mut(key) {
            c.reply_and_close(bytes, now + LINGER);
            mark_dirty(&mut self.dirty, c, key);
        }
    }

    pub(super) fn on_head_bytes(&mut self, key: usize, now: Instant) {
        for _ in 0..MAX_REQUESTS_PER_EVENT {
            let Some(c) = self.conns.get_mut(key) else {
                return;
            };
            if !matches!(c.phase, Phase::Head { .. }) {
                return;
            }
            if c.over_soft_cap() {
                c.read_paused = true;
                return;
            }
            if c.inbuf.is_empty() {
                c.release_inbuf();
                return;
            }
            if !self.on_one_head(key, now) {
                return;
            }
        }
        if self.conns.get(key).is_some_and(|c| !c.inbuf.is_empty()) {
            self.come_back(key);
        }
    }

    /// Handles one request head if complete; true when the connection can
    /// take another request (keep-alive) right away.
    fn on_one_head(&mut self, key: usize, now: Instant) -> bool {
        let max_head = self.hub.config().max_head_bytes;
        let Some(c) = self.conns.get_mut(key) else {
            return false;
        };
        let too_big = || http::error_response(431, "", "request head larger than 8 KiB");
        let head = match http::parse_head(&c.inbuf) {
            Parse::Partial if c.inbuf.len() > max_head => {
                self.reply_and_close(key, too_big(), 431, now);
                return false;
            }
            Parse::Partial => return false,
            Parse::Invalid(why) => {
                self.stats.bad_input("bad_http");
                self.reply_and_close(key, http::error_response(400, "", why), 400, now);
                return false;
            }
            Parse::Complete(h) if h.head_len > max_head => {
                self.reply_and_close(key, too_big(), 431, now);
                return false;
            }
            Parse::Complete(h) => h,
        };
        let mut head = head;
        // The body, when there is one: Content-Length only, at most MAX_BODY,
        // read within the same handshake deadline as the head.
        let refused = if head.transfer_encoding {
            Some((
                411,
                "Transfer-Encoding is not supported: send Content-Length",
            ))
        } else if head.bad_length {
            Some((400, "invalid Content-Length"))
        } else if head.content_length.is_some_and(|n| n > MAX_BODY as u64) {
            Some((413, "request body larger than 8 KiB"))
        } else {
            None
        };
        if let Some((status, why)) = refused {
            self.stats.bad_input("bad_http");
            self.reply_and_close(key, http::error_response(status, "", why), status, now);
            return false;
        }
        let body_len = head.content_length.unwrap_or(0) as usize;
        if c.inbuf.len() < head.head_len + body_len {
            return false; // the rest of the body is still on its way
        }
        let peer = c.peer;
        let _ = c.inbuf.split_to(head.head_len);
        if body_len > 0 {
            head.body = c.inbuf.split_to(body_len).to_vec();
        }
        let route = {
            let app = AppView {
                hub: &self.hub,
                stats: &self.stats,
                deflate: crate::ws::deflate::DeflateStats {
                    messages_inflated: self.inflater.messages,
                    ..self.deflater.stats
                },
                connections: self.conns.len(),
            };
            let rc = RouterConfig {
                config: self.hub.config(),
                jwt: self.hub.state().jwt.as_ref(),
                now_unix: crate::hub::unix_now(),
                secure: self.serves_tls(),
            };
            router::route(&head, &rc, &app)
        };
        match route {
            Route::Reply {
                status,
                bytes,
                keep_alive,
                refusal,
            } => {
                match refusal {
                    Some("origin") => {
                        self.stats.auth_failure("origin");
                        self.log_origin_refusal(&head, peer, now);
                    }
                    Some(why @ ("no_token" | "bad_token")) => self.stats.auth_failure(why),
                    Some("host") => self.stats.bad_input("bad_host"),
                    Some("bad_upgrade") => self.stats.bad_input("bad_upgrade"),
                    _ => {}
                }
                if !keep_alive {
                    self.reply_and_close(key, bytes, status, now);
                    return false;
                }
                self.stats.http_request(status);
                let deadline = now + self.hub.config().handshake_timeout;
                let Some(c) = self.conns.get_mut(key) else {
                    return false;
                };
                c.out.push(ws::Frame::from(bytes));
                c.phase = Phase::Head { deadline };
                c.requests_served = c.requests_served.saturating_add(1);
                mark_dirty(&mut self.dirty, c, key);
                true
            }
            Route::Upgrade {
                endpoint,
                target,
                accept,
                claims,
                deflate,
                dialect,
            } => {
                self.upgrade(
                    key,
                    endpoint,
                    dialect,
                    target,
                    claims,
                    (&accept, deflate),
                    now,
                );
                false
            }
            Route::Login { username, password } => {
                self.start_login(key, username, password, now);
                false
            }
            Route::RemoteMetrics { server_id, range } => {
                self.start_remote_metrics(key, &server_id, range, now);
                false
            }
        }
    }

    /// Completes the WebSocket handshake and hands the socket to the hub.
    // The fields of `Route::Upgrade`, as the router gives them.
    #[allow(clippy::too_many_arguments)]
    fn upgrade(
        &mut self,
        key: usize,
        endpoint: Endpoint,
        dialect: crate::protocol::Dialect,
        target: Option<String>,
        claims: Option<Claims>,
        (accept, deflate): (&str, bool),
        now: Instant,
    ) {
        let max_msg = self.hub.config().max_message_bytes;
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.out
            .push(ws::Frame::from(http::switching_protocols(accept, deflate)));
        c.phase = Phase::Open;
        c.endpoint = endpoint;
        c.deflate = deflate;
        c.reader = Some(if deflate {
            MessageReader::with_deflate(max_msg)
        } else {
            MessageReader::new(max_msg)
        });
        c.last_ping = now;
        c.in_hub = endpoint != Endpoint::Echo;
        let serial = c.serial;
        let peer = c.peer;
        mark_dirty(&mut self.dirty, c, key);
        self.stats.conn_moved(Endpoint::Http, endpoint);
        if endpoint != Endpoint::Echo {
            self.hub_input(
                now,
                Input::Opened {
                    conn: key,
                    serial,
                    endpoint,
                    dialect,
                    target,
                    claims,
                    peer: Some(peer),
                },
            );
        }
        // Frames pipelined after the head are already in the buffer.
        if self.conns.get(key).is_some_and(|c| !c.inbuf.is_empty()) {
            self.on_ws_bytes(key, now);
        }
    }
}
