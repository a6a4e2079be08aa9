//! Typed ids, so that a room id cannot be passed where a user id is expected
//! (`add_member(room, user)` does not compile with its arguments swapped). Both are opaque
//! strings on the wire and in storage (`serde(transparent)`): data written before they
//! existed reads back unchanged.

use std::fmt;

use crate::invalid::InvalidField;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// A new unique id: UUIDv7, so ids sort by creation time.
            pub fn generate() -> Self {
                Self(uuid::Uuid::now_v7().simple().to_string())
            }

            /// An id from a client: non-empty, at most 64 ASCII letters, digits or dashes.
            /// Whether it names anything is for the store to say.
            pub(crate) fn parse(field: &'static str, raw: &str) -> Result<Self, InvalidField> {
                if raw.is_empty() {
                    return Err(InvalidField::new(field, "is required"));
                }
                if raw.len() > 64 || !raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    return Err(InvalidField::new(field, "is not a valid id"));
                }
                Ok(Self(raw.to_owned()))
            }

            /// An id read back from storage or a signed token, which only ever hold ids
            /// this server generated.
            pub fn from_trusted(raw: impl Into<String>) -> Self {
                Self(raw.into())
            }

            /// The id as text, for keys and wire messages.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as an owned string, for wire messages.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// An account's id.
    UserId
);
id_type!(
    /// A room's id (group or direct).
    RoomId
);
