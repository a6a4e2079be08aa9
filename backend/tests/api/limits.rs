//! Limits that keep one instance alive under abuse: sign-in storms, oversized input,
//! names that could impersonate.

use std::net::SocketAddr;

use natter_fleet::Instance;
use natter_proto::v1::{self as pb, auth_service_client::AuthServiceClient};
use tonic::{Code, transport::Channel};

use crate::{helpers::*, redis_server::start_redis};

/// Resident memory of a process, and its high-water mark, in bytes (from /proc).
pub fn memory_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        let line = status
            .lines()
            .find(|line| line.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"));
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub const MIB: u64 = 1024 * 1024;

/// Peak memory a storm of sign-ins may add to the process. The hashing workers' argon2
/// memory (19 MiB each, one worker per core) is allocated by the first hashes, so it may
/// fall inside the storm; the calls themselves take a few MiB (3 MiB measured for 400).
/// Without the fixed workers, 80 concurrent sign-ins added about 800 MB.
const STORM_BUDGET: u64 = 64 * MIB;

/// Hundreds of concurrent sign-ins: each is answered (signed in) or refused with
/// RESOURCE_EXHAUSTED and a retry hint, the process's peak memory stays within
/// [`STORM_BUDGET`], and sign-ins work normally afterwards.
#[tokio::test]
async fn a_sign_in_storm_keeps_memory_within_a_fixed_budget() {
    let redis = start_redis().await;
    let logs = tempfile::tempdir().unwrap();
    // Every sign-in must reach the hashing workers: the rate limits (tested on their own)
    // would refuse most of these first.
    let config = instance_config(&redis, &["--rate-limits", "false"]);
    let addr = SocketAddr::from(([127, 0, 0, 1], natter_fleet::free_port().unwrap()));
    let instance = Instance::start("storm", addr, config, logs.path())
        .await
        .unwrap();
    let pid = instance.pid().unwrap();
    let channel = Channel::from_shared(instance.url()).unwrap().connect_lazy();
    let mut auth = AuthServiceClient::new(channel.clone());
    auth.register(pb::RegisterRequest {
        username: "stormy".into(),
        password: "correct-horse".into(),
        display_name: String::new(),
    })
    .await
    .unwrap();
    let (before, _) = memory_of(pid);

    let logins: Vec<_> = (0..400)
        .map(|i| {
            // Eight connections, as from several clients.
            let channel = if i % 8 == 0 {
                Channel::from_shared(instance.url()).unwrap().connect_lazy()
            } else {
                channel.clone()
            };
            tokio::spawn(async move {
                AuthServiceClient::new(channel)
                    .login(pb::LoginRequest {
                        username: "stormy".into(),
                        password: "correct-horse".into(),
                    })
                    .await
            })
        })
        .collect();
    let (mut signed_in, mut refused) = (0, 0);
    for login in logins {
        match tokio::time::timeout(WAIT, login).await.unwrap().unwrap() {
            Ok(_) => signed_in += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(status.message().contains("retry in"), "{status:?}");
                assert!(status.metadata().get("retry-after").is_some());
                refused += 1;
            }
        }
    }
    let (_, peak) = memory_of(pid);
    assert!(signed_in > 0, "nobody signed in ({refused} refused)");
    assert!(
        peak.saturating_sub(before) <= STORM_BUDGET,
        "peak RSS grew by {} MiB (from {} MiB) for {signed_in} sign-ins and {refused} refusals",
        peak.saturating_sub(before) / MIB,
        before / MIB
    );
    auth.login(pb::LoginRequest {
        username: "stormy".into(),
        password: "correct-horse".into(),
    })
    .await
    .expect("a sign-in after the storm");
}

#[tokio::test]
async fn oversized_passwords_are_refused_before_hashing() {
    let app = spawn_app().await;
    let mut alice = app.register("alice").await;
    let room = alice
        .chat
        .create_room(pb::CreateRoomRequest {
            name: "locked".into(),
            password: "door-code".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let huge = "p".repeat(1025);
    assert_status(
        app.auth()
            .register(pb::RegisterRequest {
                username: "bob".into(),
                password: huge.clone(),
                display_name: String::new(),
            })
            .await,
        Code::InvalidArgument,
        "password: must be at most 1024 bytes",
    );
    assert_status(
        app.auth()
            .login(pb::LoginRequest {
                username: "alice".into(),
                password: huge.clone(),
            })
            .await,
        Code::InvalidArgument,
        "password: must be at most 1024 bytes",
    );
    let mut bob = app.register("bob").await;
    assert_status(
        bob.chat
            .join_room(pb::JoinRoomRequest {
                code: room.code.clone(),
                password: huge,
            })
            .await,
        Code::InvalidArgument,
        "password: must be at most 1024 bytes",
    );
    // Nothing else is affected.
    bob.chat
        .join_room(pb::JoinRoomRequest {
            code: room.code,
            password: "door-code".into(),
        })
        .await
        .unwrap();
    alice.send(&room.id, "still here").await;
}

#[tokio::test]
async fn names_that_could_impersonate_are_refused() {
    let app = spawn_app().await;
    assert_status(
        app.auth()
            .register(pb::RegisterRequest {
                username: "mallory".into(),
                password: "correct-horse".into(),
                display_name: "admin\u{202E}nimda".into(),
            })
            .await,
        Code::InvalidArgument,
        "display_name: must not contain control, invisible, direction-changing",
    );
    let mut alice = app.register("alice").await;
    assert_status(
        alice
            .chat
            .create_room(pb::CreateRoomRequest {
                name: "gen\u{200B}eral".into(),
                password: String::new(),
            })
            .await,
        Code::InvalidArgument,
        "name: must not contain control, invisible",
    );
    alice.create_room("général 🎉").await;
}

#[tokio::test]
async fn an_account_holds_at_most_its_share_of_streams() {
    let app = spawn_app_with(|c| c.max_streams_per_user = 2).await;
    let mut alice = app.register("alice").await;
    let mut bob = app.register("bob").await;
    let mut first = alice.subscribe(vec![]).await;
    expect_ready(&mut first).await;
    let mut second = alice.subscribe(vec![]).await;
    expect_ready(&mut second).await;

    let open = || pb::SubscribeRequest { resume: vec![] };
    let refused = alice.chat.subscribe(open()).await;
    assert_status(refused, Code::ResourceExhausted, "most event streams open");
    assert_eq!(
        app.metric(r#"natter_rejections_total{limit="streams_per_user"}"#)
            .await,
        1
    );
    // Others are not affected, and a closed stream makes room again.
    let mut bobs = bob.subscribe(vec![]).await;
    expect_ready(&mut bobs).await;
    drop(first);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match alice.chat.subscribe(open()).await {
            Ok(again) => {
                expect_ready(&mut again.into_inner()).await;
                break;
            }
            Err(status) if status.code() == Code::ResourceExhausted => {
                // The server has not noticed the closed stream yet.
                assert!(tokio::time::Instant::now() < deadline, "{status:?}");
                tokio::task::yield_now().await;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_instance_holds_at_most_its_streams() {
    let app = spawn_app_with(|c| c.max_streams = 1).await;
    let mut alice = app.register("alice").await;
    let mut bob = app.register("bob").await;
    let mut alices = alice.subscribe(vec![]).await;
    expect_ready(&mut alices).await;
    let refused = bob
        .chat
        .subscribe(pb::SubscribeRequest { resume: vec![] })
        .await;
    let status = refused.expect_err("the instance is full");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("most event streams it may"),
        "{status:?}"
    );
    assert_eq!(status.metadata().get("retry-after").unwrap(), "5");
    assert_eq!(
        app.metric(r#"natter_rejections_total{limit="streams"}"#)
            .await,
        1
    );
    // Unary calls still work.
    bob.create_room("still fine").await;
}

#[tokio::test]
async fn an_account_is_in_at_most_its_share_of_rooms() {
    let app = spawn_app_with(|c| c.max_rooms_per_user = 2).await;
    let mut alice = app.register("alice").await;
    let mut bob = app.register("bob").await;
    let first = alice.create_room("one").await;
    alice.create_room("two").await;
    let bobs = bob.create_room("bob's").await;
    let full = "most rooms an account may be in";
    assert_status(
        alice
            .chat
            .create_room(pb::CreateRoomRequest {
                name: "three".into(),
                password: String::new(),
            })
            .await,
        Code::ResourceExhausted,
        full,
    );
    assert_status(
        alice
            .chat
            .join_room(pb::JoinRoomRequest {
                code: bobs.code.clone(),
                password: String::new(),
            })
            .await,
        Code::ResourceExhausted,
        full,
    );
    assert_status(
        alice
            .chat
            .open_direct(pb::OpenDirectRequest {
                user_id: bob.user.id.clone(),
            })
            .await,
        Code::ResourceExhausted,
        full,
    );
    // Joining a room one is in already costs nothing.
    alice.join(&first.code).await;
    // A direct room with someone whose rooms are full is refused too.
    let mut carol = app.register("carol").await;
    assert_status(
        carol
            .chat
            .open_direct(pb::OpenDirectRequest {
                user_id: alice.user.id.clone(),
            })
            .await,
        Code::ResourceExhausted,
        "the other user is in the most rooms",
    );
    alice.leave(&first.id).await;
    alice.join(&bobs.code).await;
    assert_eq!(
        app.metric(r#"natter_rejections_total{limit="rooms_per_user"}"#)
            .await,
        4
    );
}

#[tokio::test]
async fn oversized_requests_are_refused_and_the_server_goes_on() {
    let app = spawn_app_with(|c| c.max_request_bytes = 16 * 1024).await;
    let mut alice = app.register("alice").await;
    let room = alice.create_room("big").await;
    let refused = alice
        .chat
        .send_message(pb::SendMessageRequest {
            room_id: room.id.clone(),
            text: "x".repeat(20 * 1024),
            client_id: String::new(),
        })
        .await;
    assert_status(refused, Code::OutOfRange, "message length too large");
    alice.send(&room.id, "a normal message").await;
    assert_eq!(alice.history(&room.id).await.len(), 1);
}

#[tokio::test]
async fn unary_calls_have_a_deadline() {
    let app = spawn_app_with(|c| c.request_timeout = std::time::Duration::from_millis(1)).await;
    // Registering hashes a password (tens of milliseconds): past the deadline.
    let refused = app
        .auth()
        .register(pb::RegisterRequest {
            username: "slowpoke".into(),
            password: "correct-horse".into(),
            display_name: String::new(),
        })
        .await;
    assert_status(refused, Code::Cancelled, "Timeout expired");
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app_with(|c| c.max_connections = 2).await;
    let _first = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let second = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let mut third = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(WAIT, third.read(&mut byte))
        .await
        .unwrap();
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the third connection should be closed, read {read:?}"
    );
    // Read from the instance itself: a connection to ask would be refused too.
    let metrics = app.natter.render_metrics();
    assert!(
        metrics.contains("natter_rejections_total{limit=\"connections\"} 1\n"),
        "{metrics}"
    );
    // A closed connection frees its place.
    drop(second);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut conn = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(WAIT, conn.read_to_end(&mut answer)).await;
        if answer.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no place freed");
        tokio::task::yield_now().await;
    }
}

/// HTTP/2 tells the client how many calls one connection may have open; the client waits
/// for one to finish before starting another.
#[tokio::test]
async fn a_connection_holds_at_most_its_concurrent_calls() {
    let app = spawn_app_with(|c| c.max_streams_per_connection = 2).await;
    let mut alice = app.register("alice").await;
    let mut first = alice.subscribe(vec![]).await;
    expect_ready(&mut first).await;
    let mut second = alice.subscribe(vec![]).await;
    expect_ready(&mut second).await;

    let mut chat = alice.chat.clone();
    let mut third = tokio::spawn(async move {
        chat.subscribe(pb::SubscribeRequest { resume: vec![] })
            .await
            .map(tonic::Response::into_inner)
    });
    // Not started while two are open (a bounded check of non-progress).
    let waited = tokio::time::timeout(std::time::Duration::from_millis(300), &mut third).await;
    assert!(
        waited.is_err(),
        "a third call started on a connection allowing two"
    );
    drop(first);
    let mut third = tokio::time::timeout(WAIT, third)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    expect_ready(&mut third).await;
}
