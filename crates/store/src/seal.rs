//! Encryption at rest of everything that may hold personal information.
//!
//! 个人信息保护法 Art 51 (encryption and de-identification as security measures) and 等保 2.0
//! level 3 (confidentiality of important data in storage) ask that a copy of the database files
//! reveals nothing about the people in them. Every stored body that can carry a party's name,
//! identity number, phone or address — record bodies, event bodies, outbox payloads, idempotency
//! answers, deadline payloads — is sealed with AES-256-GCM (ring) before it is written and opened
//! after it is read. Indexed columns hold no personal information; where a look-up or a
//! de-duplication needs equality on personal data, a keyed hash ([`keyed_hash`], HMAC-SHA-256)
//! stands in for the value.
//!
//! ## Keys
//!
//! A key file (JSON, mode 0600) holds one or more data keys, each with a key id, names the
//! active one and holds one lookup key for the keyed hashes:
//!
//! ```json
//! { "active": "2026-12", "keys": [ { "kid": "2026-12", "key": "<base64, 32 bytes>" } ],
//!   "lookup_key": "<base64, 32 bytes>" }
//! ```
//!
//! New writes use the active key; every key in the file decrypts. Rotation without downtime,
//! in two steps because a process reads the file only at start and replicas restart one by one:
//!
//! 1. stage a new key ([`KeyFile::add`], `fengqiao pii-keys add`): it is in the file but not
//!    active, so every replica restarted with the file can open what it will seal, while new
//!    writes still use the old key;
//! 2. once every replica runs with that file, make it active ([`KeyFile::activate`],
//!    `fengqiao pii-keys activate <kid>`) and roll the file out again: during that second
//!    restart a replica still on the staged file opens rows sealed under the new key, and a
//!    restarted one opens every older row.
//!
//! [`KeyFile::rotate`] (`fengqiao pii-keys rotate`) does both at once, for a single process.
//! Keep old keys in the file for as long as rows sealed with them exist. The lookup key is
//! never rotated (the keyed hashes in the indexes would no longer match).
//!
//! The key ring is process-wide, like rustls' crypto provider: [`install`] it once at start
//! (the binary does, from `[pii] key_file` or `FENGQIAO_PII_KEYS`); [`Store::connect`] refuses
//! to open a store without one.
//!
//! ## Format
//!
//! `FQS1` ‖ kid length (1 byte) ‖ kid ‖ nonce (12 bytes, random) ‖ ciphertext ‖ tag (16 bytes).
//! The associated data is the context (`"<table>.<column>"`), so a body moved to another column
//! does not open. Random 96-bit nonces are safe for 2³² seals per key (NIST SP 800-38D §8.3);
//! rotate well before that.
//!
//! [`Store::connect`]: crate::Store::connect

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"FQS1";
const KEY_LEN: usize = 32;

/// Why a key file could not be used. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read or written.
    #[error("personal-information key file: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not the documented JSON.
    #[error("personal-information key file is not valid: {0}")]
    Invalid(String),
}

/// One data key as stored in the key file.
#[derive(Clone, Serialize, Deserialize)]
pub struct KeyEntry {
    /// Key id, written in front of every body sealed with this key.
    pub kid: String,
    /// 32 random bytes, base64.
    pub key: String,
}

/// The key file's content.
#[derive(Clone, Serialize, Deserialize)]
pub struct KeyFile {
    /// Key id used for new writes.
    pub active: String,
    /// Every data key that may still be needed to decrypt.
    pub keys: Vec<KeyEntry>,
    /// HMAC key of the keyed hashes (32 random bytes, base64). Not rotated.
    pub lookup_key: String,
}

fn random_key() -> String {
    let mut k = [0u8; KEY_LEN];
    SystemRandom::new()
        .fill(&mut k)
        .expect("the system random source works");
    B64.encode(k)
}

fn valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= 64
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl KeyFile {
    /// A new key file with one fresh data key `kid` and a fresh lookup key.
    pub fn generate(kid: &str) -> Result<KeyFile, KeyFileError> {
        if !valid_kid(kid) {
            return Err(KeyFileError::Invalid(
                "key id must be 1–64 characters of A–Z a–z 0–9 - _ .".into(),
            ));
        }
        Ok(KeyFile {
            active: kid.to_string(),
            keys: vec![KeyEntry {
                kid: kid.to_string(),
                key: random_key(),
            }],
            lookup_key: random_key(),
        })
    }

    /// Stages a fresh data key `kid`: it decrypts once a process reads the file, but new
    /// writes keep using the active key until [`KeyFile::activate`]. Refuses a key id already
    /// in the file (a key is never replaced: rows sealed with it would be lost).
    pub fn add(&mut self, kid: &str) -> Result<(), KeyFileError> {
        if !valid_kid(kid) {
            return Err(KeyFileError::Invalid(
                "key id must be 1–64 characters of A–Z a–z 0–9 - _ .".into(),
            ));
        }
        if self.keys.iter().any(|k| k.kid == kid) {
            return Err(KeyFileError::Invalid(format!(
                "key id {kid} already exists"
            )));
        }
        self.keys.push(KeyEntry {
            kid: kid.to_string(),
            key: random_key(),
        });
        Ok(())
    }

    /// Makes the staged key `kid` the one new writes use; every key stays for decryption.
    /// Refuses a key id not in the file and the key that is already active.
    pub fn activate(&mut self, kid: &str) -> Result<(), KeyFileError> {
        if !self.keys.iter().any(|k| k.kid == kid) {
            return Err(KeyFileError::Invalid(format!(
                "no key {kid} in the file (stage it first with `pii-keys add`); keys: {}",
                self.kids().join(", ")
            )));
        }
        if self.active == kid {
            return Err(KeyFileError::Invalid(format!(
                "key {kid} is already the active key"
            )));
        }
        self.active = kid.to_string();
        Ok(())
    }

    /// Adds a fresh data key `kid` and makes it the active one at once ([`KeyFile::add`] then
    /// [`KeyFile::activate`]): for a single process; replicas use the two steps.
    pub fn rotate(&mut self, kid: &str) -> Result<(), KeyFileError> {
        self.add(kid)?;
        self.activate(kid)
    }

    /// The key ids in the file, in file order (never key material).
    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.kid.as_str()).collect()
    }

    /// Parses the JSON form.
    pub fn from_json(s: &str) -> Result<KeyFile, KeyFileError> {
        serde_json::from_str(s).map_err(|e| {
            // serde_json's message names a line and column, never the value.
            KeyFileError::Invalid(format!("{e}"))
        })
    }

    /// The JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a key file serializes")
    }

    /// Reads a key file.
    pub fn load(path: &Path) -> Result<KeyFile, KeyFileError> {
        KeyFile::from_json(&std::fs::read_to_string(path)?)
    }

    /// Writes the key file, readable by its owner only. Refuses to overwrite unless `replace`;
    /// a replacement is written beside the file and renamed over it, so that a crash leaves the
    /// old file or the new one, never a truncated one (a lost key file loses every row).
    pub fn save(&self, path: &Path, replace: bool) -> Result<(), KeyFileError> {
        if !replace {
            return self.write_new(path);
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        // A leftover from a crashed save holds nothing the file does not.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        self.write_new(&tmp)?;
        if let Err(e) = std::fs::rename(&tmp, path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Make the rename durable (best effort: not every platform opens directories).
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    fn write_new(&self, path: &Path) -> Result<(), KeyFileError> {
        use std::io::Write as _;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut f = opts.open(path)?;
        f.write_all(self.to_json().as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        Ok(())
    }
}

/// The keys in use: every data key by id, the active one, the lookup key.
pub struct Keyring {
    keys: HashMap<String, LessSafeKey>,
    active: String,
    lookup: hmac::Key,
    rng: SystemRandom,
}

fn decode_key(what: &str, b64: &str) -> Result<Vec<u8>, KeyFileError> {
    let k = B64
        .decode(b64.trim())
        .map_err(|_| KeyFileError::Invalid(format!("{what} is not base64")))?;
    if k.len() != KEY_LEN {
        return Err(KeyFileError::Invalid(format!(
            "{what} must be {KEY_LEN} bytes, not {}",
            k.len()
        )));
    }
    Ok(k)
}

impl Keyring {
    /// The key ring of a key file; checks every key.
    pub fn new(file: &KeyFile) -> Result<Keyring, KeyFileError> {
        let mut keys = HashMap::new();
        for e in &file.keys {
            if !valid_kid(&e.kid) {
                return Err(KeyFileError::Invalid(
                    "a key id is not 1–64 characters of A–Z a–z 0–9 - _ .".into(),
                ));
            }
            let raw = decode_key(&format!("key {}", e.kid), &e.key)?;
            let unbound = UnboundKey::new(&AES_256_GCM, &raw)
                .map_err(|_| KeyFileError::Invalid(format!("key {} is unusable", e.kid)))?;
            if keys
                .insert(e.kid.clone(), LessSafeKey::new(unbound))
                .is_some()
            {
                return Err(KeyFileError::Invalid(format!("key id {} twice", e.kid)));
            }
        }
        if !keys.contains_key(&file.active) {
            return Err(KeyFileError::Invalid(format!(
                "active key {} is not among the keys",
                file.active
            )));
        }
        let lookup = decode_key("lookup_key", &file.lookup_key)?;
        Ok(Keyring {
            keys,
            active: file.active.clone(),
            lookup: hmac::Key::new(hmac::HMAC_SHA256, &lookup),
            rng: SystemRandom::new(),
        })
    }

    /// Id of the key new writes use.
    pub fn active_kid(&self) -> &str {
        &self.active
    }

    /// Seals `plain` under the active key, bound to `context`.
    pub fn seal(&self, context: &str, plain: &[u8]) -> Vec<u8> {
        let key = &self.keys[&self.active];
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .expect("the system random source works");
        let kid = self.active.as_bytes();
        let mut out = Vec::with_capacity(4 + 1 + kid.len() + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(MAGIC);
        out.push(kid.len() as u8);
        out.extend_from_slice(kid);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plain);
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut out[start..],
            )
            .expect("AES-GCM seals any length below 64 GiB");
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Opens a body sealed by [`Keyring::seal`] under any key of the ring.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        let (kid, nonce, body) = split(sealed).ok_or(Error::Unsealable("not a sealed body"))?;
        let key = self
            .keys
            .get(kid)
            .ok_or_else(|| Error::UnknownKey(kid.to_string()))?;
        let mut buf = body.to_vec();
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .map_err(|_| Error::Unsealable("authentication failed (wrong key or context)"))?;
        let n = plain.len();
        buf.truncate(n);
        Ok(buf)
    }

    /// HMAC-SHA-256 of `data` in `context`, hex: equality without the value.
    pub fn keyed_hash(&self, context: &str, data: &[u8]) -> String {
        let mut ctx = hmac::Context::with_key(&self.lookup);
        ctx.update(context.as_bytes());
        ctx.update(&[0]);
        ctx.update(data);
        let tag = ctx.sign();
        tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn split(sealed: &[u8]) -> Option<(&str, [u8; NONCE_LEN], &[u8])> {
    let rest = sealed.strip_prefix(MAGIC.as_slice())?;
    let (&len, rest) = rest.split_first()?;
    let len = usize::from(len);
    if rest.len() < len + NONCE_LEN + 16 {
        return None;
    }
    let (kid, rest) = rest.split_at(len);
    let (nonce, body) = rest.split_at(NONCE_LEN);
    Some((std::str::from_utf8(kid).ok()?, nonce.try_into().ok()?, body))
}

/// The key id a sealed body was written with (for tests and re-encryption tools).
pub fn kid_of(sealed: &[u8]) -> Option<&str> {
    split(sealed).map(|(kid, _, _)| kid)
}

static RING: RwLock<Option<Arc<Keyring>>> = RwLock::new(None);

/// Installs the process-wide key ring (replacing an earlier one: a reloaded key file takes
/// effect for the next seal).
pub fn install(ring: Keyring) {
    *RING.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(ring));
}

/// Whether a key ring is installed.
pub fn installed() -> bool {
    RING.read().unwrap_or_else(|e| e.into_inner()).is_some()
}

fn ring() -> Result<Arc<Keyring>> {
    RING.read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .ok_or(Error::NoSealKey)
}

/// The active key id of the installed ring.
pub fn active_kid() -> Option<String> {
    ring().ok().map(|r| r.active.clone())
}

/// Seals `plain` for the column `context` (`"<table>.<column>"`) with the installed ring.
pub fn seal(context: &str, plain: &[u8]) -> Result<Vec<u8>> {
    Ok(ring()?.seal(context, plain))
}

/// Opens what [`seal`] wrote for `context`.
pub fn open(context: &str, sealed: &[u8]) -> Result<Vec<u8>> {
    ring()?.open(context, sealed)
}

/// Keyed hash (hex HMAC-SHA-256) with the installed ring's lookup key.
pub fn keyed_hash(context: &str, data: &[u8]) -> Result<String> {
    Ok(ring()?.keyed_hash(context, data))
}

/// A fixed key ring for tests (never for a deployment): installs it unless one is installed.
#[cfg(feature = "testing")]
pub fn install_for_tests() {
    if installed() {
        return;
    }
    let file = KeyFile {
        active: "test-1".into(),
        keys: vec![KeyEntry {
            kid: "test-1".into(),
            key: B64.encode([7u8; KEY_LEN]),
        }],
        lookup_key: B64.encode([9u8; KEY_LEN]),
    };
    let ring = Keyring::new(&file).expect("the test key file is valid");
    let mut guard = RING.write().unwrap_or_else(|e| e.into_inner());
    if guard.is_none() {
        *guard = Some(Arc::new(ring));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_context_binding() {
        let f = KeyFile::generate("k1").unwrap();
        let r = Keyring::new(&f).unwrap();
        let plain = b"210203199001011234 13900005201";
        let s = r.seal("referrals.body", plain);
        assert!(!s.windows(plain.len()).any(|w| w == plain));
        assert_eq!(kid_of(&s), Some("k1"));
        assert_eq!(r.open("referrals.body", &s).unwrap(), plain);
        assert!(matches!(
            r.open("transfers.body", &s),
            Err(Error::Unsealable(_))
        ));
        let mut t = s.clone();
        let last = t.len() - 1;
        t[last] ^= 1;
        assert!(r.open("referrals.body", &t).is_err());
        assert!(matches!(
            r.open("referrals.body", plain),
            Err(Error::Unsealable(_))
        ));
        // Two seals of one value differ (random nonce).
        assert_ne!(r.seal("c", plain), r.seal("c", plain));
    }

    #[test]
    fn rotation_keeps_old_keys_and_writes_with_the_new_one() {
        let mut f = KeyFile::generate("k1").unwrap();
        let old = Keyring::new(&f).unwrap();
        let s1 = old.seal("c", b"old row");
        let h1 = old.keyed_hash("c", b"x");
        f.rotate("k2").unwrap();
        assert!(f.rotate("k2").is_err());
        let new = Keyring::new(&f).unwrap();
        assert_eq!(new.open("c", &s1).unwrap(), b"old row");
        let s2 = new.seal("c", b"new row");
        assert_eq!(kid_of(&s2), Some("k2"));
        assert!(matches!(old.open("c", &s2), Err(Error::UnknownKey(_))));
        // The lookup key survives rotation: hashes still match.
        assert_eq!(new.keyed_hash("c", b"x"), h1);
        assert_ne!(new.keyed_hash("d", b"x"), h1);
    }

    #[test]
    fn a_staged_key_opens_but_does_not_seal_until_activated() {
        let mut f = KeyFile::generate("k1").unwrap();
        let before = Keyring::new(&f).unwrap();
        f.add("k2").unwrap();
        assert_eq!(f.active, "k1");
        assert_eq!(f.kids(), ["k1", "k2"]);
        let staged = Keyring::new(&f).unwrap();
        assert_eq!(staged.active_kid(), "k1");
        assert_eq!(kid_of(&staged.seal("c", b"x")), Some("k1"));
        // Adding an id twice, activating an unknown id or the active one: refused, unchanged.
        assert!(f.add("k2").is_err());
        assert!(f.add("bad kid").is_err());
        let e = f.activate("k9").unwrap_err().to_string();
        assert!(e.contains("k9") && e.contains("k1, k2"), "{e}");
        assert!(
            f.activate("k1")
                .unwrap_err()
                .to_string()
                .contains("already")
        );
        assert_eq!(f.active, "k1");
        f.activate("k2").unwrap();
        let active = Keyring::new(&f).unwrap();
        let s2 = active.seal("c", b"new");
        assert_eq!(kid_of(&s2), Some("k2"));
        // The staged ring opens what the activated one seals, and the other way round.
        assert_eq!(staged.open("c", &s2).unwrap(), b"new");
        assert_eq!(active.open("c", &staged.seal("c", b"old")).unwrap(), b"old");
        // The ring from before the key was staged cannot: why the two steps exist.
        assert!(matches!(before.open("c", &s2), Err(Error::UnknownKey(_))));
        assert_eq!(active.keyed_hash("c", b"x"), before.keyed_hash("c", b"x"));
    }

    #[test]
    fn save_replaces_atomically_and_refuses_to_overwrite() {
        let dir = std::env::temp_dir().join(format!("fq-seal-save-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k.json");
        let _ = std::fs::remove_file(&path);
        let mut f = KeyFile::generate("k1").unwrap();
        f.save(&path, false).unwrap();
        assert!(f.save(&path, false).is_err());
        f.add("k2").unwrap();
        // A leftover temporary file from a crashed save does not stop the next one.
        std::fs::write(dir.join("k.json.tmp"), "partial").unwrap();
        f.save(&path, true).unwrap();
        assert_eq!(KeyFile::load(&path).unwrap().kids(), ["k1", "k2"]);
        assert!(!dir.join("k.json.tmp").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn key_files_are_checked() {
        let mut f = KeyFile::generate("k1").unwrap();
        assert!(KeyFile::generate("bad kid!").is_err());
        f.active = "k9".into();
        assert!(Keyring::new(&f).is_err());
        let mut g = KeyFile::generate("k1").unwrap();
        g.keys[0].key = B64.encode([1u8; 16]);
        assert!(Keyring::new(&g).is_err());
        let round = KeyFile::from_json(&KeyFile::generate("k1").unwrap().to_json()).unwrap();
        assert!(Keyring::new(&round).is_ok());
        let err = KeyFile::from_json("{\"active\": 1}")
            .err()
            .unwrap()
            .to_string();
        assert!(!err.contains("AAAA"));
    }
}
