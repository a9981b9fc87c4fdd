//! Hostile credentials: a corpus of malicious access tokens, every one of
//! which must be refused with UNAUTHENTICATED (and none may crash the
//! server), next to a control token built the same way that is accepted.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, crypto::sign};
use serde_json::{Value, json};
use tenantry::{identity::keys, proto::tenantry::v1::WhoAmIRequest};
use tonic::Code;

use crate::harness::{
    TestApp,
    identity::{bearer, signing_key},
};

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

fn signed(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    let message = format!("{}.{}", b64(header), b64(claims));
    format!("{message}.{}", sign(message.as_bytes(), key, alg).unwrap())
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn with(base: &Value, key: &str, value: Value) -> Value {
    let mut out = base.clone();
    out[key] = value;
    out
}

fn without(base: &Value, key: &str) -> Value {
    let mut out = base.clone();
    out.as_object_mut().unwrap().remove(key);
    out
}

#[tokio::test]
async fn a_corpus_of_malicious_tokens_is_refused_without_harm() {
    let app = TestApp::builder().spawn().await;
    let tenant = app.tenant_with_owner("acme").await;
    let real = EncodingKey::from_rsa_pem(signing_key().private_pem.as_bytes()).unwrap();
    let attacker_key = keys::generate().unwrap();
    let attacker = EncodingKey::from_rsa_pem(attacker_key.private_pem.as_bytes()).unwrap();
    let kid = signing_key().kid.clone();
    let t = now();
    let header = json!({ "alg": "RS256", "typ": "JWT", "kid": kid });
    let claims = json!({
        "iss": "tenantry", "aud": "tenantry-api", "sub": tenant.owner.id, "tid": tenant.id,
        "sid": "ses_forged", "jti": "jti_1", "iat": t, "nbf": t, "exp": t + 600,
    });

    // The control: built like the corpus, with everything right, it works.
    let control = signed(&header, &claims, &real, Algorithm::RS256);
    app.auth().who_am_i(bearer(WhoAmIRequest {}, &control)).await.expect("the control token is accepted");

    let public_pem = signing_key().public_pem.as_bytes();
    let unsigned = |h: &Value| format!("{}.{}.", b64(h), b64(&claims));
    let mut corpus: Vec<(&str, String)> = vec![
        ("alg none", unsigned(&json!({ "alg": "none", "typ": "JWT", "kid": kid }))),
        ("alg None", unsigned(&json!({ "alg": "None", "kid": kid }))),
        ("alg none with the real signature", {
            let sig = control.rsplit('.').next().unwrap();
            format!("{}{sig}", unsigned(&json!({ "alg": "none", "kid": kid })))
        }),
        (
            "HS256 keyed with the public key PEM",
            signed(
                &with(&header, "alg", json!("HS256")),
                &claims,
                &EncodingKey::from_secret(public_pem),
                Algorithm::HS256,
            ),
        ),
        (
            "HS256 keyed with the key id",
            signed(
                &with(&header, "alg", json!("HS256")),
                &claims,
                &EncodingKey::from_secret(kid.as_bytes()),
                Algorithm::HS256,
            ),
        ),
        ("RS384 with the real key", signed(&with(&header, "alg", json!("RS384")), &claims, &real, Algorithm::RS384)),
        ("PS256 with the real key", signed(&with(&header, "alg", json!("PS256")), &claims, &real, Algorithm::PS256)),
        ("signed by another key under the real kid", signed(&header, &claims, &attacker, Algorithm::RS256)),
        ("unknown kid", signed(&with(&header, "kid", json!("no-such-key")), &claims, &real, Algorithm::RS256)),
        (
            "path traversal kid",
            signed(&with(&header, "kid", json!("../../../../etc/passwd")), &claims, &real, Algorithm::RS256),
        ),
        ("SQL kid", signed(&with(&header, "kid", json!("x' OR '1'='1")), &claims, &real, Algorithm::RS256)),
        ("huge kid", signed(&with(&header, "kid", json!("k".repeat(3000))), &claims, &real, Algorithm::RS256)),
        ("no kid", signed(&without(&header, "kid"), &claims, &real, Algorithm::RS256)),
        (
            "jku header",
            signed(&with(&header, "jku", json!("http://evil.invalid/jwks.json")), &claims, &real, Algorithm::RS256),
        ),
        (
            "x5u header",
            signed(&with(&header, "x5u", json!("http://evil.invalid/cert.pem")), &claims, &real, Algorithm::RS256),
        ),
        ("embedded attacker jwk", {
            let ring = keys::KeyRing::from_pems(&attacker_key.private_pem, &[]).unwrap();
            let jwk = ring.jwks().next().unwrap();
            let h = json!({ "alg": "RS256", "kid": jwk.kid, "jwk": { "kty": "RSA", "n": jwk.n, "e": jwk.e } });
            signed(&h, &claims, &attacker, Algorithm::RS256)
        }),
        ("crit header", signed(&with(&header, "crit", json!(["exp"])), &claims, &real, Algorithm::RS256)),
        (
            "expired",
            signed(
                &header,
                &with(&with(&claims, "exp", json!(t - 3600)), "iat", json!(t - 7200)),
                &real,
                Algorithm::RS256,
            ),
        ),
        ("not yet valid", signed(&header, &with(&claims, "nbf", json!(t + 3600)), &real, Algorithm::RS256)),
        ("wrong issuer", signed(&header, &with(&claims, "iss", json!("evil")), &real, Algorithm::RS256)),
        ("wrong audience", signed(&header, &with(&claims, "aud", json!("other-api")), &real, Algorithm::RS256)),
        (
            "audience list without ours",
            signed(&header, &with(&claims, "aud", json!(["a", "b"])), &real, Algorithm::RS256),
        ),
        ("string exp", signed(&header, &with(&claims, "exp", json!("99999999999")), &real, Algorithm::RS256)),
        ("string nbf", signed(&header, &with(&claims, "nbf", json!("0")), &real, Algorithm::RS256)),
        ("no exp", signed(&header, &without(&claims, "exp"), &real, Algorithm::RS256)),
        ("no iss", signed(&header, &without(&claims, "iss"), &real, Algorithm::RS256)),
        (
            "unknown tenant",
            signed(&header, &with(&claims, "tid", json!("ten_000000000000000000000000")), &real, Algorithm::RS256),
        ),
        ("tenant slug instead of id", signed(&header, &with(&claims, "tid", json!("acme")), &real, Algorithm::RS256)),
        (
            "unknown user",
            signed(&header, &with(&claims, "sub", json!("usr_000000000000000000000000")), &real, Algorithm::RS256),
        ),
        ("sub not a user id", signed(&header, &with(&claims, "sub", json!("admin")), &real, Algorithm::RS256)),
        ("payload not an object", {
            let message = format!("{}.{}", b64(&header), b64(&json!([1, 2, 3])));
            format!("{message}.{}", sign(message.as_bytes(), &real, Algorithm::RS256).unwrap())
        }),
        ("not base64", "a.b.c".to_owned()),
        ("empty segments", "..".to_owned()),
        ("four segments", format!("{control}.extra")),
        ("two segments", control.rsplit_once('.').unwrap().0.to_owned()),
        ("huge token", format!("{}.{}.{}", b64(&header), "A".repeat(7000), "B".repeat(100))),
        ("oversized token", "x".repeat(9000)),
    ];
    corpus.push(("tampered payload", {
        let mut parts: Vec<String> = control.split('.').map(str::to_owned).collect();
        parts[1] = b64(&with(&claims, "sub", json!("usr_111111111111111111111111")));
        parts.join(".")
    }));
    corpus.push(("tampered signature", {
        let (message, signature) = control.rsplit_once('.').unwrap();
        let flipped = if signature.starts_with('A') { "B" } else { "A" };
        format!("{message}.{flipped}{}", &signature[1..])
    }));
    corpus.push(("truncated signature", control[..control.len() - 10].to_owned()));
    assert!(corpus.len() >= 20);

    for (name, token) in &corpus {
        let status = app.auth().who_am_i(bearer(WhoAmIRequest {}, token)).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{name}: {status:?}");
        assert!(!status.message().contains(&tenant.owner.id), "{name}: no claims echoed");
    }
    // The server is still healthy after the corpus.
    app.auth().who_am_i(bearer(WhoAmIRequest {}, &control)).await.expect("still serving");
}
