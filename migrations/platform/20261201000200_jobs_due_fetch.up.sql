-- Due-aware fetch (docs/jobs.md, src/jobs/lease.rs). AVAILABLE now means
-- due: jobs waiting for their time (SCHEDULED, or RETRYABLE while backing
-- off) are moved to AVAILABLE when it comes, found through `jobs_due`. The
-- fetch's tenant scan reads only `jobs_available`, so tenants that hold
-- nothing but future jobs are never visited and cannot crowd out due work.
DROP INDEX platform.jobs_pending;
CREATE INDEX jobs_available ON platform.jobs (queue, tenant_id, priority DESC, run_at, id)
    WHERE state = 'available';
CREATE INDEX jobs_due ON platform.jobs (run_at) WHERE state IN ('scheduled', 'retryable');
