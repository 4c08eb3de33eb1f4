//! API keys: their format, scopes, the secret's hash, and reading them from an
//! `Authorization` value (ADR 024). Pure functions; the server verifies against the store.
//!
//! A key has a public id, `twk_` and 16 hex digits (64 random bits, the store's lookup
//! key), and a secret, `tws_` and 64 hex digits (256 random bits). The whole key, as a
//! client holds it, is `<id>.<secret>`. Only the SHA-256 of the secret is stored: a secret
//! with 256 random bits cannot be guessed from its hash, so no slow KDF is needed.

use std::fmt;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The public id's prefix.
pub const KEY_ID_PREFIX: &str = "twk_";
/// The secret's prefix.
pub const SECRET_PREFIX: &str = "tws_";
const ID_HEX: usize = 16;
const SECRET_HEX: usize = 64;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyScope {
    /// Write traces: OTLP export, create, append, patch.
    Ingest,
    /// Read traces, events and live streams.
    Read,
    /// Everything, plus deletes, cleanup, key management, `/metrics` and `/readyz`.
    Admin,
}

impl KeyScope {
    /// Every scope, in order.
    pub const ALL: [KeyScope; 3] = [KeyScope::Ingest, KeyScope::Read, KeyScope::Admin];

    /// Its lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyScope::Ingest => "ingest",
            KeyScope::Read => "read",
            KeyScope::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        match self {
            KeyScope::Ingest => 1,
            KeyScope::Read => 2,
            KeyScope::Admin => 4,
        }
    }
}

impl std::str::FromStr for KeyScope {
    type Err = ApiKeyError;

    fn from_str(s: &str) -> Result<KeyScope, ApiKeyError> {
        KeyScope::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ApiKeyError::UnknownScope(s.to_string()))
    }
}

/// A set of scopes. `admin` grants every scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct KeyScopes(u8);

impl KeyScopes {
    /// The set of these scopes.
    pub fn of(scopes: &[KeyScope]) -> KeyScopes {
        KeyScopes(scopes.iter().fold(0, |acc, s| acc | s.bit()))
    }

    /// Whether a key with these scopes may act in `scope`.
    pub fn allows(self, scope: KeyScope) -> bool {
        self.0 & (scope.bit() | KeyScope::Admin.bit()) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The scopes it holds, in order.
    pub fn to_vec(self) -> Vec<KeyScope> {
        KeyScope::ALL
            .into_iter()
            .filter(|s| self.0 & s.bit() != 0)
            .collect()
    }

    /// Comma-separated names (`ingest,read`), as stored.
    pub fn to_csv(self) -> String {
        self.to_vec()
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The inverse of [`KeyScopes::to_csv`]; an empty string is the empty set.
    pub fn from_csv(s: &str) -> Result<KeyScopes, ApiKeyError> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            out.push(part.parse()?);
        }
        Ok(KeyScopes::of(&out))
    }
}

/// Why a credential or a scope could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    /// The `Authorization` value is neither `Bearer <key>` nor `Basic <base64>`.
    #[error("the Authorization header must be `Bearer <key>` or `Basic <base64 of id:secret>`")]
    Scheme,
    /// The key is not of the form `twk_<16 hex>.tws_<64 hex>`.
    #[error("malformed API key: expected twk_<16 hex digits>.tws_<64 hex digits>")]
    Malformed,
    /// A scope name that does not exist.
    #[error("unknown scope {0:?}: use ingest, read or admin")]
    UnknownScope(String),
}

/// A key's public id and secret, as a client presented them.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The public id (`twk_…`), the store's lookup key.
    pub key_id: String,
    /// The secret (`tws_…`).
    pub secret: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("key_id", &self.key_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `s` is a well-formed public id.
pub fn is_key_id(s: &str) -> bool {
    s.strip_prefix(KEY_ID_PREFIX)
        .is_some_and(|h| is_lower_hex(h, ID_HEX))
}

fn is_secret(s: &str) -> bool {
    s.strip_prefix(SECRET_PREFIX)
        .is_some_and(|h| is_lower_hex(h, SECRET_HEX))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Credentials {
    /// A new key from 40 random bytes (8 for the id, 32 for the secret).
    pub fn from_random(bytes: [u8; 40]) -> Credentials {
        Credentials {
            key_id: format!("{KEY_ID_PREFIX}{}", hex(&bytes[..8])),
            secret: format!("{SECRET_PREFIX}{}", hex(&bytes[8..])),
        }
    }

    /// A new key from the thread's CSPRNG.
    pub fn generate() -> Credentials {
        Credentials::from_random(rand::random())
    }

    /// The whole key, as the client holds it: `<id>.<secret>`.
    pub fn token(&self) -> String {
        format!("{}.{}", self.key_id, self.secret)
    }

    /// Reads a whole key (`twk_….tws_…`).
    pub fn parse_token(s: &str) -> Result<Credentials, ApiKeyError> {
        let (id, secret) = s.trim().split_once('.').ok_or(ApiKeyError::Malformed)?;
        Credentials::from_parts(id, secret)
    }

    fn from_parts(id: &str, secret: &str) -> Result<Credentials, ApiKeyError> {
        if !is_key_id(id) || !is_secret(secret) {
            return Err(ApiKeyError::Malformed);
        }
        Ok(Credentials {
            key_id: id.to_string(),
            secret: secret.to_string(),
        })
    }

    /// Reads an `Authorization` value: `Bearer <key>`, or `Basic` with the base64 of
    /// `<id>:<secret>` (or `<id>:<whole key>`), as Langfuse clients send a public and a
    /// secret key. The scheme is case-insensitive; spaces or tabs around and between the
    /// parts, a `%20` in place of the space (an exporter that did not decode
    /// `OTEL_EXPORTER_OTLP_HEADERS`), quotes around the key, and base64 with or without
    /// padding (standard or URL-safe alphabet) are all accepted.
    pub fn from_authorization(value: &[u8]) -> Result<Credentials, ApiKeyError> {
        let value = std::str::from_utf8(value).map_err(|_| ApiKeyError::Scheme)?;
        let value = value.trim_matches(|c: char| c.is_ascii_whitespace());
        let (scheme, rest) = match value.find([' ', '\t']) {
            Some(i) => (&value[..i], &value[i..]),
            None => match value.find("%20") {
                Some(i) => (&value[..i], &value[i + 3..]),
                None => return Err(ApiKeyError::Scheme),
            },
        };
        let rest = rest
            .trim_matches(|c: char| c.is_ascii_whitespace())
            .trim_matches('"');
        if scheme.eq_ignore_ascii_case("bearer") {
            return Credentials::parse_token(rest);
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(ApiKeyError::Scheme);
        }
        let unpadded = rest.trim_end_matches('=');
        let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(unpadded)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(unpadded))
            .map_err(|_| ApiKeyError::Malformed)?;
        let decoded = String::from_utf8(decoded).map_err(|_| ApiKeyError::Malformed)?;
        let (user, password) = decoded.split_once(':').ok_or(ApiKeyError::Malformed)?;
        let (user, password) = (user.trim(), password.trim());
        match password.split_once('.') {
            Some((id, secret)) if id == user => Credentials::from_parts(id, secret),
            _ => Credentials::from_parts(user, password),
        }
    }
}

/// The stored form of a secret: the hex SHA-256 of it.
pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Whether `secret` hashes to `stored` (the hex of [`hash_secret`]), compared in constant
/// time so that the time taken says nothing about how much of the hash matched.
pub fn secret_matches(secret: &str, stored: &str) -> bool {
    let ours = hash_secret(secret);
    ours.len() == stored.len() && bool::from(ours.as_bytes().ct_eq(stored.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Credentials {
        Credentials::from_random([7; 40])
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn a_generated_key_reads_back_and_its_hash_verifies() {
        let k = Credentials::generate();
        assert!(is_key_id(&k.key_id));
        let back = Credentials::parse_token(&k.token()).expect("parse");
        assert_eq!(back, k);
        let stored = hash_secret(&k.secret);
        assert!(secret_matches(&k.secret, &stored));
        assert!(!secret_matches(&Credentials::generate().secret, &stored));
        assert_ne!(Credentials::generate(), k, "keys are random");
    }

    #[test]
    fn authorization_variants_exporters_send() {
        let k = key();
        let t = k.token();
        let basic = b64(&format!("{}:{}", k.key_id, k.secret));
        let cases = [
            format!("Bearer {t}"),
            format!("bearer {t}"),
            format!("BEARER   {t}  "),
            format!("  Bearer\t{t}"),
            format!("Bearer%20{t}"),
            format!("Bearer \"{t}\""),
            format!("Basic {basic}"),
            format!("basic {}", basic.trim_end_matches('=')),
            format!("Basic {}", b64(&format!("{}:{t}", k.key_id))),
            format!(
                "Basic {}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(format!("{}:{}", k.key_id, k.secret))
            ),
        ];
        for c in &cases {
            assert_eq!(
                Credentials::from_authorization(c.as_bytes()).as_ref(),
                Ok(&k),
                "{c:?}"
            );
        }
    }

    #[test]
    fn bad_authorization_values_are_refused() {
        let k = key();
        let t = k.token();
        let cases: [(String, ApiKeyError); 7] = [
            (t.clone(), ApiKeyError::Scheme),
            (format!("Token {t}"), ApiKeyError::Scheme),
            ("Bearer".into(), ApiKeyError::Scheme),
            ("Bearer twk_00.tws_00".into(), ApiKeyError::Malformed),
            (format!("Bearer {}", k.secret), ApiKeyError::Malformed),
            ("Basic !!!".into(), ApiKeyError::Malformed),
            (format!("Basic {}", b64(&k.key_id)), ApiKeyError::Malformed),
        ];
        for (c, want) in cases {
            assert_eq!(
                Credentials::from_authorization(c.as_bytes()),
                Err(want),
                "{c:?}"
            );
        }
        assert_eq!(
            Credentials::from_authorization(b"Bearer \xff"),
            Err(ApiKeyError::Scheme)
        );
    }

    #[test]
    fn admin_grants_every_scope_and_scopes_round_trip() {
        let admin = KeyScopes::of(&[KeyScope::Admin]);
        assert!(KeyScope::ALL.iter().all(|s| admin.allows(*s)));
        let ingest = KeyScopes::of(&[KeyScope::Ingest]);
        assert!(ingest.allows(KeyScope::Ingest));
        assert!(!ingest.allows(KeyScope::Read));
        assert!(!ingest.allows(KeyScope::Admin));
        let both = KeyScopes::of(&[KeyScope::Read, KeyScope::Ingest]);
        assert_eq!(both.to_csv(), "ingest,read");
        assert_eq!(KeyScopes::from_csv("ingest,read"), Ok(both));
        assert_eq!(
            KeyScopes::from_csv("ingest,write"),
            Err(ApiKeyError::UnknownScope("write".into()))
        );
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let k = key();
        assert!(!format!("{k:?}").contains(&k.secret));
    }
}
