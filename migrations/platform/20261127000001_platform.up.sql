-- The control plane: plans, tenants and platform-admin API keys.
CREATE SCHEMA IF NOT EXISTS platform;

CREATE TABLE platform.plans (
    id                    text PRIMARY KEY CHECK (id ~ '^[a-z][a-z0-9-]{1,62}$'),
    display_name          text NOT NULL,
    requests_per_second   integer NOT NULL CHECK (requests_per_second > 0),
    burst                 integer NOT NULL CHECK (burst > 0),
    monthly_request_quota bigint NOT NULL CHECK (monthly_request_quota >= 0), -- 0: unlimited
    max_concurrent_jobs   integer NOT NULL CHECK (max_concurrent_jobs > 0),
    min_replicas          integer NOT NULL CHECK (min_replicas >= 0),
    max_replicas          integer NOT NULL CHECK (max_replicas >= min_replicas),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

INSERT INTO platform.plans
    (id, display_name, requests_per_second, burst, monthly_request_quota, max_concurrent_jobs, min_replicas, max_replicas)
VALUES
    ('free',       'Free',         10,   20,     100000,  2, 1,  2),
    ('pro',        'Pro',         100,  200,   10000000, 10, 1, 10),
    ('enterprise', 'Enterprise', 1000, 2000,          0, 50, 2, 50);

CREATE TABLE platform.tenants (
    id             text PRIMARY KEY CHECK (id ~ '^ten_[0-9a-z]{24}$'),
    slug           text NOT NULL CHECK (slug ~ '^[a-z0-9]([a-z0-9-]{1,61}[a-z0-9])$'),
    display_name   text NOT NULL,
    plan_id        text NOT NULL REFERENCES platform.plans (id),
    state          text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'suspended', 'deleted')),
    suspend_reason text,
    labels         jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    suspended_at   timestamptz,
    deleted_at     timestamptz,
    purge_after    timestamptz
);

-- A slug names one live tenant; a deleted tenant's slug may be reused.
CREATE UNIQUE INDEX tenants_live_slug ON platform.tenants (slug) WHERE state <> 'deleted';
CREATE INDEX tenants_created ON platform.tenants (created_at, id);

CREATE TABLE platform.admin_api_keys (
    id           text PRIMARY KEY CHECK (id ~ '^key_[0-9a-z]{24}$'),
    public_id    text NOT NULL UNIQUE,
    secret_hash  bytea NOT NULL CHECK (length(secret_hash) = 32),
    name         text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);
