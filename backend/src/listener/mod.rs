//! The public listener: accepts connections, learns each client's real address from a PROXY
//! protocol header sent by a trusted load balancer, and stops accepting the moment the server
//! starts draining (so the balancer sends new connections to the other instances).
//!
//! Behind an L4 balancer every connection comes from the balancer's address; the PROXY
//! protocol (v1 text or v2 binary) puts the client's address in front of the first request.
//! Only addresses in `--trusted-proxies` may send it: a header from anyone else is refused
//! (the connection is closed), because believing it would let any client claim any address.
//! A trusted address that sends no header is served as itself (a probe on the balancer's
//! host, say).

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::Stream;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpConnectInfo;

mod proxy;

pub(crate) use proxy::TrustedProxies;
use proxy::{Start, classify};

use crate::{
    coalesce::Coalescing,
    metrics::{ConnectionsOpen, Limit, Protocol, Rejections},
};

/// How long a connection may take to show whether it starts with a PROXY header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest PROXY header accepted: v1 is at most 107 bytes; v2 with a few TLVs fits too.
const MAX_HEADER: usize = 512;
/// Why `open` gave up on a connection that closed before sending a request.
const NOTHING_SENT: &str = "closed before sending a request";
/// A handle on one connection, in each of its requests' extensions: a way to close it from
/// outside.
#[derive(Debug)]
pub(crate) struct ConnectionControl {
    close: CancellationToken,
}

impl ConnectionControl {
    fn new() -> Self {
        Self {
            close: CancellationToken::new(),
        }
    }

    /// Drops the connection with every call on it (their clients see it broken).
    pub(crate) fn close(&self) {
        self.close.cancel();
    }

    pub(crate) async fn closed(&self) {
        self.close.cancelled().await;
    }
}

/// An accepted connection, with the bytes read while looking for a PROXY header still to be
/// handed to the HTTP server, and the address the client really has.
#[derive(Debug)]
pub(crate) struct ClientConnection {
    /// The socket, its writes gathered per flush (see `coalesce`).
    stream: Coalescing<TcpStream>,
    /// Bytes read past the PROXY header (or all bytes read, when there was none).
    early: Vec<u8>,
    early_read: usize,
    info: TcpConnectInfo,
    control: Arc<ConnectionControl>,
    /// Counts the connection against `--max-connections` until it is dropped.
    _slot: ConnectionSlot,
    /// Counts the connection in `natter_connections_open` until it is dropped.
    _counted: Counted,
}

impl ClientConnection {
    /// The addresses, with the client's real one.
    pub(crate) fn info(&self) -> TcpConnectInfo {
        self.info.clone()
    }

    /// The handle the connection's requests carry.
    pub(crate) fn control(&self) -> Arc<ConnectionControl> {
        self.control.clone()
    }
}

/// A connection counted open under its protocol.
#[derive(Debug)]
struct Counted {
    open: Arc<ConnectionsOpen>,
    protocol: Protocol,
}

impl Counted {
    fn new(open: Arc<ConnectionsOpen>, protocol: Protocol) -> Self {
        open.opened(protocol);
        Self { open, protocol }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.closed(self.protocol);
    }
}

/// One of the instance's `--max-connections`, held from accept until the connection closes
/// (also while its first bytes are awaited, so connections that send nothing count too).
#[derive(Debug)]
struct ConnectionSlot(Arc<AtomicUsize>);

impl ConnectionSlot {
    /// A slot, unless `max` connections are open already.
    fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        open.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| Self(open.clone()))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for ClientConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.early_read < this.early.len() {
            let rest = &this.early[this.early_read..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.early_read += n;
            if this.early_read == this.early.len() {
                this.early = Vec::new();
                this.early_read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Accepts connections until `draining` is cancelled, then closes the listening socket.
/// Each connection's first bytes are read on a task of its own (a client that sends nothing
/// holds up no one), bounded by [`HEADER_TIMEOUT`]. Beyond `max_connections` open at once,
/// new connections are closed as soon as they are accepted.
pub(crate) fn incoming(
    listener: TcpListener,
    trusted: TrustedProxies,
    draining: CancellationToken,
    socket_writes: Arc<AtomicU64>,
    max_connections: usize,
    rejections: Arc<Rejections>,
    connections_open: Arc<ConnectionsOpen>,
) -> impl Stream<Item = ClientConnection> {
    let (ready, connections) = mpsc::channel(64);
    let trusted = Arc::new(trusted);
    let open_connections = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = draining.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, typically: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(slot) = ConnectionSlot::take(&open_connections, max_connections) else {
                rejections.count(Limit::Connections);
                tracing::debug!(peer = %peer, "connection closed: --max-connections reached");
                continue;
            };
            let ready = ready.clone();
            let trusted = trusted.clone();
            let socket_writes = socket_writes.clone();
            let connections_open = connections_open.clone();
            tokio::spawn(async move {
                let opened = open(
                    stream,
                    peer,
                    &trusted,
                    socket_writes,
                    slot,
                    connections_open,
                );
                let opened = tokio::time::timeout(HEADER_TIMEOUT, opened);
                match opened.await {
                    Ok(Ok(connection)) => {
                        let _ = ready.send(connection).await;
                    }
                    // A balancer's health check that opens and closes (perhaps after a PROXY
                    // header) is no news.
                    Ok(Err(refusal)) if refusal == NOTHING_SENT => {
                        tracing::debug!(peer = %peer, "connection closed before a request");
                    }
                    Ok(Err(refusal)) => {
                        tracing::warn!(peer = %peer, reason = %refusal, "connection refused");
                    }
                    Err(_) => tracing::debug!(peer = %peer, "connection sent nothing in time"),
                }
            });
        }
        tracing::info!("stopped accepting connections");
    });
    ReceiverStream::new(connections)
}

/// Reads until it is clear whether the connection starts with a PROXY header, and takes the
/// client's address from it when the peer may send one.
async fn open(
    mut stream: TcpStream,
    peer: SocketAddr,
    trusted: &TrustedProxies,
    socket_writes: Arc<AtomicU64>,
    slot: ConnectionSlot,
    connections_open: Arc<ConnectionsOpen>,
) -> Result<ClientConnection, String> {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().ok();
    let mut early = Vec::with_capacity(1024);
    let (client, consumed) = loop {
        match classify(&early) {
            Start::NeedMore => {}
            Start::Plain => break (peer, 0),
            Start::Proxy(_) if !trusted.trusts(&peer) => {
                return Err(
                    "a PROXY protocol header from an address not in --trusted-proxies".into(),
                );
            }
            Start::Proxy(Ok((client, length))) => break (client.unwrap_or(peer), length),
            Start::Proxy(Err(e)) => return Err(format!("malformed PROXY protocol header: {e}")),
        }
        if early.len() >= MAX_HEADER {
            return Err("PROXY protocol header too long".into());
        }
        read_more(&mut stream, &mut early).await?;
    };
    early.drain(..consumed);
    // The protocol shows in the first bytes after the PROXY header.
    let protocol = loop {
        if let Some(protocol) = protocol_of(&early) {
            break protocol;
        }
        read_more(&mut stream, &mut early).await?;
    };
    if consumed > 0 {
        tracing::info!(client = %client, proxy = %peer, "connection via proxy");
    } else {
        tracing::debug!(client = %client, "connection");
    }
    Ok(ClientConnection {
        stream: Coalescing::new(stream, socket_writes),
        early,
        early_read: 0,
        info: TcpConnectInfo {
            local_addr: local,
            remote_addr: Some(client),
        },
        control: Arc::new(ConnectionControl::new()),
        _slot: slot,
        _counted: Counted::new(connections_open, protocol),
    })
}

/// Reads what the client sent next onto `early`; an error if it closed instead.
async fn read_more(stream: &mut TcpStream, early: &mut Vec<u8>) -> Result<(), String> {
    match stream.read_buf(early).await {
        Ok(0) => Err(NOTHING_SENT.into()),
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// HTTP/2 when the bytes start with its whole preface, else HTTP/1.1; `None` while they
/// could still be either. The whole preface is awaited (within the listener's first-bytes
/// timeout): a client that stops halfway through it is closed here, not held by hyper.
fn protocol_of(bytes: &[u8]) -> Option<Protocol> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let n = bytes.len().min(PREFACE.len());
    if bytes[..n] != PREFACE[..n] {
        Some(Protocol::Http1)
    } else if n == PREFACE.len() {
        Some(Protocol::Http2)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_shows_in_the_first_bytes() {
        assert_eq!(protocol_of(b""), None);
        assert_eq!(protocol_of(b"P"), None);
        assert_eq!(protocol_of(b"PR"), None);
        assert_eq!(protocol_of(b"PRI * HTTP/2.0"), None);
        assert_eq!(
            protocol_of(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0"),
            Some(Protocol::Http2)
        );
        assert_eq!(protocol_of(b"PRINT / HTTP/1.1"), Some(Protocol::Http1));
        assert_eq!(protocol_of(b"POST /"), Some(Protocol::Http1));
        assert_eq!(protocol_of(b"PUT"), Some(Protocol::Http1));
        assert_eq!(protocol_of(b"G"), Some(Protocol::Http1));
    }
}
