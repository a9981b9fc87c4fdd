-- Applied inside every tenant schema (search_path is that schema only).
-- The tenant's audit log: who did what, when, with what outcome.
CREATE TABLE audit_events (
    id             text PRIMARY KEY,
    event_type     text NOT NULL,
    actor_kind     text NOT NULL,
    actor_id       text NOT NULL,
    target_type    text NOT NULL DEFAULT '',
    target_id      text NOT NULL DEFAULT '',
    outcome        text NOT NULL DEFAULT 'success',
    client_address text NOT NULL DEFAULT '',
    request_id     text NOT NULL DEFAULT '',
    details        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_events_created ON audit_events (created_at DESC, id DESC);
CREATE INDEX audit_events_type ON audit_events (event_type, created_at DESC);
