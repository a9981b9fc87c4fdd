-- Usage events recorded by the tenant's clients (RecordUsage). `event_id` is
-- the idempotency key; `payload_hash` tells a retry (same payload) from a
-- conflicting reuse of the id (different payload).
CREATE TABLE usage_events (
    event_id     text PRIMARY KEY,
    metric       text NOT NULL,
    quantity     double precision NOT NULL,
    event_time   timestamptz NOT NULL,
    dimensions   jsonb NOT NULL DEFAULT '{}'::jsonb,
    payload_hash bytea NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_events_metric_time ON usage_events (metric, event_time);
