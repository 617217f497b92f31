//! SIGHUP on the loop's side: load the config again, merge it into the
//! running one ([`Config::reloaded`]), build what it needs that may fail
//! (notifier threads, the login worker), and only then hand it to the hub
//! ([`Input::Reload`]), which closes what it revokes. No connection is
//! dropped by the reload itself.
//!
//! Invariants: a reload that fails at any step changes nothing and says
//! why in the log; systemd hears `RELOADING=1` before and `READY=1` after,
//! whatever the outcome (`Type=notify-reload`). All of it is this one
//! function: the TLS certificate is one more step before anything is
//! applied (served to connections accepted after the reload).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::config::{Config, ConfigError};
use crate::hub::{Input, Reload};
use crate::notify::Notifier;
use crate::transport::tls::load_server_config;

use super::{Server, system};

/// Loads the config again as at start-up (same file, same flags).
pub type LoadConfig = Box<dyn Fn() -> Result<Config, ConfigError> + Send>;

/// What the loop needs to reload: the flag SIGHUP sets and the loader.
pub struct ReloadSource {
    pub requested: Arc<AtomicBool>,
    pub load: LoadConfig,
}

impl Server {
    /// Reloads when SIGHUP came since the last iteration.
    pub(super) fn reload_if_asked(&mut self, now: Instant) {
        let asked = self
            .reload
            .as_ref()
            .is_some_and(|r| r.requested.swap(false, Ordering::SeqCst));
        if asked {
            self.reload(now);
        }
    }

    /// One reload, start to end (see the module doc).
    pub fn reload(&mut self, now: Instant) {
        system::sd_notify_reloading();
        match self.try_reload(now) {
            Ok(()) => {
                log::info!("config reloaded");
                system::sd_notify("READY=1\nSTATUS=config reloaded");
            }
            Err(e) => {
                log::error!("config reload failed, the running config is kept: {e}");
                system::sd_notify("READY=1\nSTATUS=config reload failed; see the log");
            }
        }
    }

    fn try_reload(&mut self, now: Instant) -> Result<(), String> {
        let Some(source) = &self.reload else {
            return Err("this server was started without a config source".into());
        };
        let new = (source.load)().map_err(|e| e.to_string())?;
        let running = self.hub.config();
        let (merged, restart) = running.reloaded(new).map_err(|e| e.to_string())?;
        for name in restart {
            log::warn!(
                "config reload: {name} changed, which needs a restart; the running value is kept"
            );
        }
        // The certificate and key are read again (a renewed certificate
        // keeps its paths) and checked before anything is applied.
        let tls = match &merged.tls {
            Some(files) if self.serves_tls() => Some(
                load_server_config(&files.cert_file, &files.key_file).map_err(|e| e.to_string())?,
            ),
            _ => None,
        };
        let notifiers_changed = merged.notifiers != running.notifiers;
        let notifier = if notifiers_changed && !merged.notifiers.is_empty() {
            Some(Notifier::spawn(&merged.notifiers).map_err(|e| e.to_string())?)
        } else {
            None
        };
        self.set_users(merged.users.clone())
            .map_err(|e| format!("could not start the login worker: {e}"))?;
        if let Some(tls) = tls {
            // New connections get it; open ones keep their session.
            self.set_tls(Some(tls));
        }
        self.hub_input(
            now,
            Input::Reload(Box::new(Reload {
                config: merged,
                notifier,
                notifiers_changed,
            })),
        );
        Ok(())
    }
}

/// A flag for [`ReloadSource::requested`] (set by the signal thread).
pub fn reload_flag() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}
