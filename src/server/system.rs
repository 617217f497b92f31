//! The daemon's contract with its host: systemd readiness notifications
//! (`sd_notify` over `$NOTIFY_SOCKET`, std only), signal handling
//! (SIGTERM/SIGINT set the shutdown flag, SIGHUP the reload flag; both wake
//! the loop), and the open-file limit.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mio::Waker;

/// Sends a state string (`READY=1`, `STOPPING=1`) to systemd when run as
/// `Type=notify`; a no-op otherwise.
pub fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => return log::warn!("could not notify systemd: {e}"),
    };
    let bytes = path.as_encoded_bytes();
    let result = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = result {
        log::warn!("could not notify systemd ({state}): {e}");
    }
}

/// `RELOADING=1` with the `MONOTONIC_USEC=` systemd wants for
/// `Type=notify-reload` (it must be the time the reload started).
pub fn sd_notify_reloading() {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the struct we pass; CLOCK_MONOTONIC
    // always exists on Linux.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    let usec = (ts.tv_sec.max(0) as u64)
        .saturating_mul(1_000_000)
        .saturating_add(ts.tv_nsec.max(0) as u64 / 1000);
    sd_notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
}

/// Raises the soft open-file limit to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(lim.rlim_cur)
}

/// Installs signal handling on a thread of its own: SIGTERM/SIGINT set
/// `flag` (a second one while shutting down exits at once), SIGHUP sets
/// `reload`; either way the loop is woken and acts on its next iteration.
///
/// # Errors
/// When the handler thread cannot be set up.
pub fn handle_signals(
    flag: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    waker: Arc<Waker>,
) -> io::Result<()> {
    let mut signals =
        signal_hook::iterator::Signals::new([libc::SIGTERM, libc::SIGINT, libc::SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == libc::SIGHUP {
                    log::info!("SIGHUP: reloading the config");
                    reload.store(true, Ordering::SeqCst);
                    let _ = waker.wake();
                    continue;
                }
                if flag.swap(true, Ordering::SeqCst) {
                    log::warn!("second signal {sig}: exiting now");
                    std::process::exit(1);
                }
                log::info!("signal {sig}: shutting down");
                let _ = waker.wake();
            }
        })?;
    Ok(())
}
