//! `tenantry.tenant.purge` (platform-level, periodic): drops the schemas of
//! tenants deleted longer ago than the grace period, through
//! [`crate::tenancy::purge`]. Purging one tenant is idempotent and skips
//! tenants another node is purging, so overlapping runs are harmless. The
//! tenant's jobs and scaling data in `platform` go with it, in the same
//! transaction as the schema.

use super::{Handler, HandlerError, HandlerFuture, JobContext};
use crate::tenancy::purge;

/// Tenants purged per batch.
const BATCH: i64 = 50;

/// See the module docs.
pub struct TenantPurge;

impl Handler for TenantPurge {
    fn run(&self, job: JobContext) -> HandlerFuture {
        Box::pin(async move {
            let mut purged = Vec::new();
            loop {
                let due = purge::tenants_due_for_purge(&job.pool, BATCH)
                    .await
                    .map_err(|error| HandlerError::retry(format!("listing tenants due for purge failed: {error}")))?;
                let mut progressed = false;
                for tenant in &due {
                    if job.cancel.is_cancelled() {
                        return Err(HandlerError::retry("stopped before finishing; the next run continues"));
                    }
                    if purge::purge_tenant(&job.pool, tenant)
                        .await
                        .map_err(|error| HandlerError::retry(format!("purging {tenant} failed: {error}")))?
                    {
                        purged.push(tenant.to_string());
                        progressed = true;
                    }
                }
                if (due.len() as i64) < BATCH || !progressed {
                    break;
                }
            }
            Ok(serde_json::json!({ "purged": purged.len(), "tenants": purged }))
        })
    }
}
