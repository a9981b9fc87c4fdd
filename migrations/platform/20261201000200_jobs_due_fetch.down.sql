-- Back to one index over every waiting state. Jobs staged as AVAILABLE stay
-- so: they were due, which the older fetch reads the same way.
DROP INDEX platform.jobs_due;
DROP INDEX platform.jobs_available;
CREATE INDEX jobs_pending ON platform.jobs (queue, tenant_id, priority DESC, run_at, id)
    WHERE state IN ('available', 'scheduled', 'retryable');
