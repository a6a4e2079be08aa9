//! A TCP proxy that can make connections go silent without closing them.

use std::net::SocketAddr;

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::{JoinHandle, JoinSet},
};

/// Forwards a port to a server, and on [`StallingProxy::stall_open_connections`] stops
/// forwarding on every connection open at that moment while keeping it open: what a dead
/// network path, a suspended laptop or a stuck middlebox looks like to a browser, which
/// gets no error, only silence. Connections opened afterwards work normally. Everything
/// closes on drop.
pub struct StallingProxy {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    stalls: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StallingProxy {
    /// Starts forwarding a free local port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stalls, watching) = watch::channel(0);
        let task = tokio::spawn(async move {
            // Owned by this task: aborting it drops (and closes) every connection.
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let stalled = watching.clone();
                connections.spawn(forward(client, upstream, stalled));
            }
        });
        Ok(Self { url, stalls, task })
    }

    /// Silences every connection open now, for good.
    pub fn stall_open_connections(&self) {
        self.stalls.send_modify(|stalls| *stalls += 1);
    }
}

/// Copies bytes both ways until either side closes, or until the next stall; then holds
/// both sockets open, silent, until the proxy goes.
async fn forward(mut client: TcpStream, upstream: SocketAddr, mut stalled: watch::Receiver<u64>) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    stalled.mark_unchanged();
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = stalled.changed() => std::future::pending::<()>().await,
    }
}
