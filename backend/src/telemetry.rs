//! Logging setup: `RUST_LOG` filters, default `info` (plus `natter_server=debug` if asked);
//! human-readable lines, or one JSON object per line for log collectors.

use std::task::{Context, Poll};

use tracing::{Instrument, instrument::Instrumented};
use tracing_subscriber::{EnvFilter, fmt};

use crate::api::GrpcWeb;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per line, with the span list (request id, user, room) of each event.
    Json,
}

/// Installs a global subscriber writing to stderr; later calls are no-ops.
pub fn init(default_filter: &str) {
    init_as(default_filter, LogFormat::Text);
}

/// [`init`] in the given format.
pub fn init_as(default_filter: &str, format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            builder.with_ansi(ansi).try_init()
        }
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
}

/// Records what each call is before routing, and before tonic-web makes gRPC-Web calls look
/// like gRPC ones: a span with its request id (the client's `x-request-id` when it is a
/// short token, else a new one) and path, so each log line of the call carries it with the
/// RPC's own span (user, room) inside; and a [`GrpcWeb`] mark for gRPC-Web calls (streams
/// are counted per protocol). Only the call is instrumented, not the response body:
/// entering a span per frame would cost every delivery of a stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallSpanLayer;

impl<S> tower::Layer<S> for CallSpanLayer {
    type Service = CallSpan<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallSpan(inner)
    }
}

/// See [`CallSpanLayer`].
#[derive(Debug, Clone)]
pub(crate) struct CallSpan<S>(S);

impl<S, B> tower::Service<http::Request<B>> for CallSpan<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let span = call_span(&request);
        let web = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/grpc-web"));
        if web {
            request.extensions_mut().insert(GrpcWeb);
        }
        self.0.call(request).instrument(span)
    }
}

fn call_span<B>(request: &http::Request<B>) -> tracing::Span {
    let given = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            (1..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    let id = match given {
        Some(id) => id.to_owned(),
        None => uuid::Uuid::now_v7().simple().to_string(),
    };
    tracing::info_span!("call", request_id = %id, path = %request.uri().path())
}
