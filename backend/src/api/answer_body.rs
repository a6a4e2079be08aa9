//! What a handler leaves in its answer's extensions for the answer's body: an event
//! stream's own body, and a place held until the answer is sent (`in_flight`).
//!
//! Event streams answer with a body of their own, not through tonic's encoder.
//!
//! tonic's generated service turns a streaming handler's `Stream` into the response body
//! with its encoder, whose buffer lives as long as the call and keeps the size of the
//! largest batch it ever held (see `stream::body` for why that matters). So `Subscribe` and
//! `Chat` hand tonic an empty stream and put their real body, which frames the events
//! itself, into the answer's extensions; [`AnswerBodyLayer`], around the generated service,
//! makes it the response body. tonic still decodes the request, checks the call and builds
//! the answer's headers; errors before the stream opens are its ordinary answers.

use std::{
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use super::in_flight::{HeldUntilSent, holding};

/// A response body waiting in an answer's extensions (which must be `Clone` and `Sync`).
#[derive(Clone)]
pub(crate) struct EventBody(Arc<Mutex<Option<tonic::body::Body>>>);

impl EventBody {
    pub(crate) fn new(body: tonic::body::Body) -> Self {
        Self(Arc::new(Mutex::new(Some(body))))
    }

    fn take(&self) -> Option<tonic::body::Body> {
        self.0.lock().expect("event body lock poisoned").take()
    }
}

/// Makes an answer's [`EventBody`] its body, and has the body hold a [`HeldUntilSent`]
/// place.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AnswerBodyLayer;

impl<S> tower::Layer<S> for AnswerBodyLayer {
    type Service = ServeAnswerBody<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServeAnswerBody(inner)
    }
}

/// See [`AnswerBodyLayer`].
#[derive(Debug, Clone)]
pub(crate) struct ServeAnswerBody<S>(S);

impl<S, R> tower::Service<R> for ServeAnswerBody<S>
where
    S: tower::Service<R, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let answer = self.0.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            let extensions = response.extensions_mut();
            let events = extensions
                .remove::<EventBody>()
                .and_then(|body| body.take());
            let held = extensions.remove::<HeldUntilSent>();
            if let Some(body) = events {
                response = response.map(|_empty| body);
            }
            if let Some(HeldUntilSent(place)) = held {
                response = response.map(|body| holding(body, place));
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::{Layer, ServiceExt};

    #[tokio::test]
    async fn an_answer_with_an_event_body_is_answered_with_it_and_others_as_they_are() {
        let service = AnswerBodyLayer.layer(tower::service_fn(|with_events: bool| async move {
            let mut answer = http::Response::new(tonic::body::Body::new(
                http_body_util::Full::new(bytes::Bytes::from_static(b"tonic's")),
            ));
            if with_events {
                answer
                    .extensions_mut()
                    .insert(EventBody::new(tonic::body::Body::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(b"events")),
                    )));
            }
            Ok::<_, std::convert::Infallible>(answer)
        }));
        for (with_events, expected) in [(true, "events"), (false, "tonic's")] {
            let answer = service.clone().oneshot(with_events).await.unwrap();
            assert!(answer.extensions().get::<EventBody>().is_none());
            let body = answer.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, expected.as_bytes());
        }
    }
}
