//! Authentication: HS256 JWTs for browsers, hashed API keys for agents
//! (SPEC sections 3.3 and 5).
//!
//! Invariants:
//! - Only `alg: "HS256"` is accepted. The algorithm is read from the header and
//!   checked *before* the signature, so `none`, `HS384`, `RS256`, a missing
//!   `alg` or a `crit` header never reach the MAC.
//! - Signatures are compared in constant time (`hmac`'s `verify_slice`); API
//!   key hashes with `subtle`, against every configured key, without early exit.
//! - Segments are strict base64url without padding; anything else is
//!   `Malformed`. Tokens longer than [`MAX_TOKEN_LEN`] are refused unread.
//! - `exp` is required; `exp`, `nbf` and `iat` are checked with the verifier's
//!   leeway (default [`DEFAULT_LEEWAY`]). Numeric claims may be JSON integers
//!   or floats; floats are truncated to whole seconds.
//! - API keys are never stored in clear: config holds the lowercase hex
//!   SHA-256 of the key, and an agent's default `server_id` is a UUID v5 of
//!   that hash in [`DOCKWIRE_NAMESPACE`], so it is stable across restarts.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
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
    #[error("could not read JWT secret {path}: {source}")]
    SecretFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not use JWT secret {path}: {len} bytes, at least {MIN_SECRET_LEN} needed")]
    SecretTooShort { path: PathBuf, len: usize },
    #[error("could not use JWT secret {path}: larger than {MAX_SECRET_FILE_LEN} bytes")]
    SecretTooLong { path: PathBuf },
    #[error("could not parse key_sha256 {0:?}: expected 64 hex digits")]
    BadKeyHash(String),
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
        }
    }
}

/// Verifies HS256 tokens against one shared secret.
#[derive(Clone)]
pub struct JwtVerifier {
    /// The MAC already keyed with the secret; cloned per token so the key
    /// schedule is not redone on every verification.
    mac: HmacSha256,
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
        Self {
            mac: keyed_mac(&secret),
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
        let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) =
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

        let signature = URL_SAFE_NO_PAD
            .decode(sig_b64)
            .map_err(|_| AuthError::Malformed("signature is not base64url without padding"))?;
        let signing_input_len = header_b64.len() + 1 + payload_b64.len();
        let mut mac = self.mac.clone();
        mac.update(&token.as_bytes()[..signing_input_len]);
        mac.verify_slice(&signature)
            .map_err(|_| AuthError::BadSignature)?;

        let payload = decode_json_object(payload_b64, "payload")?;
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

fn keyed_mac(secret: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length (long keys are hashed), so this cannot fail.
    HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length")
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
pub fn sign_token(secret: &[u8], sub: &str, role: Role, ttl: Duration, now_unix: u64) -> String {
    let header = br#"{"alg":"HS256","typ":"JWT"}"#;
    let claims = serde_json::json!({
        "sub": sub,
        "role": role.as_str(),
        "iat": now_unix,
        "exp": now_unix.saturating_add(ttl.as_secs()),
    });
    // Serializing a `Value` built from strings and integers cannot fail.
    let payload = serde_json::to_vec(&claims).unwrap_or_default();
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
    let mut mac = keyed_mac(secret);
    mac.update(token.as_bytes());
    let sig = mac.finalize().into_bytes();
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(sig, &mut token);
    token
}

/// Reads a JWT secret file. Trailing `\n` / `\r\n` are removed (editors add
/// them); everything else, including inner whitespace, is part of the secret.
///
/// # Errors
/// `SecretFile` when the file cannot be read, `SecretTooLong` past
/// [`MAX_SECRET_FILE_LEN`], `SecretTooShort` under [`MIN_SECRET_LEN`] bytes.
pub fn load_secret(path: &Path) -> Result<Vec<u8>, AuthError> {
    let io_err = |source| AuthError::SecretFile {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io_err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = file.metadata()
            && meta.permissions().mode() & 0o077 != 0
        {
            log::warn!(
                "JWT secret {} is readable by group or others; chmod 600 it",
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
}

impl ApiKeys {
    /// Keeps `entries` in order; when two share a hash the first wins (warned).
    pub fn new(entries: Vec<AgentKey>) -> Self {
        for (i, e) in entries.iter().enumerate() {
            if let Some(first) = entries[..i].iter().find(|p| p.key_sha256 == e.key_sha256) {
                log::warn!(
                    "agent {:?} has the same key as agent {:?}; {:?} will be used",
                    e.name,
                    first.name,
                    first.name
                );
            }
        }
        Self { entries }
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

    /// The agent whose key is `presented_key`, if any. Every entry is
    /// compared in constant time and the scan never stops early, so timing
    /// does not reveal which entry (if any) matched.
    pub fn check(&self, presented_key: &str) -> Option<&AgentKey> {
        let hash = sha256(presented_key.as_bytes());
        let mut found = Choice::from(0);
        let mut index = 0u64;
        for (i, entry) in self.entries.iter().enumerate() {
            let eq = entry.key_sha256.ct_eq(&hash);
            index.conditional_assign(&(i as u64), eq & !found);
            found |= eq;
        }
        if bool::from(found) {
            self.entries.get(index as usize)
        } else {
            None
        }
    }
}

/// What `dockwire keygen` prints for a freshly generated key.
pub fn keygen_output() -> String {
    keygen_text(&generate_api_key())
}

/// What `dockwire keygen` prints for `key`: the key, then a config snippet
/// with its hash and the `server_id` the agent will get.
pub fn keygen_text(key: &str) -> String {
    let hash = sha256(key.as_bytes());
    format!(
        "# Agent API key (shown once; put it in the agent's --api-key-file):\n\
         {key}\n\
         \n\
         # Add this to the hub's config. The agent's server_id will be {server_id}\n\
         # (set server_id = \"...\" in the entry to choose another).\n\
         [[agents]]\n\
         name = \"agent\"\n\
         key_sha256 = \"{hex}\"\n",
        server_id = server_id_for_key_hash(&hash),
        hex = to_hex(&hash),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD_NO_PAD;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_700_000_000;

    fn b64(data: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(data)
    }

    /// Builds a token by hand with the hmac crate, independent of `sign_token`.
    fn hand_token(secret: &[u8], header: &str, payload: &str) -> String {
        let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let mut mac = HmacSha256::new_from_slice(secret).unwrap();
        mac.update(input.as_bytes());
        format!("{input}.{}", b64(&mac.finalize().into_bytes()))
    }

    /// Signs already-encoded segments as they are.
    fn sign_raw(header_seg: &str, payload_seg: &str) -> String {
        let input = format!("{header_seg}.{payload_seg}");
        let mut mac = HmacSha256::new_from_slice(SECRET).unwrap();
        mac.update(input.as_bytes());
        format!("{input}.{}", b64(&mac.finalize().into_bytes()))
    }

    fn verifier() -> JwtVerifier {
        JwtVerifier::new(SECRET.to_vec())
    }

    fn hs256(payload: &str) -> String {
        hand_token(SECRET, r#"{"alg":"HS256","typ":"JWT"}"#, payload)
    }

    #[test]
    fn round_trip() {
        let t = sign_token(SECRET, "alice", Role::Admin, Duration::from_secs(3600), NOW);
        let c = verifier().verify(&t, NOW + 10).unwrap();
        assert_eq!(
            c,
            Claims {
                sub: "alice".into(),
                role: Role::Admin,
                exp: NOW + 3600,
                nbf: None,
                iat: Some(NOW),
            }
        );
        // Header is exactly what the spec says.
        let header = URL_SAFE_NO_PAD
            .decode(t.split('.').next().unwrap())
            .unwrap();
        assert_eq!(header, br#"{"alg":"HS256","typ":"JWT"}"#);
        // Another secret does not verify it.
        let other = JwtVerifier::new(b"another secret of sufficient len".to_vec());
        assert!(matches!(
            other.verify(&t, NOW),
            Err(AuthError::BadSignature)
        ));
    }

    #[test]
    fn sub_is_escaped() {
        let sub = "a\"b\\c\u{1}é";
        let t = sign_token(SECRET, sub, Role::Viewer, Duration::from_secs(60), NOW);
        assert_eq!(verifier().verify(&t, NOW).unwrap().sub, sub);
    }

    #[test]
    fn hand_made_token_verifies() {
        let t = hs256(r#"{"sub":"bob","exp":1700003600,"nbf":1699999999.5,"iat":1699999999}"#);
        let c = verifier().verify(&t, NOW).unwrap();
        assert_eq!(c.sub, "bob");
        assert_eq!(c.role, Role::Viewer, "missing role is viewer");
        assert_eq!(c.exp, 1_700_003_600);
        assert_eq!(c.nbf, Some(1_699_999_999));
        assert_eq!(c.iat, Some(1_699_999_999));
    }

    #[test]
    fn float_exp_accepted() {
        let t = hs256(r#"{"sub":"x","exp":1700000100.9}"#);
        assert_eq!(verifier().verify(&t, NOW).unwrap().exp, 1_700_000_100);
    }

    #[test]
    fn jwt_io_example_has_no_exp() {
        // The classic jwt.io example (HS256, secret "your-256-bit-secret").
        let t = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
                 eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.\
                 SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
        let v = JwtVerifier::new(b"your-256-bit-secret".to_vec());
        // The signature checks out; only the missing exp stops it.
        assert!(matches!(v.verify(t, NOW), Err(AuthError::MissingExp)));
        // With a wrong secret the signature fails first.
        assert!(matches!(
            verifier().verify(t, NOW),
            Err(AuthError::BadSignature)
        ));
    }

    #[test]
    fn alg_none_refused() {
        let t = format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(br#"{"sub":"x","exp":1800000000,"role":"admin"}"#)
        );
        let e = verifier().verify(&t, NOW).unwrap_err();
        assert!(
            matches!(&e, AuthError::BadAlgorithm(a) if a == "none"),
            "{e:?}"
        );
        assert_eq!(e.kind(), "bad_alg");
        // "None" spelled differently is refused too.
        let t = format!("{}.{}.", b64(br#"{"alg":"NONE"}"#), b64(br#"{"exp":1}"#));
        assert!(matches!(
            verifier().verify(&t, NOW),
            Err(AuthError::BadAlgorithm(_))
        ));
    }

    #[test]
    fn other_algs_refused() {
        let payload = r#"{"sub":"x","exp":1800000000}"#;
        for alg in ["HS384", "RS256", "hs256", "ES256"] {
            let t = hand_token(SECRET, &format!(r#"{{"alg":"{alg}"}}"#), payload);
            let e = verifier().verify(&t, NOW).unwrap_err();
            assert!(
                matches!(&e, AuthError::BadAlgorithm(a) if a == alg),
                "{alg}: {e:?}"
            );
        }
        let t = hand_token(SECRET, r#"{"typ":"JWT"}"#, payload);
        assert!(matches!(
            verifier().verify(&t, NOW),
            Err(AuthError::BadAlgorithm(_))
        ));
        let t = hand_token(SECRET, r#"{"alg":256}"#, payload);
        assert!(matches!(
            verifier().verify(&t, NOW),
            Err(AuthError::BadAlgorithm(_))
        ));
    }

    #[test]
    fn crit_header_refused() {
        let t = hand_token(
            SECRET,
            r#"{"alg":"HS256","crit":["exp"]}"#,
            r#"{"sub":"x","exp":1800000000}"#,
        );
        let e = verifier().verify(&t, NOW).unwrap_err();
        assert!(matches!(e, AuthError::BadHeader(_)), "{e:?}");
        assert_eq!(e.kind(), "bad_header");
    }

    #[test]
    fn tampered_payload_refused() {
        let t = sign_token(SECRET, "alice", Role::Viewer, Duration::from_secs(60), NOW);
        let parts: Vec<&str> = t.split('.').collect();
        let forged = b64(format!(
            r#"{{"sub":"alice","role":"admin","iat":{NOW},"exp":{}}}"#,
            NOW + 60
        )
        .as_bytes());
        let t2 = format!("{}.{}.{}", parts[0], forged, parts[2]);
        let e = verifier().verify(&t2, NOW).unwrap_err();
        assert!(matches!(e, AuthError::BadSignature), "{e:?}");
        assert_eq!(e.kind(), "bad_signature");
    }

    #[test]
    fn tampered_signature_refused() {
        let t = sign_token(SECRET, "alice", Role::Viewer, Duration::from_secs(60), NOW);
        let (input, sig) = t.rsplit_once('.').unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
        raw[31] ^= 1;
        let t2 = format!("{input}.{}", b64(&raw));
        assert!(matches!(
            verifier().verify(&t2, NOW),
            Err(AuthError::BadSignature)
        ));
        // A truncated (but valid base64) signature is a bad signature too.
        let t3 = format!("{input}.{}", b64(&raw[..16]));
        assert!(matches!(
            verifier().verify(&t3, NOW),
            Err(AuthError::BadSignature)
        ));
        // An empty signature with alg HS256.
        let t4 = format!("{input}.");
        assert!(matches!(
            verifier().verify(&t4, NOW),
            Err(AuthError::BadSignature)
        ));
    }

    #[test]
    fn expiry_with_leeway() {
        let t = hs256(&format!(r#"{{"sub":"x","exp":{NOW}}}"#));
        let v = verifier();
        // Within the 30 s leeway.
        assert!(v.verify(&t, NOW).is_ok());
        assert!(v.verify(&t, NOW + 29).is_ok());
        // At and beyond it.
        let e = v.verify(&t, NOW + 30).unwrap_err();
        assert!(matches!(e, AuthError::Expired), "{e:?}");
        assert_eq!(e.kind(), "expired");
        assert!(matches!(v.verify(&t, NOW + 1000), Err(AuthError::Expired)));
        // Without leeway, exp itself is already too late (RFC 7519 §4.1.4).
        let strict = verifier().with_leeway(Duration::ZERO);
        assert!(strict.verify(&t, NOW - 1).is_ok());
        assert!(matches!(strict.verify(&t, NOW), Err(AuthError::Expired)));
    }

    #[test]
    fn nbf_in_future_refused() {
        let t = hs256(&format!(
            r#"{{"sub":"x","exp":{},"nbf":{}}}"#,
            NOW + 3600,
            NOW + 100
        ));
        let e = verifier().verify(&t, NOW).unwrap_err();
        assert!(matches!(e, AuthError::NotYetValid), "{e:?}");
        assert_eq!(e.kind(), "not_yet_valid");
        // Inside the leeway it is fine.
        assert!(verifier().verify(&t, NOW + 70).is_ok());
        // iat far in the future is refused the same way.
        let t = hs256(&format!(
            r#"{{"sub":"x","exp":{},"iat":{}}}"#,
            NOW + 3600,
            NOW + 100
        ));
        assert!(matches!(
            verifier().verify(&t, NOW),
            Err(AuthError::NotYetValid)
        ));
    }

    #[test]
    fn missing_exp_refused() {
        let t = hs256(r#"{"sub":"x","role":"admin"}"#);
        let e = verifier().verify(&t, NOW).unwrap_err();
        assert!(matches!(e, AuthError::MissingExp), "{e:?}");
        assert_eq!(e.kind(), "missing_exp");
        let t = hs256(r#"{"sub":"x","exp":null}"#);
        assert!(matches!(
            verifier().verify(&t, NOW),
            Err(AuthError::MissingExp)
        ));
    }

    #[test]
    fn bad_claims_refused() {
        for (payload, want) in [
            (r#"{"sub":"x","exp":"1800000000"}"#, "exp"),
            (r#"{"sub":"x","exp":-5}"#, "exp"),
            (r#"{"sub":"x","exp":1800000000,"nbf":true}"#, "nbf"),
            (r#"{"exp":1800000000}"#, "sub"),
            (r#"{"sub":7,"exp":1800000000}"#, "sub"),
        ] {
            let e = verifier().verify(&hs256(payload), NOW).unwrap_err();
            assert!(
                matches!(e, AuthError::BadClaim(n) if n == want),
                "{payload}: {e:?}"
            );
        }
    }

    #[test]
    fn roles() {
        let t = hs256(r#"{"sub":"x","exp":1800000000,"role":"root"}"#);
        let e = verifier().verify(&t, NOW).unwrap_err();
        assert!(matches!(&e, AuthError::BadRole(r) if r == "root"), "{e:?}");
        assert_eq!(e.kind(), "bad_role");
        let t = hs256(r#"{"sub":"x","exp":1800000000,"role":1}"#);
        assert!(matches!(
            verifier().verify(&t, NOW),
            Err(AuthError::BadRole(_))
        ));
        let t = hs256(r#"{"sub":"x","exp":1800000000,"role":"admin"}"#);
        assert_eq!(verifier().verify(&t, NOW).unwrap().role, Role::Admin);
        assert_eq!("viewer".parse::<Role>().unwrap(), Role::Viewer);
        assert!("Admin".parse::<Role>().is_err());
    }

    #[test]
    fn bad_base64_refused() {
        let good = sign_token(SECRET, "a", Role::Viewer, Duration::from_secs(60), NOW);
        let parts: Vec<&str> = good.split('.').collect();
        let cases = [
            // Standard (not url-safe) alphabet characters, at valid lengths.
            format!("+{}.{}.{}", &parts[0][1..], parts[1], parts[2]),
            format!("{}.{}./{}", parts[0], parts[1], &parts[2][1..]),
            // Padding on the signature (32 bytes -> 43 chars + "=").
            format!("{}.{}.{}=", parts[0], parts[1], parts[2]),
            // Padding on the header.
            format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            // Impossible length (1 mod 4).
            format!("{}.{}.{}", parts[0], parts[1], &parts[2][..41]),
            // Correctly signed payload segments that are not strict base64url:
            // the MAC covers them, so they must fail at decoding, not before.
            sign_raw(parts[0], &format!("{}!", parts[1])),
            sign_raw(parts[0], &format!("{}==", &parts[1][..parts[1].len() - 2])),
            sign_raw(
                parts[0],
                &STANDARD_NO_PAD.encode(br#"{"sub":">>>???","exp":1800000000}"#),
            ),
        ];
        assert!(cases[7].split('.').nth(1).unwrap().contains(['+', '/']));
        for t in &cases {
            let e = verifier().verify(t, NOW).unwrap_err();
            assert!(matches!(e, AuthError::Malformed(_)), "{t}: {e:?}");
            assert_eq!(e.kind(), "malformed");
        }
    }

    #[test]
    fn wrong_segment_count_refused() {
        let good = sign_token(SECRET, "a", Role::Viewer, Duration::from_secs(60), NOW);
        for t in [
            String::new(),
            "abc".to_owned(),
            "a.b".to_owned(),
            format!("{good}."),
            format!("{good}.xyz"),
        ] {
            assert!(
                matches!(verifier().verify(&t, NOW), Err(AuthError::Malformed(_))),
                "{t}"
            );
        }
    }

    #[test]
    fn huge_token_refused() {
        let pad = "a".repeat(MAX_TOKEN_LEN);
        let t = hs256(&format!(r#"{{"sub":"x","exp":1800000000,"pad":"{pad}"}}"#));
        assert!(t.len() > MAX_TOKEN_LEN);
        let e = verifier().verify(&t, NOW).unwrap_err();
        assert!(matches!(e, AuthError::Malformed(_)), "{e:?}");
        // Just under the limit is parsed normally.
        let base = hs256(r#"{"sub":"x","exp":1800000000,"pad":""}"#).len();
        let fill = (MAX_TOKEN_LEN - base) * 3 / 4 - 3;
        let t = hs256(&format!(
            r#"{{"sub":"x","exp":1800000000,"pad":"{}"}}"#,
            "a".repeat(fill)
        ));
        assert!(t.len() <= MAX_TOKEN_LEN, "{}", t.len());
        assert!(verifier().verify(&t, NOW).is_ok());
    }

    #[test]
    fn non_json_segments_refused() {
        let payload = r#"{"sub":"x","exp":1800000000}"#;
        for header in ["not json", "[\"alg\",\"HS256\"]", "\"HS256\"", ""] {
            let t = hand_token(SECRET, header, payload);
            assert!(
                matches!(verifier().verify(&t, NOW), Err(AuthError::Malformed(_))),
                "{header}"
            );
        }
        for payload in ["nope", "[1,2]", "42"] {
            let t = hs256(payload);
            assert!(
                matches!(verifier().verify(&t, NOW), Err(AuthError::Malformed(_))),
                "{payload}"
            );
        }
    }

    #[test]
    fn debug_hides_secret() {
        let v = JwtVerifier::new(b"super-secret-value-0123456789".to_vec());
        assert!(!format!("{v:?}").contains("super-secret"));
    }

    #[test]
    fn api_keys_check() {
        let k1 = generate_api_key();
        let k2 = generate_api_key();
        assert_ne!(k1, k2);
        assert!(k1.starts_with(API_KEY_PREFIX));
        assert_eq!(k1.len(), API_KEY_PREFIX.len() + 43);
        assert!(
            URL_SAFE_NO_PAD
                .decode(&k1[API_KEY_PREFIX.len()..])
                .unwrap()
                .len()
                == 32
        );

        let entry = |name: &str, key: &str| {
            let h = parse_key_hash(&hash_api_key(key)).unwrap();
            AgentKey {
                name: name.into(),
                key_sha256: h,
                server_id: server_id_for_key_hash(&h),
            }
        };
        let keys = ApiKeys::new(vec![entry("a", &k1), entry("b", &k2), entry("b2", &k2)]);
        assert_eq!(keys.check(&k1).unwrap().name, "a");
        assert_eq!(
            keys.check(&k2).unwrap().name,
            "b",
            "first of duplicates wins"
        );
        assert!(keys.check("dwk_wrong").is_none());
        assert!(keys.check("").is_none());
        assert!(keys.check(&format!("{k1} ")).is_none());
        assert!(ApiKeys::new(Vec::new()).check(&k1).is_none());
    }

    #[test]
    fn key_hashes() {
        // SHA-256("abc"), FIPS 180-2 test vector.
        let h = hash_api_key("abc");
        assert_eq!(
            h,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let bytes = parse_key_hash(&h).unwrap();
        assert_eq!(bytes[0], 0xba);
        assert_eq!(bytes[31], 0xad);
        assert_eq!(parse_key_hash(&h.to_uppercase()).unwrap(), bytes);
        assert_eq!(parse_key_hash(&format!("  {h}\n")).unwrap(), bytes);
        for bad in [
            "",
            &h[..63],
            &format!("{h}0"),
            &h.replacen('b', "g", 1),
            "é".repeat(32).as_str(),
        ] {
            let e = parse_key_hash(bad).unwrap_err();
            assert_eq!(e.kind(), "bad_key_hash", "{bad}");
        }
    }

    #[test]
    fn server_id_is_stable_uuid_v5() {
        let h = parse_key_hash(&hash_api_key("abc")).unwrap();
        let id = server_id_for_key_hash(&h);
        assert_eq!(id, server_id_for_key_hash(&h));
        let u = Uuid::parse_str(&id).unwrap();
        assert_eq!(u.get_version_num(), 5);
        assert_eq!(id, id.to_lowercase());
        let other = parse_key_hash(&hash_api_key("abd")).unwrap();
        assert_ne!(id, server_id_for_key_hash(&other));
    }

    #[test]
    fn keygen_text_is_valid_toml() {
        let key = generate_api_key();
        let text = keygen_text(&key);
        assert!(text.lines().any(|l| l == key), "{text}");
        let snippet: String = text
            .lines()
            .skip_while(|l| *l != "[[agents]]")
            .map(|l| format!("{l}\n"))
            .collect();
        let doc: toml::Table = toml::from_str(&snippet).unwrap();
        let agent = &doc["agents"].as_array().unwrap()[0];
        assert_eq!(agent["name"].as_str(), Some("agent"));
        let hex = agent["key_sha256"].as_str().unwrap();
        assert_eq!(hex, hash_api_key(&key));
        let hash = parse_key_hash(hex).unwrap();
        assert!(text.contains(&server_id_for_key_hash(&hash)));
        // The key is only in the output once, never inside the TOML part.
        assert!(!snippet.contains(&key));
        assert_ne!(keygen_output(), keygen_output());
    }

    fn temp_file(name: &str, data: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dockwire-auth-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        p
    }

    #[test]
    fn load_secret_rules() {
        let p = temp_file("ok", b"0123456789abcdef0123456789abcdef\r\n\n");
        assert_eq!(
            load_secret(&p).unwrap(),
            b"0123456789abcdef0123456789abcdef"
        );
        let p = temp_file("inner", b" spaces count  too \n");
        assert_eq!(load_secret(&p).unwrap(), b" spaces count  too ");
        let p = temp_file("short", b"0123456789abcde\n");
        let e = load_secret(&p).unwrap_err();
        assert!(
            matches!(e, AuthError::SecretTooShort { len: 15, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("at least 16"), "{e}");
        let p = temp_file("empty", b"");
        assert!(matches!(
            load_secret(&p),
            Err(AuthError::SecretTooShort { len: 0, .. })
        ));
        let p = temp_file("big", &vec![b'x'; MAX_SECRET_FILE_LEN as usize + 1]);
        assert!(matches!(
            load_secret(&p),
            Err(AuthError::SecretTooLong { .. })
        ));
        let missing = p.with_file_name("does-not-exist");
        assert!(matches!(
            load_secret(&missing),
            Err(AuthError::SecretFile { .. })
        ));
        // A loaded secret signs and verifies.
        let p = temp_file("rt", b"a-secret-that-is-long-enough-xyz\n");
        let s = load_secret(&p).unwrap();
        let t = sign_token(&s, "u", Role::Viewer, Duration::from_secs(5), NOW);
        assert!(JwtVerifier::new(s).verify(&t, NOW).is_ok());
    }
}
