-- Platform-level jobs (tenant purge, usage rollup, scaling schedule) have no
-- tenant: NULL, not the empty string, so `tenant_id` is either a real tenant
-- id or absent and decodes as `Option<TenantId>`.
ALTER TABLE platform.jobs DROP CONSTRAINT jobs_tenant_id_check;
ALTER TABLE platform.jobs ALTER COLUMN tenant_id DROP NOT NULL;
UPDATE platform.jobs SET tenant_id = NULL WHERE tenant_id = '';
ALTER TABLE platform.jobs ADD CONSTRAINT jobs_tenant_id_check CHECK (tenant_id ~ '^ten_[0-9a-z]{24}$');
