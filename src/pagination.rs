//! Page sizes and opaque page tokens shared by every List RPC. Lists are
//! keyset-paginated on `(created_at, id)`, so pages stay stable while rows
//! are added and each page costs one index range scan.

use chrono::{DateTime, Utc};

use crate::error::ApiError;

/// Page size when the caller sends 0.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// Largest page a caller may ask for.
pub const MAX_PAGE_SIZE: i64 = 1000;

/// The requested page size, defaulted and bounded.
pub fn page_size(requested: i32) -> Result<i64, ApiError> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err(ApiError::invalid("page_size", "must not be negative")),
        n => Ok(i64::from(n).min(MAX_PAGE_SIZE)),
    }
}

/// A position in a list: the last row's `(created_at, id)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: String,
}

impl Cursor {
    /// The opaque token for this position (hex, so it survives URLs).
    pub fn token(&self) -> String {
        hex::encode(format!("{}|{}", self.created_at.timestamp_micros(), self.id))
    }

    /// Reads a token; empty means the first page.
    pub fn parse(token: &str) -> Result<Option<Cursor>, ApiError> {
        if token.is_empty() {
            return Ok(None);
        }
        let bad = || ApiError::invalid("page_token", "is not a token this server issued");
        let text = hex::decode(token).ok().and_then(|b| String::from_utf8(b).ok()).ok_or_else(bad)?;
        let (micros, id) = text.split_once('|').ok_or_else(bad)?;
        let created_at = micros.parse().ok().and_then(DateTime::from_timestamp_micros).ok_or_else(bad)?;
        Ok(Some(Cursor { created_at, id: id.to_owned() }))
    }
}

/// Splits one extra fetched row off `rows` and returns the next page token.
pub fn next_page<T>(rows: &mut Vec<T>, size: i64, cursor: impl Fn(&T) -> Cursor) -> String {
    if rows.len() as i64 > size {
        rows.truncate(size as usize);
        rows.last().map(|row| cursor(row).token()).unwrap_or_default()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let cursor =
            Cursor { created_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(), id: "ten_x".into() };
        assert_eq!(Cursor::parse(&cursor.token()).unwrap(), Some(cursor));
        assert_eq!(Cursor::parse("").unwrap(), None);
        for bad in ["zz", "00", &hex::encode("nope"), &hex::encode("x|y")] {
            assert!(Cursor::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn page_sizes_default_and_cap() {
        assert_eq!(page_size(0).unwrap(), 50);
        assert_eq!(page_size(5000).unwrap(), 1000);
        assert!(page_size(-1).is_err());
    }
}
