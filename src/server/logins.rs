//! `POST /api/v1/login` on the loop's side: the failure limiter is asked
//! first (429), the password goes to the login worker (503 when its queue
//! is full), the connection waits in [`Phase::Waiting`], and the answer (a
//! session cookie, or the one 401) is sent when the worker wakes the loop.
//! Also the rate-limited log of Origin refusals.
//!
//! Invariants: argon2 never runs on this thread; a failure is counted even
//! when the connection left before its answer (closing early does not
//! dodge the limiter); an answer whose connection is gone, or whose slab key
//! now belongs to another connection (serials differ), is dropped.

use std::sync::Arc;
use std::time::Instant;

use crate::auth::login::{LoginDone, LoginJob, LoginLimiter, LoginWorker};
use crate::auth::users::{User, session_cookie};
use crate::auth::{Role, sign_token};
use crate::http::{self, RequestHead};
use crate::hub::WarnBudget;

use super::Server;
use super::conn::Phase;

/// The one answer for an unknown user or a wrong password.
pub const BAD_LOGIN: &str = "invalid username or password";

/// The loop's login state.
#[derive(Default)]
pub struct Logins {
    worker: Option<LoginWorker>,
    /// Wakes the loop; kept to start a worker when a reload adds users.
    wake: Option<Arc<dyn Fn() + Send + Sync>>,
    limiter: LoginLimiter,
    /// Origin refusals: one log line per `WARN_EVERY`, the rest counted.
    origin_warnings: WarnBudget,
}

impl Server {
    /// Starts the login worker for the configured `[[users]]` (none: logins
    /// answer 404). `wake` wakes the loop (the shared `mio::Waker`).
    ///
    /// # Errors
    /// The worker thread could not be spawned.
    pub fn enable_logins(&mut self, wake: Arc<dyn Fn() + Send + Sync>) -> std::io::Result<()> {
        let users = self.hub.config().users.clone();
        self.logins.wake = Some(wake);
        self.set_users(users)
    }

    /// Logins check `users` from now on (start-up and reloads); the worker
    /// starts with the first user.
    ///
    /// # Errors
    /// The worker thread could not be spawned.
    pub(super) fn set_users(&mut self, users: Vec<User>) -> std::io::Result<()> {
        match (&self.logins.worker, &self.logins.wake) {
            (Some(w), _) => w.set_users(users),
            (None, Some(wake)) if !users.is_empty() => {
                self.logins.worker = Some(LoginWorker::spawn(users, wake.clone())?);
            }
            _ => {}
        }
        Ok(())
    }

    /// A well-formed login request: refuse at once (429, 503) or hand it
    /// to the worker and wait.
    pub(super) fn start_login(
        &mut self,
        key: usize,
        username: String,
        password: String,
        now: Instant,
    ) {
        let Some(c) = self.conns.get(key) else {
            return;
        };
        let (peer, serial) = (c.peer, c.serial);
        if let Some(wait) = self.logins.limiter.blocked_for(&username, peer, now) {
            self.stats.auth_failure("login_limited");
            let secs = wait.as_secs().max(1);
            let extra = format!("Retry-After: {secs}\r\n");
            let r = http::error_response(429, &extra, "too many failed logins; retry later");
            return self.reply_and_close(key, r, 429, now);
        }
        let Some(worker) = &self.logins.worker else {
            let r = http::error_response(404, "", "logins are off: no [[users]] in the config");
            return self.reply_and_close(key, r, 404, now);
        };
        let job = LoginJob {
            conn: key,
            serial,
            username,
            password,
            peer,
        };
        let (user, addr) = (job.username.clone(), job.peer);
        if worker.submit(job).is_err() {
            let r = http::error_response(503, "Retry-After: 1\r\n", "too many logins at once");
            return self.reply_and_close(key, r, 503, now);
        }
        self.logins.limiter.started(&user, addr);
        let deadline = now + self.hub.config().handshake_timeout;
        if let Some(c) = self.conns.get_mut(key) {
            c.phase = Phase::Waiting { deadline };
        }
    }

    /// Applies every answer the worker has ready.
    pub(super) fn drain_logins(&mut self, now: Instant) {
        // Bounded: the worker's queue holds at most QUEUE_LEN jobs.
        while let Some(done) = self.logins.worker.as_ref().and_then(LoginWorker::try_done) {
            self.finish_login(done, now);
        }
    }

    fn finish_login(&mut self, done: LoginDone, now: Instant) {
        // A reload may have removed or changed the user while the password
        // was being checked: the running config has the last word.
        let role = done.role.filter(|r| {
            self.hub
                .config()
                .users
                .iter()
                .any(|u| u.name == done.username && u.role == *r)
        });
        let reply = match role {
            Some(role) => {
                self.logins.limiter.succeeded(&done.username, done.peer);
                log::info!("login: {:?} ({role}) from {}", done.username, done.peer);
                self.session_reply(&done.username, role)
            }
            None => {
                self.logins.limiter.failed(&done.username, done.peer, now);
                self.stats.auth_failure("bad_login");
                log::info!(
                    "login refused for {:?} from {}",
                    done.username.chars().take(64).collect::<String>(),
                    done.peer
                );
                (401, http::error_response(401, "", BAD_LOGIN))
            }
        };
        let waiting = self
            .conns
            .get(done.conn)
            .is_some_and(|c| c.serial == done.serial && matches!(c.phase, Phase::Waiting { .. }));
        if waiting {
            self.reply_and_close(done.conn, reply.1, reply.0, now);
        }
    }

    /// The 200 with the session cookie.
    fn session_reply(&self, username: &str, role: Role) -> (u16, Vec<u8>) {
        let config = self.hub.config();
        let Some(secret) = config.jwt_secret.as_deref() else {
            // Users imply a secret (config generates one); never reached.
            return (500, http::error_response(500, "", "no session secret"));
        };
        let now_unix = crate::hub::unix_now();
        let ttl = config.session_ttl;
        let token = match sign_token(secret, username, role, ttl, now_unix) {
            Ok(t) => t,
            Err(e) => {
                log::error!("login for {username:?}: {e}");
                return (
                    500,
                    http::error_response(500, "", "could not make a session"),
                );
            }
        };
        let exp = now_unix.saturating_add(ttl.as_secs());
        let expires_at = crate::feed::metrics::rfc3339_secs(exp);
        let body = serde_json::json!({"role": role.as_str(), "expires_at": expires_at});
        let extra = format!(
            "Set-Cookie: {}\r\n",
            session_cookie(&token, self.serves_tls())
        );
        let bytes = http::reply(
            200,
            "application/json",
            &extra,
            body.to_string().as_bytes(),
            false,
        );
        (200, bytes)
    }

    /// Logs a request refused for its Origin: at most one line per
    /// [`crate::hub::WARN_EVERY`], with the number suppressed since the last.
    pub(super) fn log_origin_refusal(
        &mut self,
        head: &RequestHead,
        peer: std::net::IpAddr,
        now: Instant,
    ) {
        let Some(suppressed) = self.logins.origin_warnings.allow(now) else {
            return;
        };
        let origin: String = head
            .origin
            .as_deref()
            .unwrap_or("")
            .chars()
            .take(120)
            .collect();
        let path: String = head.path.chars().take(120).collect();
        log::warn!(
            "refused {} {path} from {peer} with Origin {origin:?}: not the same origin as Host \
             and not in [auth] allowed_origins (add it there to allow it){}",
            head.method,
            if suppressed > 0 {
                format!("; {suppressed} more refusals since the last such line")
            } else {
                String::new()
            }
        );
    }
}
