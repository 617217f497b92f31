//! Unit tests for JWT verification, token signing, secrets and API keys.

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
    let t = sign_token(SECRET, "alice", Role::Admin, Duration::from_secs(3600), NOW).unwrap();
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
    // (Compared as JSON: the crate writes `typ` first.)
    assert_eq!(
        serde_json::from_slice::<Value>(&header).unwrap(),
        serde_json::json!({"alg": "HS256", "typ": "JWT"})
    );
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
    let t = sign_token(SECRET, sub, Role::Viewer, Duration::from_secs(60), NOW).unwrap();
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
    let t = sign_token(SECRET, "alice", Role::Viewer, Duration::from_secs(60), NOW).unwrap();
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
    let t = sign_token(SECRET, "alice", Role::Viewer, Duration::from_secs(60), NOW).unwrap();
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
    let good = sign_token(SECRET, "a", Role::Viewer, Duration::from_secs(60), NOW).unwrap();
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
    let good = sign_token(SECRET, "a", Role::Viewer, Duration::from_secs(60), NOW).unwrap();
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
    let t = sign_token(&s, "u", Role::Viewer, Duration::from_secs(5), NOW).unwrap();
    assert!(JwtVerifier::new(s).verify(&t, NOW).is_ok());
}

#[test]
fn empty_secret_signs_nothing_and_verifies_nothing() {
    let e = sign_token(b"", "a", Role::Viewer, Duration::from_secs(5), NOW).unwrap_err();
    assert!(matches!(e, AuthError::Sign(_)), "{e:?}");
    let t = sign_token(SECRET, "a", Role::Viewer, Duration::from_secs(5), NOW).unwrap();
    assert!(matches!(
        JwtVerifier::new(Vec::new()).verify(&t, NOW),
        Err(AuthError::BadSignature)
    ));
}
