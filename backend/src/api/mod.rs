//! The gRPC services: parse requests into domain values, call [`crate::service::Natter`],
//! answer with the generated types. No logic lives here.

pub(crate) mod auth;
pub(crate) mod chat;

use tonic::{Request, Status};

use crate::auth::Caller;

/// The caller that the auth interceptor put into the request.
fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("missing access token"))
}

/// Marks gRPC-Web calls (by their content type) before tonic-web turns them into plain
/// gRPC, so that the API can tell the protocols apart (streams are counted per protocol).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MarkGrpcWebLayer;

/// The mark: a request extension.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GrpcWeb;

impl<S> tower::Layer<S> for MarkGrpcWebLayer {
    type Service = MarkGrpcWeb<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MarkGrpcWeb(inner)
    }
}

/// See [`MarkGrpcWebLayer`].
#[derive(Debug, Clone)]
pub(crate) struct MarkGrpcWeb<S>(S);

impl<S, B> tower::Service<http::Request<B>> for MarkGrpcWeb<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let web = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/grpc-web"));
        if web {
            request.extensions_mut().insert(GrpcWeb);
        }
        self.0.call(request)
    }
}
