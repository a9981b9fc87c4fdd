//! Identity helpers for tests: the test signing key, tenants with an owner,
//! logging in, bearer requests.

use std::sync::OnceLock;

use tenantry::{
    identity::keys::{self, GeneratedKey},
    proto::tenantry::v1::{CreateTenantRequest, CreateUserRequest, LoginRequest, LoginResponse, User},
};
use tonic::Request;

use super::{TestApp, with_metadata};

/// The password every test user gets.
pub const PASSWORD: &str = "correct horse battery staple";

/// The signing key every test server uses (generated once per process).
pub fn signing_key() -> &'static GeneratedKey {
    static KEY: OnceLock<GeneratedKey> = OnceLock::new();
    KEY.get_or_init(|| keys::generate().expect("generate a test signing key"))
}

/// `message` with `token` as the bearer credential.
pub fn bearer<T>(message: T, token: &str) -> Request<T> {
    with_metadata(message, &[("authorization", &format!("Bearer {token}"))])
}

/// A tenant on the enterprise plan (generous rate limits) with an owner.
pub struct Tenant {
    pub id: String,
    pub slug: String,
    pub owner: User,
    pub owner_token: String,
}

impl TestApp {
    /// Creates a tenant with owner `owner@<slug>.test` and logs the owner in.
    pub async fn tenant_with_owner(&self, slug: &str) -> Tenant {
        let email = format!("owner@{slug}.test");
        let created = self
            .tenants()
            .create_tenant(self.as_admin(CreateTenantRequest {
                slug: slug.into(),
                display_name: slug.into(),
                plan_id: "enterprise".into(),
                owner_email: Some(email.clone()),
                owner_password: Some(PASSWORD.into()),
                ..Default::default()
            }))
            .await
            .expect("create tenant with owner")
            .into_inner();
        let tenant = created.tenant.unwrap();
        let login = self.login(&tenant.slug, &email, PASSWORD).await.expect("owner logs in");
        Tenant { id: tenant.id, slug: tenant.slug, owner: created.owner.unwrap(), owner_token: login.access_token }
    }

    /// Logs in.
    pub async fn login(&self, tenant: &str, email: &str, password: &str) -> Result<LoginResponse, tonic::Status> {
        let request = LoginRequest { tenant: tenant.into(), email: email.into(), password: password.into() };
        self.auth().login(request).await.map(|r| r.into_inner())
    }

    /// Creates a user holding `roles` (as the tenant's owner) and logs them in.
    pub async fn user_with_roles(&self, tenant: &Tenant, name: &str, roles: &[&str]) -> (User, String) {
        let email = format!("{name}@{}.test", tenant.slug);
        let request = CreateUserRequest {
            email: email.clone(),
            display_name: name.into(),
            password: PASSWORD.into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        };
        let user = self.auth().create_user(bearer(request, &tenant.owner_token)).await.expect("create user");
        let login = self.login(&tenant.slug, &email, PASSWORD).await.expect("user logs in");
        (user.into_inner().user.unwrap(), login.access_token)
    }
}
