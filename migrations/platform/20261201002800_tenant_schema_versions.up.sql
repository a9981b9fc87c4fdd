-- The ledger of tenant schema versions: one row per tenant schema, written in
-- the same transaction as that schema's own `schema_migrations` (provisioning,
-- `tenantry migrate`, `tenantry migrate down --tenant`), so it never disagrees
-- with a committed schema. `tenantry migrate --status` reads this one table
-- instead of every schema, and `tenantry migrate` visits only the schemas
-- it shows behind (`--all-schemas` visits every one). Schemas made before this table (or by an older
-- build during a rolling deploy) have no row yet: status reads those schemas
-- directly, and the next `tenantry migrate` records them. No backfill here:
-- reading every schema in one transaction takes one lock per schema, more
-- than the lock table holds at 10,000 schemas.
CREATE TABLE platform.tenant_schema_versions (
    tenant_id  text PRIMARY KEY REFERENCES platform.tenants (id),
    version    bigint NOT NULL CHECK (version >= 0), -- highest applied tenant migration, 0: none
    migrations integer NOT NULL CHECK (migrations >= 0), -- how many are applied (finds a gap below `version`)
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- The lagging schemas: version below the build's latest.
CREATE INDEX tenant_schema_versions_version ON platform.tenant_schema_versions (version);
