//! Limits that keep one instance alive under abuse: sign-in storms, oversized input,
//! names that could impersonate.

use std::net::SocketAddr;

use natter_fleet::{Instance, InstanceConfig};
use natter_proto::v1::{self as pb, auth_service_client::AuthServiceClient};
use tonic::{Code, transport::Channel};

use crate::{helpers::*, redis_server::start_redis};

/// Resident memory of a process, and its high-water mark, in bytes (from /proc).
fn memory_of(pid: u32) -> (u64, u64) {
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

const MIB: u64 = 1024 * 1024;

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
    let config = InstanceConfig {
        server_bin: env!("CARGO_BIN_EXE_natter-server").into(),
        redis_url: redis.url(),
        jwt_secret: SHARED_SECRET.into(),
        static_dir: None,
        trusted_proxies: "127.0.0.1".into(),
        extra_args: vec![],
    };
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
