//! Clients that hold resources without using them: connections that never finish their
//! request headers.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// Reads until `buffer` holds a whole `/healthz` answer (its body is "ok").
async fn read_answer(connection: &mut tokio::net::TcpStream) -> String {
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    while !answer.ends_with(b"\r\n\r\nok") {
        let n = tokio::time::timeout(WAIT, connection.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// Lets every task that is ready run (this runtime has one thread), so whatever a timer
/// that just fired does has happened.
async fn let_the_server_run() {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}

/// Slowloris: a client that sends part of a request head (or of the HTTP/2 preface) and
/// then nothing is cut off
/// once the head has taken longer than the header-read timeout (`--http1-header-timeout`,
/// 10 s). The clock
/// is the runtime's, advanced by hand: the test takes no 10 s. The test runtime has one
/// thread, so after the first answer has reached the client the server has already gone
/// back to waiting for the next head, its timer running.
#[tokio::test]
async fn connections_that_never_finish_their_headers_are_closed_on_time() {
    let app = spawn_app().await;
    let mut slow = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_answer(&mut slow).await.starts_with("HTTP/1.1 200"));
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ")
        .await
        .unwrap();
    // One that stops halfway through the HTTP/2 preface (accepted while the next one is
    // answered, so its timer runs from before the clock is paused).
    let mut half_preface = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    half_preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    // A keep-alive connection that is answered and then sends nothing more.
    let mut idle = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_answer(&mut idle).await.starts_with("HTTP/1.1 200"));

    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(9)).await;
    let_the_server_run().await;
    // Not yet closed at 9 s (nothing to read, no end of stream)...
    let mut probe = [0u8; 64];
    assert!(
        matches!(slow.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "closed or answered before the timeout"
    );
    tokio::time::resume();
    // ...and a well-behaved client is answered meanwhile...
    let mut prompt = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    prompt
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_answer(&mut prompt).await.starts_with("HTTP/1.1 200"));

    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(2)).await;
    let_the_server_run().await;
    // ...and past the timeout the slow one is closed, without an answer to its request,
    // and so is the idle one.
    let (closed, rest) = closed_and_rest(&mut slow);
    let (idle_closed, idle_rest) = closed_and_rest(&mut idle);
    let (half_closed, _) = closed_and_rest(&mut half_preface);
    tokio::time::resume();
    assert!(closed, "still open at 11 s: {rest}");
    assert!(!rest.contains("200 OK"), "answered: {rest}");
    assert!(
        idle_closed,
        "idle connection still open at 11 s: {idle_rest}"
    );
    assert!(half_closed, "half an HTTP/2 preface still held at 11 s");
}

/// Whether the server has closed `connection`, and what it sent before, without waiting.
fn closed_and_rest(connection: &mut tokio::net::TcpStream) -> (bool, String) {
    let mut probe = [0u8; 64];
    let mut rest = Vec::new();
    let closed = loop {
        match connection.try_read(&mut probe) {
            Ok(0) => break true,
            Ok(n) => rest.extend_from_slice(&probe[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    (closed, String::from_utf8_lossy(&rest).into_owned())
}

/// A page of history is bounded in bytes as well as in messages: long messages come in
/// several pages, with no gap between them.
#[tokio::test]
async fn history_pages_are_bounded_in_bytes() {
    let app = spawn_app().await;
    let mut alice = app.register("alice").await;
    let room = alice.create_room("Essays").await;
    for i in 0..100 {
        alice
            .send(&room.id, &format!("{i:03} {}", "x".repeat(3996)))
            .await;
    }
    let mut before_seq = 0;
    let mut pages = Vec::new();
    loop {
        let page = alice
            .chat
            .get_history(natter_proto::v1::GetHistoryRequest {
                room_id: room.id.clone(),
                before_seq,
                limit: 200,
            })
            .await
            .unwrap()
            .into_inner();
        let bytes: usize = page.messages.iter().map(|m| m.text.len()).sum();
        assert!(bytes <= 256 * 1024, "a page of {bytes} bytes");
        before_seq = page.messages.first().unwrap().seq;
        pages.push(page.messages);
        if !page.has_more {
            break;
        }
    }
    assert!(pages.len() >= 2, "100 x 4 KB in one page");
    let seqs: Vec<u64> = pages.iter().rev().flatten().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
}

/// One account opens 2,000 event streams it never reads, each resuming a room of 200
/// messages of 4,000 characters, over 8 connections. Its first 16 streams are admitted
/// (--max-streams-per-user) and back up into the server; the rest are refused. The
/// server's peak memory grows by at most [`UNREAD_STREAMS_BUDGET`], and two other users
/// chat throughout.
#[tokio::test]
async fn thousands_of_unread_streams_cost_a_bounded_amount_and_others_keep_chatting() {
    use natter_fleet::Instance;
    use natter_proto::v1 as pb;

    use crate::limits::{MIB, memory_of};

    /// 16 admitted streams, each holding at most its outbox (128 events) and one catch-up
    /// batch (64) of these 4 KB messages (about 0.8 MB), plus HTTP/2's buffers for 2,000
    /// calls. Measured: 6 MiB (17 MiB with the earlier catch-up batch of 256). Without the
    /// account's stream limit, 2,000 such streams would hold about 1.5 GB. And 8 unread
    /// history pages of about 256 KiB (2 MiB); without the limit on pages in flight, 2,000
    /// of them would hold about 500 MB. Measured with both: 11 MiB.
    const UNREAD_STREAMS_BUDGET: u64 = 32 * MIB;

    let redis = crate::redis_server::start_redis().await;
    let logs = tempfile::tempdir().unwrap();
    // The setup sends 200 long messages at once; the stream limits are under test.
    let config = instance_config(&redis, &["--rate-limits", "false"]);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], natter_fleet::free_port().unwrap()));
    let instance = Instance::start("abused", addr, config, logs.path())
        .await
        .unwrap();
    let url = instance.url();
    let app = spawn_redis_app(&redis, |_| {}).await;
    let mut mallory = app.register("mallory").await.via(&url);
    let hoard = mallory.create_room("Hoard").await;
    for i in 0..200 {
        mallory
            .send(&hoard.id, &format!("{i:03} {}", "x".repeat(3996)))
            .await;
    }
    let mut alice = app.register("alice").await.via(&url);
    let bob = app.register("bob").await;
    let room = alice.create_room("Meanwhile").await;
    let mut bob = bob.via(&url);
    bob.join(&room.code).await;
    let mut alices_events = alice.subscribe(vec![]).await;
    expect_ready(&mut alices_events).await;
    let mut bobs_events = bob.subscribe(vec![]).await;
    expect_ready(&mut bobs_events).await;
    let pid = instance.pid().unwrap();
    let (before, _) = memory_of(pid);

    let (mut unread, mut refused, mut connections) = (Vec::new(), 0, Vec::new());
    for _ in 0..8 {
        // Kept: a dropped client closes its connection, and the server its streams.
        connections.push(mallory.via_small_windows(&url));
        let connection = connections.last_mut().unwrap();
        for _ in 0..250 {
            let resume = vec![pb::RoomCursor {
                room_id: hoard.id.clone(),
                after_seq: 0,
            }];
            match connection
                .chat
                .subscribe(pb::SubscribeRequest { resume })
                .await
            {
                Ok(stream) => unread.push(stream),
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                    refused += 1;
                }
            }
        }
    }
    assert_eq!((unread.len(), refused), (16, 2000 - 16));
    // And 2,000 history pages asked for (about 256 KiB each) and never read, over 8
    // connections with shut windows: a few are sent, the rest refused.
    let mut unread_pages = Vec::new();
    let mut refused_pages = 0;
    let mut clients = Vec::new();
    for _ in 0..8 {
        // Kept, like the connections above.
        clients.push(small_window_http2_client());
        let connection = clients.last().unwrap();
        for _ in 0..250 {
            let answer = connection
                .request(get_history_call(&url, &mallory.token, &hoard.id))
                .await
                .expect("an answer's head");
            match answer.headers().get("grpc-status") {
                Some(code) => {
                    assert_eq!(code, "8", "{:?}", answer.headers());
                    refused_pages += 1;
                }
                None => unread_pages.push(answer),
            }
        }
    }
    assert_eq!((unread_pages.len(), refused_pages), (8, 2000 - 8));
    for i in 0..20 {
        let text = format!("still chatting {i}");
        alice.send(&room.id, &text).await;
        assert_eq!(next_message(&mut bobs_events).await.text, text);
        assert_eq!(next_message(&mut alices_events).await.text, text);
    }

    let (_, peak) = memory_of(pid);
    let metrics = crate::probes::http_request_to(addr, "GET", "/metrics", None).await;
    assert!(
        metrics.contains("natter_rejections_total{limit=\"history_reads\"} 1992\n"),
        "{metrics}"
    );
    let open: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("natter_streams_open "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(open, 2 + 16, "alice, bob and mallory's 16 admitted streams");
    assert!(
        peak.saturating_sub(before) <= UNREAD_STREAMS_BUDGET,
        "peak RSS grew by {} MiB (from {} MiB) for {} unread streams and {} unread pages",
        peak.saturating_sub(before) / MIB,
        before / MIB,
        unread.len(),
        unread_pages.len()
    );
}

type RawBody = http_body_util::Full<bytes::Bytes>;

/// An HTTP/2 client with 16 KiB windows whose answers are read only if asked: its calls
/// stay open on the server while their bodies are not read.
fn small_window_http2_client()
-> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, RawBody> {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .http2_initial_stream_window_size(16 * 1024)
        .http2_initial_connection_window_size(16 * 1024)
        .build(connector)
}

/// A raw `GetHistory` call for the newest page of `room_id`.
fn get_history_call(url: &str, token: &str, room_id: &str) -> http::Request<RawBody> {
    use prost::Message;
    let message = natter_proto::v1::GetHistoryRequest {
        room_id: room_id.into(),
        before_seq: 0,
        limit: 200,
    }
    .encode_to_vec();
    let mut frame = vec![0];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    http::Request::post(format!("{url}/natter.v1.ChatService/GetHistory"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {token}"))
        .body(RawBody::new(frame.into()))
        .unwrap()
}
