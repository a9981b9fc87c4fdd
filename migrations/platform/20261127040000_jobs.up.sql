-- The job queue and autoscaling decisions (DESIGN §5, §6).
--
-- Jobs of a tenant carry its id in `tenant_id`; platform-level jobs (tenant
-- purge, usage rollup, scaling schedule) use the empty string. No foreign key
-- to platform.tenants: a purge job outlives its tenant row's state changes,
-- and the scale-out path (Citus) avoids cross-tenant references.
CREATE TABLE platform.jobs (
    id               text PRIMARY KEY CHECK (id ~ '^job_[0-9a-z]{24}$'),
    tenant_id        text NOT NULL CHECK (tenant_id = '' OR tenant_id ~ '^ten_[0-9a-z]{24}$'),
    kind             text NOT NULL CHECK (kind ~ '^[A-Za-z0-9_.-]{1,128}$'),
    queue            text NOT NULL CHECK (queue ~ '^[A-Za-z0-9_.-]{1,64}$'),
    payload          jsonb NOT NULL DEFAULT '{}'::jsonb,
    priority         integer NOT NULL DEFAULT 0,
    state            text NOT NULL CHECK (state IN
                         ('scheduled', 'available', 'running', 'retryable', 'completed', 'cancelled', 'discarded')),
    attempt          integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts     integer NOT NULL CHECK (max_attempts >= 1),
    run_at           timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    unique_key       text,
    unique_until     timestamptz,
    result           jsonb,
    errors           jsonb NOT NULL DEFAULT '[]'::jsonb,
    cancel_requested boolean NOT NULL DEFAULT false,
    timeout_ms       bigint NOT NULL CHECK (timeout_ms > 0),
    lease_ms         bigint,
    lease_expires_at timestamptz,
    worker_id        text NOT NULL DEFAULT ''
);

-- Fetch: tenants with pending work of a queue (skip scan), then each
-- tenant's next jobs by priority and due time.
CREATE INDEX jobs_pending ON platform.jobs (queue, tenant_id, priority DESC, run_at, id)
    WHERE state IN ('available', 'scheduled', 'retryable');
-- Per-tenant concurrency caps and the rescuer.
CREATE INDEX jobs_running ON platform.jobs (tenant_id) WHERE state = 'running';
CREATE INDEX jobs_lease ON platform.jobs (lease_expires_at) WHERE state = 'running';
-- ListJobs, newest first.
CREATE INDEX jobs_tenant_created ON platform.jobs (tenant_id, created_at DESC, id DESC);
-- Unique keys.
CREATE INDEX jobs_unique ON platform.jobs (tenant_id, kind, unique_key) WHERE unique_key IS NOT NULL;
-- Retention pruning.
CREATE INDEX jobs_finished ON platform.jobs (finished_at) WHERE state IN ('completed', 'cancelled', 'discarded');

-- A tenant's scaling policy; absent while the defaults apply.
CREATE TABLE platform.scaling_policies (
    tenant_id  text PRIMARY KEY CHECK (tenant_id ~ '^ten_[0-9a-z]{24}$'),
    policy     jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The simulated deployment of each tenant: what the decisions act on.
CREATE TABLE platform.scaling_state (
    tenant_id         text PRIMARY KEY CHECK (tenant_id ~ '^ten_[0-9a-z]{24}$'),
    current_replicas  integer NOT NULL CHECK (current_replicas >= 0),
    desired_replicas  integer NOT NULL CHECK (desired_replicas >= 0),
    last_evaluated_at timestamptz,
    last_scaled_at    timestamptz,
    metrics           jsonb NOT NULL DEFAULT '[]'::jsonb
);

-- Every stored decision, with its explanation.
CREATE TABLE platform.scaling_decisions (
    id                 text PRIMARY KEY CHECK (id ~ '^sdc_[0-9a-z]{24}$'),
    tenant_id          text NOT NULL CHECK (tenant_id ~ '^ten_[0-9a-z]{24}$'),
    evaluated_at       timestamptz NOT NULL,
    current_replicas   integer NOT NULL,
    desired_replicas   integer NOT NULL,
    raw_recommendation integer NOT NULL,
    limiting_rule      text NOT NULL,
    metrics            jsonb NOT NULL,
    explanation        text NOT NULL
);
CREATE INDEX scaling_decisions_tenant_time ON platform.scaling_decisions (tenant_id, evaluated_at DESC, id DESC);
