//! The signing key ring: `tenantry keys generate`, JWKS, rotation with a
//! verification-only key, and `serve` refusing to start without a key.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use tenantry::{
    identity::keys::KeyRing,
    proto::tenantry::v1::{GetJwksRequest, WhoAmIRequest},
};
use tokio::process::Command;
use tonic::Code;

use crate::harness::{
    TestApp, TestDatabase,
    identity::{bearer, signing_key},
};

async fn tenantry(args: &[&str], database_url: Option<&str>) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tenantry"));
    command.args(args).env_remove("DATABASE_URL").env("TENANTRY_LOG_FORMAT", "json");
    command.env_remove("TENANTRY_JWT_PRIVATE_KEY").env_remove("TENANTRY_JWT_PRIVATE_KEY_FILE");
    if let Some(url) = database_url {
        command.env("DATABASE_URL", url);
    }
    tokio::time::timeout(Duration::from_secs(60), command.output()).await.expect("command finishes").unwrap()
}

#[tokio::test]
async fn keys_generate_writes_a_pair_the_key_ring_loads() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("keys");
    let output = tenantry(&["keys", "generate", "--out-dir", out.to_str().unwrap()], None).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let private = std::fs::read_to_string(out.join("jwt-signing-key.pem")).unwrap();
    let public = std::fs::read_to_string(out.join("jwt-public-key.pem")).unwrap();
    let ring = KeyRing::from_pems(&private, &[public]).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(ring.signing_kid()), "the kid is reported: {stderr}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out.join("jwt-signing-key.pem")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the private key is private");
    let again = tenantry(&["keys", "generate", "--out-dir", out.to_str().unwrap()], None).await;
    assert!(!again.status.success(), "an existing key is never overwritten");
}

#[tokio::test]
async fn serve_refuses_to_start_without_a_signing_key() {
    let database = TestDatabase::create().await;
    let migrated = tenantry(&["migrate"], Some(&database.url)).await;
    assert!(migrated.status.success());
    let output =
        tenantry(&["serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"], Some(&database.url)).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("TENANTRY_JWT_PRIVATE_KEY_FILE") && stderr.contains("keys generate"), "{stderr}");
}

#[tokio::test]
async fn jwks_lists_the_signing_key() {
    let app = TestApp::builder().spawn().await;
    let jwks = app.auth().get_jwks(GetJwksRequest {}).await.unwrap().into_inner();
    assert_eq!(jwks.keys.len(), 1);
    let key = &jwks.keys[0];
    assert_eq!(
        (key.kty.as_str(), key.alg.as_str(), key.r#use.as_str(), key.e.as_str()),
        ("RSA", "RS256", "sig", "AQAB")
    );
    assert_eq!(key.kid, signing_key().kid);
}

#[tokio::test]
async fn after_rotation_tokens_of_the_previous_key_still_verify_until_it_is_removed() {
    let app = TestApp::builder().spawn().await;
    let tenant = app.tenant_with_owner("acme").await;
    let old_token = tenant.owner_token.clone();
    let dir = tempfile::tempdir().unwrap();
    let old_public = dir.path().join("old.pem");
    std::fs::write(&old_public, &signing_key().public_pem).unwrap();
    let new_key = tenantry::identity::keys::generate().unwrap();

    // The rotated node: signs with the new key, still verifies the old one.
    let rotated = TestApp::builder()
        .configure(|config| {
            config.identity.jwt_private_key = Some(new_key.private_pem.clone().into());
            config.identity.jwt_verification_key_files = vec![old_public.clone()];
        })
        .spawn()
        .await;
    let jwks = rotated.auth().get_jwks(GetJwksRequest {}).await.unwrap().into_inner();
    let kids: Vec<&str> = jwks.keys.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(kids, vec![new_key.kid.as_str(), signing_key().kid.as_str()]);

    // A token of the old key, for a user of the rotated node's database.
    let rotated_tenant = rotated.tenant_with_owner("globex").await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims = json!({
        "iss": "tenantry", "aud": "tenantry-api", "sub": rotated_tenant.owner.id, "tid": rotated_tenant.id,
        "sid": "ses_old", "jti": "jti_old", "iat": now, "nbf": now, "exp": now + 600,
    });
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(signing_key().kid.clone());
    let old_key = EncodingKey::from_rsa_pem(signing_key().private_pem.as_bytes()).unwrap();
    let signed_by_old = encode(&header, &claims, &old_key).unwrap();
    rotated.auth().who_am_i(bearer(WhoAmIRequest {}, &signed_by_old)).await.expect("the old key still verifies");
    rotated.auth().who_am_i(bearer(WhoAmIRequest {}, &rotated_tenant.owner_token)).await.expect("new tokens work");

    // A node that dropped the old key refuses its tokens.
    let without_old = TestApp::builder()
        .configure(|config| {
            config.identity.jwt_private_key = Some(new_key.private_pem.clone().into());
        })
        .spawn()
        .await;
    let status = without_old.auth().who_am_i(bearer(WhoAmIRequest {}, &old_token)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}
