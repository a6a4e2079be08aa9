//! The gRPC services: parse requests into domain values, call [`crate::service::Natter`],
//! answer with the generated types. No logic lives here.

pub(crate) mod answer_body;
pub(crate) mod auth;
pub(crate) mod chat;
pub(crate) mod in_flight;

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

/// Put into a call's extensions when it came over gRPC-Web (see
/// [`crate::telemetry::CallSpanLayer`]): tonic-web makes such calls look like gRPC ones.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GrpcWeb;
