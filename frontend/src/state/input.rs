//! What the user types and what the client makes up: field errors, the length counter, and
//! idempotency keys.

/// Longest message the server accepts, in characters.
pub const MESSAGE_LIMIT: usize = 4000;

/// Splits a server error like `username: must be ...` into (field, reason).
pub fn field_error(message: &str) -> Option<(&str, &str)> {
    let (field, reason) = message.split_once(": ")?;
    field
        .chars()
        .all(|c| c.is_ascii_lowercase() || c == '_')
        .then_some((field, reason))
}

/// Whether a message of `chars` characters should show the length counter.
pub fn counter_visible(chars: usize) -> bool {
    chars >= MESSAGE_LIMIT - 500
}

/// A random (version 4) UUID from 16 random bytes. Made here rather than with
/// `crypto.randomUUID()`, which browsers offer only on HTTPS and localhost: a page opened at
/// `http://192.168.1.20:8080` must be able to send too.
pub fn uuid_v4(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_errors_name_their_field() {
        assert_eq!(
            field_error("username: must be 3-32 characters"),
            Some(("username", "must be 3-32 characters"))
        );
        assert_eq!(field_error("unknown username or wrong password"), None);
        assert_eq!(field_error("JS API error: TypeError"), None);
    }

    #[test]
    fn the_counter_shows_near_the_limit() {
        assert!(!counter_visible(10) && counter_visible(3600));
    }

    #[test]
    fn client_ids_are_version_4_uuids() {
        let id = uuid_v4([0xff; 16]);
        assert_eq!(id, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert_eq!(uuid_v4([0; 16]), "00000000-0000-4000-8000-000000000000");
    }
}
