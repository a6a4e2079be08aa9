//! Access tokens (HS256) and the secret that signs them; password hashing is in `passwords`.

use std::{path::Path, time::Duration};

use anyhow::Context;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::{
    error::{ApiError, ApiResult},
    ids::UserId,
};

const ISSUER: &str = "natter";
const AUDIENCE: &str = "natter-api";
/// Shortest secret accepted: HS256 is only as strong as its key.
pub(crate) const MIN_SECRET_BYTES: usize = 32;

/// What a user may do beyond their own rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    /// A regular account.
    User,
    /// May delete any room.
    Admin,
}

impl Role {
    /// The name used in tokens and responses.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Claims {
    /// User id.
    pub sub: String,
    /// User or admin.
    pub role: Role,
    /// Issued at, unix seconds.
    pub iat: u64,
    /// Expiry, unix seconds.
    pub exp: u64,
    /// Session id: every token of one sign-in (its refreshes included) carries the same,
    /// so one session can be signed out. Empty in tokens from before sessions existed.
    #[serde(default)]
    pub sid: String,
    /// When the session signed in, unix milliseconds (0 in tokens from before sessions).
    #[serde(default)]
    pub sat: i64,
    iss: String,
    aud: String,
}

/// One sign-in, which its refreshed tokens continue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Session {
    /// Random id.
    pub id: String,
    /// When it signed in, unix milliseconds.
    pub started_ms: i64,
}

impl Session {
    /// A new session, starting now.
    pub(crate) fn start() -> Self {
        use rand::Rng;
        let bytes: [u8; 16] = rand::rng().random();
        Self {
            id: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            started_ms: now_ms(),
        }
    }
}

/// The signed-in caller of an RPC, put into request extensions by the auth interceptor.
/// Who and which session only: what a caller may do (admin rights included), and whether
/// the session still holds, is read from the current records, not from the token.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// User id.
    pub user_id: UserId,
    /// The session the token belongs to.
    pub session: Session,
    /// When the token expires, unix seconds (an open stream ends then).
    pub expires_at: u64,
}

/// A freshly issued token.
#[derive(Debug, Clone)]
pub(crate) struct IssuedToken {
    /// The JWT.
    pub token: String,
    /// Expiry, unix milliseconds.
    pub expires_at_ms: i64,
    /// Lifetime from now, milliseconds.
    pub expires_in_ms: i64,
}

/// Signing and verification keys, loaded once.
#[derive(Clone)]
pub(crate) struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// Keys from a secret of at least [`MIN_SECRET_BYTES`] bytes.
    pub(crate) fn new(secret: &[u8], ttl: Duration) -> anyhow::Result<Self> {
        anyhow::ensure!(
            secret.len() >= MIN_SECRET_BYTES,
            "the JWT secret must be at least {MIN_SECRET_BYTES} bytes (got {})",
            secret.len()
        );
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        })
    }

    /// Signs a token of `session` for a user.
    pub(crate) fn issue(
        &self,
        user_id: &UserId,
        role: Role,
        session: &Session,
    ) -> ApiResult<IssuedToken> {
        let now = unix_now().as_secs();
        let lifetime = self.ttl.as_secs().max(1);
        let claims = Claims {
            sub: user_id.to_string(),
            role,
            iat: now,
            exp: now + lifetime,
            sid: session.id.clone(),
            sat: session.started_ms,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .context("signing a token")
            .map_err(ApiError::Internal)?;
        Ok(IssuedToken {
            token,
            expires_at_ms: i64::try_from(claims.exp * 1000).unwrap_or(i64::MAX),
            expires_in_ms: i64::try_from(lifetime * 1000).unwrap_or(i64::MAX),
        })
    }

    /// Checks signature, issuer, audience and expiry.
    pub(crate) fn verify(&self, token: &str) -> ApiResult<Caller> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| {
                tracing::debug!(error = %e, "token rejected");
                ApiError::Unauthenticated("invalid or expired access token")
            })?;
        let claims = data.claims;
        // A token from before sessions: its session started when it was issued.
        let started_ms = if claims.sat > 0 {
            claims.sat
        } else {
            i64::try_from(claims.iat.saturating_mul(1000)).unwrap_or(i64::MAX)
        };
        Ok(Caller {
            user_id: UserId::from_trusted(claims.sub),
            session: Session {
                id: claims.sid,
                started_ms,
            },
            expires_at: claims.exp,
        })
    }

    /// Reads the caller from `authorization: Bearer <token>` metadata.
    pub(crate) fn verify_metadata(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> ApiResult<Caller> {
        let header = metadata
            .get("authorization")
            .ok_or(ApiError::Unauthenticated(
                "missing authorization metadata (Bearer token)",
            ))?
            .to_str()
            .map_err(|_| ApiError::Unauthenticated("malformed authorization metadata"))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(ApiError::Unauthenticated(
                "authorization must be 'Bearer <token>'",
            ))?;
        self.verify(token.trim())
    }
}

/// The configured secret, or the one kept in `data_dir/jwt-secret` (created on first run).
pub(crate) fn load_or_create_secret(
    configured: Option<&str>,
    data_dir: &Path,
) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = configured {
        return Ok(secret.as_bytes().to_vec());
    }
    let path = data_dir.join("jwt-secret");
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_symlink() => anyhow::bail!(
            "{} is a symbolic link: refusing to read the token secret through it",
            path.display()
        ),
        Ok(_) => {
            make_private(&path)?;
            let secret = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            return Ok(secret.trim().as_bytes().to_vec());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let secret: String = {
        use rand::Rng;
        let bytes: [u8; 32] = rand::rng().random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    };
    write_private_atomically(&path, &secret)
        .with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(path = %path.display(), "generated a JWT secret");
    Ok(secret.into_bytes())
}

/// Reads `--jwt-secret-file`, without its surrounding whitespace (a trailing newline).
pub(crate) fn read_secret_file(path: &Path) -> anyhow::Result<String> {
    let secret = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token secret from {}", path.display()))?;
    Ok(secret.trim().to_owned())
}

/// Sets a secret file readable by its owner only (on every start, not only at creation).
fn make_private(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {} private", path.display()))?;
    }
    Ok(())
}

/// Writes a file readable by its owner only, via a synced temporary file renamed into place:
/// a crash leaves either no file or the whole one, never an empty secret. The temporary
/// file is created new (`O_EXCL`), so a link planted in its place is never followed.
fn write_private_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let temporary = path.with_extension("tmp");
    match std::fs::remove_file(&temporary) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temporary)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

/// Time since the unix epoch.
pub(crate) fn unix_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> i64 {
    i64::try_from(unix_now().as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: &[u8]) -> TokenKeys {
        TokenKeys::new(secret, Duration::from_secs(60)).unwrap()
    }

    #[test]
    fn tokens_round_trip_and_reject_forgeries() {
        let keys_a = keys(&[1; 32]);
        let session = Session::start();
        let issued = keys_a
            .issue(&UserId::from_trusted("u1"), Role::Admin, &session)
            .unwrap();
        let caller = keys_a.verify(&issued.token).unwrap();
        assert_eq!(caller.user_id.as_str(), "u1");
        assert_eq!(caller.session, session);
        assert!(keys(&[2; 32]).verify(&issued.token).is_err());
        assert!(keys_a.verify("not.a.token").is_err());
    }

    #[test]
    fn expired_tokens_are_rejected() {
        let keys = keys(&[1; 32]);
        let now = unix_now().as_secs();
        let claims = Claims {
            sub: "u1".into(),
            role: Role::User,
            iat: now - 3600,
            exp: now - 600,
            sid: String::new(),
            sat: 0,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
        };
        let token = jsonwebtoken::encode(&Header::default(), &claims, &keys.encoding).unwrap();
        assert!(keys.verify(&token).is_err());
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(TokenKeys::new(b"short", Duration::from_secs(1)).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn the_kept_secret_is_private_on_every_start_and_never_read_through_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_secret(None, dir.path()).unwrap();
        let path = dir.path().join("jwt-secret");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        // Loosened by hand: private again, and the same secret.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(load_or_create_secret(None, dir.path()).unwrap(), first);
        assert_eq!(mode(&path), 0o600);
        // A link in its place is refused, not followed.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::rename(&path, &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        let refused = load_or_create_secret(None, dir.path()).unwrap_err();
        assert!(
            format!("{refused:#}").contains("symbolic link"),
            "{refused:#}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_planted_temporary_file_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep me").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("jwt-secret.tmp")).unwrap();
        load_or_create_secret(None, dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    }

    #[test]
    fn a_secret_file_is_read_without_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "a-secret-of-at-least-32-bytes-long!!\n").unwrap();
        assert_eq!(
            read_secret_file(&file).unwrap(),
            "a-secret-of-at-least-32-bytes-long!!"
        );
        assert!(read_secret_file(&dir.path().join("missing")).is_err());
    }
}
