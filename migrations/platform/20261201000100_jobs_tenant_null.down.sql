-- Back to the empty string for platform-level jobs.
ALTER TABLE platform.jobs DROP CONSTRAINT jobs_tenant_id_check;
UPDATE platform.jobs SET tenant_id = '' WHERE tenant_id IS NULL;
ALTER TABLE platform.jobs ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE platform.jobs ADD CONSTRAINT jobs_tenant_id_check CHECK (tenant_id = '' OR tenant_id ~ '^ten_[0-9a-z]{24}$');
