//! Turning a bearer token into a [`Principal`]: the tokens file first, then
//! the database through a short cache, so a busy client does not cost a
//! query per call and a revocation takes effect within the cache's lifetime.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tonic::Status;

use super::Principal;
use super::tokens::{TokenRecord, TokensFile, hash};
use crate::store::Store;

/// The most tokens remembered; beyond it the cache starts over, so a flood
/// of made-up tokens cannot grow memory.
const CACHE_CAPACITY: usize = 10_000;

/// Checks bearer tokens against the tokens file and the database.
pub struct Authenticator {
    store: Arc<dyn Store>,
    tokens_file: Option<PathBuf>,
    file: RwLock<TokensFile>,
    cache: Mutex<HashMap<String, (Option<TokenRecord>, Instant)>>,
    cache_ttl: Duration,
}

impl Authenticator {
    /// Checks tokens in `store` and, if given, in the tokens file (read now
    /// and again on [`Authenticator::reload`]). Database answers are reused
    /// for `cache_ttl`.
    pub fn new(
        store: Arc<dyn Store>,
        tokens_file: Option<PathBuf>,
        cache_ttl: Duration,
    ) -> crate::error::Result<Self> {
        let file = match &tokens_file {
            Some(path) => TokensFile::load(path)?,
            None => TokensFile::default(),
        };
        Ok(Authenticator {
            store,
            tokens_file,
            file: RwLock::new(file),
            cache: Mutex::new(HashMap::new()),
            cache_ttl,
        })
    }

    /// The tokens file, if one is used.
    pub fn tokens_file(&self) -> Option<&std::path::Path> {
        self.tokens_file.as_deref()
    }

    /// Re-reads the tokens file; on error the previous tokens stay in force.
    pub fn reload(&self) -> crate::error::Result<()> {
        if let Some(path) = &self.tokens_file {
            let file = TokensFile::load(path)?;
            *self.file.write().expect("tokens file lock") = file;
            tracing::info!(path = %path.display(), "tokens file reloaded");
        }
        Ok(())
    }

    /// The principal a token stands for, or `UNAUTHENTICATED`.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, Status> {
        self.authenticate_hash(&hash(token)).await
    }

    /// Whether the token a principal came with is still valid (not revoked,
    /// still in the tokens file); asked again for long-lived agent streams.
    /// Only a definite answer says no: when the database cannot be asked,
    /// the token keeps the validity it had, since a storage fault is not a
    /// revocation.
    pub async fn still_valid(&self, principal: &Principal) -> bool {
        match self.authenticate_hash(&principal.token_sha256).await {
            Ok(_) => true,
            Err(status) if status.code() == tonic::Code::Unauthenticated => false,
            Err(status) => {
                tracing::warn!(token = %principal.token_id, %status, "could not check the token again; it stays valid until the next check");
                true
            }
        }
    }

    async fn authenticate_hash(&self, sha256: &str) -> Result<Principal, Status> {
        let from_file = self.file.read().expect("tokens file lock").find(sha256);
        let record = match from_file {
            Some(record) => Some(record),
            None => self.lookup_in_database(sha256).await?,
        };
        match record {
            Some(record) if record.revoked_at.is_none() => Ok(record.principal(sha256)),
            Some(record) => {
                tracing::warn!(token = %record.id, name = %record.name, "refused a revoked token");
                Err(Status::unauthenticated(
                    "this token was revoked: ask an operator for a new one",
                ))
            }
            None => {
                tracing::warn!("refused an unknown token");
                Err(Status::unauthenticated(
                    "this token is not valid: check TASKPLANE_TOKEN / --token",
                ))
            }
        }
    }

    async fn lookup_in_database(&self, sha256: &str) -> Result<Option<TokenRecord>, Status> {
        if let Some((record, at)) = self.cache.lock().expect("token cache lock").get(sha256)
            && at.elapsed() < self.cache_ttl
        {
            return Ok(record.clone());
        }
        let record = self.store.find_token(sha256).await.map_err(Status::from)?;
        let mut cache = self.cache.lock().expect("token cache lock");
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(sha256.to_owned(), (record.clone(), Instant::now()));
        Ok(record)
    }
}
