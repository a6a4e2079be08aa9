//! Validated domain values. Every string that crosses the API boundary is parsed into one of
//! these before any logic sees it, so the rest of the server can rely on their invariants.

use std::fmt;

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use crate::ids::RoomId;

pub(crate) use crate::invalid::InvalidField;

/// A username: 3-32 characters of `[a-z0-9_.-]`, stored lower-case so uniqueness is
/// case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Username(String);

impl Username {
    /// Lower-cases and checks a username.
    pub(crate) fn parse(raw: &str) -> Result<Self, InvalidField> {
        let name = raw.trim().to_lowercase();
        let len = name.chars().count();
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c);
        if !(3..=32).contains(&len) || !name.chars().all(allowed) {
            return Err(InvalidField::new(
                "username",
                "must be 3-32 characters of a-z, 0-9, '_', '.' or '-'",
            ));
        }
        Ok(Self(name))
    }

    /// The normalised (lower-case) form.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Longest password accepted anywhere, in bytes: argon2 reads all of it, so a megabyte
/// password would cost the server a megabyte of hashing per guess.
pub(crate) const MAX_PASSWORD_BYTES: usize = 1024;

/// An account password: at least 8 characters, at most [`MAX_PASSWORD_BYTES`].
#[derive(Clone)]
pub(crate) struct Password(String);

impl Password {
    /// Checks an account password.
    pub(crate) fn parse(raw: &str) -> Result<Self, InvalidField> {
        Self::parse_field("password", raw, 8)
    }

    /// Checks an optional room password; `None` when empty.
    pub(crate) fn parse_room(raw: &str) -> Result<Option<Self>, InvalidField> {
        if raw.is_empty() {
            return Ok(None);
        }
        Self::parse_field("password", raw, 4).map(Some)
    }

    fn parse_field(field: &'static str, raw: &str, min: usize) -> Result<Self, InvalidField> {
        let len = raw.chars().count();
        if len < min {
            return Err(InvalidField::new(
                field,
                format!("must be at least {min} characters"),
            ));
        }
        Self::check_size(field, raw)?;
        Ok(Self(raw.to_owned()))
    }

    /// Checks only the size of a password to compare with a stored hash (a login, a room
    /// join): it is refused before any hashing when it cannot be a valid one.
    pub(crate) fn check_size(field: &'static str, raw: &str) -> Result<(), InvalidField> {
        if raw.len() > MAX_PASSWORD_BYTES {
            return Err(InvalidField::new(
                field,
                format!("must be at most {MAX_PASSWORD_BYTES} bytes"),
            ));
        }
        Ok(())
    }

    /// The secret itself; only the hasher should call this.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// Whether a character may appear in a name someone else reads: not a control character,
/// not a format character (bidi overrides and isolates, zero-width characters, U+FEFF,
/// invisible tags), not a line or paragraph separator. Those render as nothing or reorder
/// what surrounds them, so a name using them could pass for another one.
fn shows_as_itself(c: char) -> bool {
    !matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    )
}

/// Checks length and characters of a single-line name.
fn parse_line(field: &'static str, raw: &str, max: usize) -> Result<String, InvalidField> {
    let value = raw.trim();
    let len = value.chars().count();
    if len == 0 || len > max {
        return Err(InvalidField::new(
            field,
            format!("must be 1-{max} characters"),
        ));
    }
    if !value.chars().all(shows_as_itself) {
        return Err(InvalidField::new(
            field,
            "must not contain control, invisible, direction-changing or line-separating characters",
        ));
    }
    Ok(value.to_owned())
}

/// A display name: up to 64 characters on one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DisplayName(String);

impl DisplayName {
    /// Checks a display name; an empty one falls back to the username.
    pub(crate) fn parse(raw: &str, username: &Username) -> Result<Self, InvalidField> {
        if raw.trim().is_empty() {
            return Ok(Self(username.as_str().to_owned()));
        }
        parse_line("display_name", raw, 64).map(Self)
    }

    /// The display name.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// A room name: 1-64 characters on one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoomName(String);

impl RoomName {
    /// Checks a room name.
    pub(crate) fn parse(raw: &str) -> Result<Self, InvalidField> {
        parse_line("name", raw, 64).map(Self)
    }

    /// The room name.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// Longest message, in characters after trimming.
pub(crate) const MAX_MESSAGE_CHARS: usize = 4000;

/// Message text: 1-4000 characters after trimming, no control characters but newline and tab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MessageText(String);

impl MessageText {
    /// Trims and checks a message.
    pub(crate) fn parse(raw: &str) -> Result<Self, InvalidField> {
        let text = raw.trim();
        let len = text.chars().count();
        if len == 0 {
            return Err(InvalidField::new("text", "must not be empty"));
        }
        if len > MAX_MESSAGE_CHARS {
            return Err(InvalidField::new(
                "text",
                format!("must be at most {MAX_MESSAGE_CHARS} characters (got {len})"),
            ));
        }
        if text
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Err(InvalidField::new(
                "text",
                "must not contain control characters other than newline and tab",
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// The message text.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// A sender-chosen idempotency key: up to 64 printable ASCII characters; may be empty
/// (no idempotency).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ClientId(String);

impl ClientId {
    /// Checks an idempotency key.
    pub(crate) fn parse(raw: &str) -> Result<Self, InvalidField> {
        if raw.len() > 64 || !raw.chars().all(|c| c.is_ascii_graphic()) {
            return Err(InvalidField::new(
                "client_id",
                "must be at most 64 printable ASCII characters without spaces",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The key; empty when the sender gave none.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// Alphabet of join codes: no 0/O, 1/I/L, so a code read aloud or copied by hand survives.
pub(crate) const CODE_ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
/// Characters in a new join code: 31^12 ≈ 7.9e17 codes.
///
/// Why 12: joins are rate limited to 10 a minute per account and instance. An attacker with
/// 1,000 accounts on each of 10 instances makes at most 10 x 1,000 x 14,400 ≈ 1.4e8 guesses
/// a day, 5.3e10 a year. Against a million rooms, each guess hits with probability
/// 1e6 / 7.9e17 ≈ 1.3e-12, so a year of that finds about 0.07 rooms. With the earlier 8
/// characters (8.5e11 codes) the same attacker would find about 170 a day.
pub(crate) const CODE_LEN: usize = 12;

/// Length of the join codes made before codes grew to [`CODE_LEN`]; they still work (their
/// owners can rotate them).
const LEGACY_CODE_LEN: usize = 8;

/// A room join code, normalised to upper case without separators.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RoomCode(String);

impl RoomCode {
    /// Accepts any case and ignores spaces and dashes, so `abcd-efgh-jkmn` finds
    /// `ABCDEFGHJKMN`.
    pub(crate) fn parse(raw: &str) -> Result<Self, InvalidField> {
        let code: String = raw
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let length_ok = code.len() == CODE_LEN || code.len() == LEGACY_CODE_LEN;
        if !length_ok || !code.bytes().all(|b| CODE_ALPHABET.contains(&b)) {
            return Err(InvalidField::new(
                "code",
                format!("must be a {CODE_LEN}-character join code"),
            ));
        }
        Ok(Self(code))
    }

    /// A fresh random code.
    pub(crate) fn generate() -> Self {
        use rand::Rng;
        let mut rng = rand::rng();
        let code = (0..CODE_LEN)
            .map(|_| char::from(CODE_ALPHABET[rng.random_range(0..CODE_ALPHABET.len())]))
            .collect();
        Self(code)
    }

    /// The normalised code.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// A new unique message id: UUIDv7, so ids sort by creation time.
pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// A valid registration.
#[derive(Debug)]
pub(crate) struct Registration {
    /// The account's name.
    pub username: Username,
    /// Its password.
    pub password: Password,
    /// The name shown to others.
    pub display_name: DisplayName,
}

impl Registration {
    /// Validates the three fields (the display name defaults to the username).
    pub(crate) fn parse(
        username: &str,
        password: &str,
        display_name: &str,
    ) -> Result<Self, InvalidField> {
        let username = Username::parse(username)?;
        let password = Password::parse(password)?;
        let display_name = DisplayName::parse(display_name, &username)?;
        Ok(Self {
            username,
            password,
            display_name,
        })
    }
}

/// A valid message to send.
#[derive(Debug)]
pub(crate) struct SendMessage {
    /// The room (a well-formed id; whether it exists is the service's to check).
    pub room_id: RoomId,
    /// The text.
    pub text: MessageText,
    /// The sender's idempotency key.
    pub client_id: ClientId,
}

/// A valid typing notification.
#[derive(Debug)]
pub(crate) struct SetTyping {
    /// The room.
    pub room_id: RoomId,
    /// Started (true) or stopped typing.
    pub typing: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_lowercased_and_checked() {
        assert_eq!(Username::parse("  Alice_1 ").unwrap().as_str(), "alice_1");
        for bad in ["ab", "a b c", "ålice", &"x".repeat(33), "semi;colon"] {
            let err = Username::parse(bad).unwrap_err();
            assert_eq!(err.field, "username", "{bad}");
        }
    }

    #[test]
    fn message_text_is_trimmed_and_limited() {
        assert_eq!(
            MessageText::parse("  hi\n\tthere ").unwrap().as_str(),
            "hi\n\tthere"
        );
        assert!(MessageText::parse("   ").is_err());
        assert!(MessageText::parse("bell\u{7}").is_err());
        assert!(MessageText::parse(&"é".repeat(MAX_MESSAGE_CHARS)).is_ok());
        assert!(MessageText::parse(&"é".repeat(MAX_MESSAGE_CHARS + 1)).is_err());
    }

    #[test]
    fn codes_normalise_and_reject_ambiguous_characters() {
        let code = RoomCode::generate();
        assert_eq!(
            RoomCode::parse(&code.as_str().to_lowercase()).unwrap(),
            code
        );
        assert_eq!(code.as_str().len(), CODE_LEN);
        assert_eq!(
            RoomCode::parse("abcd-efgh-jkmn").unwrap().as_str(),
            "ABCDEFGHJKMN"
        );
        assert_eq!(RoomCode::parse("abcd-efgh").unwrap().as_str(), "ABCDEFGH");
        assert!(RoomCode::parse("ABCDEFGHJK").is_err());
        assert!(RoomCode::parse("ABCD0FGH").is_err());
        assert!(RoomCode::parse("ABC").is_err());
    }

    #[test]
    fn names_that_could_impersonate_are_refused() {
        let alice = Username::parse("alice").unwrap();
        for spoof in [
            "admin\u{202E}nimda",   // right-to-left override
            "bob\u{2066}x\u{2069}", // isolates
            "al\u{200B}ice",        // zero-width space
            "\u{FEFF}alice",        // byte order mark
            "ali\u{00AD}ce",        // soft hyphen
            "al\u{2028}ice",        // line separator
            "al\u{2029}ice",        // paragraph separator
            "alice\u{E0041}",       // invisible tag character
            "al\u{7}ice",           // bell
        ] {
            assert!(DisplayName::parse(spoof, &alice).is_err(), "{spoof:?}");
            assert!(RoomName::parse(spoof).is_err(), "{spoof:?}");
        }
        for fine in ["Zoë", "Łukasz", "محمد", "日本語の部屋", "Ünïcödé 🎉"] {
            assert_eq!(DisplayName::parse(fine, &alice).unwrap().as_str(), fine);
            assert_eq!(RoomName::parse(fine).unwrap().as_str(), fine);
        }
    }

    #[test]
    fn passwords_are_bounded_in_bytes() {
        let four_byte = "😀".repeat(MAX_PASSWORD_BYTES / 4);
        assert!(Password::parse(&four_byte).is_ok());
        assert!(Password::parse(&format!("{four_byte}😀")).is_err());
        assert!(Password::check_size("password", &"x".repeat(MAX_PASSWORD_BYTES)).is_ok());
        assert!(Password::check_size("password", &"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
    }

    #[test]
    fn names_and_passwords() {
        assert!(RoomName::parse("").is_err());
        assert!(RoomName::parse(&"r".repeat(65)).is_err());
        assert_eq!(RoomName::parse(" general ").unwrap().as_str(), "general");
        assert!(Password::parse("short").is_err());
        assert!(Password::parse_room("").unwrap().is_none());
        let alice = Username::parse("alice").unwrap();
        assert_eq!(DisplayName::parse("", &alice).unwrap().as_str(), "alice");
        assert_eq!(
            DisplayName::parse(&"d".repeat(65), &alice)
                .unwrap_err()
                .field,
            "display_name"
        );
    }
}
