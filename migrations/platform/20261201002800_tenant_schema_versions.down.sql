-- Reverses 20261201002800_tenant_schema_versions: `migrate --status` reads
-- every schema again. Tenant schemas keep their own `schema_migrations`.
DROP TABLE platform.tenant_schema_versions;
