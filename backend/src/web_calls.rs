//! gRPC-Web calls over HTTP/1.1 are read whole before they are answered.
//!
//! An HTTP/1.1 server that answers before it has read the request's body cannot keep the
//! connection: hyper closes it while the client is still sending, and the reset that follows
//! can destroy the answer on its way, so a call refused early (no token, say) fails with a
//! broken pipe instead of its status. gRPC-Web has only unary and server-streaming calls, so
//! a request body is one message, bounded by `--max-request-bytes`: reading it first costs
//! little. Beyond the bound the rest (up to a mebibyte more) is read and dropped, and the
//! call is handed what was kept: its length prefix, which tonic refuses with OUT_OF_RANGE. HTTP/2 needs none of this
//! (a stream is reset on its own, the connection lives on).

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, Version, header},
    middleware::Next,
    response::Response,
};
use bytes::BytesMut;
use futures::StreamExt;

/// Bytes of an oversized body read and dropped beyond the bound, so that its call's status
/// still arrives.
const DISCARD_AT_MOST: usize = 1024 * 1024;

/// Bytes a gRPC-Web body may need for a message of `max_message` bytes: its 5-byte frame
/// header, base64 in the text variant (4 bytes for 3) and some slack for padding.
pub(crate) fn body_bound(max_message: usize) -> usize {
    (max_message + 5).div_ceil(3) * 4 + 64
}

/// Middleware: reads an HTTP/1.x gRPC-Web request's body (up to `bound` bytes kept) before
/// the call sees it.
pub(crate) async fn read_whole(
    State(bound): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    if request.version() >= Version::HTTP_2 || !is_grpc_web(request.headers()) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let mut kept = BytesMut::new();
    let mut read = 0;
    let mut chunks = body.into_data_stream();
    // Past the bound plus a mebibyte the rest is left unread: the call is answered and
    // hyper closes the connection, rather than reading a flood to its end.
    while read < bound + DISCARD_AT_MOST {
        // A client that breaks off: the call gets what came, and fails on it.
        let Some(Ok(chunk)) = chunks.next().await else {
            break;
        };
        read += chunk.len();
        let room = bound.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    next.run(Request::from_parts(parts, Body::from(kept.freeze())))
        .await
}

fn is_grpc_web(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc-web"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_fits_a_largest_message_in_base64() {
        let max: usize = 64 * 1024;
        let framed = max + 5;
        let base64 = framed.div_ceil(3) * 4;
        assert!(body_bound(max) >= base64);
        assert!(body_bound(max) < 2 * max);
    }
}
