use natter_proto::v1 as pb;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use crate::helpers::*;

#[tokio::test]
async fn grpc_health_answers() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.channel.clone());
    for service in ["", "natter.v1.ChatService", "natter.v1.AuthService"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.status, ServingStatus::Serving as i32, "{service}");
    }
}

#[tokio::test]
async fn reflection_lists_and_describes_services() {
    let app = spawn_app().await;
    let mut reflection = ServerReflectionClient::new(app.channel.clone());
    let request = |message| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(message),
    };
    let responses = reflection
        .server_reflection_info(tokio_stream::iter([
            request(MessageRequest::ListServices(String::new())),
            request(MessageRequest::FileContainingSymbol(
                "natter.v1.ChatService".into(),
            )),
        ]))
        .await
        .unwrap()
        .into_inner();
    use futures::StreamExt;
    let responses: Vec<_> = responses
        .map(|r| r.unwrap().message_response.unwrap())
        .collect()
        .await;
    let MessageResponse::ListServicesResponse(list) = &responses[0] else {
        panic!("{:?}", responses[0])
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "natter.v1.AuthService",
        "natter.v1.ChatService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(&expected), "{names:?}");
    }
    let MessageResponse::FileDescriptorResponse(files) = &responses[1] else {
        panic!("{:?}", responses[1])
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

#[tokio::test]
async fn http_probes_and_json_auth_share_the_port() {
    let app = spawn_app().await;
    let health = http_request(&app, "GET", "/healthz", None).await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let ready = http_request(&app, "GET", "/readyz", None).await;
    assert!(
        ready.starts_with("HTTP/1.1 200") && ready.contains("\"ready\":true"),
        "{ready}"
    );

    let body = r#"{"username":"Scripted","password":"correct-horse","display_name":"Bot"}"#;
    let registered = http_request(&app, "POST", "/api/v1/register", Some(body)).await;
    assert!(
        registered.starts_with("HTTP/1.1 200")
            && registered.contains("access_token")
            && registered.contains("\"expires_in_ms\":43200000"),
        "{registered}"
    );
    let again = http_request(&app, "POST", "/api/v1/register", Some(body)).await;
    assert!(
        again.starts_with("HTTP/1.1 409") && again.contains("ALREADY_EXISTS"),
        "{again}"
    );
    let invalid = http_request(
        &app,
        "POST",
        "/api/v1/register",
        Some(r#"{"username":"x","password":"correct-horse"}"#),
    )
    .await;
    assert!(
        invalid.starts_with("HTTP/1.1 400") && invalid.contains("username"),
        "{invalid}"
    );
    let malformed = http_request(
        &app,
        "POST",
        "/api/v1/login",
        Some(r#"{"username":"scripted""#),
    )
    .await;
    assert!(
        malformed.starts_with("HTTP/1.1 400")
            && malformed.contains("INVALID_ARGUMENT")
            && malformed.contains("body"),
        "{malformed}"
    );
    let login = http_request(
        &app,
        "POST",
        "/api/v1/login",
        Some(r#"{"username":"scripted","password":"correct-horse"}"#),
    )
    .await;
    assert!(login.starts_with("HTTP/1.1 200"), "{login}");
    let token = login
        .split("\"access_token\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    // The token works on the gRPC API of the same port.
    app.chat_with_token(token)
        .list_rooms(pb::ListRoomsRequest {})
        .await
        .unwrap();
    let bad = http_request(
        &app,
        "POST",
        "/api/v1/login",
        Some(r#"{"username":"scripted","password":"nope-nope"}"#),
    )
    .await;
    assert!(bad.starts_with("HTTP/1.1 401"), "{bad}");
}

/// A minimal HTTP/1.1 exchange over a raw socket (the server closes after the response).
pub async fn http_request(app: &TestApp, method: &str, path: &str, body: Option<&str>) -> String {
    http_request_to(app.addr, method, path, body).await
}

/// [`http_request`] to any address.
pub async fn http_request_to(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, socket.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn the_web_client_is_served_with_caching_compression_and_spa_fallback() {
    let site = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(site.path().join("assets")).unwrap();
    std::fs::write(
        site.path().join("index.html"),
        "<!doctype html><title>Natter</title>",
    )
    .unwrap();
    std::fs::write(
        site.path().join("assets/natter-0123.wasm"),
        b"\0asm".repeat(4096),
    )
    .unwrap();
    let dir = site.path().to_path_buf();
    let app = spawn_app_with(move |c| c.static_dir = dir).await;

    let index = http_request(&app, "GET", "/", None).await;
    assert!(index.starts_with("HTTP/1.1 200"), "{index}");
    assert!(
        index.contains("content-type: text/html") && index.contains("cache-control: no-cache"),
        "{index}"
    );
    let deep_link = http_request(&app, "GET", "/rooms/anything", None).await;
    assert!(
        deep_link.starts_with("HTTP/1.1 200") && deep_link.contains("<title>Natter</title>"),
        "SPA fallback: {deep_link}"
    );
    // A new build (scripts/web-dev writes one on every change) is served at once, with no
    // restart: files are read from disk on each request.
    std::fs::write(
        site.path().join("index.html"),
        "<!doctype html><title>Natter, rebuilt</title><script type=\"module\">init();</script>",
    )
    .unwrap();
    let rebuilt = http_request(&app, "GET", "/", None).await;
    assert!(rebuilt.contains("Natter, rebuilt"), "{rebuilt}");
    // Its security headers: the policy allows the new page's inline script by its hash
    // (base64 of sha256("init();")), WebAssembly, and no framing.
    for header in [
        "x-content-type-options: nosniff",
        "referrer-policy: no-referrer",
        "x-frame-options: DENY",
        "content-security-policy: default-src 'self'; script-src 'self' 'wasm-unsafe-eval' \
         'sha256-GEnM5q1nYY/iACnyMTdov+tNp9OFcBnnDgNXUXaVNXc=';",
        "frame-ancestors 'none'",
    ] {
        assert!(rebuilt.contains(header), "{header} missing: {rebuilt}");
    }

    let wasm = http_request(&app, "GET", "/assets/natter-0123.wasm", None).await;
    assert!(wasm.contains("content-type: application/wasm"), "{wasm}");
    assert!(wasm.contains("x-content-type-options: nosniff"), "{wasm}");
    assert!(
        wasm.contains("cache-control: public, max-age=31536000, immutable"),
        "{wasm}"
    );
    let missing = http_request(&app, "GET", "/assets/natter-gone.js", None).await;
    assert!(
        missing.starts_with("HTTP/1.1 404") && !missing.contains("immutable"),
        "{missing}"
    );

    let compressed = raw_request(&app, "GET /assets/natter-0123.wasm HTTP/1.1\r\nhost: x\r\naccept-encoding: gzip\r\nconnection: close\r\n\r\n").await;
    let head = String::from_utf8_lossy(&compressed[..compressed.len().min(400)]).into_owned();
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(
        compressed.len() < 4 * 4096,
        "gzip shrinks the repetitive body: {} bytes",
        compressed.len()
    );

    // An asset the build compressed already is sent as its .gz file, as it is.
    std::fs::write(site.path().join("assets/natter-4567.js"), "export {};").unwrap();
    std::fs::write(
        site.path().join("assets/natter-4567.js.gz"),
        "gzipped at build time",
    )
    .unwrap();
    let precompressed = raw_request(&app, "GET /assets/natter-4567.js HTTP/1.1\r\nhost: x\r\naccept-encoding: gzip\r\nconnection: close\r\n\r\n").await;
    let precompressed = String::from_utf8_lossy(&precompressed).into_owned();
    assert!(
        precompressed.contains("content-encoding: gzip")
            && precompressed.contains("vary: accept-encoding")
            && precompressed.contains("content-type: text/javascript")
            && precompressed.ends_with("gzipped at build time"),
        "{precompressed}"
    );
    let plain = http_request(&app, "GET", "/assets/natter-4567.js", None).await;
    assert!(plain.ends_with("export {};"), "{plain}");

    // gRPC-Web and the API are not shadowed by the web client.
    let api = http_request(
        &app,
        "POST",
        "/api/v1/login",
        Some(r#"{"username":"nobody","password":"whatever1"}"#),
    )
    .await;
    assert!(api.starts_with("HTTP/1.1 401"), "{api}");
}

/// Sends raw bytes and returns the raw response.
async fn raw_request(app: &TestApp, request: &str) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, socket.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    response
}

/// From the first moment of a drain the instance reports itself not serving (to a health
/// watch opened before, since the listener no longer takes new connections), and it exits
/// within its drain timeout even while that watch stays open.
#[tokio::test]
async fn a_draining_instance_reports_not_serving_at_once() {
    let app = spawn_app_with(|c| c.drain_timeout = std::time::Duration::from_secs(2)).await;
    let mut health = HealthClient::new(app.channel.clone());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "natter.v1.ChatService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let started = std::time::Instant::now();
    let stopping = tokio::spawn(app.stop());
    let next = tokio::time::timeout(WAIT, watch.message())
        .await
        .expect("a status in time")
        .unwrap()
        .unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    stopping.await.unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[tokio::test]
async fn reflection_can_be_turned_off() {
    let app = spawn_app_with(|c| c.reflection = false).await;
    let mut reflection = ServerReflectionClient::new(app.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let answer = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await;
    assert_status(answer, tonic::Code::Unimplemented, "no such service");
    // The API itself is there.
    app.register("alice").await;
}

#[tokio::test]
async fn metrics_can_move_to_an_admin_listener() {
    let app = spawn_app_with(|c| c.admin_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    // Bound as the server starts, which runs on its own task.
    let deadline = tokio::time::Instant::now() + WAIT;
    let admin = loop {
        if let Some(address) = app.natter.admin_address() {
            break address;
        }
        assert!(tokio::time::Instant::now() < deadline, "no admin listener");
        tokio::task::yield_now().await;
    };
    let public = http_request(&app, "GET", "/metrics", None).await;
    assert!(public.starts_with("HTTP/1.1 404"), "{public}");
    let metrics = http_request_to(admin, "GET", "/metrics", None).await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("natter_streams_open "), "{metrics}");
    let ready = http_request_to(admin, "GET", "/readyz", None).await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    // The public port still has its probes and the API.
    let health = http_request(&app, "GET", "/healthz", None).await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
}

/// `--log-format json`: one JSON object per line, each with its spans: the call's request
/// id (the client's own here) and the RPC's fields.
#[tokio::test]
async fn json_logs_carry_the_request_id_and_the_user() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let data = tempfile::tempdir().unwrap();
    let address = format!("127.0.0.1:{}", natter_fleet::free_port().unwrap());
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_natter-server"))
        .args(["--listen", &address, "--log-format", "json"])
        .arg("--data-dir")
        .arg(data.path())
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    let mut next_json = async || {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .expect("the server logs until killed");
        serde_json::from_str::<serde_json::Value>(&line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    };
    while !next_json().await["fields"]["message"]
        .as_str()
        .unwrap()
        .starts_with("listening")
    {}

    let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_lazy();
    let mut request = tonic::Request::new(natter_proto::v1::RegisterRequest {
        username: "jason".into(),
        password: "correct-horse".into(),
        display_name: String::new(),
    });
    request
        .metadata_mut()
        .insert("x-request-id", "test-request-42".parse().unwrap());
    natter_proto::v1::auth_service_client::AuthServiceClient::new(channel)
        .register(request)
        .await
        .unwrap();
    let registered = loop {
        let line = next_json().await;
        if line["fields"]["message"] == "registered" {
            break line;
        }
    };
    let spans = registered["spans"].as_array().unwrap();
    assert!(
        spans.iter().any(|s| s["name"] == "call"
            && s["request_id"] == "test-request-42"
            && s["path"] == "/natter.v1.AuthService/Register"),
        "{registered}"
    );
    assert!(
        spans
            .iter()
            .any(|s| s["name"] == "register" && s["username"] == "jason"),
        "{registered}"
    );
}

/// `natter_connections_open` counts client connections by protocol, from accept to close.
#[tokio::test]
async fn connections_are_counted_by_protocol_while_open() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let http1 = "natter_connections_open{protocol=\"http1\"}";
    let h2 = "natter_connections_open{protocol=\"h2\"}";
    // The scrape itself is one HTTP/1.1 connection.
    let settle = |series, expected| app.wait_for_metric(series, move |n| n == expected);
    settle(h2, 0).await;
    settle(http1, 1).await;

    let channel = tonic::transport::Endpoint::from_shared(app.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut kept = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 256];
    let n = tokio::time::timeout(WAIT, kept.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
    settle(h2, 1).await;
    settle(http1, 2).await;

    drop(channel);
    drop(kept);
    settle(h2, 0).await;
    settle(http1, 1).await;
}
