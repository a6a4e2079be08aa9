//! An open stream's place: counted in the metrics and in presence from admission until
//! the session (or the client's departure) drops it.

use std::{sync::Arc, sync::atomic::Ordering, time::Duration};

use crate::{
    error::{ApiError, ApiResult},
    records::UserRecord,
    service::Natter,
};

/// An open stream, counted in the metrics and in presence. Dropped when the session ends,
/// or with the session when the client goes away (hyper drops the response body), which
/// is why closing happens here and not at the end of `run`.
pub(super) struct OpenStream {
    natter: Arc<Natter>,
    pub(super) user: UserRecord,
    /// Over gRPC-Web (counted apart in the metrics).
    pub(super) web: bool,
    /// Whether presence counts this stream: from the moment the opening session starts
    /// recording it, unless that failed (a failed open takes its count back itself).
    pub(super) counted_in_presence: bool,
}

impl OpenStream {
    /// Counts a new stream, unless the instance holds `--max-streams` already (checked and
    /// counted in one atomic step, so streams opening at once cannot pass the limit).
    pub(super) fn admit(natter: Arc<Natter>, user: UserRecord, web: bool) -> ApiResult<Self> {
        let max = i64::from(natter.config().max_streams);
        natter
            .metrics()
            .streams_open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (open < max).then_some(open + 1)
            })
            .map_err(|_| {
                natter
                    .metrics()
                    .rejections
                    .count(crate::metrics::Limit::Streams);
                ApiError::ResourceExhausted {
                    what: "this server holds the most event streams it may; try again shortly",
                    retry_after: Some(Duration::from_secs(5)),
                }
            })?;
        if web {
            natter
                .metrics()
                .web_streams_open
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(Self {
            natter,
            user,
            web,
            counted_in_presence: false,
        })
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let metrics = self.natter.metrics();
        metrics.streams_open.fetch_sub(1, Ordering::Relaxed);
        if self.web {
            metrics.web_streams_open.fetch_sub(1, Ordering::Relaxed);
        }
        // Recording presence awaits the store, so it runs on a task of its own. Without a
        // runtime (the process is ending) there is nobody left to tell.
        if !self.counted_in_presence {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let natter = self.natter.clone();
            let user = self.user.clone();
            self.natter
                .tasks()
                .spawn_on(async move { natter.stream_closed(&user).await }, &runtime);
        }
    }
}
