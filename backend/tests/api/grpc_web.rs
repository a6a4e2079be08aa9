//! gRPC-Web over HTTP/1.1 on the same port as native gRPC.

use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use natter_proto::v1::{
    self as pb, auth_service_client::AuthServiceClient, chat_service_client::ChatServiceClient,
    event::Event as Ev,
};
use tonic::service::interceptor::InterceptedService;
use tonic_web::GrpcWebClientLayer;

use crate::helpers::*;

type WebBody = tonic_web::GrpcWebCall<tonic::body::Body>;
type WebService = tonic_web::GrpcWebClientService<Client<HttpConnector, WebBody>>;

/// gRPC-Web over an HTTP/1.1-only hyper client (hyper's legacy client never upgrades to h2
/// unless asked to).
fn web_service() -> WebService {
    let http1_only = Client::builder(TokioExecutor::new()).build_http::<WebBody>();
    tower::ServiceBuilder::new()
        .layer(GrpcWebClientLayer::new())
        .service(http1_only)
}

#[tokio::test]
async fn unary_and_server_streaming_over_grpc_web() {
    let app = spawn_app().await;
    let origin: http::Uri = app.url.parse().unwrap();
    let mut auth = AuthServiceClient::with_origin(web_service(), origin.clone());
    let signed_in = auth
        .register(pb::RegisterRequest {
            username: "webby".into(),
            password: "correct-horse".into(),
            display_name: String::new(),
        })
        .await
        .expect("register over gRPC-Web")
        .into_inner();

    let with_token = InterceptedService::new(web_service(), Bearer(signed_in.access_token.clone()));
    let mut chat = ChatServiceClient::with_origin(with_token, origin);
    let room = chat
        .create_room(pb::CreateRoomRequest {
            name: "Web".into(),
            password: String::new(),
        })
        .await
        .unwrap()
        .into_inner();

    let mut events = chat
        .subscribe(pb::SubscribeRequest::default())
        .await
        .expect("subscribe over gRPC-Web")
        .into_inner();
    let ready = expect_ready(&mut events).await;
    assert_eq!(ready.rooms[0].id, room.id);
    // Counted as a gRPC-Web stream, next to a native one.
    let mut native = app
        .chat_with_token(&signed_in.access_token)
        .subscribe(pb::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    expect_ready(&mut native).await;
    for (protocol, open) in [("grpc_web", 1), ("grpc", 1)] {
        let series = format!("natter_streams_open_by_protocol{{protocol=\"{protocol}\"}}");
        assert_eq!(app.metric(&series).await, open, "{series}");
    }
    drop(native);

    // A native client on the same port sends; the gRPC-Web stream receives.
    let mut native = app.register("native").await;
    native.join(&room.code).await;
    native.send(&room.id, "from native gRPC").await;
    let got = wait_for(&mut events, |e| match e {
        Ev::Message(m) => Some(m),
        _ => None,
    })
    .await;
    assert_eq!(got.text, "from native gRPC");
    // A send over gRPC-Web, delivered to the gRPC-Web stream.
    chat.send_message(pb::SendMessageRequest {
        room_id: room.id.clone(),
        text: "from the web".into(),
        client_id: String::new(),
    })
    .await
    .unwrap();
    let got = wait_for(&mut events, |e| match e {
        Ev::Message(m) => Some(m),
        _ => None,
    })
    .await;
    assert_eq!(got.text, "from the web");
    // Messages in and out are counted by protocol, and each live delivery's latency.
    for (series, expected) in [
        ("natter_messages_received_total{protocol=\"grpc\"}", 1),
        ("natter_messages_received_total{protocol=\"grpc_web\"}", 1),
        (
            "natter_messages_delivered_by_protocol_total{protocol=\"grpc_web\"}",
            2,
        ),
        (
            "natter_messages_delivered_by_protocol_total{protocol=\"grpc\"}",
            0,
        ),
        ("natter_fanout_latency_seconds_count", 2),
        // Each send's time in the service, and its append's.
        ("natter_send_duration_seconds_count", 2),
        ("natter_append_duration_seconds_count", 2),
    ] {
        assert_eq!(app.metric(series).await, expected, "{series}");
    }

    // Errors arrive as gRPC statuses too.
    assert_status(
        auth.login(pb::LoginRequest {
            username: "webby".into(),
            password: "wrong-password".into(),
        })
        .await,
        tonic::Code::Unauthenticated,
        "wrong password",
    );
}

/// A raw HTTP/1.1 exchange; the answer's head, lower-cased.
async fn raw_head(app: &TestApp, request: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut connection = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    connection.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, connection.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    answer.split("\r\n\r\n").next().unwrap().to_owned()
}

fn preflight(origin: &str) -> String {
    format!(
        "OPTIONS /natter.v1.AuthService/Login HTTP/1.1\r\nhost: x\r\norigin: {origin}\r\n\
         access-control-request-method: POST\r\n\
         access-control-request-headers: content-type,x-grpc-web\r\nconnection: close\r\n\r\n"
    )
}

fn login_from(origin: &str) -> String {
    // An empty LoginRequest: the answer is a gRPC status (no such user).
    format!(
        "POST /natter.v1.AuthService/Login HTTP/1.1\r\nhost: x\r\norigin: {origin}\r\n\
         content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\ncontent-length: 5\r\n\
         connection: close\r\n\r\n\0\0\0\0\0"
    )
}

/// `--cors-origins`: pages from a listed origin may call the API and read its gRPC
/// status; other origins get no permission; without the option, none at all.
#[tokio::test]
async fn listed_origins_may_call_grpc_web_across_origins() {
    let app = spawn_app_with(|c| c.cors_origins = vec!["https://chat.example.com".into()]).await;
    let allowed = raw_head(&app, preflight("https://chat.example.com")).await;
    assert!(allowed.starts_with("http/1.1 200"), "{allowed}");
    assert!(
        allowed.contains("access-control-allow-origin: https://chat.example.com"),
        "{allowed}"
    );
    let call = raw_head(&app, login_from("https://chat.example.com")).await;
    assert!(
        call.contains("access-control-allow-origin: https://chat.example.com"),
        "{call}"
    );
    assert!(call.contains("grpc-status"), "{call}");
    let exposed = call
        .lines()
        .find(|l| l.starts_with("access-control-expose-headers:"))
        .unwrap_or_else(|| panic!("no exposed headers: {call}"));
    assert!(
        exposed.contains("grpc-status") && exposed.contains("grpc-message"),
        "{exposed}"
    );

    let refused = raw_head(&app, preflight("https://evil.example")).await;
    assert!(
        !refused.contains("access-control-allow-origin"),
        "{refused}"
    );

    let same_origin_only = spawn_app().await;
    let none = raw_head(&same_origin_only, login_from("https://chat.example.com")).await;
    assert!(!none.contains("access-control-allow-origin"), "{none}");
}

/// A call refused before its body is read (here: no token) still delivers its status over
/// HTTP/1.1, and the connection stays usable. Answered early, hyper had to close a
/// connection whose request body was still arriving, and the reset that follows can destroy
/// the answer on its way (a client then sees a broken pipe instead of UNAUTHENTICATED).
#[tokio::test]
async fn a_call_refused_before_its_body_arrives_answers_and_keeps_the_connection() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app().await;
    let mut connection = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = "POST /natter.v1.ChatService/ListRooms HTTP/1.1\r\nhost: x\r\n\
                content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\n\
                content-length: 5\r\n\r\n";
    for call in 0..3 {
        connection.write_all(head.as_bytes()).await.unwrap();
        connection.write_all(&[0, 0]).await.unwrap();
        // The rest of the message comes after the server could have answered.
        tokio::task::yield_now().await;
        connection.write_all(&[0, 0, 0]).await.unwrap();
        let answer = tokio::time::timeout(WAIT, read_http1_response(&mut connection))
            .await
            .expect("an answer in time")
            .unwrap_or_else(|e| panic!("call {call}: the connection broke: {e}"));
        assert!(answer.starts_with("http/1.1 200"), "call {call}: {answer}");
        assert!(answer.contains("grpc-status: 16"), "call {call}: {answer}");
    }
    // A body over the bound is read to its end too (and dropped): OUT_OF_RANGE, and the
    // connection still serves.
    let message = vec![b'x'; 100 * 1024];
    let mut body = vec![0];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let head = format!(
        "POST /natter.v1.AuthService/Login HTTP/1.1\r\nhost: x\r\n\
         content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    for _ in 0..2 {
        connection.write_all(head.as_bytes()).await.unwrap();
        connection.write_all(&body).await.unwrap();
        let answer = tokio::time::timeout(WAIT, read_http1_response(&mut connection))
            .await
            .expect("an answer in time")
            .expect("the connection still serves");
        assert!(answer.contains("grpc-status: 11"), "{answer}");
    }
}

/// Reads one HTTP/1.1 response (head and body, sized or chunked), lower-cased.
async fn read_http1_response(connection: &mut tokio::net::TcpStream) -> std::io::Result<String> {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    let complete = |bytes: &[u8]| -> bool {
        let text = String::from_utf8_lossy(bytes).to_lowercase();
        let Some(end) = text.find("\r\n\r\n") else {
            return false;
        };
        let (head, body) = (&text[..end], &text[end + 4..]);
        if head.contains("transfer-encoding: chunked") {
            return body.ends_with("0\r\n\r\n");
        }
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |n| n.trim().parse::<usize>().unwrap());
        body.len() >= length
    };
    while !complete(&bytes) {
        let mut chunk = [0u8; 4096];
        let n = connection.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("closed after {:?}", String::from_utf8_lossy(&bytes)),
            ));
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&bytes).to_lowercase())
}
