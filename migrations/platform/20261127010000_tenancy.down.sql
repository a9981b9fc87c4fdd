-- Reverses 20261127010000_tenancy. Plans that use 0 (unlimited) for a rate,
-- burst or job concurrency cannot be expressed before it: the constraints
-- then fail and the down migration stops, leaving the schema as it was.
DROP INDEX platform.tenants_purge_due;
ALTER TABLE platform.tenants DROP COLUMN purged_at;
ALTER TABLE platform.plans DROP CONSTRAINT plans_max_concurrent_jobs_check;
ALTER TABLE platform.plans ADD CONSTRAINT plans_max_concurrent_jobs_check CHECK (max_concurrent_jobs > 0);
ALTER TABLE platform.plans DROP CONSTRAINT plans_burst_check;
ALTER TABLE platform.plans ADD CONSTRAINT plans_burst_check CHECK (burst > 0);
ALTER TABLE platform.plans DROP CONSTRAINT plans_requests_per_second_check;
ALTER TABLE platform.plans ADD CONSTRAINT plans_requests_per_second_check CHECK (requests_per_second > 0);
