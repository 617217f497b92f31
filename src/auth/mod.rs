//! Authentication: HS256 JWTs for browsers, hashed API keys for agents
//! (SPEC sections 3.3 and 5).
//!
//! Tokens are signed and verified by the `jsonwebtoken` crate (base64url,
//! JSON, the signature), through a crypto provider of ours that knows HS256
//! only ([`hs256`]: `hmac` + `sha2`). What a token must say is ours to check
//! ([`claims_from`] and the time checks in [`JwtVerifier::verify`]): the
//! crate reads the system clock (ours is passed in, so tests pin it), refuses
//! float NumericDates (RFC 7519 allows them) and accepts a token for the
//! whole second `exp + leeway` (ours stops there).
//!
//! Invariants:
//! - Only `alg: "HS256"` is accepted. The algorithm is read from the header and
//!   checked *before* the token reaches the crate, so `none`, `HS384`,
//!   `RS256`, a missing `alg` or a `crit` header never reach the MAC (and the
//!   provider could not compute another algorithm anyway).
//! - Signatures are compared in constant time (`hmac`'s `verify_slice`). An
//!   API key is hashed before anything looks at it; its digest finds the
//!   candidate entry, whose stored hash is compared with `subtle` in constant
//!   time (see [`ApiKeys::check`]).
//! - Segments are strict base64url without padding; anything else is
//!   `Malformed`. Tokens longer than [`MAX_TOKEN_LEN`] are refused unread.
//! - `exp` is required; `exp`, `nbf` and `iat` are checked with the verifier's
//!   leeway (default [`DEFAULT_LEEWAY`]). Numeric claims may be JSON integers
//!   or floats; floats are truncated to whole seconds.
//! - API keys are never stored in clear: config holds the lowercase hex
//!   SHA-256 of the key, and an agent's default `server_id` is a UUID v5 of
//!   that hash in [`DOCKWIRE_NAMESPACE`], so it is stable across restarts.

pub mod login;
pub mod users;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Hmac;
#[cfg(test)]
use hmac::{KeyInit, Mac};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// Longest token accepted, in bytes (the whole compact serialization).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// Shortest JWT secret accepted by [`load_secret`], in bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// Secrets shorter than this are accepted with a warning (RFC 7518 §3.2 asks
/// for a key at least as long as the hash output).
pub const RECOMMENDED_SECRET_LEN: usize = 32;

/// Largest secret file read by [`load_secret`]; a bigger file is a mistake.
pub const MAX_SECRET_FILE_LEN: u64 = 64 * 1024;

/// Prefix of every generated agent key, so a leaked key is recognisable.
pub const API_KEY_PREFIX: &str = "dwk_";

/// Namespace for dockwire's UUID v5 identifiers (agent server ids).
pub const DOCKWIRE_NAMESPACE: Uuid = Uuid::from_u128(0x1aa755ba_615e_4e2c_8bcd_ac3bcd275ec8);

/// What a browser may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Read-only: state, logs, metrics.
    Viewer,
    /// Viewer plus `docker_command` and `command`.
    Admin,
}

impl Role {
    /// Parses the `role` claim value (exact, lowercase).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Self::Viewer),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Admin => "admin",
        }
    }

    pub fn is_admin(self) -> bool {
        self == Self::Admin
    }
}

impl FromStr for Role {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| AuthError::BadRole(s.to_owned()))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The claims of a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    /// `Viewer` when the token has no `role` claim.
    pub role: Role,
    pub exp: u64,
    pub nbf: Option<u64>,
    pub iat: Option<u64>,
}

/// Everything that can go wrong in this module.
///
/// The token variants (`Malformed` .. `BadClaim`) are per-connection and never
/// fatal; the socket that sent the token is refused. `SecretFile`,
/// `SecretTooShort`, `SecretTooLong` and `BadKeyHash` come from configuration
/// and are fatal at startup.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("could not parse token: {0}")]
    Malformed(&'static str),
    #[error("could not accept token algorithm {0:?}: only HS256 is accepted")]
    BadAlgorithm(String),
    #[error("could not accept token header: {0}")]
    BadHeader(&'static str),
    #[error("could not verify token signature")]
    BadSignature,
    #[error("could not accept token: expired")]
    Expired,
    #[error("could not accept token: not valid yet")]
    NotYetValid,
    #[error("could not accept token: no exp claim")]
    MissingExp,
    #[error("could not accept token role {0:?}: expected \"viewer\" or \"admin\"")]
    BadRole(String),
    #[error("could not accept token claim {0:?}: missing or of the wrong type")]
    BadClaim(&'static str),
    /// The cause is in the message and deliberately not a `source`: error
    /// chains (`{:#}`) would print it twice.
    #[error(
        "could not read JWT secret {path}: {error}{}",
        missing_hint(
            error,
            "; create it with 32 random bytes, e.g. \
         `head -c 32 /dev/urandom > FILE && chmod 600 FILE`"
        )
    )]
    SecretFile {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("could not use JWT secret {path}: {len} bytes, at least {MIN_SECRET_LEN} needed")]
    SecretTooShort { path: PathBuf, len: usize },
    #[error("could not use JWT secret {path}: larger than {MAX_SECRET_FILE_LEN} bytes")]
    SecretTooLong { path: PathBuf },
    #[error("could not parse key_sha256 {0:?}: expected 64 hex digits")]
    BadKeyHash(String),
    #[error("could not sign token: {0}")]
    Sign(String),
}

/// `hint` when `e` says the file does not exist, else nothing.
#[must_use]
pub fn missing_hint(e: &std::io::Error, hint: &'static str) -> &'static str {
    if e.kind() == std::io::ErrorKind::NotFound {
        hint
    } else {
        ""
    }
}

impl AuthError {
    /// A stable short label, for Prometheus label values and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::BadAlgorithm(_) => "bad_alg",
            Self::BadHeader(_) => "bad_header",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::MissingExp => "missing_exp",
            Self::BadRole(_) => "bad_role",
            Self::BadClaim(_) => "bad_claim",
            Self::SecretFile { .. } | Self::SecretTooShort { .. } | Self::SecretTooLong { .. } => {
                "secret"
            }
            Self::BadKeyHash(_) => "bad_key_hash",
            Self::Sign(_) => "sign",
        }
    }
}

/// Verifies HS256 tokens against one shared secret.
#[derive(Clone)]
pub struct JwtVerifier {
    /// `None` only for an empty secret (which then verifies nothing); the
    /// config never makes one.
    key: Option<jsonwebtoken::DecodingKey>,
    leeway: u64,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.debug_struct("JwtVerifier")
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// A verifier with [`DEFAULT_LEEWAY`].
    pub fn new(secret: Vec<u8>) -> Self {
        hs256::install();
        Self {
            key: jsonwebtoken::DecodingKey::from_secret(&secret).ok(),
            leeway: DEFAULT_LEEWAY.as_secs(),
        }
    }

    /// Replaces the clock-skew tolerance (whole seconds are used).
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway.as_secs();
        self
    }

    /// Checks `token` at time `now_unix` (seconds since the epoch).
    ///
    /// # Errors
    /// One [`AuthError`] token variant saying why the token is refused.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed("longer than 8 KiB"));
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed(
                "expected three dot-separated segments",
            ));
        };

        let header = decode_json_object(header_b64, "header")?;
        match header.get("alg") {
            Some(Value::String(alg)) if alg == "HS256" => {}
            Some(Value::String(alg)) => return Err(AuthError::BadAlgorithm(alg.clone())),
            Some(other) => return Err(AuthError::BadAlgorithm(other.to_string())),
            None => return Err(AuthError::BadAlgorithm("(missing)".to_owned())),
        }
        // RFC 7515 §4.1.11: extensions we do not understand must be refused.
        if header.contains_key("crit") {
            return Err(AuthError::BadHeader("crit extensions are not supported"));
        }
        let key = self.key.as_ref().ok_or(AuthError::BadSignature)?;
        // The signature, then the payload as a JSON object; no claim checks
        // (ours follow), so the crate's clock is never read.
        let payload = jsonwebtoken::decode::<Map<String, Value>>(token, key, &hs256::VALIDATION)
            .map_err(from_jwt_error)?
            .claims;
        let claims = claims_from(&payload)?;
        let leeway = self.leeway;
        if now_unix >= claims.exp.saturating_add(leeway) {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = claims.nbf
            && now_unix.saturating_add(leeway) < nbf
        {
            return Err(AuthError::NotYetValid);
        }
        // An `iat` in the future (beyond the skew) means a broken or forged clock.
        if let Some(iat) = claims.iat
            && now_unix.saturating_add(leeway) < iat
        {
            return Err(AuthError::NotYetValid);
        }
        Ok(claims)
    }
}

/// What the crate's refusals mean here (the header was checked before).
fn from_jwt_error(e: jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidSignature => AuthError::BadSignature,
        K::Base64(_) => AuthError::Malformed("a segment is not base64url without padding"),
        K::Json(_) | K::Utf8(_) => AuthError::Malformed("payload is not a JSON object"),
        K::InvalidAlgorithm | K::InvalidAlgorithmName | K::UnsupportedAlgorithm => {
            AuthError::BadAlgorithm("(refused by the verifier)".to_owned())
        }
        K::InvalidToken => AuthError::BadHeader("a header parameter is not supported"),
        _ => AuthError::Malformed("refused by the JWT decoder"),
    }
}

/// The crypto provider `jsonwebtoken` uses here: HS256 and nothing else.
mod hs256 {
    use std::sync::LazyLock;

    use hmac::{KeyInit, Mac};
    use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
    use jsonwebtoken::errors::{ErrorKind, Result};
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};

    use super::HmacSha256;

    /// The crate checks the signature and decodes; the claims are checked
    /// by the caller (`exp` is required there, with its own boundary).
    pub static VALIDATION: LazyLock<Validation> = LazyLock::new(|| {
        let mut v = Validation::new(Algorithm::HS256);
        v.required_spec_claims.clear();
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        v.leeway = 0;
        v
    });

    static PROVIDER: CryptoProvider = CryptoProvider {
        signer_factory: signer,
        verifier_factory: verifier,
        // JWK helpers: never called (no JWKs here).
        key_utils: KeyUtils::new_unimplemented(),
    };

    /// Makes [`PROVIDER`] the process's provider (once; later calls and a
    /// provider installed by someone else first are fine: HS256 is checked
    /// before any token reaches it).
    pub fn install() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let _ = CryptoProvider::install_default(&PROVIDER);
        });
    }

    fn mac(alg: Algorithm, key: &[u8]) -> Result<HmacSha256> {
        if alg != Algorithm::HS256 {
            return Err(ErrorKind::UnsupportedAlgorithm.into());
        }
        HmacSha256::new_from_slice(key).map_err(|_| ErrorKind::InvalidKeyFormat.into())
    }

    struct Hs256(HmacSha256);

    impl signature::Signer<Vec<u8>> for Hs256 {
        fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
            let mut m = self.0.clone();
            m.update(msg);
            Ok(m.finalize().into_bytes().to_vec())
        }
    }

    impl signature::Verifier<Vec<u8>> for Hs256 {
        fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> std::result::Result<(), signature::Error> {
            let mut m = self.0.clone();
            m.update(msg);
            // Constant-time comparison.
            m.verify_slice(sig).map_err(|_| signature::Error::new())
        }
    }

    impl JwtSigner for Hs256 {
        fn algorithm(&self) -> Algorithm {
            Algorithm::HS256
        }
    }

    impl JwtVerifier for Hs256 {
        fn algorithm(&self) -> Algorithm {
            Algorithm::HS256
        }
    }

    fn signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
        Ok(Box::new(Hs256(mac(*alg, key.as_bytes())?)))
    }

    fn verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
        Ok(Box::new(Hs256(mac(*alg, key.try_get_as_bytes()?)?)))
    }
}

fn decode_json_object(segment: &str, what: &'static str) -> Result<Map<String, Value>, AuthError> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).map_err(|_| {
        AuthError::Malformed(if what == "header" {
            "header is not base64url without padding"
        } else {
            "payload is not base64url without padding"
        })
    })?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(AuthError::Malformed(if what == "header" {
            "header is not a JSON object"
        } else {
            "payload is not a JSON object"
        })),
    }
}

/// A NumericDate (RFC 7519 §2): a non-negative integer or float of seconds.
fn numeric_date(map: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, AuthError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(v) = n.as_u64() {
                return Ok(Some(v));
            }
            match n.as_f64() {
                // [0, 2^64): NaN and infinities fall outside, so `as` cannot saturate.
                Some(f) if (0.0..18_446_744_073_709_551_616.0).contains(&f) => Ok(Some(f as u64)),
                _ => Err(AuthError::BadClaim(name)),
            }
        }
        Some(_) => Err(AuthError::BadClaim(name)),
    }
}

fn claims_from(map: &Map<String, Value>) -> Result<Claims, AuthError> {
    let exp = numeric_date(map, "exp")?.ok_or(AuthError::MissingExp)?;
    let nbf = numeric_date(map, "nbf")?;
    let iat = numeric_date(map, "iat")?;
    let sub = match map.get("sub") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(AuthError::BadClaim("sub")),
    };
    let role = match map.get("role") {
        None | Some(Value::Null) => Role::Viewer,
        Some(Value::String(s)) => s.parse()?,
        Some(other) => return Err(AuthError::BadRole(other.to_string())),
    };
    Ok(Claims {
        sub,
        role,
        exp,
        nbf,
        iat,
    })
}

/// Makes an HS256 token with claims `sub`, `role`, `iat` = `now_unix` and
/// `exp` = `now_unix` + `ttl` (whole seconds).
///
/// # Errors
/// `Sign` when the secret is empty (the config never has one).
pub fn sign_token(
    secret: &[u8],
    sub: &str,
    role: Role,
    ttl: Duration,
    now_unix: u64,
) -> Result<String, AuthError> {
    hs256::install();
    let claims = serde_json::json!({
        "sub": sub,
        "role": role.as_str(),
        "iat": now_unix,
        "exp": now_unix.saturating_add(ttl.as_secs()),
    });
    let key = jsonwebtoken::EncodingKey::from_secret(secret)
        .map_err(|e| AuthError::Sign(e.to_string()))?;
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| AuthError::Sign(e.to_string()))
}

/// Reads a JWT secret file. Trailing `\n` / `\r\n` are removed (editors add
/// them); everything else, including inner whitespace, is part of the secret.
///
/// # Errors
/// `SecretFile` when the file cannot be read, `SecretTooLong` past
/// [`MAX_SECRET_FILE_LEN`], `SecretTooShort` under [`MIN_SECRET_LEN`] bytes.
pub fn load_secret(path: &Path) -> Result<Vec<u8>, AuthError> {
    let io_err = |error| AuthError::SecretFile {
        path: path.to_owned(),
        error,
    };
    let file = std::fs::File::open(path).map_err(io_err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = file.metadata()
            && meta.permissions().mode() & 0o007 != 0
        {
            // Group-readable is how a packaged daemon's user reads a file
            // root wrote (root:dockwire 640); readable by everyone is not.
            log::warn!(
                "JWT secret {} is readable by every user; chmod o-rwx it",
                path.display()
            );
        }
    }
    let mut secret = Vec::new();
    file.take(MAX_SECRET_FILE_LEN + 1)
        .read_to_end(&mut secret)
        .map_err(io_err)?;
    if secret.len() as u64 > MAX_SECRET_FILE_LEN {
        return Err(AuthError::SecretTooLong {
            path: path.to_owned(),
        });
    }
    while matches!(secret.last(), Some(b'\n' | b'\r')) {
        secret.pop();
    }
    if secret.len() < MIN_SECRET_LEN {
        return Err(AuthError::SecretTooShort {
            path: path.to_owned(),
            len: secret.len(),
        });
    }
    if secret.len() < RECOMMENDED_SECRET_LEN {
        log::warn!(
            "JWT secret {} is only {} bytes; {} or more are recommended",
            path.display(),
            secret.len(),
            RECOMMENDED_SECRET_LEN
        );
    }
    Ok(secret)
}

/// A new agent key: [`API_KEY_PREFIX`] then 32 random bytes in base64url
/// (43 characters), from the thread-local CSPRNG seeded by the OS.
pub fn generate_api_key() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes[..]);
    let mut key = String::with_capacity(API_KEY_PREFIX.len() + 43);
    key.push_str(API_KEY_PREFIX);
    URL_SAFE_NO_PAD.encode_string(bytes, &mut key);
    key
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// The `key_sha256` config value for `key`: lowercase hex SHA-256 of its bytes.
pub fn hash_api_key(key: &str) -> String {
    to_hex(&sha256(key.as_bytes()))
}

/// Parses a `key_sha256` value: 64 hex digits, either case, surrounding
/// whitespace ignored.
///
/// # Errors
/// `BadKeyHash` for any other input.
pub fn parse_key_hash(hex: &str) -> Result<[u8; 32], AuthError> {
    let bad = || AuthError::BadKeyHash(hex.chars().take(80).collect());
    let digits = hex.trim().as_bytes();
    if digits.len() != 64 {
        return Err(bad());
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        let (Some(hi), Some(lo)) = (nibble(pair[0]), nibble(pair[1])) else {
            return Err(bad());
        };
        out[i] = hi << 4 | lo;
    }
    Ok(out)
}

/// The default `server_id` of an agent: UUID v5 of its key hash in
/// [`DOCKWIRE_NAMESPACE`], hyphenated lowercase.
pub fn server_id_for_key_hash(hash: &[u8; 32]) -> String {
    Uuid::new_v5(&DOCKWIRE_NAMESPACE, hash).to_string()
}

/// One configured agent key.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentKey {
    pub name: String,
    pub key_sha256: [u8; 32],
    pub server_id: String,
}

impl fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentKey")
            .field("name", &self.name)
            .field("key_sha256", &to_hex(&self.key_sha256))
            .field("server_id", &self.server_id)
            .finish()
    }
}

/// The configured agent keys.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    entries: Vec<AgentKey>,
    /// SHA-256 of a key -> its entry: one lookup per auth, whatever the
    /// number of agents (a linear scan made N agents connecting cost N²).
    by_hash: std::collections::HashMap<[u8; 32], usize>,
}

impl ApiKeys {
    /// Keeps `entries` in order; when two share a hash the first wins (warned).
    pub fn new(entries: Vec<AgentKey>) -> Self {
        let mut by_hash = std::collections::HashMap::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            if let Some(&first) = by_hash.get(&e.key_sha256) {
                let first: &AgentKey = &entries[first];
                log::warn!(
                    "agent {:?} has the same key as agent {:?}; {:?} will be used",
                    e.name,
                    first.name,
                    first.name
                );
            } else {
                by_hash.insert(e.key_sha256, i);
            }
        }
        Self { entries, by_hash }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn entries(&self) -> &[AgentKey] {
        &self.entries
    }

    /// The agent whose key is `presented_key`, if any.
    ///
    /// The key itself never meets a variable-time comparison: it is hashed
    /// first, and only its SHA-256 digest selects a candidate entry (timing
    /// of that lookup can at most hint at digest bits, which say nothing
    /// usable about a key, SHA-256 being preimage resistant). The candidate's
    /// stored hash is then compared with the digest in constant time.
    pub fn check(&self, presented_key: &str) -> Option<&AgentKey> {
        let hash = sha256(presented_key.as_bytes());
        let entry = self.entries.get(*self.by_hash.get(&hash)?)?;
        bool::from(entry.key_sha256.ct_eq(&hash)).then_some(entry)
    }
}

/// What `dockwire keygen` prints for a freshly generated key.
pub fn keygen_output() -> String {
    keygen_text(&generate_api_key())
}

/// What `dockwire keygen` prints for `key`: the key, then a config snippet
/// with its hash and the `server_id` the agent will get.
pub fn keygen_text(key: &str) -> String {
    format!(
        "# Agent API key (shown once; put it in the agent's --api-key-file):\n\
         {key}\n\
         \n\
         # Add this to the hub's config.\n\
         {}",
        agent_lines(key, "agent")
    )
}

/// The hub's `[[agents]]` lines for `key` named `name` (its hash, never the
/// key), with the `server_id` the agent will get.
pub fn agent_lines(key: &str, name: &str) -> String {
    let hash = sha256(key.as_bytes());
    format!(
        "# The agent's server_id will be {server_id} (set server_id = \"...\" to choose another).\n\
         [[agents]]\n\
         name = {name}\n\
         key_sha256 = \"{hex}\"\n",
        server_id = server_id_for_key_hash(&hash),
        name = toml::Value::String(name.to_owned()),
        hex = to_hex(&hash),
    )
}

#[cfg(test)]
mod tests;
