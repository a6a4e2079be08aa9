//! The one error of input validation, shared by the domain values and the ids.

/// A rejected input, naming the field so the client can show the error next to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidField {
    /// Name of the request field, as spelled in the proto.
    pub field: &'static str,
    /// What is wrong, phrased for a person.
    pub reason: String,
}

impl InvalidField {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}
