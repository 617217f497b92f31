//! Plain TCP: reads with `read(2)`, writes with `sendmsg(2)` gather writes.

use std::io::{self, Read};

use mio::net::TcpStream;

use super::Transport;

/// A plain TCP connection.
#[derive(Debug)]
pub struct TcpTransport {
    stream: TcpStream,
}

impl TcpTransport {
    pub fn new(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        TcpTransport { stream }
    }

    /// Looks at waiting bytes without taking them.
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.peek(buf)
    }
}

impl Read for TcpTransport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

/// Writes through `sendmsg(2)` instead of `writev(2)`: same gather semantics,
/// but the socket path skips the VFS layer (file-position lock, iterator
/// checks) that `writev` pays on every call, and `MSG_NOSIGNAL` turns a
/// reset peer into `EPIPE` rather than a signal.
impl io::Write for TcpTransport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        // SAFETY: `IoSlice` is guaranteed ABI-compatible with `iovec` on Unix;
        // the header points at `bufs`, which outlives the call, and sendmsg
        // only reads from it.
        let n = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = bufs.len() as _;
            libc::sendmsg(
                self.stream.as_raw_fd(),
                &msg,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for TcpTransport {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        &mut self.stream
    }

    fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }
}
