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
