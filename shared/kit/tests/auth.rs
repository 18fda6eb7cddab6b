//! Token verification against real keys (issue 10 item 1): RS256 and ES256
//! tokens from a JWKS file, the file re-read when it changes, no algorithm
//! confusion, and every claim check; service credentials read from a file.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use accrue_kit::auth::{Audience, AuthConfig, Claims, Credential, Minter, Programs, Role, Verifier};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn claims() -> Claims {
    Claims {
        sub: "ops@example.com".into(),
        iss: "accrue".into(),
        aud: "accrue".into(),
        exp: now() + 600,
        nbf: Some(now()),
        iat: Some(now()),
        programs: vec!["*".into()],
        roles: vec!["finance".into()],
        partner_id: None,
    }
}

fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Claims) -> String {
    let header = Header { kid: Some(kid.into()), ..Header::new(alg) };
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn rsa() -> EncodingKey {
    EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa.pem")).unwrap()).unwrap()
}

fn ec() -> EncodingKey {
    EncodingKey::from_ec_pem(&std::fs::read(fixture("ec.pem")).unwrap()).unwrap()
}

fn jwks_verifier(path: PathBuf) -> Verifier {
    AuthConfig { jwks_file: Some(path), issuer: "accrue".into(), audience: "accrue".into(), ..AuthConfig::default() }
        .verifier()
        .unwrap()
}

#[test]
fn rs256_and_es256_tokens_verify_against_the_jwks() {
    let verifier = jwks_verifier(fixture("jwks.json"));
    for token in [sign(Algorithm::RS256, "rsa-1", &rsa(), &claims()), sign(Algorithm::ES256, "ec-1", &ec(), &claims())]
    {
        let identity = verifier.verify(&token).unwrap();
        assert_eq!(identity.subject, "ops@example.com");
        assert_eq!(identity.programs, Programs::All);
        assert!(identity.has(Role::Finance) && !identity.has(Role::Admin));
    }
    // A token signed by one key but naming the other's kid, or an HS256
    // token made with the RSA public key as its secret, is refused.
    assert!(verifier.verify(&sign(Algorithm::ES256, "rsa-1", &ec(), &claims())).is_err());
    let public = std::fs::read(fixture("jwks.json")).unwrap();
    let confused = sign(Algorithm::HS256, "rsa-1", &EncodingKey::from_secret(&public), &claims());
    assert!(verifier.verify(&confused).is_err());
}

#[test]
fn the_jwks_is_re_read_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("jwks.json")).unwrap()).unwrap();
    let only_ec = serde_json::json!({ "keys": [full["keys"][1].clone()] });
    std::fs::write(&path, only_ec.to_string()).unwrap();
    let verifier = jwks_verifier(path.clone());
    let rs = sign(Algorithm::RS256, "rsa-1", &rsa(), &claims());
    assert!(verifier.verify(&rs).is_err(), "the RSA key is not in the file yet");

    std::fs::write(&path, full.to_string()).unwrap();
    let later = SystemTime::now() + Duration::from_secs(60);
    std::fs::File::options().write(true).open(&path).unwrap().set_modified(later).unwrap();
    // The file is looked at again at most every 5 s.
    std::thread::sleep(Duration::from_millis(5_200));
    assert!(verifier.verify(&rs).is_ok(), "rotated in without a restart");
}

#[test]
fn every_claim_is_checked() {
    let secret = "0123456789abcdef0123456789abcdef";
    let verifier = AuthConfig::hs256(secret).verifier().unwrap();
    let minter = Minter::new(secret, "accrue", "accrue").unwrap();
    assert!(verifier.verify(&minter.sign(&claims()).unwrap()).is_ok());
    let refused = [
        ("expired beyond the leeway", Claims { exp: now() - 120, ..claims() }),
        ("not yet valid", Claims { nbf: Some(now() + 600), ..claims() }),
        ("another audience", Claims { aud: "billing".into(), ..claims() }),
        ("another issuer", Claims { iss: "someone".into(), ..claims() }),
        ("an unknown role", Claims { roles: vec!["root".into()], ..claims() }),
        ("no role", Claims { roles: vec![], ..claims() }),
        ("no program", Claims { programs: vec![], ..claims() }),
        ("a program that is not an id", Claims { programs: vec!["acme".into()], ..claims() }),
        ("a partner without partner_id", Claims { roles: vec!["partner".into()], ..claims() }),
        (
            "a partner token over every program",
            Claims {
                roles: vec!["partner".into()],
                partner_id: Some("0190f3c2-0000-7000-8000-000000000002".into()),
                programs: vec!["*".into()],
                ..claims()
            },
        ),
        ("an empty subject", Claims { sub: String::new(), ..claims() }),
    ];
    for (what, bad) in refused {
        assert!(verifier.verify(&minter.sign(&bad).unwrap()).is_err(), "{what}");
    }
    // An audience list with ours in it is accepted, one without it is not.
    let listed = Claims { aud: Audience::Many(vec!["billing".into(), "accrue".into()]), ..claims() };
    assert!(verifier.verify(&minter.sign(&listed).unwrap()).is_ok());
    let others = Claims { aud: Audience::Many(vec!["billing".into()]), ..claims() };
    assert!(verifier.verify(&minter.sign(&others).unwrap()).is_err());
    // Within the 30 s leeway an expiry is still accepted (clock skew).
    assert!(verifier.verify(&minter.sign(&Claims { exp: now() - 10, ..claims() }).unwrap()).is_ok());
    // A partner token naming its program is accepted.
    let program = "0190f3c2-0000-7000-8000-000000000001".to_string();
    let partner = Claims {
        roles: vec!["partner".into()],
        partner_id: Some("0190f3c2-0000-7000-8000-000000000002".into()),
        programs: vec![program],
        ..claims()
    };
    assert!(verifier.verify(&minter.sign(&partner).unwrap()).is_ok());
    // An RS256 token is refused by a verifier holding a secret.
    assert!(verifier.verify(&sign(Algorithm::RS256, "rsa-1", &rsa(), &claims())).is_err());
}

#[test]
fn settings_without_exactly_one_key_source_do_not_start() {
    assert!(AuthConfig::default().verifier().is_err());
    assert!(AuthConfig::hs256("short").verifier().is_err());
    let both =
        AuthConfig { jwks_file: Some(fixture("jwks.json")), ..AuthConfig::hs256("0123456789abcdef0123456789abcdef") };
    assert!(both.verifier().is_err());
}

#[test]
fn a_service_token_file_is_re_read_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "first\n").unwrap();
    let credential = Credential::file(path.clone());
    assert_eq!(credential.current().as_deref(), Some("first"));
    std::fs::write(&path, "second").unwrap();
    let later = SystemTime::now() + Duration::from_secs(60);
    std::fs::File::options().write(true).open(&path).unwrap().set_modified(later).unwrap();
    std::thread::sleep(Duration::from_millis(5_200));
    assert_eq!(credential.current().as_deref(), Some("second"));
}
