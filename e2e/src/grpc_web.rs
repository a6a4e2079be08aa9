//! A gRPC-Web client over HTTP/1.1, as browsers without HTTP/2 speak it: plain, or through
//! TLS with ALPN `http/1.1` to a fleet's self-signed certificate.

use anyhow::Context;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use natter_cli::client::Bearer;
use natter_proto::v1::{
    self as pb, auth_service_client::AuthServiceClient, chat_service_client::ChatServiceClient,
};
use tonic::service::interceptor::InterceptedService;
use tonic_web::{GrpcWebCall, GrpcWebClientLayer, GrpcWebClientService};

type Body = GrpcWebCall<tonic::body::Body>;
/// gRPC-Web calls over an HTTP/1.1-only client.
pub type WebService = GrpcWebClientService<Client<HttpsConnector<HttpConnector>, Body>>;
/// The chat client over gRPC-Web.
pub type WebChat = ChatServiceClient<InterceptedService<WebService, Bearer>>;

/// An HTTP/1.1-only client (TLS when the URL says https, trusting `ca_der` only then).
pub fn service(ca_der: Option<&[u8]>) -> anyhow::Result<WebService> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(der) = ca_der {
        roots.add(der.to_vec().into())?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    let http1_only = Client::builder(TokioExecutor::new()).build(connector);
    Ok(tower::ServiceBuilder::new()
        .layer(GrpcWebClientLayer::new())
        .service(http1_only))
}

/// Registers `username` over gRPC-Web and returns a signed-in chat client.
pub async fn sign_up(url: &str, username: &str, ca_der: Option<&[u8]>) -> anyhow::Result<WebChat> {
    let origin: http::Uri = url.parse().context("the server URL")?;
    let signed_in = AuthServiceClient::with_origin(service(ca_der)?, origin.clone())
        .register(pb::RegisterRequest {
            username: username.into(),
            password: "correct-horse".into(),
            display_name: String::new(),
        })
        .await?
        .into_inner();
    let with_token =
        InterceptedService::new(service(ca_der)?, Bearer::new(&signed_in.access_token)?);
    Ok(ChatServiceClient::with_origin(with_token, origin))
}
