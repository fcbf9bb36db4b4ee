//! Authentication: signed bearer tokens (JWT, EdDSA/Ed25519) and the verified [`Identity`].
//!
//! Every call carries `authorization: Bearer <token>`. The token names the issuer, the agency,
//! the actor (a person or a system acting for the agency), the actor's roles and an expiry, and is
//! signed with an Ed25519 key whose public half is configured on every server. Verification uses
//! `ring` directly; the token format is the compact JWS of RFC 7515 with `alg = EdDSA` (RFC 8037).

use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

/// The claims of a Fengqiao token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Issuer (`iss`), checked against the configured issuer.
    pub iss: String,
    /// Actor id (`sub`): the officer, mediator or system acting.
    pub sub: String,
    /// Agency resource name, e.g. `agencies/xigang-110`.
    pub agency: String,
    /// Roles of the actor within the agency, e.g. `command_room_reviewer`.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Issued at (seconds since the Unix epoch).
    pub iat: i64,
    /// Expiry (seconds since the Unix epoch).
    pub exp: i64,
    /// Not before (seconds since the Unix epoch), optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Token id, for audit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The natural person acting (`person`), stable across the units of one organisation
    /// (e.g. the officer's 警号 where the 110 command centre and the station issue different
    /// actor ids). Four-eyes rules compare it; absent, the actor id (`sub`) is the person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,
}

/// How an identity was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// A verified bearer token.
    Token,
    /// A verified mutual-TLS client certificate mapped to an agency.
    MutualTls,
}

/// The verified caller of an RPC, available to handlers from the request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Agency resource name (`agencies/{id}`).
    pub agency: String,
    /// Actor id.
    pub actor: String,
    /// Roles of the actor.
    pub roles: Vec<String>,
    /// How the identity was established.
    pub method: AuthMethod,
    /// The natural person acting, when the token names one (claim `person`).
    pub person: Option<String>,
}

impl Identity {
    /// The person acting, for rules that one person may not do two things (four eyes): the
    /// token's `person` claim, else the actor id. Approval steps of one transfer are taken
    /// within one organisation (the sender or its parent agency), where the actor id is the
    /// officer's stable identifier (警号), so the agency is not part of it.
    pub fn person(&self) -> &str {
        self.person.as_deref().unwrap_or(&self.actor)
    }

    /// The actor as recorded on resources and events (agency, actor id, roles, person).
    pub fn as_actor(&self) -> fengqiao_proto::common::Actor {
        fengqiao_proto::common::Actor {
            agency: self.agency.clone(),
            actor_id: self.actor.clone(),
            display_name: String::new(),
            roles: self.roles.clone(),
            person: self.person().to_string(),
        }
    }

    /// Whether the actor holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// The identity of a verified request, or `UNAUTHENTICATED` if the auth layer did not run.
    pub fn of<T>(req: &tonic::Request<T>) -> Result<&Identity, crate::error::ApiError> {
        req.extensions().get::<Identity>().ok_or_else(|| {
            crate::error::ApiError::new(crate::Reason::Unauthenticated, "no verified identity")
        })
    }
}

/// Why a token was refused. Messages never contain the token itself.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No `authorization` header.
    #[error("missing bearer token")]
    Missing,
    /// Not a well-formed compact JWS with the expected header and claims.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The key id is not among the configured keys.
    #[error("token signed by an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("token signature is invalid")]
    BadSignature,
    /// The token has expired.
    #[error("token has expired")]
    Expired,
    /// The token is not valid yet.
    #[error("token is not valid yet")]
    NotYetValid,
    /// The issuer is not the configured one.
    #[error("token issuer is not trusted")]
    WrongIssuer,
}

impl AuthError {
    /// Stable `ErrorInfo.reason`.
    pub fn reason(&self) -> crate::Reason {
        use crate::Reason;
        match self {
            AuthError::Missing => Reason::TokenMissing,
            AuthError::Malformed(_) => Reason::TokenMalformed,
            AuthError::UnknownKey => Reason::TokenUnknownKey,
            AuthError::BadSignature => Reason::TokenBadSignature,
            AuthError::Expired => Reason::TokenExpired,
            AuthError::NotYetValid => Reason::TokenNotYetValid,
            AuthError::WrongIssuer => Reason::TokenWrongIssuer,
        }
    }
}

/// Errors handling key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing a key file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The key file is not in the expected format.
    #[error("key file {path}: {detail}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The key bytes were rejected by the crypto library.
    #[error("invalid key material")]
    Rejected,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    kid: String,
}

/// An Ed25519 signing key with its key id.
pub struct SigningKey {
    kid: String,
    pkcs8: Vec<u8>,
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct SigningKeyFile {
    kid: String,
    alg: String,
    private_key_pkcs8_b64: String,
}

/// A public verification key as configured on servers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublicKeyEntry {
    /// Key id.
    pub kid: String,
    /// Algorithm; only `EdDSA` is accepted.
    pub alg: String,
    /// Raw 32-byte Ed25519 public key, standard base64.
    pub public_key_b64: String,
}

/// The JSON file of public keys (`{ "keys": [ … ] }`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PublicKeyFile {
    /// The keys.
    pub keys: Vec<PublicKeyEntry>,
}

impl SigningKey {
    /// Generates a fresh key.
    pub fn generate(kid: impl Into<String>) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Rejected)?;
        Self::from_pkcs8(kid, doc.as_ref().to_vec())
    }

    /// A key from PKCS#8 v2 bytes.
    pub fn from_pkcs8(kid: impl Into<String>, pkcs8: Vec<u8>) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| KeyError::Rejected)?;
        Ok(Self {
            kid: kid.into(),
            pkcs8,
            pair,
        })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half as a configuration entry.
    pub fn public_entry(&self) -> PublicKeyEntry {
        PublicKeyEntry {
            kid: self.kid.clone(),
            alg: "EdDSA".into(),
            public_key_b64: STANDARD.encode(self.pair.public_key().as_ref()),
        }
    }

    /// Signs `claims` into a compact token.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = Header {
            alg: "EdDSA".into(),
            typ: Some("JWT".into()),
            kid: self.kid.clone(),
        };
        // Serialising these plain structs cannot fail.
        let h = serde_json::to_vec(&header).unwrap_or_default();
        let c = serde_json::to_vec(claims).unwrap_or_default();
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(h),
            URL_SAFE_NO_PAD.encode(c)
        );
        let sig = self.pair.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    /// Writes the private key file (mode 0600) and returns nothing else.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let file = SigningKeyFile {
            kid: self.kid.clone(),
            alg: "EdDSA".into(),
            private_key_pkcs8_b64: STANDARD.encode(&self.pkcs8),
        };
        let text = serde_json::to_string_pretty(&file).unwrap_or_default();
        write_private(path, text.as_bytes()).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Reads a private key file written by [`SigningKey::save`].
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let file: SigningKeyFile = serde_json::from_str(&text).map_err(|e| KeyError::Format {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        if file.alg != "EdDSA" {
            return Err(KeyError::Format {
                path: path.display().to_string(),
                detail: format!("unsupported alg {}", file.alg),
            });
        }
        let pkcs8 = STANDARD
            .decode(file.private_key_pkcs8_b64)
            .map_err(|e| KeyError::Format {
                path: path.display().to_string(),
                detail: e.to_string(),
            })?;
        Self::from_pkcs8(file.kid, pkcs8)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

impl PublicKeyFile {
    /// Reads a public key file.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| KeyError::Format {
            path: path.display().to_string(),
            detail: e.to_string(),
        })
    }

    /// Writes the file.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        std::fs::write(path, text).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })
    }
}

/// Verifies tokens against a set of public keys.
///
/// A token whose signature and claims were verified once is remembered (the token text itself
/// is the key, so a changed byte is a different token): a client calls many times with the same
/// token, and agency services forward their caller's token to the router, so the Ed25519
/// check (the most expensive step of a small RPC) would otherwise run several times per
/// operation. Expiry and not-before are checked again on every call; only verified tokens are
/// remembered, at most [`VERIFIED_CACHE`] of them.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: HashMap<String, Vec<u8>>,
    issuer: String,
    leeway_secs: i64,
    verified: std::sync::Arc<std::sync::Mutex<HashMap<String, Verified>>>,
}

/// Clock skew allowed on a token's `exp` and `nbf`: a token is refused from `exp + 5 s` on,
/// and accepted from `nbf - 5 s` (documented in the README, "Calling the services").
pub const TOKEN_LEEWAY_SECS: i64 = 5;

/// Most verified tokens a [`Verifier`] remembers; when full it forgets them all and starts
/// over (cheap, and a burst of distinct tokens cannot grow memory).
pub const VERIFIED_CACHE: usize = 4096;

#[derive(Debug, Clone)]
struct Verified {
    identity: Identity,
    exp: i64,
    nbf: Option<i64>,
}

impl Verifier {
    /// A verifier trusting `keys` for tokens of `issuer`.
    pub fn new(issuer: impl Into<String>, keys: &PublicKeyFile) -> Result<Self, KeyError> {
        let mut map = HashMap::new();
        for k in &keys.keys {
            if k.alg != "EdDSA" {
                return Err(KeyError::Format {
                    path: format!("key {}", k.kid),
                    detail: format!("unsupported alg {}", k.alg),
                });
            }
            let raw = STANDARD
                .decode(&k.public_key_b64)
                .map_err(|_| KeyError::Rejected)?;
            if raw.len() != 32 {
                return Err(KeyError::Rejected);
            }
            map.insert(k.kid.clone(), raw);
        }
        Ok(Self {
            keys: map,
            issuer: issuer.into(),
            leeway_secs: TOKEN_LEEWAY_SECS,
            verified: Default::default(),
        })
    }

    /// Verifies `token` at `now` (seconds since the epoch) and returns the identity.
    pub fn verify(&self, token: &str, now: i64) -> Result<Identity, AuthError> {
        let known = self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned();
        let v = match known {
            Some(v) => v,
            None => {
                let v = self.verify_signed(token)?;
                let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() >= VERIFIED_CACHE {
                    cache.clear();
                }
                cache.insert(token.to_string(), v.clone());
                v
            }
        };
        if v.exp + self.leeway_secs < now {
            return Err(AuthError::Expired);
        }
        if v.nbf.is_some_and(|nbf| nbf - self.leeway_secs > now) {
            return Err(AuthError::NotYetValid);
        }
        Ok(v.identity)
    }

    /// Checks the format, the signature and the time-independent claims of `token`.
    fn verify_signed(&self, token: &str) -> Result<Verified, AuthError> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed("expected three segments"));
        };
        let header: Header = decode_json(h).ok_or(AuthError::Malformed("header"))?;
        if header.alg != "EdDSA" {
            return Err(AuthError::Malformed("unsupported alg"));
        }
        let key = self.keys.get(&header.kid).ok_or(AuthError::UnknownKey)?;
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| AuthError::Malformed("signature encoding"))?;
        let signing_input_len = h.len() + 1 + c.len();
        let signing_input = &token.as_bytes()[..signing_input_len];
        UnparsedPublicKey::new(&ED25519, key)
            .verify(signing_input, &sig)
            .map_err(|_| AuthError::BadSignature)?;
        let claims: Claims = decode_json(c).ok_or(AuthError::Malformed("claims"))?;
        if claims.iss != self.issuer {
            return Err(AuthError::WrongIssuer);
        }
        if claims.agency.is_empty() || claims.sub.is_empty() {
            return Err(AuthError::Malformed("agency and sub are required"));
        }
        Ok(Verified {
            exp: claims.exp,
            nbf: claims.nbf,
            identity: Identity {
                agency: claims.agency,
                actor: claims.sub,
                roles: claims.roles,
                method: AuthMethod::Token,
                person: claims.person.filter(|p| !p.is_empty()),
            },
        })
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(segment: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Seconds since the Unix epoch by this process's clock (token expiry only; domain clocks read
/// the database's time).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Builds claims valid for `ttl_secs` from now.
pub fn claims(issuer: &str, agency: &str, actor: &str, roles: &[&str], ttl_secs: i64) -> Claims {
    let now = unix_now();
    Claims {
        iss: issuer.to_string(),
        sub: actor.to_string(),
        agency: agency.to_string(),
        roles: roles.iter().map(|r| (*r).to_string()).collect(),
        iat: now,
        exp: now + ttl_secs,
        nbf: None,
        jti: Some(uuid::Uuid::new_v4().to_string()),
        person: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (SigningKey, Verifier) {
        let key = SigningKey::generate("k1").expect("key");
        let file = PublicKeyFile {
            keys: vec![key.public_entry()],
        };
        let v = Verifier::new("fengqiao-test", &file).expect("verifier");
        (key, v)
    }

    #[test]
    fn valid_token_yields_identity() {
        let (key, v) = setup();
        let t = key.sign(&claims(
            "fengqiao-test",
            "agencies/a",
            "officer-1",
            &["r1"],
            60,
        ));
        let id = v.verify(&t, unix_now()).expect("valid");
        assert_eq!(id.agency, "agencies/a");
        assert_eq!(id.actor, "officer-1");
        assert!(id.has_role("r1"));
        assert!(!id.has_role("r2"));
    }

    #[test]
    fn a_remembered_token_is_still_checked_for_expiry_and_not_before() {
        let (key, v) = setup();
        let mut c = claims("fengqiao-test", "agencies/a", "officer-1", &["r1"], 60);
        let now = unix_now();
        c.nbf = Some(now);
        let t = key.sign(&c);
        assert!(v.verify(&t, now).is_ok());
        assert!(v.verified.lock().expect("lock").contains_key(&t));
        // Same token, later: expired even though its signature was verified before.
        assert!(matches!(
            v.verify(&t, now + 60 + 31),
            Err(AuthError::Expired)
        ));
        assert!(matches!(
            v.verify(&t, now - 31),
            Err(AuthError::NotYetValid)
        ));
        assert!(v.verify(&t, now + 1).is_ok());
        // A changed signature is another token: verified afresh, and refused.
        let mut bad = t.clone();
        let last = bad.pop().expect("non-empty");
        bad.push(if last == 'A' { 'B' } else { 'A' });
        assert!(v.verify(&bad, now).is_err());
        // Refusals are not remembered.
        assert!(!v.verified.lock().expect("lock").contains_key(&bad));
    }

    #[test]
    fn the_verified_cache_is_bounded() {
        let (key, v) = setup();
        for i in 0..(VERIFIED_CACHE + 10) {
            let t = key.sign(&claims(
                "fengqiao-test",
                "agencies/a",
                &format!("o{i}"),
                &[],
                60,
            ));
            v.verify(&t, unix_now()).expect("valid");
        }
        assert!(v.verified.lock().expect("lock").len() <= VERIFIED_CACHE);
    }

    #[test]
    fn expiry_leeway_is_five_seconds() {
        let (key, v) = setup();
        let now = unix_now();
        let at = |exp: i64| Claims {
            exp,
            ..claims("fengqiao-test", "agencies/a", "o", &[], 60)
        };
        // Accepted up to exp + 5 s, refused from exp + 6 s (and 30 s, the old leeway).
        assert!(
            v.verify(&key.sign(&at(now - TOKEN_LEEWAY_SECS)), now)
                .is_ok()
        );
        for late in [TOKEN_LEEWAY_SECS + 1, 30] {
            assert_eq!(
                v.verify(&key.sign(&at(now - late)), now),
                Err(AuthError::Expired),
                "{late} s after exp"
            );
        }
        // The same token, remembered as verified, expires on time too.
        let t = key.sign(&at(now));
        assert!(v.verify(&t, now + TOKEN_LEEWAY_SECS).is_ok());
        assert_eq!(
            v.verify(&t, now + TOKEN_LEEWAY_SECS + 1),
            Err(AuthError::Expired)
        );
        let nbf = Claims {
            nbf: Some(now + TOKEN_LEEWAY_SECS + 1),
            ..at(now + 60)
        };
        assert_eq!(v.verify(&key.sign(&nbf), now), Err(AuthError::NotYetValid));
    }

    #[test]
    fn refusals() {
        let (key, v) = setup();
        let other = SigningKey::generate("k1").expect("key");
        let good = claims("fengqiao-test", "agencies/a", "o", &[], 60);
        let now = unix_now();

        let expired = Claims {
            exp: now - 3600,
            ..good.clone()
        };
        assert_eq!(v.verify(&key.sign(&expired), now), Err(AuthError::Expired));

        let future = Claims {
            nbf: Some(now + 3600),
            ..good.clone()
        };
        assert_eq!(
            v.verify(&key.sign(&future), now),
            Err(AuthError::NotYetValid)
        );

        let wrong_iss = Claims {
            iss: "someone-else".into(),
            ..good.clone()
        };
        assert_eq!(
            v.verify(&key.sign(&wrong_iss), now),
            Err(AuthError::WrongIssuer)
        );

        // Same kid, different key: the signature must not verify.
        assert_eq!(
            v.verify(&other.sign(&good), now),
            Err(AuthError::BadSignature)
        );

        let unknown = SigningKey::generate("k2").expect("key");
        assert_eq!(
            v.verify(&unknown.sign(&good), now),
            Err(AuthError::UnknownKey)
        );

        // Tampered claims with the original signature.
        let t = key.sign(&good);
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Claims {
                agency: "agencies/b".into(),
                ..good.clone()
            })
            .expect("json"),
        );
        parts[1] = &forged;
        assert_eq!(
            v.verify(&parts.join("."), now),
            Err(AuthError::BadSignature)
        );

        assert!(matches!(v.verify("abc", now), Err(AuthError::Malformed(_))));
        assert!(matches!(
            v.verify("a.b.c", now),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn key_files_round_trip() {
        let dir = std::env::temp_dir().join(format!("fq-key-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let key = SigningKey::generate("dev").expect("key");
        key.save(&dir.join("k.json")).expect("save");
        let back = SigningKey::load(&dir.join("k.json")).expect("load");
        let pubs = PublicKeyFile {
            keys: vec![key.public_entry()],
        };
        pubs.save(&dir.join("p.json")).expect("save pub");
        let v = Verifier::new(
            "i",
            &PublicKeyFile::load(&dir.join("p.json")).expect("load"),
        )
        .expect("verifier");
        let t = back.sign(&claims("i", "agencies/x", "y", &[], 60));
        assert!(v.verify(&t, unix_now()).is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }
}
