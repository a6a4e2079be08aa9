//! `spawn_app()` and typed clients: each test gets its own server on a free port with a
//! fresh data directory. Reading its streams and checking answers: [`events`].

use std::{net::SocketAddr, sync::Arc, time::Duration};

use natter_proto::v1::{
    self as pb, auth_service_client::AuthServiceClient, chat_service_client::ChatServiceClient,
};
use natter_server::Config;
use tempfile::TempDir;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{
    Request, Status,
    metadata::MetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

mod events;
pub use events::*;

/// Upper bound on any single wait in tests: generous for a loaded 2-core CI machine.
pub const WAIT: Duration = Duration::from_secs(15);

/// A running server.
pub struct TestApp {
    pub addr: SocketAddr,
    pub url: String,
    pub data_dir: Arc<TempDir>,
    /// The instance itself, for operator tasks (granting admin).
    pub natter: Arc<natter_server::Natter>,
    pub channel: Channel,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(pub String);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let value: MetadataValue<_> = format!("Bearer {}", self.0).parse().expect("ascii token");
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

pub type Chat = ChatServiceClient<InterceptedService<Channel, Bearer>>;

/// A registered user with a signed-in client.
pub struct TestUser {
    pub user: pb::User,
    pub token: String,
    pub chat: Chat,
}

impl TestUser {
    /// The same user on a connection of its own to `url` (another instance, say).
    pub fn via(&self, url: &str) -> TestUser {
        self.on(Channel::from_shared(url.to_owned()).unwrap().connect_lazy())
    }

    /// The same user on a connection of its own with 16 KiB HTTP/2 windows, so that the
    /// client buffers only a few events: a stream on it that is not read backs up into the
    /// server quickly.
    pub fn via_small_windows(&self, url: &str) -> TestUser {
        let small_windows = tonic::transport::Endpoint::from_shared(url.to_owned())
            .unwrap()
            .initial_stream_window_size(Some(16 * 1024))
            .initial_connection_window_size(Some(16 * 1024))
            .connect_lazy();
        self.on(small_windows)
    }

    /// The same user over `channel`.
    fn on(&self, channel: Channel) -> TestUser {
        TestUser {
            user: self.user.clone(),
            token: self.token.clone(),
            chat: ChatServiceClient::with_interceptor(channel, Bearer(self.token.clone())),
        }
    }
}

/// Settings every test server uses unless a test changes them.
pub fn test_config(data_dir: &TempDir) -> Config {
    let mut config = Config::defaults();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.data_dir = data_dir.path().to_path_buf();
    config.static_dir = data_dir.path().join("no-web-client");
    // Most tests play many clients with few accounts from one address; the rate-limit
    // tests turn the limits back on.
    config.rate_limits = false;
    config
}

/// The JWT secret every instance of a Redis fleet shares.
pub const SHARED_SECRET: &str = "one-secret-shared-by-every-instance-of-the-fleet";

/// A natter-server process of a Redis fleet (this crate's binary) with `extra_args`, the
/// fleet's secret and presence TTL: instances that disagree on the TTL take each other
/// for dead.
pub fn instance_config(
    redis: &impl natter_fleet::SharedRedis,
    extra_args: &[&str],
) -> natter_fleet::InstanceConfig {
    let mut args = vec!["--presence-ttl", "3s"];
    args.extend_from_slice(extra_args);
    natter_fleet::InstanceConfig {
        server_bin: env!("CARGO_BIN_EXE_natter-server").into(),
        redis_args: redis.server_args(),
        jwt_secret: SHARED_SECRET.into(),
        static_dir: None,
        trusted_proxies: "127.0.0.1".into(),
        extra_args: args.into_iter().map(String::from).collect(),
    }
}

/// An instance in Redis mode (one server or a cluster): instances started on the same Redis
/// and prefix form one service.
pub async fn spawn_redis_app(
    redis: &impl natter_fleet::SharedRedis,
    adjust: impl FnOnce(&mut Config),
) -> TestApp {
    let [flag, value] = redis.server_args();
    let target = <Config as clap::Parser>::parse_from(["natter-server", &flag, &value]);
    spawn_app_with(|c| {
        c.redis_url = target.redis_url;
        c.redis_cluster = target.redis_cluster;
        c.redis_prefix = "natter".into();
        c.jwt_secret = Some(SHARED_SECRET.into());
        c.presence_ttl = Duration::from_secs(3);
        adjust(c);
    })
    .await
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let data_dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    let mut config = test_config(&data_dir);
    adjust(&mut config);
    spawn_app_in(data_dir, config).await
}

/// Starts a server on `config` (its data dir must live as long as `data_dir`).
pub async fn spawn_app_in(data_dir: Arc<TempDir>, config: Config) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        natter_server::telemetry::init("info,natter_server=debug");
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().unwrap();
    let natter = natter_server::build(config).await.expect("build server");
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(natter_server::run(listener, natter.clone(), async {
        let _ = stopped.await;
    }));
    let url = format!("http://{addr}");
    let channel = Channel::from_shared(url.clone()).unwrap().connect_lazy();
    TestApp {
        addr,
        url,
        data_dir,
        natter,
        channel,
        stop: Some(stop),
        handle: Some(handle),
    }
}

impl TestApp {
    /// The current value of a counter or gauge from `/metrics`.
    pub async fn metric(&self, name: &str) -> u64 {
        let metrics = crate::probes::http_request(self, "GET", "/metrics", None).await;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// Waits (bounded by [`WAIT`]) until the series `name` satisfies `until`.
    pub async fn wait_for_metric(&self, name: &str, until: impl Fn(u64) -> bool) {
        tokio::time::timeout(WAIT, async {
            while !until(self.metric(name).await) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{name} never got there"));
    }

    pub fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel.clone())
    }

    pub fn chat_with_token(&self, token: &str) -> Chat {
        ChatServiceClient::with_interceptor(self.channel.clone(), Bearer(token.to_owned()))
    }

    /// Registers `username` with a fixed password and returns a signed-in client.
    pub async fn register(&self, username: &str) -> TestUser {
        let response = self
            .auth()
            .register(pb::RegisterRequest {
                username: username.into(),
                password: "correct-horse".into(),
                display_name: format!("{username} display"),
            })
            .await
            .expect("register")
            .into_inner();
        // Each user gets a connection of their own, as real clients do: on a shared HTTP/2
        // connection, one user's unread stream would hold back everyone's responses.
        let own_connection = Channel::from_shared(self.url.clone())
            .unwrap()
            .connect_lazy();
        TestUser {
            user: response.user.unwrap(),
            chat: ChatServiceClient::with_interceptor(
                own_connection,
                Bearer(response.access_token.clone()),
            ),
            token: response.access_token,
        }
    }

    /// The same user, connected to this instance with their token.
    pub fn connect(&self, user: &TestUser) -> TestUser {
        user.via(&self.url)
    }

    /// Graceful shutdown; returns the data directory for a restart.
    pub async fn stop(mut self) -> Arc<TempDir> {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, self.handle.take().unwrap())
            .await
            .expect("server stops in time")
            .expect("server task")
            .expect("server ran cleanly");
        self.data_dir.clone()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl TestUser {
    pub async fn create_room(&mut self, name: &str) -> pb::Room {
        self.chat
            .create_room(pb::CreateRoomRequest {
                name: name.into(),
                password: String::new(),
            })
            .await
            .expect("create room")
            .into_inner()
    }

    pub async fn join(&mut self, code: &str) -> pb::Room {
        self.chat
            .join_room(pb::JoinRoomRequest {
                code: code.into(),
                password: String::new(),
            })
            .await
            .expect("join room")
            .into_inner()
    }

    pub async fn send(&mut self, room_id: &str, text: &str) -> pb::Message {
        self.chat
            .send_message(pb::SendMessageRequest {
                room_id: room_id.into(),
                text: text.into(),
                client_id: String::new(),
            })
            .await
            .expect("send")
            .into_inner()
    }

    pub async fn subscribe(&mut self, resume: Vec<pb::RoomCursor>) -> tonic::Streaming<pb::Event> {
        self.chat
            .subscribe(pb::SubscribeRequest { resume })
            .await
            .expect("subscribe")
            .into_inner()
    }

    pub async fn open_direct(&mut self, user_id: &str) -> pb::Room {
        self.chat
            .open_direct(pb::OpenDirectRequest {
                user_id: user_id.into(),
            })
            .await
            .expect("open direct")
            .into_inner()
    }

    pub async fn leave(&mut self, room_id: &str) {
        self.chat
            .leave_room(pb::LeaveRoomRequest {
                room_id: room_id.into(),
            })
            .await
            .expect("leave");
    }

    pub async fn rooms(&mut self) -> Vec<pb::Room> {
        self.chat
            .list_rooms(pb::ListRoomsRequest {})
            .await
            .expect("list rooms")
            .into_inner()
            .rooms
    }

    pub async fn members(&mut self, room_id: &str) -> Vec<pb::Member> {
        self.chat
            .list_members(pb::ListMembersRequest {
                room_id: room_id.into(),
            })
            .await
            .expect("list members")
            .into_inner()
            .members
    }

    pub async fn history(&mut self, room_id: &str) -> Vec<pb::Message> {
        self.chat
            .get_history(pb::GetHistoryRequest {
                room_id: room_id.into(),
                before_seq: 0,
                limit: 200,
            })
            .await
            .expect("history")
            .into_inner()
            .messages
    }
}
