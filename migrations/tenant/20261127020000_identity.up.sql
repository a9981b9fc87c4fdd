-- Applied inside every tenant schema (search_path is that schema only).
-- Identity: users, custom roles and bindings, refresh-token families,
-- API keys and the durable login throttle.

CREATE TABLE users (
    id            text PRIMARY KEY CHECK (id ~ '^usr_[0-9a-z]{24}$'),
    email         text NOT NULL CHECK (email = lower(email)),
    display_name  text NOT NULL DEFAULT '',
    password_hash text NOT NULL,
    state         text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'disabled')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    last_login_at timestamptz,
    -- Deleted users keep their row (audit references resolve) but are gone for the API.
    deleted_at    timestamptz
);
CREATE UNIQUE INDEX users_live_email ON users (email) WHERE deleted_at IS NULL;
CREATE INDEX users_created ON users (created_at, id);

-- Custom roles; the built-in ones (owner, admin, member, viewer) live in code.
CREATE TABLE roles (
    id          text PRIMARY KEY CHECK (id ~ '^rol_[0-9a-z]{24}$'),
    name        text NOT NULL,
    description text NOT NULL DEFAULT '',
    permissions text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX roles_name ON roles (lower(name));

-- role_id is a built-in role name or a custom role id.
CREATE TABLE user_roles (
    user_id    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role_id    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, role_id)
);
CREATE INDEX user_roles_role ON user_roles (role_id);

-- A login session: every refresh token rotated from one login.
CREATE TABLE refresh_families (
    id            text PRIMARY KEY,
    user_id       text NOT NULL REFERENCES users (id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz,
    revoke_reason text
);
CREATE INDEX refresh_families_live_user ON refresh_families (user_id) WHERE revoked_at IS NULL;

-- Refresh tokens by SHA-256; used_at is set exactly once (rotation).
CREATE TABLE refresh_tokens (
    token_hash bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    family_id  text NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    used_at    timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

CREATE TABLE api_keys (
    id           text PRIMARY KEY CHECK (id ~ '^key_[0-9a-z]{24}$'),
    public_id    text NOT NULL UNIQUE,
    name         text NOT NULL,
    secret_hash  bytea NOT NULL CHECK (length(secret_hash) = 32),
    scopes       text[] NOT NULL,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);
CREATE INDEX api_keys_created ON api_keys (created_at DESC, id DESC);
CREATE INDEX api_keys_live_creator ON api_keys (created_by) WHERE revoked_at IS NULL;

-- Login attempts per email (known or not), durable so limits survive
-- restarts and hold across nodes. A day window caps evaluated guesses.
CREATE TABLE login_attempts (
    email        text PRIMARY KEY,
    window_start timestamptz NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    failures     integer NOT NULL DEFAULT 0,
    locked_until timestamptz
);
CREATE INDEX login_attempts_window ON login_attempts (window_start);

CREATE INDEX audit_events_actor ON audit_events (actor_id, created_at DESC);
CREATE INDEX audit_events_target ON audit_events (target_id, created_at DESC);
