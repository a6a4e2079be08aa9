//! Passwords: argon2id hashing within a fixed memory budget. One instance per server (no
//! global state).
//!
//! Each argon2id hash needs 19 MiB of working memory. Allocated per call on whichever
//! blocking thread ran it, a burst of 80 concurrent sign-ins took the process from 9 MB to
//! about 800 MB, and glibc kept it. Instead, a fixed set of hashing workers each own their
//! block memory for the life of the server and hash into it, so the memory for hashing is
//! `workers x 19 MiB` whatever the load. Sign-ins wait for a worker in a bounded queue; a
//! full queue, or a wait longer than [`MAX_WAIT`], is answered `RESOURCE_EXHAUSTED` with
//! a retry hint instead of growing a backlog that would starve every later sign-in.

use std::{
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use argon2::{
    Algorithm, Argon2, Block, Params, Version,
    password_hash::{self, Output, ParamsString, PasswordHash, SaltString, rand_core::OsRng},
};
use tokio::sync::oneshot;

use crate::{
    error::{ApiError, ApiResult},
    metrics::{Limit, Rejections},
};

/// Sign-ins that may wait for a hashing worker. With two workers hashing in about 25 ms
/// each, a full queue drains in under a second.
pub(crate) const QUEUE_CAPACITY: usize = 64;

/// Longest a sign-in waits for a worker before it is told to retry.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(5);

/// What clients are told to wait before retrying when hashing is saturated.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// argon2id hashing and verification for one server.
#[derive(Debug)]
pub(crate) struct Passwords {
    jobs: mpsc::SyncSender<Job>,
    /// Where sign-ins refused for a full queue are counted.
    rejections: Arc<Rejections>,
    /// What logins of unknown users verify against, so that an unknown username costs as
    /// much time as a wrong password and does not reveal which accounts exist.
    dummy: String,
}

/// Work for a hashing worker, with where to send the answer.
#[derive(Debug)]
enum Job {
    Hash {
        password: String,
        reply: oneshot::Sender<anyhow::Result<String>>,
    },
    Verify {
        password: String,
        hash: String,
        reply: oneshot::Sender<anyhow::Result<bool>>,
    },
}

impl Passwords {
    /// Starts one hashing worker per core and computes the dummy hash: a failure stops the
    /// server instead of making unknown users distinguishable later.
    pub(crate) async fn new(rejections: Arc<Rejections>) -> anyhow::Result<Self> {
        let workers = std::thread::available_parallelism().map_or(2, usize::from);
        let (jobs, queue) = mpsc::sync_channel(QUEUE_CAPACITY);
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..workers {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("natter-argon2-{i}"))
                .spawn(move || work(&queue))?;
        }
        let mut passwords = Self {
            jobs,
            rejections,
            dummy: String::new(),
        };
        passwords.dummy = passwords
            .hash("natter-dummy-password".into())
            .await
            .map_err(|e| anyhow::anyhow!("computing the dummy password hash: {e:?}"))?;
        Ok(passwords)
    }

    /// Hashes a password with argon2id (default parameters, random salt).
    pub(crate) async fn hash(&self, password: String) -> ApiResult<String> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Hash { password, reply }, answer).await
    }

    /// Checks a password against a stored hash.
    pub(crate) async fn verify(&self, password: String, hash: String) -> ApiResult<bool> {
        let (reply, answer) = oneshot::channel();
        self.submit(
            Job::Verify {
                password,
                hash,
                reply,
            },
            answer,
        )
        .await
    }

    /// The hash to verify against when the user does not exist.
    pub(crate) fn dummy_hash(&self) -> &str {
        &self.dummy
    }

    /// Queues a job and waits for its answer, at most [`MAX_WAIT`]. A job whose caller gave
    /// up is skipped by the worker that finds it (its answer channel is closed).
    async fn submit<T>(
        &self,
        job: Job,
        answer: oneshot::Receiver<anyhow::Result<T>>,
    ) -> ApiResult<T> {
        let busy = || {
            self.rejections.count(Limit::PasswordHashing);
            ApiError::ResourceExhausted {
                what: "too many sign-ins are being checked right now",
                retry_after: Some(RETRY_AFTER),
            }
        };
        self.jobs.try_send(job).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => busy(),
            mpsc::TrySendError::Disconnected(_) => {
                ApiError::Internal(anyhow::anyhow!("the password hashing workers are gone"))
            }
        })?;
        match tokio::time::timeout(MAX_WAIT, answer).await {
            Err(_) => Err(busy()),
            Ok(Err(_)) => Err(ApiError::Internal(anyhow::anyhow!(
                "a password hashing worker dropped a job"
            ))),
            Ok(Ok(result)) => result.map_err(ApiError::Internal),
        }
    }
}

/// A hashing worker: takes jobs until the server's [`Passwords`] is dropped. Its block
/// memory is allocated on the first job and reused for every later one.
fn work(queue: &Mutex<mpsc::Receiver<Job>>) {
    let mut blocks: Vec<Block> = Vec::new();
    loop {
        // One worker waits in `recv` while holding the lock; the others wait for the lock.
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        match job {
            Job::Hash { password, reply } => {
                if !reply.is_closed() {
                    let _ = reply.send(hash_into(&mut blocks, &password));
                }
            }
            Job::Verify {
                password,
                hash,
                reply,
            } => {
                if !reply.is_closed() {
                    let _ = reply.send(verify_into(&mut blocks, &password, &hash));
                }
            }
        }
    }
}

/// Grows the worker's memory to what `params` need. Every hash this server makes uses the
/// default parameters, so after the first job this never allocates again.
fn memory_for<'a>(blocks: &'a mut Vec<Block>, params: &Params) -> &'a mut [Block] {
    let needed = params.block_count();
    if blocks.len() < needed {
        blocks.resize(needed, Block::default());
    }
    &mut blocks[..needed]
}

fn hash_into(blocks: &mut Vec<Block>, password: &str) -> anyhow::Result<String> {
    let params = Params::default();
    let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let raw_salt = salt
        .decode_b64(&mut salt_bytes)
        .map_err(|e| anyhow::anyhow!("decoding a fresh salt: {e}"))?;
    let memory = memory_for(blocks, &params);
    let output = Output::init_with(Params::DEFAULT_OUTPUT_LEN, |out| {
        hasher
            .hash_password_into_with_memory(password.as_bytes(), raw_salt, out, &mut *memory)
            .map_err(password_hash::Error::from)
    })
    .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params)
            .map_err(|e| anyhow::anyhow!("encoding argon2 parameters: {e}"))?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

fn verify_into(blocks: &mut Vec<Block>, password: &str, hash: &str) -> anyhow::Result<bool> {
    let parsed = PasswordHash::new(hash).map_err(|e| anyhow::anyhow!("stored hash: {e}"))?;
    let algorithm = Algorithm::try_from(parsed.algorithm)
        .map_err(|e| anyhow::anyhow!("stored hash algorithm: {e}"))?;
    let version = parsed
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(|e| anyhow::anyhow!("stored hash version: {e}"))?
        .unwrap_or_default();
    let params =
        Params::try_from(&parsed).map_err(|e| anyhow::anyhow!("stored hash parameters: {e}"))?;
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        anyhow::bail!("stored hash has no salt or no output");
    };
    let mut salt_bytes = [0u8; 64];
    let raw_salt = salt
        .decode_b64(&mut salt_bytes)
        .map_err(|e| anyhow::anyhow!("stored hash salt: {e}"))?;
    let hasher = Argon2::new(algorithm, version, params.clone());
    let memory = memory_for(blocks, &params);
    let computed = Output::init_with(expected.len(), |out| {
        hasher
            .hash_password_into_with_memory(password.as_bytes(), raw_salt, out, &mut *memory)
            .map_err(password_hash::Error::from)
    });
    // A password argon2 refuses (longer than it accepts) matches nothing.
    Ok(computed.is_ok_and(|computed| computed == expected))
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::{PasswordHasher, PasswordVerifier};

    #[tokio::test]
    async fn passwords_hash_and_verify() {
        let passwords = Passwords::new(Default::default()).await.unwrap();
        let hash = passwords.hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
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

    /// Stored hashes made by the argon2 crate's own API (as earlier versions of the server
    /// did) still verify, and ours verify with it: the PHC strings are the same format.
    #[tokio::test]
    async fn hashes_agree_with_the_argon2_crate() {
        let passwords = Passwords::new(Default::default()).await.unwrap();
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::default()
            .hash_password(b"old account", &salt)
            .unwrap()
            .to_string();
        assert!(
            passwords
                .verify("old account".into(), theirs.clone())
                .await
                .unwrap()
        );
        assert!(!passwords.verify("old acount".into(), theirs).await.unwrap());

        let ours = passwords.hash("new account".into()).await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"new account", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"new acount", &parsed)
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_corrupt_stored_hash_is_an_error_not_a_match() {
        let passwords = Passwords::new(Default::default()).await.unwrap();
        let verified = passwords
            .verify("anything".into(), "$argon2id$garbage".into())
            .await;
        assert!(matches!(verified, Err(ApiError::Internal(_))));
    }

    /// More sign-ins than workers plus queue at once: the surplus is refused at once with
    /// RESOURCE_EXHAUSTED and a retry hint, the rest are answered, and the queue works
    /// again afterwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_with_a_retry_hint() {
        let passwords = Arc::new(Passwords::new(Default::default()).await.unwrap());
        let hash = passwords.dummy_hash().to_owned();
        let calls: Vec<_> = (0..QUEUE_CAPACITY * 3)
            .map(|_| {
                let passwords = passwords.clone();
                let hash = hash.clone();
                tokio::spawn(async move { passwords.verify("guess".into(), hash).await })
            })
            .collect();
        let mut answered = 0;
        let mut refused = 0;
        for call in calls {
            match call.await.unwrap() {
                Ok(matched) => {
                    assert!(!matched);
                    answered += 1;
                }
                Err(ApiError::ResourceExhausted { retry_after, .. }) => {
                    assert_eq!(retry_after, Some(RETRY_AFTER));
                    refused += 1;
                }
                Err(other) => panic!("unexpected error: {other:?}"),
            }
        }
        assert!(
            refused > 0,
            "a queue of {QUEUE_CAPACITY} cannot take them all"
        );
        assert!(answered > 0, "nothing was answered");
        assert!(passwords.verify("guess".into(), hash).await.is_ok());
    }
}
