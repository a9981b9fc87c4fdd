//! The tenancy domain's types and their validation rules: slugs, names,
//! labels, plans. Input is parsed into these at the edge, so the store only
//! ever sees valid values.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{TenancyError, TenantId, TenantState};

/// Slugs that would be confusing or collide with routes and system names.
const RESERVED_SLUGS: &[&str] = &[
    "admin", "api", "app", "auth", "default", "internal", "null", "platform", "public", "root", "system", "tenant",
    "tenants", "tenantry", "www",
];

fn invalid(field: &'static str, problem: impl Into<String>) -> TenancyError {
    TenancyError::Invalid { field, problem: problem.into() }
}

/// A tenant's slug: 3–63 of `[a-z0-9-]`, not starting or ending with `-`,
/// not reserved. Used only as data, never as an identifier in SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slug(String);

impl Slug {
    /// Checks a slug.
    pub fn parse(text: &str) -> Result<Slug, TenancyError> {
        if !(3..=63).contains(&text.len()) {
            return Err(invalid("slug", "must be 3 to 63 characters"));
        }
        if !text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(invalid("slug", "may contain only a-z, 0-9 and -"));
        }
        if text.starts_with('-') || text.ends_with('-') {
            return Err(invalid("slug", "must not start or end with -"));
        }
        if RESERVED_SLUGS.contains(&text) {
            return Err(invalid("slug", format!("`{text}` is reserved")));
        }
        Ok(Slug(text.to_owned()))
    }

    /// The slug as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A display name: 1–200 characters, no control characters.
pub fn display_name(field: &'static str, text: &str) -> Result<String, TenancyError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if trimmed.chars().count() > 200 {
        return Err(invalid(field, "must be at most 200 characters"));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(trimmed.to_owned())
}

/// Labels: at most 64; keys 1–63 of `[a-z0-9_.-/]`, values at most 256 chars.
pub fn labels(field: &'static str, labels: &BTreeMap<String, String>) -> Result<(), TenancyError> {
    if labels.len() > 64 {
        return Err(invalid(field, "at most 64 labels"));
    }
    for (key, value) in labels {
        let key_ok = (1..=63).contains(&key.len())
            && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-/".contains(&b));
        if !key_ok {
            return Err(invalid(field, format!("label key `{key:.63}` must be 1-63 of a-z 0-9 _ . - /")));
        }
        if value.chars().count() > 256 || value.chars().any(char::is_control) {
            return Err(invalid(field, format!("label `{key}` value must be at most 256 printable characters")));
        }
    }
    Ok(())
}

/// A plan id: like a slug, 2–63 of `[a-z0-9-]` starting with a letter.
pub fn plan_id(field: &'static str, text: &str) -> Result<String, TenancyError> {
    let ok = (2..=63).contains(&text.len())
        && text.starts_with(|c: char| c.is_ascii_lowercase())
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        return Err(invalid(field, "must be 2-63 of a-z 0-9 - starting with a letter"));
    }
    Ok(text.to_owned())
}

/// A tenant as stored.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: TenantId,
    pub slug: String,
    pub display_name: String,
    pub plan_id: String,
    pub state: TenantState,
    pub suspend_reason: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub suspended_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub purge_after: Option<DateTime<Utc>>,
}

/// What creating a tenant needs, already validated.
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub slug: Slug,
    pub display_name: String,
    pub plan_id: String,
    pub labels: BTreeMap<String, String>,
}

/// A plan's limits.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Plan {
    pub id: String,
    pub display_name: String,
    /// Sustained requests per second; 0 is unlimited.
    pub requests_per_second: i32,
    /// Requests allowed in a burst above the sustained rate.
    pub burst: i32,
    /// Requests per calendar month (UTC); 0 is unlimited.
    pub monthly_request_quota: i64,
    /// Jobs running at once; 0 is unlimited.
    pub max_concurrent_jobs: i32,
    pub min_replicas: i32,
    pub max_replicas: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_the_rules() {
        for good in ["acme", "a-b", "abc", "x1-2-3", &"a".repeat(63)] {
            assert!(Slug::parse(good).is_ok(), "{good}");
        }
        for bad in ["ab", &"a".repeat(64), "-abc", "abc-", "ABC", "a_b", "a b", "admin", "tenantry", "é-abc", ""] {
            assert!(Slug::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_and_labels_are_bounded() {
        assert_eq!(display_name("display_name", "  Acme  ").unwrap(), "Acme");
        assert!(display_name("display_name", " ").is_err());
        assert!(display_name("display_name", &"x".repeat(201)).is_err());
        assert!(display_name("display_name", "a\u{0}b").is_err());
        let mut map = BTreeMap::new();
        map.insert("team".to_owned(), "core".to_owned());
        assert!(labels("labels", &map).is_ok());
        map.insert("Bad Key".to_owned(), "x".to_owned());
        assert!(labels("labels", &map).is_err());
    }
}
