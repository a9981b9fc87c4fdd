//! Permissions and roles. The catalogue lists every tenant-scoped permission
//! the proto's policies declare (a test keeps the two equal); the built-in
//! roles are defined here, custom roles live in the tenant's `roles` table.
//!
//! Built-in roles: `owner` and `admin` hold every tenant permission (only an
//! owner, or a platform admin, may grant or remove `owner`); `member` reads
//! everything but the audit log and writes usage and jobs; `viewer` reads
//! everything but the audit log.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{IdentityError, invalid};
use crate::ids;

/// Every tenant-scoped permission, with what it allows.
pub const CATALOGUE: &[(&str, &str)] = &[
    ("apikeys:create", "create API keys (scopes limited to one's own permissions)"),
    ("apikeys:read", "list API keys (never their secrets)"),
    ("apikeys:revoke", "revoke API keys"),
    ("audit:read", "read the tenant's audit log"),
    ("auth:introspect", "validate tokens and keys for other services"),
    ("jobs:read", "read and watch jobs"),
    ("jobs:work", "lease, heartbeat, complete and fail jobs (external workers)"),
    ("jobs:write", "enqueue, cancel and retry jobs"),
    ("roles:assign", "assign and unassign roles"),
    ("roles:create", "create custom roles"),
    ("roles:delete", "delete custom roles"),
    ("roles:read", "list roles"),
    ("roles:update", "change custom roles"),
    ("scaling:read", "read scaling policy, status and decisions; simulate"),
    ("scaling:write", "change the scaling policy"),
    ("tenant:read", "read the tenant"),
    ("tenant:update", "change the tenant's name and labels"),
    ("usage:read", "read usage and quota"),
    ("usage:write", "record usage events"),
    ("users:create", "create users"),
    ("users:delete", "delete users"),
    ("users:read", "read users"),
    ("users:update", "change users, including others' passwords"),
];

/// The built-in roles, in the order they are listed.
pub const BUILT_IN: &[&str] = &["owner", "admin", "member", "viewer"];

/// The owner role's id.
pub const OWNER: &str = "owner";

/// Whether `permission` is in the catalogue.
pub fn is_known(permission: &str) -> bool {
    CATALOGUE.iter().any(|(p, _)| *p == permission)
}

/// The permissions of a built-in role; `None` for other ids.
pub fn built_in_permissions(role: &str) -> Option<BTreeSet<String>> {
    let all = CATALOGUE.iter().map(|(p, _)| *p);
    let reader = |p: &&str| p.ends_with(":read") && *p != "audit:read";
    let set: BTreeSet<String> = match role {
        "owner" | "admin" => all.map(str::to_owned).collect(),
        "member" => all.filter(|p| reader(p) || ["usage:write", "jobs:write"].contains(p)).map(str::to_owned).collect(),
        "viewer" => all.filter(reader).map(str::to_owned).collect(),
        _ => return None,
    };
    Some(set)
}

/// What a built-in role is for.
pub fn built_in_description(role: &str) -> &'static str {
    match role {
        "owner" => "Every tenant permission; can grant and remove the owner role.",
        "admin" => "Every tenant permission, except granting or removing the owner role.",
        "member" => "Reads everything except the audit log; records usage and manages jobs.",
        "viewer" => "Reads everything except the audit log.",
        _ => "",
    }
}

/// A role as stored or built in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub id: String,
    pub name: String,
    pub description: String,
    pub permissions: BTreeSet<String>,
    pub built_in: bool,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

fn built_in(role: &str) -> Option<Role> {
    Some(Role {
        id: role.to_owned(),
        name: role.to_owned(),
        description: built_in_description(role).to_owned(),
        permissions: built_in_permissions(role)?,
        built_in: true,
        created_at: None,
        updated_at: None,
    })
}

#[derive(sqlx::FromRow)]
struct RoleRow {
    id: String,
    name: String,
    description: String,
    permissions: Vec<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<RoleRow> for Role {
    fn from(row: RoleRow) -> Self {
        Role {
            id: row.id,
            name: row.name,
            description: row.description,
            permissions: row.permissions.into_iter().collect(),
            built_in: false,
            created_at: Some(row.created_at),
            updated_at: Some(row.updated_at),
        }
    }
}

/// Most custom roles a tenant may have.
pub const MAX_CUSTOM_ROLES: i64 = 500;

/// A checked permission list: non-empty, known, deduplicated.
pub fn parse_permissions(field: &'static str, permissions: &[String]) -> Result<BTreeSet<String>, IdentityError> {
    if permissions.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    let mut set = BTreeSet::new();
    for permission in permissions {
        if !is_known(permission) {
            let shown: String = permission.chars().take(64).collect();
            return Err(invalid(field, format!("`{shown}` is not a tenant permission")));
        }
        set.insert(permission.clone());
    }
    Ok(set)
}

/// A checked role name: 1–100 characters, no control characters, not a built-in name.
pub fn parse_name(field: &'static str, name: &str) -> Result<String, IdentityError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(invalid(field, "must be 1 to 100 characters without control characters"));
    }
    if BUILT_IN.iter().any(|b| b.eq_ignore_ascii_case(name)) {
        return Err(invalid(field, "is the name of a built-in role"));
    }
    Ok(name.to_owned())
}

/// A checked description: at most 1000 characters.
pub fn parse_description(field: &'static str, text: &str) -> Result<String, IdentityError> {
    if text.chars().count() > 1000 {
        return Err(invalid(field, "must be at most 1000 characters"));
    }
    Ok(text.to_owned())
}

const COLUMNS: &str = "id, name, description, permissions, created_at, updated_at";

fn name_taken(error: sqlx::Error) -> IdentityError {
    match &error {
        sqlx::Error::Database(db) if db.constraint() == Some("roles_name") => {
            IdentityError::AlreadyExists("a role with this name exists")
        }
        _ => error.into(),
    }
}

/// Creates a custom role.
pub async fn create(
    conn: &mut PgConnection,
    name: &str,
    description: &str,
    permissions: &BTreeSet<String>,
) -> Result<Role, IdentityError> {
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM roles").fetch_one(&mut *conn).await?;
    if count >= MAX_CUSTOM_ROLES {
        return Err(IdentityError::Precondition {
            reason: crate::error::Reason::RoleLimit,
            message: format!("a tenant has at most {MAX_CUSTOM_ROLES} custom roles"),
        });
    }
    let row: RoleRow = sqlx::query_as(&format!(
        "INSERT INTO roles (id, name, description, permissions) VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}"
    ))
    .bind(ids::new_id("rol"))
    .bind(name)
    .bind(description)
    .bind(permissions.iter().cloned().collect::<Vec<_>>())
    .fetch_one(&mut *conn)
    .await
    .map_err(name_taken)?;
    Ok(row.into())
}

/// A role by id, built-in or custom.
pub async fn get(conn: &mut PgConnection, id: &str) -> Result<Option<Role>, IdentityError> {
    if let Some(role) = built_in(id) {
        return Ok(Some(role));
    }
    if !ids::is_id("rol", id) {
        return Ok(None);
    }
    let row: Option<RoleRow> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM roles WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(Role::from))
}

/// The order of [`list`]: built-in roles first, then custom roles by name
/// (case-insensitive), the order people look a role up in.
pub const LIST_ORDER: &str = "built-in, then lower(name), id";

/// Every role: built-in first, then custom by name.
pub async fn list(conn: &mut PgConnection) -> Result<Vec<Role>, IdentityError> {
    let rows: Vec<RoleRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM roles ORDER BY lower(name), id")).fetch_all(&mut *conn).await?;
    Ok(BUILT_IN.iter().filter_map(|r| built_in(r)).chain(rows.into_iter().map(Role::from)).collect())
}

/// Changes a custom role.
pub async fn update(
    conn: &mut PgConnection,
    id: &str,
    name: Option<&str>,
    description: Option<&str>,
    permissions: Option<&BTreeSet<String>>,
) -> Result<Role, IdentityError> {
    let row: Option<RoleRow> = sqlx::query_as(&format!(
        "UPDATE roles SET name = coalesce($2, name), description = coalesce($3, description),
                permissions = coalesce($4, permissions), updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(name)
    .bind(description)
    .bind(permissions.map(|p| p.iter().cloned().collect::<Vec<_>>()))
    .fetch_optional(&mut *conn)
    .await
    .map_err(name_taken)?;
    row.map(Role::from).ok_or(IdentityError::NotFound("role"))
}

/// Deletes a custom role and its bindings; whether it existed.
pub async fn delete(conn: &mut PgConnection, id: &str) -> Result<bool, IdentityError> {
    sqlx::query("DELETE FROM user_roles WHERE role_id = $1").bind(id).execute(&mut *conn).await?;
    let deleted = sqlx::query("DELETE FROM roles WHERE id = $1").bind(id).execute(&mut *conn).await?;
    Ok(deleted.rows_affected() > 0)
}

/// The union of the permissions of `role_ids`.
pub async fn permissions_of(conn: &mut PgConnection, role_ids: &[String]) -> Result<BTreeSet<String>, IdentityError> {
    let mut set = BTreeSet::new();
    let mut custom = Vec::new();
    for role in role_ids {
        match built_in_permissions(role) {
            Some(permissions) => set.extend(permissions),
            None => custom.push(role.clone()),
        }
    }
    if !custom.is_empty() {
        let rows: Vec<Vec<String>> = sqlx::query_scalar("SELECT permissions FROM roles WHERE id = ANY($1)")
            .bind(&custom)
            .fetch_all(&mut *conn)
            .await?;
        // A role may keep a permission the catalogue dropped since; it grants nothing.
        set.extend(rows.into_iter().flatten().filter(|p| is_known(p)));
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_roles_nest() {
        let owner = built_in_permissions("owner").unwrap();
        let member = built_in_permissions("member").unwrap();
        let viewer = built_in_permissions("viewer").unwrap();
        assert_eq!(owner.len(), CATALOGUE.len());
        assert!(viewer.is_subset(&member) && member.is_subset(&owner));
        assert!(viewer.iter().all(|p| p.ends_with(":read")));
        assert!(!member.contains("users:create") && member.contains("jobs:write"));
        assert!(built_in_permissions("rol_x").is_none());
    }

    #[test]
    fn permission_lists_are_checked() {
        assert!(parse_permissions("permissions", &[]).is_err());
        assert!(parse_permissions("permissions", &["tenants:create".into()]).is_err());
        assert_eq!(parse_permissions("permissions", &["users:read".into(), "users:read".into()]).unwrap().len(), 1);
        assert!(parse_name("name", "Owner").is_err());
        assert!(parse_name("name", "Billing").is_ok());
    }
}

/// The permissions table of `docs/auth.md`: every catalogue permission, the
/// built-in roles holding it, and the methods that require it.
pub fn permissions_table(policies: &crate::policy::PolicyTable) -> String {
    let mut out =
        String::from("| permission | owner | admin | member | viewer | required by |\n|---|---|---|---|---|---|\n");
    for (permission, _) in CATALOGUE {
        let mut methods: Vec<String> = policies
            .iter()
            .filter(|p| p.access == crate::policy::Access::Permission((*permission).to_owned()))
            .map(|p| format!("{}.{}", p.service.trim_start_matches("tenantry.v1."), p.method))
            .collect();
        methods.sort();
        let marks: Vec<&str> = BUILT_IN
            .iter()
            .map(|r| if built_in_permissions(r).is_some_and(|s| s.contains(*permission)) { "✓" } else { "" })
            .collect();
        out.push_str(&format!("| `{permission}` | {} | {} |\n", marks.join(" | "), methods.join(", ")));
    }
    out
}

#[cfg(test)]
mod contract_tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::policy::{Access, PolicyTable};

    #[test]
    fn the_catalogue_is_every_tenant_permission_the_proto_declares() {
        let table = PolicyTable::embedded().unwrap();
        let declared: BTreeSet<String> = table
            .iter()
            .filter(|p| !p.platform_admin_only)
            .filter_map(|p| match &p.access {
                Access::Permission(permission) => Some(permission.clone()),
                _ => None,
            })
            .collect();
        let catalogue: BTreeSet<String> = CATALOGUE.iter().map(|(p, _)| (*p).to_owned()).collect();
        assert_eq!(catalogue, declared);
    }

    #[test]
    fn the_documented_permissions_table_matches_the_proto() {
        let doc = include_str!("../../docs/auth.md");
        let begin =
            doc.find("<!-- permissions:begin -->\n").expect("begin marker") + "<!-- permissions:begin -->\n".len();
        let end = doc.find("<!-- permissions:end -->").expect("end marker");
        let expected = permissions_table(&PolicyTable::embedded().unwrap());
        assert_eq!(&doc[begin..end], expected, "docs/auth.md is stale; replace its table with:\n{expected}");
    }
}
