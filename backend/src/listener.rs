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
use ipnet::IpNet;
use ppp::{HeaderResult, PartialResult};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpConnectInfo;

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
/// The start of a v1 header.
const V1_SIGNATURE: &[u8] = b"PROXY ";
/// The start of a v2 header.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

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

/// Addresses allowed to speak the PROXY protocol.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub(crate) fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    fn trusts(&self, peer: &SocketAddr) -> bool {
        let ip = peer.ip().to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
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
        let n = stream
            .read_buf(&mut early)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(NOTHING_SENT.into());
        }
    };
    early.drain(..consumed);
    // The protocol shows in the first bytes after the PROXY header.
    let protocol = loop {
        if let Some(protocol) = protocol_of(&early) {
            break protocol;
        }
        let n = stream
            .read_buf(&mut early)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(NOTHING_SENT.into());
        }
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

/// What the first bytes of a connection are.
#[derive(Debug, PartialEq)]
enum Start {
    /// Too few bytes to tell.
    NeedMore,
    /// Not a PROXY header: the client's own protocol (HTTP/1.1 or the HTTP/2 preface).
    Plain,
    /// A PROXY header: the source address it carries (none for `UNKNOWN`/`LOCAL`) and its
    /// length, or why it is malformed.
    Proxy(Result<(Option<SocketAddr>, usize), String>),
}

fn classify(bytes: &[u8]) -> Start {
    let could_be = |signature: &[u8]| {
        let n = bytes.len().min(signature.len());
        bytes[..n] == signature[..n]
    };
    let v1 = could_be(V1_SIGNATURE);
    let v2 = could_be(V2_SIGNATURE);
    if !v1 && !v2 {
        return Start::Plain;
    }
    if (v1 && bytes.len() < V1_SIGNATURE.len()) || (v2 && bytes.len() < V2_SIGNATURE.len()) {
        return Start::NeedMore;
    }
    let header = HeaderResult::parse(bytes);
    if header.is_incomplete() {
        return Start::NeedMore;
    }
    Start::Proxy(match header {
        HeaderResult::V1(Ok(header)) => Ok((v1_source(&header.addresses), header.header.len())),
        HeaderResult::V2(Ok(header)) => Ok((v2_source(&header.addresses), header.len())),
        HeaderResult::V1(Err(e)) => Err(e.to_string()),
        HeaderResult::V2(Err(e)) => Err(e.to_string()),
    })
}

fn v1_source(addresses: &ppp::v1::Addresses) -> Option<SocketAddr> {
    match addresses {
        ppp::v1::Addresses::Tcp4(a) => Some((a.source_address, a.source_port).into()),
        ppp::v1::Addresses::Tcp6(a) => Some((a.source_address, a.source_port).into()),
        ppp::v1::Addresses::Unknown => None,
    }
}

fn v2_source(addresses: &ppp::v2::Addresses) -> Option<SocketAddr> {
    match addresses {
        ppp::v2::Addresses::IPv4(a) => Some((a.source_address, a.source_port).into()),
        ppp::v2::Addresses::IPv6(a) => Some((a.source_address, a.source_port).into()),
        ppp::v2::Addresses::Unix(_) | ppp::v2::Addresses::Unspecified => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_protocols_are_told_apart_from_proxy_headers() {
        assert_eq!(classify(b""), Start::NeedMore);
        assert_eq!(classify(b"PRO"), Start::NeedMore);
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), Start::Plain);
        assert_eq!(classify(b"POST /natter.v1"), Start::Plain);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Start::Plain);
        assert_eq!(
            classify(b"PROXY TCP4 127.0.0.2 127.0.0.1 5"),
            Start::NeedMore
        );
        assert_eq!(classify(b"\r\n\r\n\0\r"), Start::NeedMore);
    }

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

    #[test]
    fn v1_headers_give_the_client_address_and_their_length() {
        let header = b"PROXY TCP4 127.0.0.2 127.0.0.1 40000 8080\r\n";
        let mut bytes = header.to_vec();
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            classify(&bytes),
            Start::Proxy(Ok((Some("127.0.0.2:40000".parse().unwrap()), header.len())))
        );
        assert_eq!(classify(b"PROXY UNKNOWN\r\n"), Start::Proxy(Ok((None, 15))));
        assert!(matches!(
            classify(b"PROXY TCP4 nonsense here at all\r\n"),
            Start::Proxy(Err(_))
        ));
    }

    #[test]
    fn v2_headers_give_the_client_address_and_their_length() {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.extend_from_slice(&[0x21, 0x11, 0, 12]);
        bytes.extend_from_slice(&[127, 0, 0, 2, 127, 0, 0, 1, 0x9c, 0x40, 0x1f, 0x90]);
        bytes.extend_from_slice(b"PRI * HTTP/2.0");
        assert_eq!(
            classify(&bytes),
            Start::Proxy(Ok((Some("127.0.0.2:40000".parse().unwrap()), 28)))
        );
    }

    #[test]
    fn only_listed_addresses_are_trusted() {
        let trusted = TrustedProxies::new(vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ]);
        assert!(trusted.trusts(&"127.0.0.1:1".parse().unwrap()));
        assert!(trusted.trusts(&"10.9.8.7:1".parse().unwrap()));
        assert!(trusted.trusts(&"[::ffff:127.0.0.1]:1".parse().unwrap()));
        assert!(!trusted.trusts(&"127.0.0.2:1".parse().unwrap()));
        assert!(!TrustedProxies::default().trusts(&"127.0.0.1:1".parse().unwrap()));
    }
}
