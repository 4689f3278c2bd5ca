//! The token rules of `condaflare::jwt`: what is refused before a signature is checked, which
//! key must have signed a token, and the claims a verified token must carry.

use base64::Engine;
use serde_json::{json, Value};

use condaflare::jwt::{
    check_claims, keys_lifetime_ms, parse, Algorithm, Expected, Jwks, JwtError,
    DEFAULT_KEYS_LIFETIME_MS, LEEWAY_SECONDS, MAX_KEYS_LIFETIME_MS, MIN_KEYS_LIFETIME_MS,
};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn token(header: Value, claims: Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(signature)
    )
}

#[test]
fn what_is_refused_before_any_signature_is_checked() {
    let claims = json!({"iss": "https://issuer"});
    let rows: [(&str, String, JwtError); 11] = [
        (
            "alg none",
            token(json!({"alg": "none", "kid": "k"}), claims.clone(), b""),
            JwtError::Unsigned,
        ),
        (
            "alg None, any case",
            token(json!({"alg": "nOnE", "kid": "k"}), claims.clone(), b"x"),
            JwtError::Unsigned,
        ),
        (
            "RS256 with an empty signature",
            token(json!({"alg": "RS256", "kid": "k"}), claims.clone(), b""),
            JwtError::Unsigned,
        ),
        (
            "HMAC",
            token(json!({"alg": "HS256", "kid": "k"}), claims.clone(), b"x"),
            JwtError::Algorithm("HS256".into()),
        ),
        (
            "RS384",
            token(json!({"alg": "RS384", "kid": "k"}), claims.clone(), b"x"),
            JwtError::Algorithm("RS384".into()),
        ),
        (
            "PS256",
            token(json!({"alg": "PS256", "kid": "k"}), claims.clone(), b"x"),
            JwtError::Algorithm("PS256".into()),
        ),
        (
            "crit",
            token(
                json!({"alg": "RS256", "kid": "k", "crit": ["b64"]}),
                claims.clone(),
                b"x",
            ),
            JwtError::Critical,
        ),
        (
            "ES256 signature of the wrong length (DER, not r||s)",
            token(
                json!({"alg": "ES256", "kid": "k"}),
                claims.clone(),
                &[1; 70],
            ),
            JwtError::BadSignature,
        ),
        (
            "two parts",
            "eyJhbGciOiJSUzI1NiJ9.e30".to_owned(),
            JwtError::Malformed("not three dot-separated parts"),
        ),
        (
            "four parts",
            format!(
                "{}.x",
                token(json!({"alg": "RS256", "kid": "k"}), claims.clone(), b"x")
            ),
            JwtError::Malformed("not three dot-separated parts"),
        ),
        (
            "padded base64",
            format!("{}=.e30.eA", b64(br#"{"alg":"RS256","kid":"k"}"#)),
            JwtError::Malformed("header is not base64url"),
        ),
    ];
    for (what, token, error) in rows {
        assert_eq!(parse(&token).unwrap_err(), error, "{what}");
    }
    let huge = token(
        json!({"alg": "RS256", "kid": "k"}),
        json!({"pad": "x".repeat(20_000)}),
        b"x",
    );
    assert!(matches!(parse(&huge), Err(JwtError::Malformed(_))));
}

#[test]
fn a_well_formed_token_is_split_into_what_the_signature_covers() {
    let text = token(
        json!({"alg": "ES256", "kid": "key-1", "jku": "https://attacker/keys"}),
        json!({"iss": "https://issuer", "sub": "x"}),
        &[7; 64],
    );
    let signed = parse(&text).unwrap();
    assert_eq!(signed.algorithm, Algorithm::Es256);
    assert_eq!(signed.kid.as_deref(), Some("key-1"));
    assert_eq!(signed.signature, vec![7; 64]);
    assert_eq!(signed.signing_input, text[..text.rfind('.').unwrap()]);
    assert_eq!(signed.claimed_issuer().as_deref(), Some("https://issuer"));
}

fn jwks() -> Jwks {
    serde_json::from_value(json!({"keys": [
        {"kty": "RSA", "kid": "rsa", "alg": "RS256", "use": "sig", "n": "AQAB", "e": "AQAB"},
        {"kty": "RSA", "kid": "rsa-no-alg", "n": "AQAB", "e": "AQAB"},
        {"kty": "RSA", "kid": "rsa-enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
        {"kty": "RSA", "kid": "rsa-384", "alg": "RS384", "n": "AQAB", "e": "AQAB"},
        {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"},
        {"kty": "EC", "kid": "ec-384", "crv": "P-384", "x": "AA", "y": "AA"},
        {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
        {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "AA"}
    ]}))
    .unwrap()
}

#[test]
fn the_key_must_be_the_kids_and_fit_the_algorithm() {
    let keys = jwks();
    let signed = |alg: &str, kid: &str| {
        let signature: &[u8] = if alg == "ES256" { &[1; 64] } else { b"x" };
        parse(&token(
            json!({"alg": alg, "kid": kid}),
            json!({}),
            signature,
        ))
        .unwrap()
    };
    let found = |alg, kid| {
        keys.key_for(&signed(alg, kid))
            .map(|key| key.kid.clone().unwrap())
    };
    assert_eq!(found("RS256", "rsa"), Ok("rsa".into()));
    assert_eq!(found("RS256", "rsa-no-alg"), Ok("rsa-no-alg".into()));
    assert_eq!(found("ES256", "ec"), Ok("ec".into()));
    let mismatch = |kid: &str| Err(JwtError::KeyMismatch(kid.into()));
    assert_eq!(found("ES256", "rsa"), mismatch("rsa"));
    assert_eq!(found("RS256", "ec"), mismatch("ec"));
    assert_eq!(found("RS256", "rsa-enc"), mismatch("rsa-enc"));
    assert_eq!(found("RS256", "rsa-384"), mismatch("rsa-384"));
    assert_eq!(found("ES256", "ec-384"), mismatch("ec-384"));
    assert_eq!(found("RS256", "secret"), mismatch("secret"));
    assert_eq!(found("ES256", "ed"), mismatch("ed"));
    assert_eq!(
        found("RS256", "elsewhere"),
        Err(JwtError::UnknownKey("elsewhere".into()))
    );
    let key = keys.key_for(&signed("RS256", "rsa")).unwrap();
    assert_eq!(
        key.public_parameters(),
        json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"})
    );
}

#[test]
fn a_token_naming_no_key_needs_an_issuer_with_one_key_for_its_algorithm() {
    let without_kid = |alg: &str| {
        let signature: &[u8] = if alg == "ES256" { &[1; 64] } else { b"x" };
        parse(&token(json!({"alg": alg}), json!({}), signature)).unwrap()
    };
    let only = |keys: Value| -> Jwks { serde_json::from_value(json!({ "keys": keys })).unwrap() };
    let rsa = json!({"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"});
    let ec = json!({"kty": "EC", "kid": "e", "crv": "P-256", "x": "AA", "y": "AA"});
    let one_of_each = only(json!([rsa, ec]));
    let found = |keys: &Jwks, alg| keys.key_for(&without_kid(alg)).map(|key| key.kid.clone());
    assert_eq!(found(&one_of_each, "RS256"), Ok(Some("r".into())));
    assert_eq!(found(&one_of_each, "ES256"), Ok(Some("e".into())));
    assert_eq!(found(&jwks(), "RS256"), Err(JwtError::NoKeyId));
    assert_eq!(
        found(&only(json!([ec])), "RS256"),
        Err(JwtError::NoFittingKey)
    );
}

#[test]
fn key_sets_are_kept_as_long_as_their_answer_says_within_bounds() {
    let rows = [
        (None, DEFAULT_KEYS_LIFETIME_MS),
        (Some("public, max-age=3600"), 3_600_000),
        (Some("max-age=\"120\", must-revalidate"), 120_000),
        (Some("no-store"), DEFAULT_KEYS_LIFETIME_MS),
        (Some("max-age=0"), MIN_KEYS_LIFETIME_MS),
        (Some("max-age=99999999"), MAX_KEYS_LIFETIME_MS),
        (Some("max-age=soon"), DEFAULT_KEYS_LIFETIME_MS),
    ];
    for (header, lifetime) in rows {
        assert_eq!(keys_lifetime_ms(header), lifetime, "{header:?}");
    }
}

const NOW: u64 = 1_800_000_000;

fn claims_of(claims: Value) -> Result<condaflare::jwt::Claims, JwtError> {
    let audiences = ["pkgs.example.com".to_owned(), "prefix.dev".to_owned()];
    let expected = Expected {
        issuer: "https://issuer",
        audiences: &audiences,
        now: NOW,
    };
    check_claims(claims.to_string().as_bytes(), &expected)
}

#[test]
fn the_claim_rules() {
    let base = json!({
        "iss": "https://issuer", "aud": "pkgs.example.com", "sub": "repo:o/r",
        "exp": NOW + 300, "nbf": NOW - 10, "iat": NOW - 10, "jti": "j1"
    });
    let with = |changes: Value| {
        let mut claims = base.clone();
        for (name, value) in changes.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(name);
            } else {
                claims[name] = value.clone();
            }
        }
        claims_of(claims)
    };
    let leeway = LEEWAY_SECONDS;
    let accepted = [
        ("as issued", json!({})),
        (
            "an audience among several",
            json!({"aud": ["other", "prefix.dev"]}),
        ),
        (
            "expired within the leeway",
            json!({"exp": NOW - leeway + 1}),
        ),
        ("nbf within the leeway", json!({"nbf": NOW + leeway})),
        ("iat within the leeway", json!({"iat": NOW + leeway})),
        (
            "no nbf, iat or jti",
            json!({"nbf": null, "iat": null, "jti": null}),
        ),
        ("times as floats", json!({"exp": (NOW + 300) as f64 + 0.5})),
    ];
    for (what, changes) in accepted {
        assert!(with(changes.clone()).is_ok(), "{what}: {:?}", with(changes));
    }
    let refused = [
        (
            "another issuer",
            json!({"iss": "https://issuer/"}),
            JwtError::Issuer {
                found: "https://issuer/".into(),
                expected: "https://issuer".into(),
            },
        ),
        (
            "no issuer",
            json!({"iss": null}),
            JwtError::MissingClaim("iss"),
        ),
        (
            "issuer not a string",
            json!({"iss": 1}),
            JwtError::MalformedClaim("iss"),
        ),
        (
            "another audience",
            json!({"aud": "evil.example.com"}),
            JwtError::Audience {
                found: "evil.example.com".into(),
                expected: "pkgs.example.com, prefix.dev".into(),
            },
        ),
        (
            "an audience list without ours",
            json!({"aud": ["a", "b"]}),
            JwtError::Audience {
                found: "a, b".into(),
                expected: "pkgs.example.com, prefix.dev".into(),
            },
        ),
        (
            "no audience",
            json!({"aud": null}),
            JwtError::MissingClaim("aud"),
        ),
        (
            "audience a number",
            json!({"aud": 5}),
            JwtError::MalformedClaim("aud"),
        ),
        (
            "audience list with a number",
            json!({"aud": ["prefix.dev", 5]}),
            JwtError::MalformedClaim("aud"),
        ),
        ("expired", json!({"exp": NOW - leeway}), JwtError::Expired),
        (
            "no expiry",
            json!({"exp": null}),
            JwtError::MissingClaim("exp"),
        ),
        (
            "expiry as text",
            json!({"exp": "tomorrow"}),
            JwtError::MalformedClaim("exp"),
        ),
        (
            "negative expiry",
            json!({"exp": -1}),
            JwtError::MalformedClaim("exp"),
        ),
        (
            "not yet valid",
            json!({"nbf": NOW + leeway + 1}),
            JwtError::NotYetValid,
        ),
        (
            "issued in the future",
            json!({"iat": NOW + leeway + 1}),
            JwtError::IssuedInFuture,
        ),
        (
            "sub not a string",
            json!({"sub": 3}),
            JwtError::MalformedClaim("sub"),
        ),
    ];
    for (what, changes, error) in refused {
        assert_eq!(with(changes), Err(error), "{what}");
    }
    assert_eq!(claims_of(json!([1, 2])), Err(JwtError::Claims));
    let claims = with(json!({"repository": "o/r"})).unwrap();
    assert_eq!(claims.sub.as_deref(), Some("repo:o/r"));
    assert_eq!(claims.jti.as_deref(), Some("j1"));
    assert_eq!(claims.aud, vec!["pkgs.example.com".to_owned()]);
    assert_eq!(claims.exp, NOW + 300);
    assert_eq!(claims.text("repository"), Some("o/r"));
}
