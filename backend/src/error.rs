//! The API's error type and its one mapping to `tonic::Status`.
//!
//! Expected outcomes carry a message written for the client. Unexpected ones are logged
//! with their whole cause chain and reach the client only as a generic message.

use std::{sync::atomic::Ordering, time::Duration};

use tonic::{Code, Status, metadata::MetadataValue};

use crate::{
    domain::InvalidField,
    metrics::DEPENDENCY_ERRORS,
    seams::{BusError, StoreError},
};

/// Everything an RPC can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field failed validation.
    #[error(transparent)]
    InvalidArgument(#[from] InvalidField),
    /// No, bad or expired credentials.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// The thing to create exists.
    #[error("{0}")]
    AlreadyExists(&'static str),
    /// The thing asked for does not exist (or the caller may not know it exists).
    #[error("{0}")]
    NotFound(&'static str),
    /// The caller is known but not allowed.
    #[error("{0}")]
    PermissionDenied(&'static str),
    /// The call is valid but not in the stream's current state.
    #[error("{0}")]
    FailedPrecondition(&'static str),
    /// A limit was reached. With `retry_after`, the same call may succeed after it;
    /// without, only after the caller changed something (closed a stream, left a room).
    #[error("{what}{}", retry_hint(*.retry_after))]
    ResourceExhausted {
        /// What was exhausted, for the client.
        what: &'static str,
        /// When retrying makes sense; sent as `retry-after` metadata (whole seconds).
        retry_after: Option<Duration>,
    },
    /// A dependency is down; retrying later may work and nothing was stored.
    #[error("service temporarily unavailable, retry later")]
    Unavailable(#[source] anyhow::Error),
    /// A bug or corruption.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UsernameTaken => ApiError::AlreadyExists("username is already taken"),
            StoreError::RoomNotFound => ApiError::NotFound("room not found"),
            StoreError::NotMember => {
                ApiError::PermissionDenied("you are not a member of this room")
            }
            StoreError::Unavailable(cause) => {
                DEPENDENCY_ERRORS.store.fetch_add(1, Ordering::Relaxed);
                ApiError::Unavailable(cause)
            }
            StoreError::Internal(cause) => {
                DEPENDENCY_ERRORS.store.fetch_add(1, Ordering::Relaxed);
                ApiError::Internal(cause)
            }
        }
    }
}

impl From<BusError> for ApiError {
    fn from(e: BusError) -> Self {
        DEPENDENCY_ERRORS.bus.fetch_add(1, Ordering::Relaxed);
        ApiError::Unavailable(e.0)
    }
}

impl ApiError {
    /// The gRPC code of this error.
    pub fn code(&self) -> Code {
        match self {
            ApiError::InvalidArgument(_) => Code::InvalidArgument,
            ApiError::Unauthenticated(_) => Code::Unauthenticated,
            ApiError::AlreadyExists(_) => Code::AlreadyExists,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::PermissionDenied(_) => Code::PermissionDenied,
            ApiError::FailedPrecondition(_) => Code::FailedPrecondition,
            ApiError::ResourceExhausted { .. } => Code::ResourceExhausted,
            ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::Internal(_) => Code::Internal,
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        match &e {
            ApiError::Unavailable(cause) | ApiError::Internal(cause) => {
                tracing::error!(error = ?cause, "request failed: {e}");
            }
            _ => tracing::debug!("request rejected: {e}"),
        }
        let mut status = Status::new(e.code(), e.to_string());
        if let ApiError::ResourceExhausted {
            retry_after: Some(retry_after),
            ..
        } = &e
        {
            let seconds = retry_after.as_secs().max(1);
            status
                .metadata_mut()
                .insert("retry-after", MetadataValue::from(seconds));
        }
        status
    }
}

/// The tail of a RESOURCE_EXHAUSTED message: when to retry, if waiting helps.
fn retry_hint(retry_after: Option<Duration>) -> String {
    retry_after.map_or_else(String::new, |after| {
        format!(": retry in {} s", after.as_secs().max(1))
    })
}

/// Result of API logic.
pub(crate) type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_and_bus_failures_are_counted_as_they_become_errors() {
        let counted = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        let (store, bus) = (
            counted(&DEPENDENCY_ERRORS.store),
            counted(&DEPENDENCY_ERRORS.bus),
        );
        let e = ApiError::from(StoreError::Unavailable(anyhow::anyhow!(
            "connection refused"
        )));
        assert_eq!(e.code(), Code::Unavailable);
        let e = ApiError::from(BusError(anyhow::anyhow!("broken pipe")));
        assert_eq!(e.code(), Code::Unavailable);
        let e = ApiError::from(StoreError::RoomNotFound);
        assert_eq!(e.code(), Code::NotFound);
        // Other tests may count too (the counters are process-wide), never fewer.
        assert!(counted(&DEPENDENCY_ERRORS.store) > store);
        assert!(counted(&DEPENDENCY_ERRORS.bus) > bus);
    }

    #[test]
    fn exhausted_limits_say_when_to_retry() {
        let status = Status::from(ApiError::ResourceExhausted {
            what: "too many sign-ins are being checked right now",
            retry_after: Some(Duration::from_millis(1500)),
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "too many sign-ins are being checked right now: retry in 1 s"
        );
        assert_eq!(status.metadata().get("retry-after").unwrap(), "1");

        let quota = Status::from(ApiError::ResourceExhausted {
            what: "too many rooms",
            retry_after: None,
        });
        assert_eq!(quota.message(), "too many rooms");
        assert!(quota.metadata().get("retry-after").is_none());
    }
}
