//! The model of three tenants: what each holds (users, custom roles, API
//! keys, jobs, usage events), and the answer it predicts for every
//! operation, checked as the operation is made.
//!
//! Targets are resolved against the *target* tenant's resources, and the
//! answer predicted from the *caller's* model: another tenant's id is never
//! in the caller's model, so it is predicted (and must be) NOT_FOUND, like a
//! deleted or unknown one.

use std::collections::{BTreeMap, BTreeSet};

use proptest::sample::Index;
use tenantry::{
    identity::roles::CATALOGUE,
    proto::tenantry::v1::{
        AssignRoleRequest, CancelJobRequest, CreateApiKeyRequest, CreateRoleRequest, CreateTenantRequest,
        CreateUserRequest, DeleteRoleRequest, DeleteUserRequest, EnqueueJobRequest, GetUserRequest, JobState,
        ListUsersRequest, RecordUsageRequest, RevokeApiKeyRequest, UpdateUserRequest, UsageEvent, User, UserState,
        jobs_service_client::JobsServiceClient,
    },
};
use tonic::{Code, Request, Response, Status};

use super::{Op, TENANTS};
use crate::harness::{
    TestApp,
    identity::{PASSWORD, bearer},
    with_metadata,
};

pub(super) const QUEUE: &str = "prop";
const KIND: &str = "prop.work";
pub(super) const METRICS: [&str; 2] = ["prop.a", "prop.b"];
/// The built-in role any tenant may assign.
const VIEWER: &str = "viewer";

pub(super) type Outcome<T = ()> = Result<T, String>;

/// A user as the API shows it: id, email, display name, disabled, roles.
pub(super) type SeenUser = (String, String, String, bool, BTreeSet<String>);

#[derive(Debug, Clone)]
pub(super) struct UserModel {
    pub(super) id: String,
    pub(super) email: String,
    pub(super) display_name: String,
    pub(super) disabled: bool,
    pub(super) roles: BTreeSet<String>,
    pub(super) deleted: bool,
}

impl UserModel {
    pub(super) fn seen(&self) -> SeenUser {
        (self.id.clone(), self.email.clone(), self.display_name.clone(), self.disabled, self.roles.clone())
    }
}

pub(super) fn seen(user: &User) -> SeenUser {
    let disabled = user.state() == UserState::Disabled;
    (user.id.clone(), user.email.clone(), user.display_name.clone(), disabled, user.roles.iter().cloned().collect())
}

#[derive(Debug)]
pub(super) struct RoleModel {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) deleted: bool,
}

#[derive(Debug)]
pub(super) struct KeyModel {
    pub(super) id: String,
    pub(super) public_id: String,
    pub(super) name: String,
    pub(super) revoked: bool,
}

#[derive(Debug)]
pub(super) struct JobModel {
    pub(super) id: String,
    pub(super) unique_key: String,
    pub(super) cancelled: bool,
}

/// One tenant: its credential (a full-scope API key, `keys[0]`) and, in
/// creation order, everything it ever created.
#[derive(Debug)]
pub(super) struct TenantModel {
    pub(super) id: String,
    pub(super) slug: String,
    pub(super) credential: String,
    pub(super) users: Vec<UserModel>,
    pub(super) roles: Vec<RoleModel>,
    pub(super) keys: Vec<KeyModel>,
    pub(super) jobs: Vec<JobModel>,
    /// Usage events by id: metric index and quantity.
    pub(super) events: BTreeMap<String, (usize, u8)>,
}

impl TenantModel {
    fn live_user(&mut self, id: &str) -> Option<&mut UserModel> {
        self.users.iter_mut().find(|u| u.id == id && !u.deleted)
    }
    fn live_role(&self, id: &str) -> bool {
        self.roles.iter().any(|r| r.id == id && !r.deleted)
    }
    /// Every random id of the tenant's resources.
    pub(super) fn markers(&self) -> Vec<&str> {
        let mut ids = vec![self.id.as_str()];
        ids.extend(self.users.iter().map(|u| u.id.as_str()));
        ids.extend(self.roles.iter().map(|r| r.id.as_str()));
        ids.extend(self.keys.iter().flat_map(|k| [k.id.as_str(), k.public_id.as_str()]));
        ids.extend(self.jobs.iter().map(|j| j.id.as_str()));
        ids
    }
}

/// Picks one of `ids` (an unknown id with `prefix` when there is none).
fn pick(ids: Vec<&str>, index: &Index, prefix: &str) -> String {
    match ids.len() {
        0 => tenantry::ids::new_id(prefix),
        n => ids[index.index(n)].to_owned(),
    }
}

pub(super) fn answer<T>(what: &str, answer: Result<Response<T>, Status>) -> Outcome<T> {
    answer.map(Response::into_inner).map_err(|status| format!("{what} failed: {status:?}"))
}

pub(super) fn refused<T: std::fmt::Debug>(what: &str, answer: Result<Response<T>, Status>, code: Code) -> Outcome {
    match answer {
        Ok(answer) => Err(format!("{what}: expected {code:?}, got {:?}", answer.into_inner())),
        Err(status) if status.code() == code => Ok(()),
        Err(status) => Err(format!("{what}: expected {code:?}, got {status:?}")),
    }
}

/// Three tenants, as the server should hold them.
pub struct World {
    pub(super) tenants: Vec<TenantModel>,
}

impl World {
    /// Creates the three tenants of sequence `n`, each with a full-scope API
    /// key made by the platform admin.
    pub async fn provision(app: &TestApp, n: usize) -> World {
        let mut tenants = Vec::new();
        for t in 0..TENANTS {
            let slug = format!("prop-{n}-{t}");
            let request = CreateTenantRequest {
                slug: slug.clone(),
                display_name: slug.clone(),
                plan_id: "enterprise".into(),
                ..Default::default()
            };
            let tenant = app.tenants().create_tenant(app.as_admin(request)).await.expect("create tenant");
            let id = tenant.into_inner().tenant.unwrap().id;
            let key = CreateApiKeyRequest {
                name: "credential".into(),
                scopes: CATALOGUE.iter().map(|(p, _)| (*p).to_owned()).collect(),
                expire_time: None,
            };
            let key = app.auth().create_api_key(app.as_admin_in(&id, key)).await.expect("create key").into_inner();
            let record = key.api_key.unwrap();
            tenants.push(TenantModel {
                id,
                slug,
                credential: key.secret,
                users: Vec::new(),
                roles: Vec::new(),
                keys: vec![KeyModel { id: record.id, public_id: record.public_id, name: record.name, revoked: false }],
                jobs: Vec::new(),
                events: BTreeMap::new(),
            });
        }
        World { tenants }
    }

    /// `message` with tenant `by`'s credential.
    pub(super) fn as_tenant<T>(&self, by: usize, message: T) -> Request<T> {
        bearer(message, &self.tenants[by].credential)
    }

    /// Makes the call on the server and checks its answer against the model,
    /// then applies it to the model.
    pub async fn apply(&mut self, app: &TestApp, op: &Op) -> Outcome {
        let jobs = || JobsServiceClient::new(app.channel.clone());
        match op.clone() {
            Op::CreateUser { by, email } => {
                let email = format!("p{email}@prop.test");
                let display_name = format!("User {email}");
                let request = CreateUserRequest {
                    email: email.clone(),
                    display_name: display_name.clone(),
                    password: PASSWORD.into(),
                    roles: Vec::new(),
                };
                let created = app.auth().create_user(self.as_tenant(by, request)).await;
                let tenant = &mut self.tenants[by];
                if tenant.users.iter().any(|u| !u.deleted && u.email == email) {
                    return refused("CreateUser with a taken email", created, Code::AlreadyExists);
                }
                let user = answer("CreateUser", created)?.user.unwrap();
                let model = UserModel { id: user.id.clone(), email, display_name, disabled: false, ..empty_user() };
                ensure!(seen(&user) == model.seen(), "created {user:?}, expected {model:?}");
                tenant.users.push(model);
            }
            Op::UpdateUser { by, of, user, name, disable } => {
                let id = pick(self.tenants[of].users.iter().map(|u| u.id.as_str()).collect(), &user, "usr");
                let display_name = format!("Name {name}");
                let state = if disable { UserState::Disabled } else { UserState::Active };
                let update = User {
                    id: id.clone(),
                    display_name: display_name.clone(),
                    state: state as i32,
                    ..Default::default()
                };
                let mask = prost_types::FieldMask { paths: vec!["display_name".into(), "state".into()] };
                let request = UpdateUserRequest { user: Some(update), update_mask: Some(mask) };
                let updated = app.auth().update_user(self.as_tenant(by, request)).await;
                let Some(model) = self.tenants[by].live_user(&id) else {
                    return refused("UpdateUser", updated, Code::NotFound);
                };
                (model.display_name, model.disabled) = (display_name, disable);
                let user = answer("UpdateUser", updated)?.user.unwrap();
                ensure!(seen(&user) == model.seen(), "updated {user:?}, expected {model:?}");
            }
            Op::DeleteUser { by, of, user } => {
                let id = pick(self.tenants[of].users.iter().map(|u| u.id.as_str()).collect(), &user, "usr");
                let deleted =
                    app.auth().delete_user(self.as_tenant(by, DeleteUserRequest { user_id: id.clone() })).await;
                let Some(model) = self.tenants[by].live_user(&id) else {
                    return refused("DeleteUser", deleted, Code::NotFound);
                };
                model.deleted = true;
                answer("DeleteUser", deleted)?;
            }
            Op::GetUser { by, of, user } => {
                let id = pick(self.tenants[of].users.iter().map(|u| u.id.as_str()).collect(), &user, "usr");
                let got = app.auth().get_user(self.as_tenant(by, GetUserRequest { user_id: id.clone() })).await;
                let Some(model) = self.tenants[by].live_user(&id) else {
                    return refused("GetUser", got, Code::NotFound);
                };
                let user = answer("GetUser", got)?.user.unwrap();
                ensure!(seen(&user) == model.seen(), "got {user:?}, expected {model:?}");
            }
            Op::CreateRole { by, name } => {
                let name = format!("Role {name}");
                let request = CreateRoleRequest {
                    name: name.clone(),
                    description: String::new(),
                    permissions: vec!["jobs:read".into()],
                };
                let created = app.auth().create_role(self.as_tenant(by, request)).await;
                let tenant = &mut self.tenants[by];
                if tenant.roles.iter().any(|r| !r.deleted && r.name == name) {
                    return refused("CreateRole with a taken name", created, Code::AlreadyExists);
                }
                let role = answer("CreateRole", created)?.role.unwrap();
                ensure!(role.name == name && !role.built_in, "created {role:?}");
                tenant.roles.push(RoleModel { id: role.id, name, deleted: false });
            }
            Op::AssignRole { by, of, user, role } => {
                let target = &self.tenants[of];
                let user_id = pick(target.users.iter().map(|u| u.id.as_str()).collect(), &user, "usr");
                let mut roles: Vec<&str> = target.roles.iter().map(|r| r.id.as_str()).collect();
                roles.push(VIEWER);
                let role_id = pick(roles, &role, "rol");
                let request = AssignRoleRequest { user_id: user_id.clone(), role_id: role_id.clone() };
                let assigned = app.auth().assign_role(self.as_tenant(by, request)).await;
                let tenant = &mut self.tenants[by];
                let role_exists = role_id == VIEWER || tenant.live_role(&role_id);
                let Some(model) = tenant.live_user(&user_id).filter(|_| role_exists) else {
                    return refused("AssignRole", assigned, Code::NotFound);
                };
                model.roles.insert(role_id);
                let user = answer("AssignRole", assigned)?.user.unwrap();
                ensure!(seen(&user) == model.seen(), "assigned {user:?}, expected {model:?}");
            }
            Op::DeleteRole { by, of, role } => {
                let id = pick(self.tenants[of].roles.iter().map(|r| r.id.as_str()).collect(), &role, "rol");
                let deleted =
                    app.auth().delete_role(self.as_tenant(by, DeleteRoleRequest { role_id: id.clone() })).await;
                let tenant = &mut self.tenants[by];
                let Some(model) = tenant.roles.iter_mut().find(|r| r.id == id && !r.deleted) else {
                    return refused("DeleteRole", deleted, Code::NotFound);
                };
                model.deleted = true;
                for user in &mut tenant.users {
                    user.roles.remove(&id);
                }
                answer("DeleteRole", deleted)?;
            }
            Op::CreateApiKey { by } => {
                let name = format!("key {}", self.tenants[by].keys.len());
                let request =
                    CreateApiKeyRequest { name: name.clone(), scopes: vec!["jobs:read".into()], expire_time: None };
                let created = answer("CreateApiKey", app.auth().create_api_key(self.as_tenant(by, request)).await)?;
                let key = created.api_key.unwrap();
                ensure!(key.name == name && key.revoke_time.is_none(), "created {key:?}");
                self.tenants[by].keys.push(KeyModel { id: key.id, public_id: key.public_id, name, revoked: false });
            }
            Op::RevokeApiKey { by, of, key } => {
                // Never the caller's own credential; another tenant's may be tried.
                let skip = usize::from(by == of);
                let id = pick(self.tenants[of].keys.iter().skip(skip).map(|k| k.id.as_str()).collect(), &key, "key");
                let revoked =
                    app.auth().revoke_api_key(self.as_tenant(by, RevokeApiKeyRequest { api_key_id: id.clone() })).await;
                let Some(model) = self.tenants[by].keys.iter_mut().skip(1).find(|k| k.id == id) else {
                    return refused("RevokeApiKey", revoked, Code::NotFound);
                };
                model.revoked = true;
                let key = answer("RevokeApiKey", revoked)?.api_key.unwrap();
                ensure!(key.id == id && key.revoke_time.is_some(), "revoked {key:?}");
            }
            Op::EnqueueJob { by, unique } => {
                let unique_key = unique.map(|k| format!("u{k}")).unwrap_or_default();
                let request = EnqueueJobRequest {
                    kind: KIND.into(),
                    queue: QUEUE.into(),
                    unique_key: unique_key.clone(),
                    ..Default::default()
                };
                let enqueued = answer("EnqueueJob", jobs().enqueue_job(self.as_tenant(by, request)).await)?;
                let job = enqueued.job.unwrap();
                let tenant = &mut self.tenants[by];
                let blocking: Vec<&str> = tenant
                    .jobs
                    .iter()
                    .filter(|j| !unique_key.is_empty() && j.unique_key == unique_key && !j.cancelled)
                    .map(|j| j.id.as_str())
                    .collect();
                let blocked = !blocking.is_empty();
                ensure!(enqueued.duplicate == blocked, "duplicate {}, blocked by {blocking:?}", enqueued.duplicate);
                ensure!(job.tenant_id == tenant.id, "enqueued into {}", job.tenant_id);
                if enqueued.duplicate {
                    ensure!(blocking.contains(&job.id.as_str()), "duplicate of {}, not of {blocking:?}", job.id);
                } else {
                    ensure!(job.state() == JobState::Available, "enqueued {job:?}");
                    tenant.jobs.push(JobModel { id: job.id, unique_key, cancelled: false });
                }
            }
            Op::CancelJob { by, of, job } => {
                let id = pick(self.tenants[of].jobs.iter().map(|j| j.id.as_str()).collect(), &job, "job");
                let cancelled = jobs().cancel_job(self.as_tenant(by, CancelJobRequest { job_id: id.clone() })).await;
                let Some(model) = self.tenants[by].jobs.iter_mut().find(|j| j.id == id) else {
                    return refused("CancelJob", cancelled, Code::NotFound);
                };
                model.cancelled = true;
                let job = answer("CancelJob", cancelled)?.job.unwrap();
                ensure!(job.state() == JobState::Cancelled, "cancelled {job:?}");
            }
            Op::RecordUsage { by, event, metric, quantity } => {
                let (event_id, metric, quantity) = (format!("e{event}"), usize::from(metric), quantity + 1);
                let event = UsageEvent {
                    event_id: event_id.clone(),
                    metric: METRICS[metric].into(),
                    quantity: f64::from(quantity),
                    ..Default::default()
                };
                let request = RecordUsageRequest { events: vec![event] };
                let recorded = app.usage().record_usage(self.as_tenant(by, request)).await;
                let events = &mut self.tenants[by].events;
                match events.get(&event_id) {
                    Some(&stored) if stored != (metric, quantity) => {
                        return refused("RecordUsage reusing an id", recorded, Code::AlreadyExists);
                    }
                    Some(_) => {
                        let recorded = answer("RecordUsage", recorded)?;
                        ensure!(
                            (recorded.accepted_count, recorded.duplicate_count) == (0, 1),
                            "a retry gave {recorded:?}"
                        );
                    }
                    None => {
                        let recorded = answer("RecordUsage", recorded)?;
                        ensure!(
                            (recorded.accepted_count, recorded.duplicate_count) == (1, 0),
                            "a new event gave {recorded:?}"
                        );
                        events.insert(event_id, (metric, quantity));
                    }
                }
            }
            Op::NameTenant { by, named, by_slug } => {
                let target = &self.tenants[named];
                let name = if by_slug { &target.slug } else { &target.id };
                let authorization = format!("Bearer {}", self.tenants[by].credential);
                let request = with_metadata(
                    ListUsersRequest::default(),
                    &[("authorization", authorization.as_str()), ("x-tenant-id", name.as_str())],
                );
                let listed = app.auth().list_users(request).await;
                if named != by {
                    return refused("naming another tenant", listed, Code::PermissionDenied);
                }
                answer("naming its own tenant", listed)?;
            }
        }
        Ok(())
    }
}

fn empty_user() -> UserModel {
    UserModel {
        id: String::new(),
        email: String::new(),
        display_name: String::new(),
        disabled: false,
        roles: BTreeSet::new(),
        deleted: false,
    }
}
