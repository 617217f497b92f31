//! Reading a password for `dockwire passwd`: from a terminal without echo
//! (asked twice), or one line from a pipe (scripts and tests).
//!
//! Echo is turned off with termios on the terminal and restored on every
//! path out, including errors (a guard restores it on drop).

use std::io::{BufRead, IsTerminal, Read, Write};

use anyhow::{Context, bail};

use dockwire::auth::users::MAX_PASSWORD_LEN;

/// Restores the terminal's settings when dropped.
struct EchoOff {
    fd: i32,
    saved: libc::termios,
}

impl EchoOff {
    fn new(fd: i32) -> std::io::Result<Self> {
        // SAFETY: `termios` is plain data; tcgetattr fills it or fails.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL;
        // SAFETY: `quiet` is a valid termios copied from the terminal's own.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(EchoOff { fd, saved })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `new` on the same descriptor.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

/// One line from stdin without its line ending (bounded).
fn read_line() -> anyhow::Result<String> {
    let mut line = String::new();
    let n = std::io::stdin()
        .lock()
        .take(MAX_PASSWORD_LEN as u64 + 2)
        .read_line(&mut line)
        .context("could not read the password")?;
    if n == 0 {
        bail!("no password given on standard input");
    }
    while line.ends_with('\n') || line.ends_with('\r') {
        line.pop();
    }
    Ok(line)
}

fn check(pw: &str) -> anyhow::Result<()> {
    if pw.is_empty() {
        bail!("the password must not be empty");
    }
    if pw.len() > MAX_PASSWORD_LEN {
        bail!("the password must be at most {MAX_PASSWORD_LEN} bytes");
    }
    Ok(())
}

/// The password: asked twice without echo on a terminal, else one line of stdin.
///
/// # Errors
/// Empty, too long, the two entries differ, or stdin unreadable.
pub fn read() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let pw = read_line()?;
        check(&pw)?;
        return Ok(pw);
    }
    let _echo = EchoOff::new(libc::STDIN_FILENO).context("could not turn terminal echo off")?;
    let ask = |prompt: &str| -> anyhow::Result<String> {
        eprint!("{prompt}");
        std::io::stderr().flush().ok();
        read_line()
    };
    let first = ask("Password: ")?;
    check(&first)?;
    let second = ask("Again: ")?;
    if first != second {
        bail!("the two passwords differ");
    }
    Ok(first)
}
