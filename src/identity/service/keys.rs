//! CreateApiKey, ListApiKeys, RevokeApiKey. A key's scopes never exceed its
//! creator's permissions at creation; the secret is returned once.

use std::collections::BTreeSet;

use serde_json::json;
use tonic::{Request, Response};

use super::{AuthApi, Reply, convert};
use crate::{
    context,
    error::ApiError,
    identity::{
        api_keys,
        audit::{self, Event},
        roles,
    },
    pagination::{self, Cursor, ListQuery},
    proto::{from_timestamp, tenantry::v1 as pb},
};

impl AuthApi {
    pub(super) async fn do_create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Reply<pb::CreateApiKeyResponse> {
        let actor = self.actor(&request)?;
        let ctx = context::of(&request)?;
        let message = request.get_ref();
        let name = message.name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(ApiError::invalid("name", "must be 1 to 100 characters without control characters").into());
        }
        let scopes: BTreeSet<String> = roles::parse_permissions("scopes", &message.scopes)?;
        self.caller_holds(ctx, &scopes)?;
        let expires_at = match &message.expire_time {
            None => None,
            Some(ts) => {
                let at = from_timestamp(ts).ok_or_else(|| ApiError::invalid("expire_time", "is not a valid time"))?;
                if at <= chrono::Utc::now() {
                    return Err(ApiError::invalid("expire_time", "must be in the future").into());
                }
                Some(at)
            }
        };
        let (tenant, mut tx) = self.begin(ctx).await?;
        let (record, secret) = api_keys::create(&mut tx, &tenant.id, name, &scopes, &actor.id, expires_at).await?;
        let event = Event::success("apikey.created", "api_key", &record.id)
            .with(json!({ "name": name, "scopes": scopes, "public_id": record.public_id }));
        audit::record(&mut tx, &actor, event).await?;
        tx.commit().await.map_err(ApiError::from)?;
        Ok(Response::new(pb::CreateApiKeyResponse { api_key: Some(convert::api_key(record)), secret }))
    }

    pub(super) async fn do_list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Reply<pb::ListApiKeysResponse> {
        let ctx = context::of(&request)?;
        let message = request.get_ref();
        let size = pagination::page_size(message.page_size)?;
        let query = ListQuery::new("api_keys", api_keys::LIST_ORDER).filter("show_inactive", message.show_inactive);
        let before = self.page_tokens.cursor(&query, &message.page_token)?;
        let (_, mut tx) = self.begin(ctx).await?;
        let mut keys = api_keys::list(&mut tx, message.show_inactive, size, before).await?;
        tx.commit().await.map_err(ApiError::from)?;
        let next_page_token = self
            .page_tokens
            .next_page(&query, &mut keys, size, |k| Cursor { created_at: k.created_at, id: k.id.clone() });
        Ok(Response::new(pb::ListApiKeysResponse {
            api_keys: keys.into_iter().map(convert::api_key).collect(),
            next_page_token,
        }))
    }

    pub(super) async fn do_revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Reply<pb::RevokeApiKeyResponse> {
        let actor = self.actor(&request)?;
        let ctx = context::of(&request)?;
        let id = request.get_ref().api_key_id.clone();
        if id.is_empty() {
            return Err(ApiError::invalid("api_key_id", "is required").into());
        }
        let (_, mut tx) = self.begin(ctx).await?;
        let (record, revoked_now) = api_keys::revoke(&mut tx, &id).await?;
        if revoked_now {
            let event = Event::success("apikey.revoked", "api_key", &record.id)
                .with(json!({ "name": record.name, "public_id": record.public_id }));
            audit::record(&mut tx, &actor, event).await?;
        }
        tx.commit().await.map_err(ApiError::from)?;
        self.auth.cache().forget_key(&record.public_id);
        Ok(Response::new(pb::RevokeApiKeyResponse { api_key: Some(convert::api_key(record)) }))
    }
}
