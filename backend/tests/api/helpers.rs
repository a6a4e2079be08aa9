//! `spawn_app()` and typed clients: each test gets its own server on a free port with a
//! fresh data directory.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use natter_proto::v1::{
    self as pb, auth_service_client::AuthServiceClient, chat_service_client::ChatServiceClient,
    event::Event as Ev,
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

/// Polls every 20 ms (bounded by [`WAIT`]) until `holds`; panics with `what` otherwise. For
/// state the test can only read, such as Redis keys or a seam's readiness.
pub async fn poll_until<F: Future<Output = bool>>(what: &str, mut holds: impl FnMut() -> F) {
    tokio::time::timeout(WAIT, async {
        let mut poll = tokio::time::interval(Duration::from_millis(20));
        while !holds().await {
            poll.tick().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}"));
}

/// Where a resuming stream picks a room up: after `after_seq`.
pub fn cursor(room_id: &str, after_seq: u64) -> pb::RoomCursor {
    pb::RoomCursor {
        room_id: room_id.into(),
        after_seq,
    }
}

/// The next event other than a heartbeat, failing the test after [`WAIT`].
pub async fn next_event(stream: &mut tonic::Streaming<pb::Event>) -> Ev {
    loop {
        let event = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("an event in time")
            .expect("stream healthy")
            .expect("stream open")
            .event
            .expect("event set");
        if !matches!(event, Ev::Heartbeat(_)) {
            return event;
        }
    }
}

/// Skips events until a message arrives and returns it.
pub async fn next_message(stream: &mut tonic::Streaming<pb::Event>) -> pb::Message {
    loop {
        if let Ev::Message(message) = next_event(stream).await {
            return message;
        }
    }
}

/// Skips events until `pick` accepts one.
pub async fn wait_for<T>(
    stream: &mut tonic::Streaming<pb::Event>,
    mut pick: impl FnMut(Ev) -> Option<T>,
) -> T {
    loop {
        if let Some(found) = pick(next_event(stream).await) {
            return found;
        }
    }
}

/// Skips events until a room change of the given kind arrives.
pub async fn wait_for_change(
    stream: &mut tonic::Streaming<pb::Event>,
    change: pb::RoomChange,
) -> pb::RoomChanged {
    wait_for(stream, |e| match e {
        Ev::RoomChanged(c) if c.change == change as i32 => Some(c),
        _ => None,
    })
    .await
}

/// Skips events until a presence change of the user (by id or username) arrives.
pub async fn wait_for_presence(
    stream: &mut tonic::Streaming<pb::Event>,
    user: &str,
) -> pb::PresenceChanged {
    wait_for(stream, |e| match e {
        Ev::Presence(p)
            if p.user
                .as_ref()
                .is_some_and(|u| u.id == user || u.username == user) =>
        {
            Some(p)
        }
        _ => None,
    })
    .await
}

/// Skips events until a `Chat` send acknowledgement arrives.
pub async fn wait_for_ack(stream: &mut tonic::Streaming<pb::Event>) -> pb::SendAck {
    wait_for(stream, |e| match e {
        Ev::SendAck(a) => Some(a),
        _ => None,
    })
    .await
}

/// Skips events until a `Chat` frame error arrives.
pub async fn wait_for_frame_error(stream: &mut tonic::Streaming<pb::Event>) -> pb::FrameError {
    wait_for(stream, |e| match e {
        Ev::FrameError(f) => Some(f),
        _ => None,
    })
    .await
}

/// Expects the first event to be `Ready` and returns it.
pub async fn expect_ready(stream: &mut tonic::Streaming<pb::Event>) -> pb::Ready {
    match next_event(stream).await {
        Ev::Ready(ready) => ready,
        other => panic!("expected Ready first, got {other:?}"),
    }
}

/// Asserts a call failed with `code` and a message containing `needle`.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: tonic::Code,
    needle: &str,
) {
    let status = result.expect_err("call should fail");
    assert_eq!(status.code(), code, "unexpected status: {status:?}");
    assert!(
        status.message().contains(needle),
        "message {:?} should mention {needle:?}",
        status.message()
    );
}

/// Seconds since the unix epoch (for crafting tokens).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A request carrying `authorization: <value>` as given (tokens, schemes, garbage).
pub fn with_authorization<T>(value: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", value.parse().unwrap());
    request
}

/// Reads a stream until it ends; the events it carried and its final status.
pub async fn until_the_end(stream: &mut tonic::Streaming<pb::Event>) -> (Vec<Ev>, Status) {
    let mut events = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, stream.message()).await.unwrap() {
            Ok(Some(pb::Event { event: Some(event) })) => events.push(event),
            Ok(Some(_)) => {}
            Ok(None) => panic!("the stream ended without a status; events: {events:?}"),
            Err(status) => return (events, status),
        }
    }
}
