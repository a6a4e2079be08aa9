//! `natter-server` as a separate OS process, for tests that kill an instance abruptly.

use std::process::Stdio;

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use crate::{
    helpers::{Bearer, SHARED_SECRET, TestUser, WAIT},
    redis_server::RedisServer,
};

pub struct ServerProcess {
    pub url: String,
    child: Child,
    _data: tempfile::TempDir,
}

impl ServerProcess {
    /// Starts an instance of the Redis fleet and waits for it to say where it listens.
    pub async fn start(redis: &RedisServer) -> Self {
        let data = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_natter-server"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--redis-prefix",
                "fleet",
                "--presence-ttl",
                "3s",
            ])
            .arg("--data-dir")
            .arg(data.path())
            .args(["--redis-url", &redis.url(), "--jwt-secret", SHARED_SECRET])
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let address = tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(rest) = line.split("address=").nth(1) {
                    return rest.split_whitespace().next().unwrap().to_owned();
                }
            }
            panic!("natter-server exited before listening");
        })
        .await
        .expect("natter-server listening in time");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            url: format!("http://{address}"),
            child,
            _data: data,
        }
    }

    pub fn connect(&self, user: &TestUser) -> TestUser {
        let channel = tonic::transport::Channel::from_shared(self.url.clone())
            .unwrap()
            .connect_lazy();
        TestUser {
            user: user.user.clone(),
            token: user.token.clone(),
            chat: natter_proto::v1::chat_service_client::ChatServiceClient::with_interceptor(
                channel,
                Bearer(user.token.clone()),
            ),
        }
    }

    /// SIGKILL: no shutdown, no presence cleanup.
    pub async fn kill(&mut self) {
        self.child.kill().await.unwrap();
    }
}
