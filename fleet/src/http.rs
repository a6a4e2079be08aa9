//! A plain HTTP/1.1 GET over a fresh connection, for probes and tests: from a chosen local
//! address, optionally preceded by raw bytes (a PROXY protocol header, say).

use std::net::{IpAddr, SocketAddr};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::WAIT;

/// A GET answered: the status and the body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body (as text).
    pub body: String,
}

/// GETs `path` from `to`, over a connection from `from` (any local address when `None`),
/// sending `preamble` before the request.
pub async fn get(
    to: SocketAddr,
    path: &str,
    from: Option<IpAddr>,
    preamble: &str,
) -> anyhow::Result<Answer> {
    let socket = match to {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    if let Some(from) = from {
        socket.bind(SocketAddr::new(from, 0))?;
    }
    let mut stream = socket.connect(to).await?;
    let request =
        format!("{preamble}GET {path} HTTP/1.1\r\nhost: natter\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response)).await??;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok(Answer { status, body })
}
