//! The access-token key ring: one RSA private key signs, and its public key
//! plus any number of retired (or upcoming) keys verify, so keys can rotate
//! without logging anyone out. The ring is PEM text: the first block is the
//! signing private key, every further block (public or private key) is
//! verification-only, so one secret (`TENANTRY_JWT_PRIVATE_KEY`) can carry
//! the whole ring; `--jwt-verification-key-file` adds more. Each key's `kid` is its RFC 7638 JWK
//! thumbprint, so every node derives the same id from the same key.
//!
//! The ring is fixed at start: a token naming an unknown `kid` is refused at
//! once and never triggers a reload, so bogus kids cannot cost anything.
//! Key generation uses aws-lc-rs (the same backend jsonwebtoken verifies
//! with); the `rsa` crate is avoided (timing advisory, DESIGN §9).

use std::{collections::HashMap, path::Path, sync::Arc};

use aws_lc_rs::{
    encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der},
    rsa::{KeyPair, KeySize, PublicKey, PublicKeyComponents},
    signature::{KeyPair as _, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256},
};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use jsonwebtoken::{DecodingKey, EncodingKey};
use sha2::{Digest, Sha256};

use super::IdentityConfig;
use crate::config::ConfigError;

/// A public key that verifies tokens.
#[derive(Clone)]
pub struct VerifyingKey {
    /// RFC 7638 thumbprint, the `kid` header of tokens it verifies.
    pub kid: String,
    /// Base64url modulus, for JWKS.
    pub n: String,
    /// Base64url exponent, for JWKS.
    pub e: String,
    /// The key in jsonwebtoken's form (claims decoding).
    pub decoding: DecodingKey,
    /// The key parsed once for RS256 signature checks, so verification does
    /// not rebuild it from `n`/`e` on every token.
    pub parsed: Arc<ParsedPublicKey>,
}

/// The signing key and every verifying key.
#[derive(Clone)]
pub struct KeyRing {
    signing_kid: String,
    signing: Arc<EncodingKey>,
    verifying: Arc<HashMap<String, VerifyingKey>>,
    /// In configuration order, the signing key first (for JWKS).
    order: Arc<Vec<String>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key ids only: the private key never prints.
        f.debug_struct("KeyRing").field("signing_kid", &self.signing_kid).field("kids", &self.order).finish()
    }
}

fn invalid(setting: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { setting, problem: problem.into() }
}

/// One PEM block: its label, DER body and text.
struct PemBlock {
    label: String,
    der: Vec<u8>,
    text: String,
}

/// Every PEM block in `text`, in order.
fn pem_blocks(text: &str) -> Result<Vec<PemBlock>, String> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.by_ref().find(|l| l.starts_with("-----BEGIN ")) {
        let label = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
            .ok_or("a malformed PEM header")?
            .to_owned();
        let mut body = String::new();
        let mut closed = false;
        for line in lines.by_ref() {
            if line.starts_with("-----END ") {
                closed = true;
                break;
            }
            body.push_str(line);
        }
        if !closed {
            return Err(format!("the PEM block `{label}` is not closed"));
        }
        let der = STANDARD.decode(&body).map_err(|_| format!("the PEM block `{label}` is not base64"))?;
        let text = format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n");
        blocks.push(PemBlock { label, der, text });
    }
    if blocks.is_empty() {
        return Err("not a PEM block".into());
    }
    Ok(blocks)
}

/// PEM text of `der` under `label`, 64 characters a line.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn verifying_key(public: &PublicKey) -> Result<VerifyingKey, String> {
    let components = PublicKeyComponents::<Vec<u8>>::from(public);
    let n = URL_SAFE_NO_PAD.encode(strip_zeros(&components.n));
    let e = URL_SAFE_NO_PAD.encode(strip_zeros(&components.e));
    if components.n.len() < 256 {
        return Err("RSA keys must have at least 2048 bits".into());
    }
    // RFC 7638: members in lexicographic order, no whitespace.
    let thumbprint = Sha256::digest(format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#));
    let kid = URL_SAFE_NO_PAD.encode(thumbprint);
    let decoding = DecodingKey::from_rsa_components(&n, &e).map_err(|e| e.to_string())?;
    let parsed = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public.as_ref())
        .map_err(|_| "not a usable RSA public key".to_owned())?;
    Ok(VerifyingKey { kid, n, e, decoding, parsed: Arc::new(parsed) })
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// Parses a private key block (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`).
fn private_key(block: &PemBlock) -> Result<(KeyPair, EncodingKey), String> {
    let pair = match block.label.as_str() {
        "PRIVATE KEY" => KeyPair::from_pkcs8(&block.der),
        "RSA PRIVATE KEY" => KeyPair::from_der(&block.der),
        other => return Err(format!("expected an RSA private key, found `{other}`")),
    }
    .map_err(|_| "not a usable RSA private key".to_owned())?;
    let encoding =
        EncodingKey::from_rsa_pem(block.text.as_bytes()).map_err(|_| "not a usable RSA private key".to_owned())?;
    Ok((pair, encoding))
}

/// The public key of any key block: a public key, or a private key's public half.
fn public_key(block: &PemBlock) -> Result<PublicKey, String> {
    match block.label.as_str() {
        "PUBLIC KEY" | "RSA PUBLIC KEY" => {
            PublicKey::from_der(&block.der).map_err(|_| "not a usable RSA public key".to_owned())
        }
        "PRIVATE KEY" | "RSA PRIVATE KEY" => Ok(private_key(block)?.0.public_key().clone()),
        other => Err(format!("expected an RSA key, found `{other}`")),
    }
}

/// A freshly generated key pair as PEM.
pub struct GeneratedKey {
    /// PKCS#8 private key; keep it secret.
    pub private_pem: String,
    /// SPKI public key, for other nodes' verification lists.
    pub public_pem: String,
    /// The key's id.
    pub kid: String,
}

/// Generates an RSA-2048 key pair.
pub fn generate() -> Result<GeneratedKey, String> {
    let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| "RSA key generation failed".to_owned())?;
    let private: Pkcs8V1Der<'static> = pair.as_der().map_err(|_| "encoding the private key failed".to_owned())?;
    let public: PublicKeyX509Der<'static> =
        pair.public_key().as_der().map_err(|_| "encoding the public key failed".to_owned())?;
    let kid = verifying_key(pair.public_key())?.kid;
    Ok(GeneratedKey {
        private_pem: pem_encode("PRIVATE KEY", private.as_ref()),
        public_pem: pem_encode("PUBLIC KEY", public.as_ref()),
        kid,
    })
}

/// Writes a pair as `jwt-signing-key.pem` (mode 0600, never overwritten)
/// and `jwt-public-key.pem` in `dir`; returns both paths.
pub fn write_pair(dir: &Path, key: &GeneratedKey) -> std::io::Result<(std::path::PathBuf, std::path::PathBuf)> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    std::fs::create_dir_all(dir)?;
    let private = dir.join("jwt-signing-key.pem");
    let public = dir.join("jwt-public-key.pem");
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&private)?;
    file.write_all(key.private_pem.as_bytes())?;
    std::fs::write(&public, &key.public_pem)?;
    Ok((private, public))
}

impl KeyRing {
    /// A ring from PEM text: the first block is the signing private key;
    /// every further block (public or private key), and every block of
    /// `extra_pems`, is a verification-only key.
    pub fn from_pems(pems: &str, extra_pems: &[String]) -> Result<KeyRing, String> {
        let mut blocks = pem_blocks(pems)?.into_iter();
        let first = blocks.next().ok_or("no key")?;
        let (pair, encoding) = private_key(&first)?;
        let signing = verifying_key(pair.public_key())?;
        let signing_kid = signing.kid.clone();
        let mut order = vec![signing_kid.clone()];
        let mut verifying = HashMap::from([(signing_kid.clone(), signing)]);
        let mut extra: Vec<PemBlock> = blocks.collect();
        for pem in extra_pems {
            extra.extend(pem_blocks(pem)?);
        }
        for block in &extra {
            let key = verifying_key(&public_key(block)?)?;
            if !verifying.contains_key(&key.kid) {
                order.push(key.kid.clone());
                verifying.insert(key.kid.clone(), key);
            }
        }
        Ok(KeyRing { signing_kid, signing: Arc::new(encoding), verifying: Arc::new(verifying), order: Arc::new(order) })
    }

    /// The ring the configuration describes.
    pub fn from_config(config: &IdentityConfig) -> Result<KeyRing, ConfigError> {
        let private = match (&config.jwt_private_key, &config.jwt_private_key_file) {
            (Some(pem), _) => pem.expose().to_owned(),
            (None, Some(file)) => read(file, "--jwt-private-key-file")?,
            (None, None) if config.ephemeral_signing_key => {
                generate().map_err(|e| invalid("--jwt-private-key-file", e))?.private_pem
            }
            (None, None) => {
                return Err(invalid(
                    "TENANTRY_JWT_PRIVATE_KEY_FILE",
                    "is required to sign access tokens (create one with `tenantry keys generate`; \
                     `serve --dev` makes its own)",
                ));
            }
        };
        let extra = config
            .jwt_verification_key_files
            .iter()
            .map(|file| read(file, "--jwt-verification-key-file"))
            .collect::<Result<Vec<_>, _>>()?;
        KeyRing::from_pems(&private, &extra).map_err(|e| invalid("TENANTRY_JWT_PRIVATE_KEY(_FILE)", e))
    }

    /// The id of the signing key.
    pub fn signing_kid(&self) -> &str {
        &self.signing_kid
    }

    /// The signing key.
    pub fn signing_key(&self) -> &EncodingKey {
        &self.signing
    }

    /// The verifying key with this id, if the ring has it.
    pub fn verifying(&self, kid: &str) -> Option<&VerifyingKey> {
        self.verifying.get(kid)
    }

    /// Every verifying key, the signing key's first.
    pub fn jwks(&self) -> impl Iterator<Item = &VerifyingKey> {
        self.order.iter().filter_map(|kid| self.verifying.get(kid))
    }
}

fn read(file: &Path, setting: &'static str) -> Result<String, ConfigError> {
    std::fs::read_to_string(file).map_err(|e| invalid(setting, format!("cannot read {}: {e}", file.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_and_share_their_kid() {
        let key = generate().unwrap();
        let other = generate().unwrap();
        let ring = KeyRing::from_pems(&key.private_pem, std::slice::from_ref(&other.public_pem)).unwrap();
        assert_eq!(ring.signing_kid(), key.kid);
        assert!(ring.verifying(&other.kid).is_some());
        let kids: Vec<_> = ring.jwks().map(|k| k.kid.clone()).collect();
        assert_eq!(kids, vec![key.kid.clone(), other.kid.clone()]);
        assert_eq!(ring.jwks().next().unwrap().e, "AQAB");
    }

    #[test]
    fn garbage_keys_are_refused_with_a_reason() {
        assert!(KeyRing::from_pems("nope", &[]).is_err());
        let key = generate().unwrap();
        assert!(KeyRing::from_pems(&key.public_pem, &[]).unwrap_err().contains("private"));
        assert!(KeyRing::from_pems("-----BEGIN PRIVATE KEY-----\nAAAA", &[]).is_err());
    }

    #[test]
    fn one_text_can_hold_the_signing_key_then_verification_keys() {
        let (new, old, older) = (generate().unwrap(), generate().unwrap(), generate().unwrap());
        let text = format!("{}{}{}", new.private_pem, old.public_pem, older.private_pem);
        let ring = KeyRing::from_pems(&text, &[]).unwrap();
        assert_eq!(ring.signing_kid(), new.kid);
        let kids: Vec<_> = ring.jwks().map(|k| k.kid.clone()).collect();
        assert_eq!(kids, vec![new.kid, old.kid, older.kid]);
        assert!(KeyRing::from_pems(&format!("{}{}", old.public_pem, new.private_pem), &[]).is_err());
    }
}
