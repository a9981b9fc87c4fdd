-- Reverses 20261127020000_identity inside one tenant schema: users, roles,
-- sessions, API keys and the login throttle go.
DROP INDEX audit_events_target;
DROP INDEX audit_events_actor;
DROP TABLE login_attempts;
DROP TABLE api_keys;
DROP TABLE refresh_tokens;
DROP TABLE refresh_families;
DROP TABLE user_roles;
DROP TABLE roles;
DROP TABLE users;
