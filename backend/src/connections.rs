//! Serving accepted connections: HTTP/1.1 and HTTP/2 told apart per connection by hyper, one
//! service for every call, and the connection-level limits.
//!
//! tonic's own server would do this too, but it fixes HTTP/1.1's header-read timeout at
//! hyper's 30 s and gives no handle on a connection once it is served. Here each connection
//! runs on a task of the instance's tracker (so draining waits for it), and can be closed
//! from outside: a stream whose client stopped reading ([`crate::stream::watch`]) cannot be
//! reached through its own response body, since hyper stops polling a body whose client's
//! flow-control window stays shut.

use std::{future::Future, sync::Arc, task::Poll, time::Duration};

use axum::{
    body::Body,
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use futures::{Stream, StreamExt};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;

use crate::{listener::ClientConnection, wake_marks::Quiet};

/// How connections are served.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Concurrent HTTP/2 streams per connection.
    pub max_streams_per_connection: u32,
    /// An HTTP/1.1 connection waiting longer than this for (the rest of) a request head is
    /// closed: a slowloris client, or an idle keep-alive connection.
    pub http1_header_timeout: Duration,
    /// Deadline of a call's answer (not of a stream's events); a shorter `grpc-timeout`
    /// from the client wins.
    pub request_timeout: Duration,
}

/// Serves every connection `incoming` yields with `app`, until `draining` is cancelled;
/// then each connection is asked to finish (HTTP/2 GOAWAY, HTTP/1.1 closes after its current
/// answer). Connections run on `tasks`, which the caller waits for.
pub(crate) async fn serve(
    incoming: impl Stream<Item = ClientConnection>,
    app: axum::Router,
    settings: Settings,
    draining: CancellationToken,
    tasks: TaskTracker,
) {
    let app = app.layer(axum::middleware::from_fn_with_state(
        settings.request_timeout,
        call_deadline,
    ));
    let app = tower::ServiceBuilder::new()
        .layer(crate::telemetry::CallSpanLayer)
        .service(app);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.http1_header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.max_streams_per_connection)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    // hyper's other HTTP/2 defaults stay, unlike tonic's server, which lifts the limit of
    // 1,024 streams a connection may get reset for its own errors: a client past that
    // (one that keeps opening streams beyond MAX_CONCURRENT_STREAMS, say, which a
    // well-behaved client queues instead) gets GOAWAY, as rapid-reset floods should.
    let builder = Arc::new(builder);
    tokio::pin!(incoming);
    loop {
        let connection = tokio::select! {
            () = draining.cancelled() => break,
            next = incoming.next() => match next {
                Some(connection) => connection,
                None => break,
            },
        };
        let info = connection.info();
        let control = connection.control();
        let closing = control.clone();
        let service =
            app.clone()
                .map_request(move |mut request: Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(info.clone());
                    request.extensions_mut().insert(control.clone());
                    request.map(Body::new)
                });
        let builder = builder.clone();
        let draining = draining.clone();
        tasks.spawn(async move {
            let served = builder
                .serve_connection(TokioIo::new(connection), TowerToHyperService::new(service));
            tokio::pin!(served);
            let closed = closing.closed();
            tokio::pin!(closed);
            let drained = draining.cancelled();
            tokio::pin!(drained);
            // The task is polled for every read and write of the connection (on HTTP/1.1,
            // for every event of its stream), the close and the drain almost never wake it,
            // and polling a token that is not cancelled locks its tree node and its waiter
            // list (the drain's are shared by every connection): they are polled only after
            // one of them woke the task (see `wake_marks`).
            let mut quiet = Quiet::new();
            let ended = std::future::poll_fn(|cx| {
                quiet.register(cx);
                // Served first: a connection accepted just before draining began gets its
                // protocol detected and its first request read before it is asked to stop.
                if let Poll::Ready(finished) = served.as_mut().poll(cx) {
                    return Poll::Ready(Ended::Finished(finished));
                }
                if let Some(mut quiet_cx) = quiet.take_due() {
                    if closed.as_mut().poll(&mut quiet_cx).is_ready() {
                        return Poll::Ready(Ended::Closed);
                    }
                    if drained.as_mut().poll(&mut quiet_cx).is_ready() {
                        return Poll::Ready(Ended::Draining);
                    }
                }
                Poll::Pending
            })
            .await;
            let finished = match ended {
                Ended::Finished(finished) => finished,
                Ended::Closed => return,
                Ended::Draining => {
                    served.as_mut().graceful_shutdown();
                    tokio::select! {
                        finished = served => finished,
                        () = closed => return,
                    }
                }
            };
            if let Err(e) = finished {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

/// How serving a connection ended: by itself, closed from outside, or asked to finish by
/// the server's drain.
enum Ended<T> {
    Finished(T),
    Closed,
    Draining,
}

/// Ends a call that has not answered within its deadline with CANCELLED, as tonic's server
/// does. Streams answer at once (their events follow in the body), so only their opening
/// counts.
async fn call_deadline(
    State(server_deadline): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    let deadline = grpc_timeout(request.headers())
        .map_or(server_deadline, |client| client.min(server_deadline));
    match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let (parts, ()) = tonic::Status::cancelled("Timeout expired")
                .into_http::<()>()
                .into_parts();
            Response::from_parts(parts, Body::empty()).into_response()
        }
    }
}

/// The client's deadline from a `grpc-timeout` header: at most 8 digits and a unit.
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout_of(value: &str) -> Option<Duration> {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-timeout", value.parse().unwrap());
        grpc_timeout(&headers)
    }

    #[test]
    fn grpc_timeouts_are_read_in_every_unit_and_nonsense_is_ignored() {
        assert_eq!(timeout_of("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(timeout_of("3M"), Some(Duration::from_secs(180)));
        assert_eq!(timeout_of("10S"), Some(Duration::from_secs(10)));
        assert_eq!(timeout_of("250m"), Some(Duration::from_millis(250)));
        assert_eq!(timeout_of("7u"), Some(Duration::from_micros(7)));
        assert_eq!(timeout_of("9n"), Some(Duration::from_nanos(9)));
        assert_eq!(timeout_of("123456789S"), None);
        assert_eq!(timeout_of("S"), None);
        assert_eq!(timeout_of("1x"), None);
        assert_eq!(timeout_of("-1S"), None);
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }
}
