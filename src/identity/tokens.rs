//! Access tokens: RS256 JWTs with `iss`, `aud`, `sub` (the user), `tid` (the
//! tenant), `sid` (the session, i.e. refresh family), `jti`, `iat`, `nbf`,
//! `exp` and a `kid` header.
//!
//! Verification pins RS256 (one family, never `none` or HMAC): the header
//! must say RS256 and the signature over `header.payload` is checked with the
//! ring key's pre-parsed aws-lc public key (RSA PKCS#1 v1.5, SHA-256) before
//! jsonwebtoken validates the claims. It refuses
//! headers that point elsewhere for keys (`jku`, `x5u`, `jwk`, `x5c`),
//! looks the `kid` up in the fixed [`KeyRing`], and checks `iss`, `aud`,
//! `exp` and `nbf` with a small leeway. Verified tokens are cached until
//! they expire, so the hot path is one cache lookup.
//!
//! The cache is moka's (bounded, evicting one entry at a time, no lock shared
//! by every call), not the NOTIFY-invalidated [`crate::cache::NotifyCache`]:
//! a verification depends on the signature and the clock only, never on a
//! row another node may change. What revocation changes (the user, the
//! session, the tenant) is checked after it, from those caches.

use std::{
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, Header, Validation, decode, decode_header, encode};
use serde::{Deserialize, Serialize};

use super::{
    access::{UserAccess, UserKey},
    keys::KeyRing,
};
use crate::{auth::Principal, ids, tenancy::TenantId};

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(30);
/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The claims of a Tenantry access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub tid: String,
    pub sid: String,
    pub jti: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub tenant: TenantId,
    pub user_id: String,
    pub session_id: String,
    pub token_id: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// `(tenant, user_id)`, the key of the user's cached access, built once.
    pub(crate) user_key: UserKey,
    /// The principal last built for this token (see [`VerifiedToken::principal`]).
    memo: PrincipalMemo,
}

impl VerifiedToken {
    /// The caller this token stands for with its user's current `access`:
    /// `build`'s principal, reused by later calls while `access` is the same
    /// cached value (a principal depends on the token and the access only,
    /// so an unchanged access gives the same principal without rebuilding it).
    pub fn principal(&self, access: &Arc<UserAccess>, build: impl FnOnce() -> Principal) -> Principal {
        // Every call with this token reads it: readers share the lock.
        if let Some((seen, principal)) = &*self.memo.0.read().unwrap_or_else(|e| e.into_inner())
            && Arc::ptr_eq(seen, access)
        {
            return principal.clone();
        }
        let principal = build();
        *self.memo.0.write().unwrap_or_else(|e| e.into_inner()) = Some((access.clone(), principal.clone()));
        principal
    }
}

/// A cached principal and the access it was built from. Clones start empty;
/// it takes no part in equality.
#[derive(Default)]
struct PrincipalMemo(RwLock<Option<(Arc<UserAccess>, Principal)>>);

impl Clone for PrincipalMemo {
    fn clone(&self) -> Self {
        PrincipalMemo::default()
    }
}

impl PartialEq for PrincipalMemo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for PrincipalMemo {}

impl std::fmt::Debug for PrincipalMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrincipalMemo")
    }
}

/// A verified token stays cached until it expires (with the leeway).
struct UntilExpiry;

impl moka::Expiry<Box<str>, Arc<VerifiedToken>> for UntilExpiry {
    fn expire_after_create(&self, _token: &Box<str>, verified: &Arc<VerifiedToken>, _now: Instant) -> Option<Duration> {
        let left = verified.expires_at + LEEWAY - Utc::now();
        Some(left.to_std().unwrap_or(Duration::ZERO))
    }
}

/// A cache of at most `entries` verified tokens; beyond it the least useful
/// are evicted one by one (never a clear-all, which sent every token of a
/// busy node back to RS256 verification at once).
fn verified_tokens(entries: u64) -> moka::sync::Cache<Box<str>, Arc<VerifiedToken>, SignatureHash> {
    moka::sync::Cache::builder()
        .max_capacity(entries)
        .expire_after(UntilExpiry)
        .build_with_hasher(SignatureHash(std::hash::RandomState::new()))
}

/// Hashes a token by its last [`SIGNATURE_TAIL`] bytes (keyed SipHash), not
/// its whole ~800: those are the end of its RS256 signature, random for
/// every token. Only verified tokens are ever stored, so a crafted token
/// sharing a stored one's tail only lands in the same bucket, where the full
/// comparison tells them apart.
#[derive(Clone)]
struct SignatureHash(std::hash::RandomState);

/// Bytes of a token's end that [`SignatureHash`] hashes.
const SIGNATURE_TAIL: usize = 32;

impl std::hash::BuildHasher for SignatureHash {
    type Hasher = SignatureHasher;

    fn build_hasher(&self) -> SignatureHasher {
        SignatureHasher(self.0.build_hasher())
    }
}

/// See [`SignatureHash`].
struct SignatureHasher(std::hash::DefaultHasher);

impl std::hash::Hasher for SignatureHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(&bytes[bytes.len().saturating_sub(SIGNATURE_TAIL)..]);
    }

    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

/// Issues and verifies access tokens with one key ring.
#[derive(Clone)]
pub struct TokenService {
    ring: KeyRing,
    issuer: String,
    audience: String,
    ttl: Duration,
    validation: Arc<Validation>,
    cache: moka::sync::Cache<Box<str>, Arc<VerifiedToken>, SignatureHash>,
}

/// Why a token was refused; deliberately coarse for callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid access token")]
pub struct InvalidToken;

impl TokenService {
    /// A token service signing with `ring`'s signing key.
    pub fn new(ring: KeyRing, issuer: &str, audience: &str, ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.algorithms = vec![Algorithm::RS256];
        validation.leeway = LEEWAY.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        // The RS256 signature is checked first, with the ring's pre-parsed key
        // (see `verify_uncached`); jsonwebtoken then validates the claims only,
        // sparing it a rebuild of the RSA key from `n`/`e` per token. The
        // malicious-token corpus (tests/api/auth_security.rs) guards this.
        #[allow(deprecated)]
        validation.insecure_disable_signature_validation();
        TokenService {
            ring,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl,
            validation: Arc::new(validation),
            cache: verified_tokens(crate::cache::DEFAULT_ENTRIES),
        }
    }

    /// Keeps at most `entries` verified tokens.
    pub fn caching(mut self, entries: u64) -> Self {
        self.cache = verified_tokens(entries);
        self
    }

    /// The key ring (for JWKS).
    pub fn ring(&self) -> &KeyRing {
        &self.ring
    }

    /// Lifetime of issued tokens.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A signed token for `user_id` of `tenant` in session `session_id`.
    pub fn issue(&self, tenant: &TenantId, user_id: &str, session_id: &str) -> Result<(String, DateTime<Utc>), String> {
        let now = Utc::now();
        let expires_at = now + chrono::Duration::from_std(self.ttl).map_err(|e| e.to_string())?;
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user_id.to_owned(),
            tid: tenant.as_str().to_owned(),
            sid: session_id.to_owned(),
            jti: ids::new_id("jti"),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: expires_at.timestamp(),
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.ring.signing_kid().to_owned());
        let token = encode(&header, &claims, self.ring.signing_key()).map_err(|e| e.to_string())?;
        Ok((token, DateTime::from_timestamp(claims.exp, 0).unwrap_or(expires_at)))
    }

    /// The token's claims when it is valid now; served from the cache when
    /// this exact token was verified before.
    pub fn verify(&self, token: &str) -> Result<Arc<VerifiedToken>, InvalidToken> {
        if let Some(hit) = self.cache.get(token) {
            // The signature and claims were checked; only time moves on.
            if Utc::now() <= hit.expires_at + LEEWAY {
                return Ok(hit.clone());
            }
            return Err(InvalidToken);
        }
        let verified = Arc::new(self.verify_uncached(token)?);
        self.cache.insert(token.into(), verified.clone());
        Ok(verified)
    }

    /// Full verification, without the cache (benchmarks use it directly).
    pub fn verify_uncached(&self, token: &str) -> Result<VerifiedToken, InvalidToken> {
        if token.len() > MAX_TOKEN_BYTES || token.bytes().filter(|b| *b == b'.').count() != 2 {
            return Err(InvalidToken);
        }
        let header = decode_header(token).map_err(|_| InvalidToken)?;
        if header.alg != Algorithm::RS256
            || header.jku.is_some()
            || header.x5u.is_some()
            || header.jwk.is_some()
            || header.x5c.is_some()
            || header.crit.is_some()
        {
            return Err(InvalidToken);
        }
        let key = header.kid.as_deref().and_then(|kid| self.ring.verifying(kid)).ok_or(InvalidToken)?;
        let (message, signature) = token.rsplit_once('.').ok_or(InvalidToken)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| InvalidToken)?;
        key.parsed.verify_sig(message.as_bytes(), &signature).map_err(|_| InvalidToken)?;
        let claims = decode::<AccessClaims>(token, &key.decoding, &self.validation).map_err(|_| InvalidToken)?.claims;
        let tenant = TenantId::parse(&claims.tid).ok_or(InvalidToken)?;
        if !ids::is_id("usr", &claims.sub) || claims.exp < claims.iat || claims.sid.is_empty() {
            return Err(InvalidToken);
        }
        Ok(VerifiedToken {
            user_key: (tenant.clone(), claims.sub.clone()),
            memo: PrincipalMemo::default(),
            tenant,
            user_id: claims.sub,
            session_id: claims.sid,
            token_id: claims.jti,
            issued_at: DateTime::from_timestamp(claims.iat, 0).ok_or(InvalidToken)?,
            expires_at: DateTime::from_timestamp(claims.exp, 0).ok_or(InvalidToken)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::keys;

    fn service() -> TokenService {
        let ring = KeyRing::from_pems(&keys::generate().unwrap().private_pem, &[]).unwrap();
        TokenService::new(ring, "tenantry", "tenantry-api", Duration::from_secs(900))
    }

    #[test]
    fn issued_tokens_verify_and_are_cached() {
        let tokens = service();
        let tenant = TenantId::generate();
        let user = ids::new_id("usr");
        let (token, expires_at) = tokens.issue(&tenant, &user, "ses_1").unwrap();
        let verified = tokens.verify(&token).unwrap();
        assert_eq!((verified.tenant.clone(), verified.user_id.clone()), (tenant, user));
        assert_eq!(verified.expires_at, expires_at);
        assert!(Arc::ptr_eq(&verified, &tokens.verify(&token).unwrap()));
    }

    #[test]
    fn a_token_sharing_a_cached_tokens_signature_tail_is_not_a_cache_hit() {
        let tokens = service();
        let (token, _) = tokens.issue(&TenantId::generate(), &ids::new_id("usr"), "ses_1").unwrap();
        assert!(tokens.verify(&token).is_ok(), "cached now");
        let (header, rest) = token.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        // Another payload (another tenant), the cached token's signature: same hash, other key.
        let forged = format!("{header}.{}.{signature}", URL_SAFE_NO_PAD.encode(r#"{"tid":"ten_other"}"#));
        assert_eq!(tokens.verify(&forged), Err(InvalidToken));
        assert!(tokens.verify(&token).is_ok());
    }

    #[test]
    fn a_token_whose_signature_or_payload_changed_is_refused() {
        let tokens = service();
        let (token, _) = tokens.issue(&TenantId::generate(), &ids::new_id("usr"), "ses_1").unwrap();
        let (message, signature) = token.rsplit_once('.').unwrap();
        let other = if signature.starts_with('A') { 'B' } else { 'A' };
        assert_eq!(tokens.verify_uncached(&format!("{message}.{other}{}", &signature[1..])), Err(InvalidToken));
        assert_eq!(tokens.verify_uncached(&format!("{message}.{signature}=")), Err(InvalidToken));
        let (header, _) = message.split_once('.').unwrap();
        assert_eq!(tokens.verify_uncached(&format!("{header}.e30.{signature}")), Err(InvalidToken));
    }

    #[test]
    fn another_rings_tokens_are_refused() {
        let (a, b) = (service(), service());
        let (token, _) = a.issue(&TenantId::generate(), &ids::new_id("usr"), "ses_1").unwrap();
        assert_eq!(b.verify(&token), Err(InvalidToken));
    }
}
