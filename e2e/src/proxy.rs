//! A TCP proxy that can make connections go silent without closing them.

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::watch,
    task::{JoinHandle, JoinSet},
};

/// What the proxy lets through.
#[derive(Debug, Clone, Copy, Default)]
struct Controls {
    /// Bumped by each stall: a connection opened before the latest stall is silenced.
    stalls: u64,
    /// While set, requests reach the server but its answers wait in the proxy.
    holding_answers: bool,
}

/// Forwards a port to a server, and can fail in the ways that give a browser no error,
/// only silence: [`StallingProxy::stall_open_connections`] silences every connection open
/// at that moment for good (a dead network path, a suspended laptop, a stuck middlebox),
/// and [`StallingProxy::hold_answers`] lets requests through while keeping the answers
/// back (a request that was carried out but whose answer was lost). Everything closes on
/// drop.
pub struct StallingProxy {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    controls: watch::Sender<Controls>,
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
        let (controls, watching) = watch::channel(Controls::default());
        let task = tokio::spawn(async move {
            // Owned by this task: aborting it drops (and closes) every connection.
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                connections.spawn(forward(client, upstream, watching.clone()));
            }
        });
        Ok(Self {
            url,
            controls,
            task,
        })
    }

    /// Silences every connection open now, for good; later ones work.
    pub fn stall_open_connections(&self) {
        self.controls.send_modify(|c| c.stalls += 1);
    }

    /// Holds the server's answers back (on every connection) until called with `false`.
    pub fn hold_answers(&self, hold: bool) {
        self.controls.send_modify(|c| c.holding_answers = hold);
    }
}

/// Carries one connection both ways, as the controls allow.
async fn forward(client: TcpStream, upstream: SocketAddr, controls: watch::Receiver<Controls>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let born = controls.borrow().stalls;
    let (from_client, to_client) = client.into_split();
    let (from_server, to_server) = server.into_split();
    tokio::join!(
        pump(from_client, to_server, controls.clone(), born, false),
        pump(from_server, to_client, controls, born, true),
    );
}

/// Copies one direction until its source closes. Once the connection is stalled it holds
/// both halves open and never moves another byte; answers wait while they are held.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut controls: watch::Receiver<Controls>,
    born: u64,
    answers: bool,
) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let now = *controls.borrow_and_update();
        if now.stalls != born {
            return std::future::pending().await;
        }
        if answers && now.holding_answers {
            if controls.changed().await.is_err() {
                return;
            }
            continue;
        }
        tokio::select! {
            changed = controls.changed() => if changed.is_err() { return },
            read = from.read(&mut buffer) => match read {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => if to.write_all(&buffer[..n]).await.is_err() { return },
            },
        }
    }
}
