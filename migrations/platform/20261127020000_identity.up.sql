-- Identity: which tenant a tenant API key belongs to, by its public id, so
-- authentication finds the tenant schema without scanning every schema.
CREATE TABLE platform.api_key_index (
    public_id  text PRIMARY KEY,
    tenant_id  text NOT NULL REFERENCES platform.tenants (id),
    key_id     text NOT NULL CHECK (key_id ~ '^key_[0-9a-z]{24}$'),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_key_index_tenant ON platform.api_key_index (tenant_id);
