-- Reverses 20261127020000_identity: tenant API keys can no longer be found
-- by their public id (their rows stay in the tenant schemas).
DROP TABLE platform.api_key_index;
