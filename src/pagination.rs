//! Page sizes and page tokens shared by every List RPC (AIP-158).
//!
//! Time-ordered lists are keyset-paginated, newest first, on
//! `(created_at DESC, id DESC)`: pages stay stable while rows are added and
//! each page is one backward or forward range scan of a `(created_at, id)`
//! index. Short catalogues sorted in memory (roles, plans) page by offset.
//!
//! A page token is opaque, bound and signed. It carries the position (the
//! last row's `(created_at, id)`, or an offset), a fingerprint of the list,
//! its order and the request's filters (everything but `page_size` and
//! `page_token`), and an HMAC-SHA256 tag over all of that, truncated to 128
//! bits, in base64url: 88 characters after a `ten_…` id, 51 for an offset. So:
//! - a token that was altered, or was not issued by a node of this
//!   deployment, is `INVALID_ARGUMENT` naming `page_token`;
//! - a token replayed against another list, or with other filters, is
//!   `INVALID_ARGUMENT` naming `page_token` too, saying which.
//!
//! The key is shared by every node: [`PageTokens::load`] reads the secret
//! that the platform migration `page_token_key` created once, in the
//! database every node already trusts (docs/rest.md, "Pagination").

use aws_lc_rs::hmac;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Page size when the caller sends 0.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// Largest page a caller may ask for.
pub const MAX_PAGE_SIZE: i64 = 1000;

/// Token layout version; a new layout makes old tokens read as foreign.
const VERSION: u8 = 1;
/// Bytes of the list and filter fingerprints.
const FINGERPRINT: usize = 6;
/// Bytes of the HMAC-SHA256 tag kept (128 bits).
const TAG: usize = 16;
/// The field every token error names.
const FIELD: &str = "page_token";

/// The requested page size, defaulted and bounded.
pub fn page_size(requested: i32) -> Result<i64, ApiError> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err(ApiError::invalid("page_size", "must not be negative")),
        n => Ok(i64::from(n).min(MAX_PAGE_SIZE)),
    }
}

/// A position in a time-ordered list: the last row's `(created_at, id)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: String,
}

/// Splits the one extra fetched row off `rows`; the position after the page
/// when there is a next one.
pub fn split_page<T>(rows: &mut Vec<T>, size: i64, cursor: impl Fn(&T) -> Cursor) -> Option<Cursor> {
    if rows.len() as i64 > size {
        rows.truncate(size as usize);
        rows.last().map(cursor)
    } else {
        None
    }
}

/// What a token is bound to: one list in one order, and the request's
/// filters. Built the same way when the token is issued and when it is read.
#[derive(Debug, Clone)]
pub struct ListQuery {
    list: &'static str,
    filters: String,
}

impl ListQuery {
    /// A list and its fixed order, e.g. `("tenants", "created_at desc, id desc")`.
    pub fn new(list: &'static str, order: &'static str) -> Self {
        ListQuery { list, filters: format!("order={order:?}\n") }
    }

    /// Adds a filter the page depends on (its value as the request gave it).
    pub fn filter(mut self, name: &str, value: impl std::fmt::Debug) -> Self {
        self.filters.push_str(&format!("{name}={value:?}\n"));
        self
    }

    fn fingerprints(&self) -> ([u8; FINGERPRINT], [u8; FINGERPRINT]) {
        let hash = |parts: &[&str]| {
            let mut digest = Sha256::new();
            for part in parts {
                digest.update(part.as_bytes());
                digest.update([0]);
            }
            let mut out = [0; FINGERPRINT];
            out.copy_from_slice(&digest.finalize()[..FINGERPRINT]);
            out
        };
        (hash(&[self.list]), hash(&[self.list, &self.filters]))
    }
}

/// Where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Position {
    After(Cursor),
    Offset(u64),
}

/// Issues and reads page tokens with the deployment's shared key.
#[derive(Clone)]
pub struct PageTokens {
    key: hmac::Key,
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokens { key: <secret> }")
    }
}

impl PageTokens {
    /// Tokens signed with `secret` (at least 32 random bytes).
    pub fn from_secret(secret: &[u8]) -> Self {
        PageTokens { key: hmac::Key::new(hmac::HMAC_SHA256, secret) }
    }

    /// The key every node shares, from `platform.server_secrets`.
    pub async fn load(pool: &sqlx::PgPool) -> Result<Self, sqlx::Error> {
        let secret: Vec<u8> =
            sqlx::query_scalar("SELECT secret FROM platform.server_secrets WHERE name = 'page_token'")
                .fetch_one(pool)
                .await?;
        Ok(PageTokens::from_secret(&secret))
    }

    /// The token of the page after `next` (empty: there is none).
    pub fn issue(&self, query: &ListQuery, next: Option<&Cursor>) -> String {
        next.map(|c| self.encode(query, &Position::After(c.clone()))).unwrap_or_default()
    }

    /// Splits the one extra fetched row off `rows` and returns the next
    /// page's token (empty: this is the last page).
    pub fn next_page<T>(
        &self,
        query: &ListQuery,
        rows: &mut Vec<T>,
        size: i64,
        cursor: impl Fn(&T) -> Cursor,
    ) -> String {
        self.issue(query, split_page(rows, size, cursor).as_ref())
    }

    /// The position a token names; `None` for the first page.
    pub fn cursor(&self, query: &ListQuery, token: &str) -> Result<Option<Cursor>, ApiError> {
        match self.decode(query, token)? {
            None => Ok(None),
            Some(Position::After(cursor)) => Ok(Some(cursor)),
            Some(Position::Offset(_)) => Err(ApiError::invalid(FIELD, "belongs to another list")),
        }
    }

    /// The token of the page starting at `offset` of `total` (empty: none).
    pub fn issue_offset(&self, query: &ListQuery, offset: usize, total: usize) -> String {
        if offset < total { self.encode(query, &Position::Offset(offset as u64)) } else { String::new() }
    }

    /// The offset a token names; 0 for the first page.
    pub fn offset(&self, query: &ListQuery, token: &str) -> Result<usize, ApiError> {
        match self.decode(query, token)? {
            None => Ok(0),
            Some(Position::Offset(offset)) => {
                usize::try_from(offset).map_err(|_| ApiError::invalid(FIELD, "is out of range"))
            }
            Some(Position::After(_)) => Err(ApiError::invalid(FIELD, "belongs to another list")),
        }
    }

    fn encode(&self, query: &ListQuery, position: &Position) -> String {
        let (list, filters) = query.fingerprints();
        let mut bytes = Vec::with_capacity(64);
        bytes.push(VERSION);
        bytes.extend_from_slice(&list);
        bytes.extend_from_slice(&filters);
        match position {
            Position::After(cursor) => {
                bytes.push(b'k');
                bytes.extend_from_slice(&cursor.created_at.timestamp_micros().to_be_bytes());
                bytes.extend_from_slice(cursor.id.as_bytes());
            }
            Position::Offset(offset) => {
                bytes.push(b'o');
                bytes.extend_from_slice(&offset.to_be_bytes());
            }
        }
        let tag = hmac::sign(&self.key, &bytes);
        bytes.extend_from_slice(&tag.as_ref()[..TAG]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn decode(&self, query: &ListQuery, token: &str) -> Result<Option<Position>, ApiError> {
        if token.is_empty() {
            return Ok(None);
        }
        let foreign = || ApiError::invalid(FIELD, "is not a page token this service issued, or it was altered");
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| foreign())?;
        let head = 1 + 2 * FINGERPRINT + 1;
        if bytes.len() < head + TAG || bytes[0] != VERSION {
            return Err(foreign());
        }
        let (signed, tag) = bytes.split_at(bytes.len() - TAG);
        // Compared in constant time (aws-lc's verify takes the whole tag).
        let expected = hmac::sign(&self.key, signed);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected.as_ref()[..TAG], tag)) {
            return Err(foreign());
        }
        let (list, filters) = query.fingerprints();
        if signed[1..1 + FINGERPRINT] != list {
            return Err(ApiError::invalid(FIELD, "belongs to another list"));
        }
        if signed[1 + FINGERPRINT..1 + 2 * FINGERPRINT] != filters {
            return Err(ApiError::invalid(
                FIELD,
                "was issued for other filters; send the first page's parameters again, or no page_token",
            ));
        }
        let body = &signed[head..];
        match signed[head - 1] {
            b'k' if body.len() >= 8 => {
                let micros = i64::from_be_bytes(body[..8].try_into().map_err(|_| foreign())?);
                let created_at = DateTime::from_timestamp_micros(micros).ok_or_else(foreign)?;
                let id = String::from_utf8(body[8..].to_vec()).map_err(|_| foreign())?;
                Ok(Some(Position::After(Cursor { created_at, id })))
            }
            b'o' if body.len() == 8 => {
                Ok(Some(Position::Offset(u64::from_be_bytes(body.try_into().map_err(|_| foreign())?))))
            }
            _ => Err(foreign()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> PageTokens {
        PageTokens::from_secret(b"0123456789abcdef0123456789abcdef")
    }

    fn tenants(plan: &str) -> ListQuery {
        ListQuery::new("tenants", "created_at desc, id desc").filter("plan_id", plan)
    }

    fn cursor() -> Cursor {
        Cursor {
            created_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: "ten_01jd8x7v2c9q4w5e6r7t8y9u0i".into(),
        }
    }

    fn field(error: ApiError) -> (String, String) {
        match error {
            ApiError::InvalidArgument { field, description } => (field, description),
            other => panic!("not INVALID_ARGUMENT: {other:?}"),
        }
    }

    #[test]
    fn tokens_round_trip_and_stay_short_and_url_safe() {
        let token = tokens().issue(&tenants("free"), Some(&cursor()));
        assert!(token.len() <= 96, "{} characters: {token}", token.len());
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{token}");
        assert_eq!(tokens().cursor(&tenants("free"), &token).unwrap(), Some(cursor()));
        assert_eq!(tokens().cursor(&tenants("free"), "").unwrap(), None);
        assert_eq!(tokens().issue(&tenants("free"), None), "");
    }

    #[test]
    fn the_position_cannot_be_read_off_the_token() {
        let token = tokens().issue(&tenants("free"), Some(&cursor()));
        assert!(!token.contains("ten_") && !token.contains("1700000000"), "{token}");
    }

    #[test]
    fn other_filters_are_refused_naming_page_token() {
        let token = tokens().issue(&tenants("free"), Some(&cursor()));
        let (name, why) = field(tokens().cursor(&tenants("pro"), &token).unwrap_err());
        assert_eq!(name, "page_token");
        assert!(why.contains("other filters"), "{why}");
    }

    #[test]
    fn another_lists_token_is_refused() {
        let token = tokens().issue(&tenants("free"), Some(&cursor()));
        let users = ListQuery::new("users", "created_at desc, id desc").filter("plan_id", "free");
        let (name, why) = field(tokens().cursor(&users, &token).unwrap_err());
        assert_eq!((name.as_str(), why.as_str()), ("page_token", "belongs to another list"));
        let roles = ListQuery::new("roles", "built-in, then lower(name), id");
        let offset = tokens().issue_offset(&roles, 3, 10);
        assert_eq!(tokens().offset(&roles, &offset).unwrap(), 3);
        assert!(tokens().cursor(&tenants("free"), &offset).is_err());
    }

    #[test]
    fn every_altered_byte_and_another_key_are_refused() {
        let query = tenants("free");
        let token = tokens().issue(&query, Some(&cursor()));
        let bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for i in 0..bytes.len() {
            let mut altered = bytes.clone();
            altered[i] ^= 0x01;
            let (name, _) = field(tokens().cursor(&query, &URL_SAFE_NO_PAD.encode(altered)).unwrap_err());
            assert_eq!(name, "page_token", "byte {i}");
        }
        let other_key = PageTokens::from_secret(b"another deployment's secret key!");
        assert!(other_key.cursor(&query, &token).is_err());
        for garbage in ["zz", "!!", "AAAA", &hex::encode("1700000000|ten_x")] {
            assert!(tokens().cursor(&query, garbage).is_err(), "{garbage}");
        }
    }

    #[test]
    fn page_sizes_default_and_cap() {
        assert_eq!(page_size(0).unwrap(), 50);
        assert_eq!(page_size(5000).unwrap(), 1000);
        assert!(page_size(-1).is_err());
    }
}
