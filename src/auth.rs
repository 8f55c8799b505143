//! API keys: created, listed and revoked here; checked on every API request.
//!
//! A key is a random token (`cq_` + 64 hex digits: 256 bits from the
//! operating system's random source) shown once, when it is created. The
//! store keeps only its SHA-256, so a copy of the database gives no usable
//! key; a request's token is hashed and looked up by that hash (no
//! comparison of secrets in Rust code). A revoked key keeps its record (for
//! `keys list` and the jobs it owns) but loses its hash entry at once.
//!
//! Keys live in the job registry's sled database (trees `keys` and
//! `key_hashes`), so `colloquy keys` works on a stopped server's storage
//! folder and the server's admin routes work while it runs.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What every token starts with (so a leaked one is recognisable).
pub const TOKEN_PREFIX: &str = "cq_";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key database: {0}")]
    Db(sled::Error),
    #[error("key record is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("no random source: {0}")]
    Random(String),
    #[error("{0}")]
    Invalid(String),
}

impl From<sled::Error> for KeyError {
    fn from(e: sled::Error) -> Self {
        KeyError::Db(e)
    }
}

/// One key as stored (never the token itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiKey {
    /// Short public id (`key_` + 12 hex digits): owner of jobs, shown in lists.
    pub id: String,
    pub name: String,
    /// Admin keys see every job and manage keys.
    pub admin: bool,
    /// SHA-256 of the token, hex (stored only: the API sends
    /// [`ApiKey::public`], which has none, so the schema has none either).
    #[serde(skip_serializing_if = "String::is_empty", default)]
    #[schema(ignore)]
    pub hash: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// The record as lists show it: without the hash.
    pub fn public(&self) -> ApiKey {
        ApiKey {
            hash: String::new(),
            ..self.clone()
        }
    }
}

/// The key store over the registry's sled database.
#[derive(Clone)]
pub struct KeyStore {
    db: sled::Db,
    keys: sled::Tree,
    hashes: sled::Tree,
}

fn hash_token(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(n: usize) -> Result<String, KeyError> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(hex(&buf))
}

/// A key name: 1-64 printable characters, no control characters.
fn check_name(name: &str) -> Result<String, KeyError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(KeyError::Invalid(
            "a key name is 1 to 64 characters, without control characters".into(),
        ));
    }
    Ok(name.to_string())
}

impl KeyStore {
    pub fn open(db: &sled::Db) -> Result<KeyStore, KeyError> {
        Ok(KeyStore {
            db: db.clone(),
            keys: db.open_tree("keys")?,
            hashes: db.open_tree("key_hashes")?,
        })
    }

    /// Opens the key store of a storage folder's database (`jobs.sled`)
    /// while no server holds it.
    pub fn open_folder(database: &std::path::Path) -> Result<KeyStore, KeyError> {
        if let Some(parent) = database.parent() {
            std::fs::create_dir_all(parent).map_err(sled::Error::from)?;
        }
        let db = sled::open(database).map_err(|e| match e {
            sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                KeyError::Invalid(format!(
                    "{} is in use, probably by a running `colloquy serve`: stop it, or create \
                     keys through POST /api/keys with an admin key",
                    database.display()
                ))
            }
            other => KeyError::Db(other),
        })?;
        KeyStore::open(&db)
    }

    /// Creates a key; returns its record and the token (shown only now).
    pub fn create(&self, name: &str, admin: bool) -> Result<(ApiKey, String), KeyError> {
        let name = check_name(name)?;
        let token = format!("{TOKEN_PREFIX}{}", random_hex(32)?);
        let key = ApiKey {
            id: format!("key_{}", random_hex(6)?),
            name,
            admin,
            hash: hash_token(&token),
            created_at: Utc::now(),
            revoked_at: None,
        };
        self.keys
            .insert(key.id.as_bytes(), serde_json::to_vec(&key)?)?;
        self.hashes.insert(key.hash.as_bytes(), key.id.as_bytes())?;
        self.db.flush()?;
        Ok((key, token))
    }

    /// Every key, oldest first (revoked ones included).
    pub fn list(&self) -> Result<Vec<ApiKey>, KeyError> {
        let mut keys = Vec::new();
        for kv in self.keys.iter() {
            let (_, v) = kv?;
            keys.push(serde_json::from_slice::<ApiKey>(&v)?);
        }
        keys.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(keys)
    }

    /// Revokes the key with this id (or, when unambiguous, this name).
    /// None when there is no such key.
    pub fn revoke(&self, id_or_name: &str) -> Result<Option<ApiKey>, KeyError> {
        let Some(mut key) = self.find(id_or_name)? else {
            return Ok(None);
        };
        if key.revoked_at.is_none() {
            key.revoked_at = Some(Utc::now());
            self.hashes.remove(key.hash.as_bytes())?;
            self.keys
                .insert(key.id.as_bytes(), serde_json::to_vec(&key)?)?;
            self.db.flush()?;
        }
        Ok(Some(key))
    }

    fn find(&self, id_or_name: &str) -> Result<Option<ApiKey>, KeyError> {
        if let Some(v) = self.keys.get(id_or_name.as_bytes())? {
            return Ok(Some(serde_json::from_slice(&v)?));
        }
        let named: Vec<ApiKey> = self
            .list()?
            .into_iter()
            .filter(|k| k.name == id_or_name && k.revoked_at.is_none())
            .collect();
        match named.len() {
            0 => Ok(None),
            1 => Ok(named.into_iter().next()),
            n => Err(KeyError::Invalid(format!(
                "{n} keys are named '{id_or_name}': give the key's id"
            ))),
        }
    }

    /// The live key this token belongs to, if any.
    pub fn verify(&self, token: &str) -> Result<Option<ApiKey>, KeyError> {
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
            return Ok(None);
        }
        let Some(id) = self.hashes.get(hash_token(token).as_bytes())? else {
            return Ok(None);
        };
        match self.keys.get(&id)? {
            Some(v) => {
                let key: ApiKey = serde_json::from_slice(&v)?;
                Ok(key.revoked_at.is_none().then_some(key))
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(name: &str) -> (KeyStore, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("colloquy-keys-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let db = sled::open(&dir).unwrap();
        (KeyStore::open(&db).unwrap(), dir)
    }

    #[test]
    fn a_key_verifies_until_revoked_and_only_its_hash_is_stored() {
        let (keys, dir) = store("verify");
        let (key, token) = keys.create("alice", false).unwrap();
        assert!(token.starts_with(TOKEN_PREFIX) && token.len() == 3 + 64);
        assert_eq!(keys.verify(&token).unwrap().unwrap().id, key.id);
        // the token itself is nowhere in the stored record
        let raw = keys.keys.get(key.id.as_bytes()).unwrap().unwrap();
        assert!(!String::from_utf8_lossy(&raw).contains(&token[3..]));
        assert!(keys.verify("cq_0000").unwrap().is_none());
        assert!(keys.verify(&token.replace("cq_", "xx_")).unwrap().is_none());
        let revoked = keys.revoke("alice").unwrap().unwrap();
        assert!(revoked.revoked_at.is_some());
        assert!(keys.verify(&token).unwrap().is_none());
        assert_eq!(keys.list().unwrap().len(), 1, "a revoked key stays listed");
        assert!(keys.revoke("nobody").unwrap().is_none());
        drop(keys);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn two_keys_get_different_tokens_and_names_are_checked() {
        let (keys, dir) = store("names");
        let (a, ta) = keys.create("same", true).unwrap();
        let (b, tb) = keys.create("same", false).unwrap();
        assert_ne!(ta, tb);
        assert_ne!(a.id, b.id);
        assert!(keys.revoke("same").is_err(), "an ambiguous name is refused");
        assert!(keys.create("", false).is_err());
        assert!(keys.create("a\u{7}b", false).is_err());
        assert!(keys.create(&"x".repeat(65), false).is_err());
        assert!(keys
            .list()
            .unwrap()
            .iter()
            .all(|k| k.public().hash.is_empty()));
        drop(keys);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
