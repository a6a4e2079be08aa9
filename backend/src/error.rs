//! The API's error type and its one mapping to `tonic::Status`.
//!
//! Expected outcomes carry a message written for the client. Unexpected ones are logged
//! with their whole cause chain and reach the client only as a generic message.

use tonic::{Code, Status};

use crate::{
    domain::InvalidField,
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
            StoreError::Unavailable(cause) => ApiError::Unavailable(cause),
            StoreError::Internal(cause) => ApiError::Internal(cause),
        }
    }
}

impl From<BusError> for ApiError {
    fn from(e: BusError) -> Self {
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
        Status::new(e.code(), e.to_string())
    }
}

/// Result of API logic.
pub(crate) type ApiResult<T> = Result<T, ApiError>;
