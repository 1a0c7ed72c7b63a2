//! Bearer tokens: their shape, how they are kept, and the tokens file.
//!
//! A token reads `tp_<id>_<secret>`: the id is public (lists, logs,
//! revocation), the secret is 256 random bits. Only the SHA-256 of the whole
//! token is stored, in the database (`taskplane token create`) or in a TOML
//! tokens file given to `taskplane serve --tokens-file`; a stolen database or
//! file holds no usable token. A fast hash is enough because the secret is
//! random, not a password to guess.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use taskplane_proto::names::check_name;

use super::{DomainScope, Principal, Role};
use crate::error::{Error, Result};

/// A token as kept: everything but its secret.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    /// The public id (`tp_<id>_…`).
    pub id: String,
    /// What it is for, e.g. `billing-agent`.
    pub name: String,
    /// What it may call.
    pub role: Role,
    /// Which domains it may act on.
    pub domains: DomainScope,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl TokenRecord {
    /// The principal a request carrying this token (whose SHA-256 is
    /// `sha256`) acts as.
    pub fn principal(&self, sha256: &str) -> Principal {
        Principal {
            token_id: self.id.clone(),
            token_sha256: sha256.to_owned(),
            name: self.name.clone(),
            role: self.role,
            domains: self.domains.clone(),
        }
    }
}

/// A newly created token: shown once, then only its hash is kept.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// What is kept.
    pub record: TokenRecord,
    /// The SHA-256 of `token`, hex.
    pub sha256: String,
    /// The token itself, for the caller to hand over.
    pub token: String,
}

/// Creates a token after checking its name and domains.
pub fn issue(name: &str, role: Role, domains: Vec<String>) -> Result<IssuedToken> {
    let name = name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(Error::InvalidArgument(
            "the token name must be 1 to 100 characters, e.g. \"billing-agent\"".into(),
        ));
    }
    for domain in &domains {
        check_name("domain", domain).map_err(Error::InvalidArgument)?;
    }
    let id = hex::encode(rand::random::<[u8; 6]>());
    let token = format!("tp_{id}_{}", hex::encode(rand::random::<[u8; 32]>()));
    Ok(IssuedToken {
        record: TokenRecord {
            id,
            name: name.to_owned(),
            role,
            domains: DomainScope::from_list(domains),
            created_at: Utc::now(),
            revoked_at: None,
        },
        sha256: hash(&token),
        token,
    })
}

/// The SHA-256 of a token, hex: what the database and the file keep.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// One `[[token]]` entry of the tokens file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    id: String,
    name: String,
    role: String,
    #[serde(default)]
    domains: Vec<String>,
    sha256: String,
    created_at: DateTime<Utc>,
}

/// The tokens file: `[[token]]` entries with `id`, `name`, `role`,
/// `domains` (empty: every domain), `sha256` and `created_at`. Revoking
/// removes the entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensFile {
    #[serde(default, rename = "token")]
    entries: Vec<FileEntry>,
}

impl TokensFile {
    /// Reads and checks a tokens file; a missing file is empty.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::default());
            }
            Err(error) => {
                return Err(Error::Config(format!(
                    "reading the tokens file {}: {error}",
                    path.display()
                )));
            }
        };
        let file: TokensFile = toml::from_str(&text).map_err(|e| {
            Error::Config(format!(
                "the tokens file {} is not valid: {e}",
                path.display()
            ))
        })?;
        for entry in &file.entries {
            Role::parse(&entry.role).map_err(|e| {
                Error::Config(format!("{}: token '{}': {e}", path.display(), entry.id))
            })?;
            if entry.sha256.len() != 64 || hex::decode(&entry.sha256).is_err() {
                return Err(Error::Config(format!(
                    "{}: token '{}': sha256 must be 64 hex digits (the SHA-256 of the token)",
                    path.display(),
                    entry.id
                )));
            }
        }
        Ok(file)
    }

    /// Writes the file (readable by its owner only, where that is possible).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = toml::to_string(self).map_err(|e| Error::Config(e.to_string()))?;
        let header =
            "# taskplane tokens: only SHA-256 hashes are kept. Manage with `taskplane token`.\n";
        write_private(path, &format!("{header}{text}"))
            .map_err(|e| Error::Config(format!("writing the tokens file {}: {e}", path.display())))
    }

    /// Adds a new token.
    pub fn add(&mut self, issued: &IssuedToken) {
        self.entries.push(FileEntry {
            id: issued.record.id.clone(),
            name: issued.record.name.clone(),
            role: issued.record.role.as_str().to_owned(),
            domains: issued.record.domains.to_list(),
            sha256: issued.sha256.clone(),
            created_at: issued.record.created_at,
        });
    }

    /// Removes a token; false if no entry has this id.
    pub fn revoke(&mut self, id: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|entry| entry.id != id);
        self.entries.len() != before
    }

    /// Every token in the file.
    pub fn records(&self) -> Vec<TokenRecord> {
        self.entries.iter().map(record).collect()
    }

    /// The token whose hash is `sha256`, if the file has it.
    pub fn find(&self, sha256: &str) -> Option<TokenRecord> {
        self.entries
            .iter()
            .find(|entry| entry.sha256 == sha256)
            .map(record)
    }
}

fn record(entry: &FileEntry) -> TokenRecord {
    TokenRecord {
        id: entry.id.clone(),
        name: entry.name.clone(),
        role: Role::parse(&entry.role).expect("checked when the file was loaded"),
        domains: DomainScope::from_list(entry.domains.clone()),
        created_at: entry.created_at,
        revoked_at: None,
    }
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_found_by_its_hash_and_gone_once_revoked() {
        let issued = issue("billing-agent", Role::Agent, vec!["billing".into()]).unwrap();
        assert!(
            issued
                .token
                .starts_with(&format!("tp_{}_", issued.record.id))
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let mut file = TokensFile::load(&path).unwrap();
        file.add(&issued);
        file.save(&path).unwrap();
        let file = TokensFile::load(&path).unwrap();
        let found = file.find(&hash(&issued.token)).expect("found by hash");
        assert_eq!(
            found.domains,
            DomainScope::from_list(vec!["billing".into()])
        );
        assert!(file.find(&hash("tp_x_wrong")).is_none());
        let mut file = file;
        assert!(file.revoke(&issued.record.id));
        assert!(file.find(&hash(&issued.token)).is_none());
        assert!(
            !std::fs::read_to_string(&path)
                .unwrap()
                .contains(&issued.token)
        );
    }

    #[test]
    fn bad_names_and_files_are_refused_with_the_reason() {
        assert!(
            issue(" ", Role::Client, vec![])
                .unwrap_err()
                .to_string()
                .contains("name")
        );
        assert!(issue("x", Role::Client, vec!["Bad Domain".into()]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(&path, "[[token]]\nid='a'\nname='n'\nrole='root'\nsha256='00'\ncreated_at='2026-01-01T00:00:00Z'\n").unwrap();
        assert!(
            TokensFile::load(&path)
                .unwrap_err()
                .to_string()
                .contains("unknown role 'root'")
        );
    }
}
