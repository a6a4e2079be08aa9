//! Gathers a connection's writes and sends them one scheduler pass after the HTTP layer
//! flushes, so that the frames many streams queue for one connection in the same moment
//! leave in one `write(2)` and a few TCP segments instead of one each.
//!
//! Why: a fan-out wakes every subscribed stream at once; each stream's task hands its event
//! to h2 and wakes the connection task, which tokio runs next (its LIFO slot), so h2 flushes
//! after almost every event. With TCP_NODELAY (which gRPC needs: Nagle with delayed ACKs can
//! hold a small write for 40 ms) every flush was a segment of a few hundred bytes, and the
//! kernel's per-segment work dominated a delivery's CPU. Yielding once at flush sends the
//! connection task to the back of its worker's run queue: the other streams' events are
//! queued meanwhile and go out together. The delay is bounded by one pass over the tasks
//! already runnable, not by a timer, so an idle server answers as fast as before.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes gathered before a write waits for the socket: bounds a connection's buffer.
const MAX_GATHERED: usize = 64 * 1024;
/// A drained buffer keeps its allocation up to this size (a busy connection reuses it; an
/// idle one does not hold a large one).
const KEPT_CAPACITY: usize = 4 * 1024;

/// An I/O object whose writes are gathered until a flush, and sent one scheduler pass later.
#[derive(Debug)]
pub(crate) struct Coalescing<T> {
    inner: T,
    gathered: Vec<u8>,
    /// How much of `gathered` is already on the socket.
    sent: usize,
    /// Whether this flush already gave the other tasks their pass.
    yielded: bool,
    /// Writes that reached the inner writer, counted for `/metrics` (shared by all
    /// connections).
    writes: Arc<AtomicU64>,
}

impl<T> Coalescing<T> {
    pub(crate) fn new(inner: T, writes: Arc<AtomicU64>) -> Self {
        Self {
            inner,
            gathered: Vec::new(),
            sent: 0,
            yielded: false,
            writes,
        }
    }
}

impl<T: AsyncWrite + Unpin> Coalescing<T> {
    /// Writes what is gathered to the inner writer.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.gathered.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.gathered[self.sent..]))?;
            self.writes.fetch_add(1, Ordering::Relaxed);
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.sent = 0;
        self.yielded = false;
        if self.gathered.capacity() > KEPT_CAPACITY {
            self.gathered = Vec::new();
        } else {
            self.gathered.clear();
        }
        Poll::Ready(Ok(()))
    }

    /// Makes room for more: past [`MAX_GATHERED`], waits until the socket took the rest.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.gathered.len() >= MAX_GATHERED {
            ready!(self.poll_send(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalescing<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalescing<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_room(cx))?;
        this.gathered.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_room(cx))?;
        let mut total = 0;
        for buf in bufs {
            this.gathered.extend_from_slice(buf);
            total += buf.len();
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.gathered.is_empty() {
            return Pin::new(&mut this.inner).poll_flush(cx);
        }
        if !this.yielded {
            // Woken from inside its own poll, a tokio task goes to the back of its worker's
            // queue rather than into the LIFO slot: every task runnable now runs first.
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::{future::poll_fn, sync::Arc, task::Wake};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Counts the writes that reach the socket side.
    struct Counting {
        inner: tokio::io::DuplexStream,
        writes: usize,
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes += 1;
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    struct Flag(std::sync::atomic::AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// What h2 does: write frames, flush; on the re-poll write the frames queued meanwhile,
    /// flush again. Both batches leave in one write, after the flush that yielded.
    #[tokio::test]
    async fn writes_queued_during_the_yield_leave_together() {
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let counted = Arc::new(AtomicU64::new(0));
        let mut conn = Coalescing::new(
            Counting {
                inner: near,
                writes: 0,
            },
            counted.clone(),
        );
        let flag = Arc::new(Flag(false.into()));
        let waker = std::task::Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut pinned = Pin::new(&mut conn);

        assert!(pinned.as_mut().poll_write(&mut cx, b"one ").is_ready());
        assert!(pinned.as_mut().poll_flush(&mut cx).is_pending());
        assert!(
            flag.0.load(std::sync::atomic::Ordering::SeqCst),
            "woken to run again"
        );
        assert_eq!(
            pinned.inner.writes, 0,
            "nothing sent before the other tasks ran"
        );

        let more = [io::IoSlice::new(b"two "), io::IoSlice::new(b"three")];
        assert!(
            pinned
                .as_mut()
                .poll_write_vectored(&mut cx, &more)
                .is_ready()
        );
        assert!(matches!(
            pinned.as_mut().poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(pinned.inner.writes, 1, "one write for everything gathered");
        assert_eq!(counted.load(Ordering::Relaxed), 1, "and it is counted");

        let mut received = [0u8; 13];
        far.read_exact(&mut received).await.unwrap();
        assert_eq!(&received, b"one two three");
    }

    /// Through a slow reader, everything arrives in order, a flush completes only once the
    /// socket took it all, and the buffer never grows past its bound.
    #[tokio::test]
    async fn a_slow_reader_gets_every_byte_in_order() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut conn = Coalescing::new(near, Arc::default());
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            far.read_to_end(&mut all).await.unwrap();
            all
        });
        let mut expected = Vec::new();
        for i in 0..2000u32 {
            let chunk = format!("{i:05} ").into_bytes();
            conn.write_all(&chunk).await.unwrap();
            assert!(conn.gathered.len() <= MAX_GATHERED + chunk.len());
            expected.extend_from_slice(&chunk);
            if i % 100 == 0 {
                poll_fn(|cx| Pin::new(&mut conn).poll_flush(cx))
                    .await
                    .unwrap();
                assert!(conn.gathered.is_empty(), "a finished flush sent everything");
            }
        }
        conn.shutdown().await.unwrap();
        assert_eq!(reader.await.unwrap(), expected);
    }
}
