//! Passwords: argon2id hashing within bounds. One instance per server (no global state):
//! it bounds concurrent hashing and holds the hash that logins of unknown users verify
//! against.

use argon2::{
    Argon2,
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng},
};
use tokio::sync::Semaphore;

use crate::error::{ApiError, ApiResult};

/// argon2id hashing and verification for one server.
#[derive(Debug)]
pub(crate) struct Passwords {
    /// Bounds concurrent argon2 work (about 19 MiB and tens of milliseconds each) to the
    /// number of cores, so a flood of sign-ins queues instead of exhausting memory and the
    /// blocking thread pool that the embedded store also uses.
    permits: Semaphore,
    /// What logins of unknown users verify against, so that an unknown username costs as
    /// much time as a wrong password and does not reveal which accounts exist.
    dummy: String,
}

impl Passwords {
    /// Computes the dummy hash at start-up: a failure stops the server instead of making
    /// unknown users distinguishable later.
    pub(crate) async fn new() -> anyhow::Result<Self> {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let mut passwords = Self {
            permits: Semaphore::new(cores),
            dummy: String::new(),
        };
        passwords.dummy = passwords
            .hash("natter-dummy-password".into())
            .await
            .map_err(|e| anyhow::anyhow!("computing the dummy password hash: {e:?}"))?;
        Ok(passwords)
    }

    /// Hashes a password with argon2id on a blocking thread.
    pub(crate) async fn hash(&self, password: String) -> ApiResult<String> {
        self.with_permit(move || {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
        })
        .await
    }

    /// Checks a password against a stored hash on a blocking thread.
    pub(crate) async fn verify(&self, password: String, hash: String) -> ApiResult<bool> {
        self.with_permit(move || {
            let parsed =
                PasswordHash::new(&hash).map_err(|e| anyhow::anyhow!("stored hash: {e}"))?;
            Ok(Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok())
        })
        .await
    }

    /// The hash to verify against when the user does not exist.
    pub(crate) fn dummy_hash(&self) -> &str {
        &self.dummy
    }

    async fn with_permit<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> ApiResult<T> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| ApiError::Internal(e.into()))?
            .map_err(ApiError::Internal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_hash_and_verify() {
        let passwords = Passwords::new().await.unwrap();
        let hash = passwords.hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            passwords
                .verify("correct horse".into(), hash.clone())
                .await
                .unwrap()
        );
        assert!(!passwords.verify("wrong horse".into(), hash).await.unwrap());
        assert!(
            !passwords
                .verify("correct horse".into(), passwords.dummy_hash().to_owned())
                .await
                .unwrap()
        );
    }
}
