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

/// Slowloris: a client that sends part of a request head and then nothing is cut off
/// once the head has taken longer than the header-read timeout (hyper's 30 s). The clock
/// is the runtime's, advanced by hand: the test takes no 30 s. The test runtime has one
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

    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(29)).await;
    let_the_server_run().await;
    // Not yet closed at 29 s (nothing to read, no end of stream)...
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
    // ...and past the timeout the slow one is closed, without an answer to its request.
    let mut rest = Vec::new();
    let closed = loop {
        match slow.try_read(&mut probe) {
            Ok(0) => break true,
            Ok(n) => rest.extend_from_slice(&probe[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    tokio::time::resume();
    let rest = String::from_utf8_lossy(&rest);
    assert!(closed, "still open at 31 s: {rest}");
    assert!(!rest.contains("200 OK"), "answered: {rest}");
}
