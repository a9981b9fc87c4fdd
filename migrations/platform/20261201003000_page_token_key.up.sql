-- Secrets every node of a deployment shares, made once here so no node has to
-- be configured with them: today the key that signs page tokens
-- (`pagination::PageTokens`), so a token one node issued reads on any other,
-- and a token altered by a client, or issued by another deployment, does not.
-- 32 bytes from two gen_random_uuid() (pg_strong_random: 244 random bits).
-- Rotating: UPDATE the row and restart the nodes; outstanding page tokens are
-- then refused (clients start their listing again).
CREATE TABLE platform.server_secrets (
    name       text PRIMARY KEY,
    secret     bytea NOT NULL CHECK (length(secret) >= 32),
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO platform.server_secrets (name, secret)
VALUES ('page_token', decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'));
