//! Per-socket outgoing queue of shared frames, flushed with `writev`.
//!
//! Queuing (`offer`/`push`) is kept apart from flushing: the hub queues a [`Frame`]
//! (a refcounted `Bytes`, serialized and framed once for every subscriber) on many sockets,
//! and the event loop flushes a socket when it is writable, sending up to [`IOV_BATCH`]
//! frames per `writev` call without copying them into a socket buffer.
//!
//! Invariants:
//! - `queued_bytes` is exactly the number of bytes not yet written: the sum of the queued
//!   frames' lengths minus the offset already written from the front frame.
//! - Memory per socket is bounded: droppable frames (log lines) are refused past the soft
//!   cap; anything else past the hard cap is refused with [`Offer::OverHardCap`] and the
//!   caller closes the socket (1013). Only [`OutQueue::push`] ignores the caps, for the
//!   handful of bytes of a close frame or a handshake reply; control frames a peer can
//!   provoke (pongs) go through `offer` like everything else.
//! - A partial write resumes at the exact byte it stopped at.
//! - One `flush` makes at most [`MAX_WRITES_PER_FLUSH`] write calls, so one fast reader with
//!   a deep queue cannot starve the other sockets of the event loop.
//! - No empty frame is ever queued (an all-empty `writev` would look like a dead peer).

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use crate::ws::Frame;

/// Frames handed to one `writev` call (Linux allows 1024; 64 covers a busy socket's
/// backlog while the `IoSlice` array stays 1 KiB on the stack).
pub const IOV_BATCH: usize = 64;

/// Write calls one [`OutQueue::flush`] may make before yielding to other sockets.
pub const MAX_WRITES_PER_FLUSH: usize = 16;

pub use crate::transport::{SocketResult, classify_io_error};

/// How much a frame matters when the socket falls behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Log lines: dropped past the soft cap (the client is told how many were lost).
    Droppable,
    /// Everything else: the socket is closed rather than lose it.
    Essential,
}

/// What [`OutQueue::offer`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// A droppable frame refused at the soft cap.
    Dropped,
    /// An essential frame refused at the hard cap: close the socket with 1013.
    OverHardCap,
}

/// A socket's queue of frames waiting to be written.
#[derive(Debug)]
pub struct OutQueue {
    frames: VecDeque<Frame>,
    /// Bytes of the front frame already written.
    offset: usize,
    /// Bytes not yet written.
    queued: usize,
    soft_cap: usize,
    hard_cap: usize,
    /// The error behind the last `SocketResult::Error`, for the caller to log.
    last_error: Option<io::Error>,
}

impl OutQueue {
    /// A queue refusing droppable frames past `soft_cap` queued bytes and essential frames
    /// past `hard_cap` (raised to `soft_cap` if given lower).
    pub fn new(soft_cap: usize, hard_cap: usize) -> Self {
        OutQueue {
            frames: VecDeque::new(),
            offset: 0,
            queued: 0,
            soft_cap,
            hard_cap: hard_cap.max(soft_cap),
            last_error: None,
        }
    }

    /// Queues `frame` unless the socket is too far behind for its priority: droppable frames
    /// are refused when queued bytes + its length > soft cap, essential frames when that
    /// sum > hard cap.
    pub fn offer(&mut self, frame: Frame, prio: Priority) -> Offer {
        let after = self.queued.saturating_add(frame.len());
        match prio {
            Priority::Droppable if after > self.soft_cap => Offer::Dropped,
            Priority::Essential if after > self.hard_cap => Offer::OverHardCap,
            _ => {
                self.push(frame);
                Offer::Queued
            }
        }
    }

    /// Drops every frame not yet started, keeping the remainder of a
    /// partly written front frame (the stream must stay well-formed), so
    /// what is queued next goes out at once.
    pub fn discard_unsent(&mut self) {
        let keep = if self.offset > 0 { 1 } else { 0 };
        while self.frames.len() > keep {
            self.frames.pop_back();
        }
        self.queued = self.frames.front().map_or(0, |f| f.len() - self.offset);
    }

    /// Queues `frame` regardless of the caps: only for the few bytes the
    /// loop itself must send once (a handshake reply, a close frame).
    pub fn push(&mut self, frame: Frame) {
        if frame.is_empty() {
            return;
        }
        self.queued += frame.len();
        self.frames.push_back(frame);
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Frames waiting (the front one may be partly written).
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn soft_cap(&self) -> usize {
        self.soft_cap
    }

    pub fn hard_cap(&self) -> usize {
        self.hard_cap
    }

    /// Drops everything queued (the socket is being torn down).
    pub fn clear(&mut self) {
        self.frames.clear();
        self.offset = 0;
        self.queued = 0;
    }

    /// The I/O error behind the last [`SocketResult::Error`] from `flush`, if any.
    pub fn take_error(&mut self) -> Option<io::Error> {
        self.last_error.take()
    }

    /// Writes as much as possible with `write_vectored`, up to [`IOV_BATCH`] frames per
    /// call and [`MAX_WRITES_PER_FLUSH`] calls. Resumes partial writes exactly, retries
    /// `Interrupted`, stops at `WouldBlock`. Returns the bytes written and the outcome;
    /// `Continue` with a non-empty queue means the call cap was reached: flush again on
    /// a later loop iteration without waiting for a writable event.
    pub fn flush<W: Write + ?Sized>(&mut self, w: &mut W) -> (usize, SocketResult) {
        let mut written = 0;
        for _ in 0..MAX_WRITES_PER_FLUSH {
            if self.frames.is_empty() {
                return (written, SocketResult::Continue);
            }
            let result = {
                // On the stack: no allocation per flush.
                let mut iov = [IoSlice::new(&[]); IOV_BATCH];
                let mut n = 0;
                for (slot, frame) in iov.iter_mut().zip(self.frames.iter()) {
                    let start = if n == 0 { self.offset } else { 0 };
                    *slot = IoSlice::new(&frame[start..]);
                    n += 1;
                }
                w.write_vectored(&iov[..n])
            };
            match result {
                // Non-empty buffers and nothing taken: the peer cannot accept more, ever.
                Ok(0) => return (written, SocketResult::Closed),
                Ok(n) => {
                    written += n;
                    self.consume(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let outcome = classify_io_error(&e);
                    if outcome == SocketResult::Error {
                        self.last_error = Some(e);
                    }
                    return (written, outcome);
                }
            }
        }
        (written, SocketResult::Continue)
    }

    /// Marks `n` bytes from the front as written.
    fn consume(&mut self, mut n: usize) {
        // A writer claiming more than it was given breaks the `Write` contract; clamp
        // rather than underflow.
        n = n.min(self.queued);
        self.queued -= n;
        while n > 0 {
            let Some(front) = self.frames.front() else {
                break;
            };
            let left = front.len() - self.offset;
            if n < left {
                self.offset += n;
                return;
            }
            n -= left;
            self.offset = 0;
            self.frames.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every call and keeps what it was given.
    #[derive(Default)]
    struct Counting {
        vectored_calls: usize,
        write_calls: usize,
        out: Vec<u8>,
        max_iovs: usize,
    }

    impl Write for Counting {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_calls += 1;
            self.out.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.vectored_calls += 1;
            self.max_iovs = self.max_iovs.max(bufs.len());
            let mut n = 0;
            for b in bufs {
                self.out.extend_from_slice(b);
                n += b.len();
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Accepts at most `k` bytes per call, then answers `WouldBlock` to the next call,
    /// alternating; like a socket whose buffer drains slowly.
    struct Trickle {
        k: usize,
        blocked: bool,
        out: Vec<u8>,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.blocked {
                self.blocked = false;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.blocked = true;
            let mut n = 0;
            for b in bufs {
                let take = (self.k - n).min(b.len());
                self.out.extend_from_slice(&b[..take]);
                n += take;
                if n == self.k {
                    break;
                }
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn frames(count: usize, len: usize) -> Vec<Frame> {
        (0..count)
            .map(|i| {
                let body: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
                Frame::from(body)
            })
            .collect()
    }

    fn queue_of(frames: &[Frame]) -> OutQueue {
        let mut q = OutQueue::new(usize::MAX, usize::MAX);
        for f in frames {
            q.push(f.clone());
        }
        q
    }

    #[test]
    fn discard_unsent_keeps_the_half_written_frame_and_lets_a_close_go_next() {
        let fs = frames(5, 100);
        let mut q = queue_of(&fs);
        let mut w = Trickle {
            k: 150,
            blocked: false,
            out: Vec::new(),
            calls: 0,
        };
        let _ = q.flush(&mut w); // frame 0 whole, frame 1 half
        q.discard_unsent();
        assert_eq!(q.len(), 1);
        assert_eq!(q.queued_bytes(), 50);
        q.push(Frame::from_static(b"CLOSE"));
        w.blocked = false;
        w.k = 1000;
        let _ = q.flush(&mut w);
        assert!(q.is_empty());
        let mut want = fs[0].to_vec();
        want.extend_from_slice(&fs[1]);
        want.extend_from_slice(b"CLOSE");
        assert_eq!(w.out, want, "the stream stays whole: no frame is cut");
        // Nothing started: everything goes.
        let mut q = queue_of(&fs);
        q.discard_unsent();
        assert!(q.is_empty());
        assert_eq!(q.queued_bytes(), 0);
    }

    #[test]
    fn many_frames_go_out_in_one_writev() {
        let fs = frames(50, 150);
        let mut q = queue_of(&fs);
        assert_eq!(q.queued_bytes(), 50 * 150);
        let mut w = Counting::default();
        let (n, res) = q.flush(&mut w);
        assert_eq!((n, res), (50 * 150, SocketResult::Continue));
        assert_eq!(w.vectored_calls, 1);
        assert_eq!(w.write_calls, 0);
        assert_eq!(w.max_iovs, 50);
        assert_eq!(w.out, fs.concat());
        assert!(q.is_empty());
        assert_eq!(q.queued_bytes(), 0);
    }

    #[test]
    fn more_than_a_batch_takes_one_call_per_batch() {
        let fs = frames(3 * IOV_BATCH + 1, 10);
        let mut q = queue_of(&fs);
        let mut w = Counting::default();
        let (n, res) = q.flush(&mut w);
        assert_eq!((n, res), (fs.len() * 10, SocketResult::Continue));
        assert_eq!(w.vectored_calls, 4);
        assert_eq!(w.max_iovs, IOV_BATCH);
        assert_eq!(w.out, fs.concat());
    }

    #[test]
    fn partial_writes_resume_exactly() {
        let fs = frames(40, 150);
        let want = fs.concat();
        for k in [1usize, 7, 149, 150, 151, 1000, 6000] {
            let mut q = queue_of(&fs);
            let mut w = Trickle {
                k,
                blocked: false,
                out: Vec::new(),
                calls: 0,
            };
            let mut total = 0;
            let mut rounds = 0;
            while !q.is_empty() {
                let (n, res) = q.flush(&mut w);
                total += n;
                let drained = res == SocketResult::Continue && q.is_empty();
                assert!(res == SocketResult::WouldBlock || drained, "k {k}: {res:?}");
                assert_eq!(q.queued_bytes(), want.len() - total, "k {k}");
                rounds += 1;
                assert!(rounds < 10_000);
            }
            assert_eq!(total, want.len());
            assert_eq!(w.out, want, "k {k}");
        }
    }

    #[test]
    fn interrupted_is_retried() {
        struct Interrupts {
            left: usize,
            inner: Counting,
        }
        impl Write for Interrupts {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.write_vectored(&[IoSlice::new(buf)])
            }
            fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                if self.left > 0 {
                    self.left -= 1;
                    return Err(io::ErrorKind::Interrupted.into());
                }
                self.inner.write_vectored(bufs)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let fs = frames(5, 20);
        let mut q = queue_of(&fs);
        let mut w = Interrupts {
            left: 3,
            inner: Counting::default(),
        };
        assert_eq!(q.flush(&mut w), (100, SocketResult::Continue));
        assert!(q.is_empty());
        assert_eq!(w.inner.out, fs.concat());
    }

    #[test]
    fn one_flush_is_capped_in_write_calls() {
        /// Takes one byte per call and never blocks: a fast peer with a huge backlog.
        struct OneByte(usize);
        impl Write for OneByte {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0 += 1;
                Ok(buf.len().min(1))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut q = queue_of(&frames(4, 100));
        let mut w = OneByte(0);
        let (n, res) = q.flush(&mut w);
        assert_eq!((n, res), (MAX_WRITES_PER_FLUSH, SocketResult::Continue));
        assert_eq!(w.0, MAX_WRITES_PER_FLUSH);
        assert!(!q.is_empty());
        assert_eq!(q.queued_bytes(), 400 - MAX_WRITES_PER_FLUSH);
    }

    #[test]
    fn soft_cap_drops_droppable_but_queues_essential() {
        let mut q = OutQueue::new(1000, 2000);
        let f = Frame::from(vec![1u8; 400]);
        assert_eq!(q.offer(f.clone(), Priority::Droppable), Offer::Queued);
        assert_eq!(q.offer(f.clone(), Priority::Droppable), Offer::Queued);
        // 800 + 400 > 1000.
        assert_eq!(q.offer(f.clone(), Priority::Droppable), Offer::Dropped);
        assert_eq!(q.queued_bytes(), 800);
        // Exactly at the soft cap is still fine.
        assert_eq!(
            q.offer(Frame::from(vec![2u8; 200]), Priority::Droppable),
            Offer::Queued
        );
        assert_eq!(q.offer(f.clone(), Priority::Essential), Offer::Queued);
        assert_eq!(q.queued_bytes(), 1400);
        assert_eq!(q.len(), 4);
    }

    #[test]
    fn hard_cap_refuses_essential_frames() {
        let mut q = OutQueue::new(100, 1000);
        assert_eq!(
            q.offer(Frame::from(vec![0u8; 1000]), Priority::Essential),
            Offer::Queued
        );
        assert_eq!(
            q.offer(Frame::from(vec![0u8; 1]), Priority::Essential),
            Offer::OverHardCap
        );
        assert_eq!(q.queued_bytes(), 1000);
        // push ignores the caps: the close frame must still go out.
        q.push(crate::ws::close_frame(1013, "too slow"));
        assert_eq!(q.len(), 2);
        // Caps count unwritten bytes: after a partial flush there is room again.
        let mut w = Trickle {
            k: 600,
            blocked: false,
            out: Vec::new(),
            calls: 0,
        };
        assert_eq!(q.flush(&mut w), (600, SocketResult::WouldBlock));
        assert_eq!(
            q.offer(Frame::from(vec![0u8; 500]), Priority::Essential),
            Offer::Queued
        );
    }

    #[test]
    fn empty_frames_are_not_queued() {
        let mut q = OutQueue::new(10, 10);
        q.push(Frame::new());
        assert_eq!(q.offer(Frame::new(), Priority::Essential), Offer::Queued);
        assert!(q.is_empty());
        let mut w = Counting::default();
        assert_eq!(q.flush(&mut w), (0, SocketResult::Continue));
        assert_eq!(w.vectored_calls, 0);
    }

    #[test]
    fn errors_are_classified() {
        struct Fails(io::ErrorKind);
        impl Write for Fails {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(self.0.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        for (kind, want) in [
            (io::ErrorKind::BrokenPipe, SocketResult::Closed),
            (io::ErrorKind::ConnectionReset, SocketResult::Closed),
            (io::ErrorKind::ConnectionAborted, SocketResult::Closed),
            (io::ErrorKind::UnexpectedEof, SocketResult::Closed),
            (io::ErrorKind::WouldBlock, SocketResult::WouldBlock),
            (io::ErrorKind::PermissionDenied, SocketResult::Error),
            (io::ErrorKind::OutOfMemory, SocketResult::Error),
        ] {
            assert_eq!(classify_io_error(&kind.into()), want, "{kind:?}");
            let mut q = queue_of(&frames(2, 5));
            assert_eq!(q.flush(&mut Fails(kind)), (0, want), "{kind:?}");
            assert_eq!(q.queued_bytes(), 10);
            assert_eq!(q.take_error().is_some(), want == SocketResult::Error);
        }

        struct Zero;
        impl Write for Zero {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Ok(0)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut q = queue_of(&frames(1, 5));
        assert_eq!(q.flush(&mut Zero), (0, SocketResult::Closed));
    }

    #[test]
    fn real_nonblocking_socket_round_trip() {
        use std::io::Read;
        use std::os::unix::net::UnixStream;

        let (mut tx, mut rx) = UnixStream::pair().unwrap();
        tx.set_nonblocking(true).unwrap();
        // Enough to fill the socket buffer several times over.
        let fs = frames(4000, 1500);
        let want = fs.concat();
        let mut q = queue_of(&fs);
        let mut got = Vec::with_capacity(want.len());
        let mut saw_would_block = false;
        let mut buf = vec![0u8; 1 << 16];
        while !q.is_empty() {
            let (_, res) = q.flush(&mut tx);
            match res {
                SocketResult::WouldBlock => {
                    saw_would_block = true;
                    let n = rx.read(&mut buf).unwrap();
                    got.extend_from_slice(&buf[..n]);
                }
                SocketResult::Continue => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        drop(tx);
        rx.read_to_end(&mut got).unwrap();
        assert!(saw_would_block);
        assert_eq!(got.len(), want.len());
        assert!(got == want);
    }

    #[test]
    fn peer_gone_is_closed() {
        use std::os::unix::net::UnixStream;
        let (mut tx, rx) = UnixStream::pair().unwrap();
        drop(rx);
        let mut q = queue_of(&frames(3, 10));
        // Rust ignores SIGPIPE in binaries and tests, so this is EPIPE, not a signal.
        assert_eq!(q.flush(&mut tx).1, SocketResult::Closed);
    }
}
