//! The machine's own limits, measured in the same run: a raw Redis PUBLISH -> SUBSCRIBE
//! round trip, and a minimal tonic server broadcasting pre-encoded events, both open-loop
//! in this process (the batched ceiling) and in a process of its own driven by the same
//! clients as Natter (the same-regime ceiling: `--serve-baseline`).

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::{Stream, StreamExt};
use natter_proto::{
    EncodedEvent,
    v1::{
        self as pb,
        server::{
            auth_service_server::{AuthService, AuthServiceServer},
            chat_service_server::{ChatService, ChatServiceServer},
        },
    },
};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tonic::{Request, Response, Status, Streaming};

use natter_fleet::Redis;

/// Round trips of a 100-byte PUBLISH to a subscriber on another connection, seconds, sorted.
pub(crate) async fn redis_round_trip(redis: &Redis, count: usize) -> anyhow::Result<Vec<f64>> {
    let client = redis::Client::open(redis.url())?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe("bench:rtt").await?;
    let mut messages = pubsub.into_on_message();
    let mut publisher = client.get_multiplexed_async_connection().await?;
    let payload = vec![b'x'; 100];
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        let _: i64 = redis::cmd("PUBLISH")
            .arg("bench:rtt")
            .arg(&payload)
            .query_async(&mut publisher)
            .await?;
        messages
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("subscription ended"))?;
        samples.push(start.elapsed().as_secs_f64());
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples)
}

/// A server that does only what a fan-out needs: `Subscribe` streams whatever the broadcast
/// carries; `SendMessage` numbers the message, encodes it once and broadcasts it; sign-up,
/// room creation and joining answer without storing anything. No log, no auth, no rooms.
#[derive(Clone)]
struct Broadcaster {
    events: broadcast::Sender<EncodedEvent>,
    seq: Arc<AtomicU64>,
}

impl Broadcaster {
    fn new() -> Self {
        Self {
            events: broadcast::channel(1024).0,
            seq: Arc::default(),
        }
    }
}

fn the_room() -> pb::Room {
    pb::Room {
        id: "room".into(),
        code: "CODE2345".into(),
        name: "baseline".into(),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl AuthService for Broadcaster {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::AuthResponse>, Status> {
        Ok(Response::new(pb::AuthResponse {
            access_token: format!("token-{}", request.get_ref().username),
            ..Default::default()
        }))
    }
    async fn login(
        &self,
        _: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::AuthResponse>, Status> {
        not_here()
    }
    async fn refresh_token(
        &self,
        _: Request<pb::RefreshTokenRequest>,
    ) -> Result<Response<pb::AuthResponse>, Status> {
        not_here()
    }
    async fn logout(
        &self,
        _: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        not_here()
    }
}

type Events = Pin<Box<dyn Stream<Item = Result<EncodedEvent, Status>> + Send>>;

fn not_here<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("baseline server"))
}

#[tonic::async_trait]
impl ChatService for Broadcaster {
    async fn list_users(
        &self,
        _: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        not_here()
    }
    async fn block_user(
        &self,
        _: Request<pb::BlockUserRequest>,
    ) -> Result<Response<pb::BlockUserResponse>, Status> {
        not_here()
    }
    async fn rotate_room_code(
        &self,
        _: Request<pb::RotateRoomCodeRequest>,
    ) -> Result<Response<pb::Room>, Status> {
        not_here()
    }
    async fn remove_member(
        &self,
        _: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        not_here()
    }
    async fn set_account_disabled(
        &self,
        _: Request<pb::SetAccountDisabledRequest>,
    ) -> Result<Response<pb::User>, Status> {
        not_here()
    }
    async fn create_room(
        &self,
        _: Request<pb::CreateRoomRequest>,
    ) -> Result<Response<pb::Room>, Status> {
        Ok(Response::new(the_room()))
    }
    async fn join_room(
        &self,
        _: Request<pb::JoinRoomRequest>,
    ) -> Result<Response<pb::Room>, Status> {
        Ok(Response::new(the_room()))
    }
    async fn leave_room(
        &self,
        _: Request<pb::LeaveRoomRequest>,
    ) -> Result<Response<pb::LeaveRoomResponse>, Status> {
        not_here()
    }
    async fn delete_room(
        &self,
        _: Request<pb::DeleteRoomRequest>,
    ) -> Result<Response<pb::DeleteRoomResponse>, Status> {
        not_here()
    }
    async fn list_rooms(
        &self,
        _: Request<pb::ListRoomsRequest>,
    ) -> Result<Response<pb::ListRoomsResponse>, Status> {
        not_here()
    }
    async fn open_direct(
        &self,
        _: Request<pb::OpenDirectRequest>,
    ) -> Result<Response<pb::Room>, Status> {
        not_here()
    }
    async fn list_members(
        &self,
        _: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        not_here()
    }
    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::Message>, Status> {
        let request = request.into_inner();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let sent_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        // The shape of a Natter message: ids, sender, text, time; encoded once for all.
        let message = pb::Message {
            id: format!("{seq:032x}"),
            room_id: request.room_id,
            seq,
            sender_id: "0196f2a4c1d87e3fa5b2c9d0e1f23456".into(),
            sender_name: "publisher".into(),
            text: request.text,
            sent_at,
            client_id: request.client_id,
        };
        let encoded = EncodedEvent::from(&pb::Event {
            event: Some(pb::event::Event::Message(message.clone())),
        });
        // No subscriber yet is not an error for a broadcast.
        let _ = self.events.send(encoded);
        Ok(Response::new(message))
    }
    async fn get_history(
        &self,
        _: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::GetHistoryResponse>, Status> {
        not_here()
    }
    async fn set_typing(
        &self,
        _: Request<pb::SetTypingRequest>,
    ) -> Result<Response<pb::SetTypingResponse>, Status> {
        not_here()
    }

    type SubscribeStream = Events;

    async fn subscribe(
        &self,
        _: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Events>, Status> {
        let ready = EncodedEvent::from(&pb::Event {
            event: Some(pb::event::Event::Ready(pb::Ready::default())),
        });
        let live = BroadcastStream::new(self.events.subscribe())
            .filter_map(|item| async move { item.ok().map(Ok) });
        Ok(Response::new(Box::pin(
            futures::stream::iter([Ok(ready)]).chain(live),
        )))
    }

    type ChatStream = Events;

    async fn chat(
        &self,
        _: Request<Streaming<pb::ClientFrame>>,
    ) -> Result<Response<Events>, Status> {
        not_here()
    }
}

/// Deliveries per second of the minimal server to `subscribers` streams (50 per connection)
/// over `duration`. The publisher never runs more than half a buffer ahead of the slowest
/// stream, so nothing is dropped.
pub(crate) async fn tonic_broadcast(
    subscribers: usize,
    duration: Duration,
) -> anyhow::Result<(u64, f64)> {
    let broadcaster = Broadcaster::new();
    let events = broadcaster.events.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(serve(listener, broadcaster));

    let delivered = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(AtomicU64::new(0));
    let mut channel = None;
    for k in 0..subscribers {
        if k % 50 == 0 {
            channel = Some(
                tonic::transport::Endpoint::from_shared(url.clone())?
                    .connect()
                    .await?,
            );
        }
        let mut client =
            pb::chat_service_client::ChatServiceClient::new(channel.clone().expect("set above"));
        let (delivered, ready) = (delivered.clone(), ready.clone());
        tokio::spawn(async move {
            let Ok(response) = client.subscribe(pb::SubscribeRequest::default()).await else {
                return;
            };
            let mut stream = response.into_inner();
            while let Ok(Some(event)) = stream.message().await {
                match event.event {
                    Some(pb::event::Event::Ready(_)) => ready.fetch_add(1, Ordering::Relaxed),
                    _ => delivered.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }
    crate::scenarios::wait_until_ready(&ready, subscribers, Duration::from_secs(120)).await?;

    let message = pb::Message {
        text: "fan-out message 1 from publisher 0".into(),
        seq: 1,
        ..Default::default()
    };
    let encoded = EncodedEvent::from(&pb::Event {
        event: Some(pb::event::Event::Message(message)),
    });
    let start = Instant::now();
    let mut published = 0u64;
    while start.elapsed() < duration {
        if events.len() > 512 {
            tokio::task::yield_now().await;
            continue;
        }
        events.send(encoded.clone())?;
        published += 1;
    }
    let expected = published * subscribers as u64;
    crate::scenarios::wait_for_count(&delivered, expected, Duration::from_secs(60)).await;
    let seconds = start.elapsed().as_secs_f64();
    Ok((delivered.load(Ordering::Relaxed), seconds))
}

/// Serves the minimal server on `listener`, sockets with TCP_NODELAY as Natter's.
async fn serve(listener: tokio::net::TcpListener, broadcaster: Broadcaster) -> anyhow::Result<()> {
    tonic::transport::Server::builder()
        .add_service(AuthServiceServer::new(broadcaster.clone()))
        .add_service(ChatServiceServer::new(broadcaster))
        .serve_with_incoming(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        )
        .await?;
    Ok(())
}

/// `natter-bench --serve-baseline`: the minimal server as a process of its own, saying where
/// it listens the way natter-server does (`address=...` on stderr).
pub(crate) async fn serve_baseline() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    eprintln!("listening address={}", listener.local_addr()?);
    serve(listener, Broadcaster::new()).await
}
