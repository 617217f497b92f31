//! Dashboard users (SPEC section 8): `[[users]] name, password_hash, role`
//! with `password_hash` an argon2id PHC string, checked at config load;
//! `dockwire passwd` makes the lines; the session cookie's attributes.
//!
//! Invariants:
//! - A [`User`] that exists holds a PHC string that parses as argon2id v19
//!   with a salt, an output and costs within [`MAX_M_COST_KIB`],
//!   [`MAX_T_COST`], [`MAX_P_COST`] (config is trusted, but a typo must not
//!   make every login take a minute or a gigabyte).
//! - Verification is slow on purpose (tens of ms): it runs only on the login
//!   worker thread (`login.rs`), never on the event loop.
//! - An unknown user name costs the same argon2 work as a known one
//!   ([`Verifier::check`] runs against a dummy hash made with the first
//!   user's parameters), so timing does not reveal which names exist.

use std::fmt;

use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use argon2::{Argon2, Params};

use super::Role;
use crate::config::UserSection;

/// Most `[[users]]` entries accepted (config is trusted; this only bounds memory).
pub const MAX_USERS: usize = 10_000;
/// Longest user name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Longest password accepted at login or by `dockwire passwd`, in bytes.
pub const MAX_PASSWORD_LEN: usize = 1024;
/// Largest argon2 memory cost accepted in a configured hash (256 MiB).
pub const MAX_M_COST_KIB: u32 = 256 * 1024;
/// Largest argon2 time cost accepted in a configured hash.
pub const MAX_T_COST: u32 = 16;
/// Largest argon2 parallelism accepted in a configured hash.
pub const MAX_P_COST: u32 = 16;
/// The session cookie's name.
pub const COOKIE_NAME: &str = "dockwire_session";

/// One dashboard login.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// The argon2id PHC string, validated.
    pub password_hash: String,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The hash is not a secret, but there is no reason to print it.
        f.debug_struct("User")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Checks a `password_hash` value: argon2id, v19, salt, output, bounded costs.
///
/// # Errors
/// A message saying what is wrong and how to make a good one.
pub fn validate_phc(phc: &str) -> Result<(), String> {
    let hint = "make one with `dockwire passwd NAME --role admin|viewer`";
    let hash = PasswordHash::new(phc.trim())
        .map_err(|e| format!("not a PHC string like \"$argon2id$v=19$m=...\" ({e}); {hint}"))?;
    if hash.algorithm.as_str() != "argon2id" {
        return Err(format!(
            "algorithm {:?} is not argon2id; {hint}",
            hash.algorithm.as_str()
        ));
    }
    if hash.version.is_some_and(|v| v != 19) {
        return Err(format!("argon2 version must be 19; {hint}"));
    }
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(format!("the salt or the hash is missing; {hint}"));
    }
    let params = Params::try_from(&hash).map_err(|e| format!("bad argon2 parameters ({e})"))?;
    if params.m_cost() > MAX_M_COST_KIB
        || params.t_cost() > MAX_T_COST
        || params.p_cost() > MAX_P_COST
    {
        return Err(format!(
            "argon2 costs m={} t={} p={} are above the limits m={MAX_M_COST_KIB} \
             t={MAX_T_COST} p={MAX_P_COST}",
            params.m_cost(),
            params.t_cost(),
            params.p_cost()
        ));
    }
    Ok(())
}

/// Validates the `[[users]]` sections.
///
/// # Errors
/// The first bad entry, named.
pub fn from_sections(sections: &[UserSection]) -> Result<Vec<User>, String> {
    if sections.len() > MAX_USERS {
        return Err(format!(
            "at most {MAX_USERS} [[users]] entries are accepted"
        ));
    }
    let mut names = std::collections::HashSet::with_capacity(sections.len());
    let mut out = Vec::with_capacity(sections.len());
    for s in sections {
        let name = s.name.as_str();
        if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
            return Err(format!(
                "users: name {:?} must be 1 to {MAX_NAME_LEN} bytes without control characters",
                name.chars().take(80).collect::<String>()
            ));
        }
        if !names.insert(name) {
            return Err(format!("users: {name:?} is configured twice"));
        }
        let role = Role::parse(&s.role).ok_or_else(|| {
            format!(
                "users: {name:?}: role {:?} must be \"admin\" or \"viewer\"",
                s.role
            )
        })?;
        validate_phc(&s.password_hash)
            .map_err(|e| format!("users: {name:?}: password_hash: {e}"))?;
        out.push(User {
            name: name.to_string(),
            role,
            password_hash: s.password_hash.trim().to_string(),
        });
    }
    Ok(out)
}

/// A fresh 32-byte JWT secret, for a daemon with users and no secret file.
pub fn random_secret() -> Vec<u8> {
    let mut bytes = vec![0u8; 32];
    rand::fill(&mut bytes[..]);
    bytes
}

/// Hashes `password` with argon2id (the crate's defaults: m=19 MiB, t=2,
/// p=1, a random 16-byte salt) into a PHC string.
///
/// # Errors
/// The hasher's error (the system RNG failing, in practice).
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    Argon2::default()
        .hash_password(password)
        .map(|h| h.to_string())
        .map_err(|e| format!("could not hash the password: {e}"))
}

/// What `dockwire passwd` prints.
pub fn passwd_text(name: &str, role: Role, phc: &str) -> String {
    // TOML basic strings: escape what needs it (PHC strings need nothing).
    let quoted = serde_json::Value::from(name).to_string();
    format!(
        "# Add this to the daemon's config:\n[[users]]\nname = {quoted}\n\
         password_hash = \"{phc}\"\nrole = \"{role}\"\n"
    )
}

/// Checks passwords against the configured users (on the login worker).
pub struct Verifier {
    users: std::collections::HashMap<String, (Role, String)>,
    /// Hash of a random password with the first user's costs: unknown
    /// names are checked against it so they cost the same time.
    dummy: String,
}

impl Verifier {
    /// Builds the table and the dummy hash (one argon2 run: call it on the worker).
    pub fn new(users: &[User]) -> Self {
        let mut dummy_pw = [0u8; 16];
        rand::fill(&mut dummy_pw[..]);
        let params = users
            .first()
            .and_then(|u| PasswordHash::new(&u.password_hash).ok())
            .and_then(|h| Params::try_from(&h).ok())
            .unwrap_or_default();
        let dummy = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(&dummy_pw)
            .map(|h| h.to_string())
            .unwrap_or_default();
        Verifier {
            users: users
                .iter()
                .map(|u| (u.name.clone(), (u.role, u.password_hash.clone())))
                .collect(),
            dummy,
        }
    }

    /// The user's role when `password` is theirs; `None` for a wrong
    /// password or an unknown name (same work either way).
    pub fn check(&self, name: &str, password: &[u8]) -> Option<Role> {
        let (role, phc) = match self.users.get(name) {
            Some((role, phc)) => (Some(*role), phc.as_str()),
            None => (None, self.dummy.as_str()),
        };
        let ok = PasswordHash::new(phc)
            .ok()
            .is_some_and(|h| Argon2::default().verify_password(password, &h).is_ok());
        if ok { role } else { None }
    }
}

/// The `Set-Cookie` value of a new session (`secure`: served over TLS).
pub fn session_cookie(token: &str, secure: bool) -> String {
    let mut c = format!("{COOKIE_NAME}={token}; HttpOnly; SameSite=Strict; Path=/");
    if secure {
        c.push_str("; Secure");
    }
    c
}

/// The `Set-Cookie` value that clears the session.
pub fn clear_cookie(secure: bool) -> String {
    let mut c = format!("{COOKIE_NAME}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    if secure {
        c.push_str("; Secure");
    }
    c
}

/// The session token in a `Cookie` header value, if any.
pub fn cookie_token(cookie_header: &str) -> Option<&str> {
    cookie_header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k.trim() == COOKIE_NAME && !v.trim().is_empty()).then(|| v.trim().trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(name: &str, hash: &str, role: &str) -> UserSection {
        UserSection {
            name: name.into(),
            password_hash: hash.into(),
            role: role.into(),
        }
    }

    /// A cheap hash (m=64 KiB) so the tests stay fast.
    fn cheap_hash(pw: &str) -> String {
        let params = Params::new(64, 1, 1, None).unwrap();
        Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(pw.as_bytes())
            .unwrap()
            .to_string()
    }

    #[test]
    fn config_validation_names_the_problem() {
        let good = cheap_hash("pw");
        assert!(from_sections(&[section("alice", &good, "admin")]).is_ok());
        let e = from_sections(&[section("alice", "plain", "admin")]).unwrap_err();
        assert!(e.contains("alice") && e.contains("PHC"), "{e}");
        let argon2i = good.replace("$argon2id$", "$argon2i$");
        let e = from_sections(&[section("a", &argon2i, "admin")]).unwrap_err();
        assert!(e.contains("argon2id"), "{e}");
        let e = from_sections(&[section("a", &good, "root")]).unwrap_err();
        assert!(e.contains("role"), "{e}");
        let e = from_sections(&[section("", &good, "admin")]).unwrap_err();
        assert!(e.contains("name"), "{e}");
        let e = from_sections(&[section("a", &good, "admin"), section("a", &good, "viewer")])
            .unwrap_err();
        assert!(e.contains("twice"), "{e}");
        let huge = "$argon2id$v=19$m=4194304,t=3,p=1$c2FsdHNhbHRzYWx0$\
                    aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        let e = from_sections(&[section("a", huge, "admin")]).unwrap_err();
        assert!(e.contains("limits"), "{e}");
    }

    #[test]
    fn verifier_accepts_the_password_only() {
        let users = from_sections(&[
            section("alice", &cheap_hash("right"), "admin"),
            section("bob", &cheap_hash("other"), "viewer"),
        ])
        .unwrap();
        let v = Verifier::new(&users);
        assert_eq!(v.check("alice", b"right"), Some(Role::Admin));
        assert_eq!(v.check("bob", b"other"), Some(Role::Viewer));
        assert_eq!(v.check("alice", b"wrong"), None);
        assert_eq!(v.check("mallory", b"right"), None);
        assert!(
            v.dummy.starts_with("$argon2id$v=19$m=64,t=1,p=1$"),
            "{}",
            v.dummy
        );
    }

    #[test]
    fn cookies() {
        assert_eq!(
            session_cookie("a.b.c", false),
            "dockwire_session=a.b.c; HttpOnly; SameSite=Strict; Path=/"
        );
        assert!(session_cookie("t", true).ends_with("; Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
        assert_eq!(cookie_token("x=1; dockwire_session=tok; y=2"), Some("tok"));
        assert_eq!(cookie_token("dockwire_session="), None);
        assert_eq!(cookie_token("other=1"), None);
    }

    #[test]
    fn passwd_text_is_valid_config() {
        let h = cheap_hash("pw");
        let text = passwd_text("al\"ice", Role::Viewer, &h);
        let f: crate::config::FileConfig = toml::from_str(&text).unwrap();
        let users = from_sections(&f.users).unwrap();
        assert_eq!(users[0].name, "al\"ice");
        assert_eq!(users[0].role, Role::Viewer);
    }
}
