//! The authorization policy of every RPC, read once from the embedded
//! descriptor set (`option (tenantry.v1.policy)` in `proto/`).
//!
//! Loading fails when any method of a Tenantry service lacks a complete
//! policy, so the server refuses to start rather than guess. The gRPC
//! infrastructure services (health, reflection) are public by definition.

use std::{collections::HashMap, sync::Arc};

use prost_reflect::{DescriptorPool, MethodDescriptor};

use crate::proto::{PACKAGE, tenantry::v1 as pb};

/// What a caller must present to call a method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// No credential needed.
    Public,
    /// Any valid credential.
    Authenticated,
    /// A credential holding this permission (`resource:action`).
    Permission(String),
}

/// Whether a call acts inside one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantScope {
    /// Exactly one tenant: from the credential, or `x-tenant-id` for platform admins.
    Required,
    /// Platform-level: no tenant, and `x-tenant-id` is refused.
    None,
    /// With or without a tenant.
    Optional,
}

/// The policy of one method.
#[derive(Debug, Clone)]
pub struct MethodPolicy {
    /// The gRPC path, `/tenantry.v1.TenantService/CreateTenant`.
    pub path: String,
    /// The full service name, `tenantry.v1.TenantService`.
    pub service: String,
    /// The method name, `CreateTenant`.
    pub method: String,
    /// What the caller must present.
    pub access: Access,
    /// Only platform admins may call.
    pub platform_admin_only: bool,
    /// Whether the call acts inside a tenant.
    pub tenant_scope: TenantScope,
    /// Rate-limit tokens one call costs (at least 1).
    pub rate_cost: u32,
    /// The name usage is metered under, `tenantry.v1.UsageService/GetQuota`
    /// (shared, so metering a call allocates no string).
    pub metered_name: Arc<str>,
}

/// Why the descriptor's policies are unusable.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("the embedded descriptor set cannot be decoded: {0}")]
    Descriptor(#[from] prost_reflect::DescriptorError),
    #[error("the descriptor set does not define the `tenantry.v1.policy` option")]
    MissingExtension,
    #[error("{method}: {problem}")]
    Invalid { method: String, problem: String },
}

/// Every method's policy, by gRPC path.
#[derive(Debug, Clone)]
pub struct PolicyTable {
    methods: HashMap<String, Arc<MethodPolicy>>,
}

/// gRPC infrastructure every client may use without a credential.
const INFRASTRUCTURE: &[(&str, &[&str])] = &[
    ("grpc.health.v1.Health", &["Check", "Watch"]),
    ("grpc.reflection.v1.ServerReflection", &["ServerReflectionInfo"]),
    ("grpc.reflection.v1alpha.ServerReflection", &["ServerReflectionInfo"]),
];

impl PolicyTable {
    /// Reads the policies of every Tenantry service from an encoded
    /// descriptor set.
    pub fn from_descriptor_set(bytes: &[u8]) -> Result<Self, PolicyError> {
        let pool = DescriptorPool::decode(bytes)?;
        let extension =
            pool.get_extension_by_name(&format!("{PACKAGE}.policy")).ok_or(PolicyError::MissingExtension)?;

        let mut methods = HashMap::new();
        for service in pool.services().filter(|s| s.package_name() == PACKAGE) {
            for method in service.methods() {
                let options = method.options();
                if !options.has_extension(&extension) {
                    return Err(invalid(&method, "has no `(tenantry.v1.policy)` option"));
                }
                let value = options.get_extension(&extension);
                let declared: pb::AccessPolicy = value
                    .as_message()
                    .ok_or_else(|| invalid(&method, "policy option is not a message"))?
                    .transcode_to()
                    .map_err(|e| invalid(&method, &format!("policy option unreadable: {e}")))?;
                let policy = Self::check(&method, declared)?;
                methods.insert(policy.path.clone(), Arc::new(policy));
            }
        }
        for (service, names) in INFRASTRUCTURE {
            for name in *names {
                let policy = MethodPolicy {
                    metered_name: Arc::from(format!("{service}/{name}")),
                    path: format!("/{service}/{name}"),
                    service: (*service).to_owned(),
                    method: (*name).to_owned(),
                    access: Access::Public,
                    platform_admin_only: false,
                    tenant_scope: TenantScope::None,
                    rate_cost: 1,
                };
                methods.insert(policy.path.clone(), Arc::new(policy));
            }
        }
        Ok(PolicyTable { methods })
    }

    /// The embedded contract's policies.
    pub fn embedded() -> Result<Self, PolicyError> {
        Self::from_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
    }

    fn check(method: &MethodDescriptor, declared: pb::AccessPolicy) -> Result<MethodPolicy, PolicyError> {
        use pb::access_policy::Access as Declared;
        let access = match declared.access {
            Some(Declared::Public(true)) => Access::Public,
            Some(Declared::Authenticated(true)) => Access::Authenticated,
            Some(Declared::Permission(permission)) if is_permission(&permission) => Access::Permission(permission),
            Some(Declared::Permission(permission)) => {
                return Err(invalid(method, &format!("permission `{permission}` is not `resource:action`")));
            }
            _ => return Err(invalid(method, "policy sets none of public, authenticated or permission")),
        };
        let tenant_scope = match pb::TenantScope::try_from(declared.tenant_scope) {
            Ok(pb::TenantScope::Required) => TenantScope::Required,
            Ok(pb::TenantScope::None) => TenantScope::None,
            Ok(pb::TenantScope::Optional) => TenantScope::Optional,
            _ => return Err(invalid(method, "policy does not set tenant_scope")),
        };
        if access == Access::Public && declared.platform_admin_only {
            return Err(invalid(method, "a public method cannot be platform_admin_only"));
        }
        Ok(MethodPolicy {
            metered_name: Arc::from(format!("{}/{}", method.parent_service().full_name(), method.name())),
            path: format!("/{}/{}", method.parent_service().full_name(), method.name()),
            service: method.parent_service().full_name().to_owned(),
            method: method.name().to_owned(),
            access,
            platform_admin_only: declared.platform_admin_only,
            tenant_scope,
            rate_cost: declared.rate_cost.max(1),
        })
    }

    /// The policy of the method at a gRPC path.
    pub fn get(&self, path: &str) -> Option<&Arc<MethodPolicy>> {
        self.methods.get(path)
    }

    /// Every method with a policy.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<MethodPolicy>> {
        self.methods.values()
    }
}

fn invalid(method: &MethodDescriptor, problem: &str) -> PolicyError {
    PolicyError::Invalid { method: method.full_name().to_owned(), problem: problem.to_owned() }
}

/// `resource:action`, lower case, `_` `-` `.` inside the parts.
fn is_permission(text: &str) -> bool {
    let part = |p: &str| {
        p.starts_with(|c: char| c.is_ascii_lowercase())
            && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b))
    };
    matches!(text.split_once(':'), Some((resource, action)) if part(resource) && part(action))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_are_resource_colon_action() {
        assert!(is_permission("users:read"));
        assert!(is_permission("api-keys:create"));
        assert!(!is_permission("users"));
        assert!(!is_permission("Users:Read"));
        assert!(!is_permission(":read"));
        assert!(!is_permission("users:read:all"));
    }
}
