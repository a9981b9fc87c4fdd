-- Usage per tenant, metric, method and minute: the meter's automatic `api.*`
-- metrics (method set) and clients' recorded metrics (method ''). Written by
-- batched upserts that add to `value`; read by GetUsage, quotas and rollups.
CREATE TABLE platform.usage_counters (
    tenant_id    text NOT NULL REFERENCES platform.tenants (id),
    metric       text NOT NULL,
    method       text NOT NULL DEFAULT '',
    bucket_start timestamptz NOT NULL, -- the minute
    value        double precision NOT NULL,
    PRIMARY KEY (tenant_id, metric, method, bucket_start)
);
-- GetUsage and quota sums: one tenant's metric over a time range, any method.
CREATE INDEX usage_counters_tenant_metric_time ON platform.usage_counters (tenant_id, metric, bucket_start);
