-- Reverses 20261127050000_admin_key_notify: changes to platform-admin keys
-- made with plain SQL no longer reach the nodes' identity caches.
DROP TRIGGER admin_api_keys_announce ON platform.admin_api_keys;
DROP FUNCTION platform.announce_admin_key_change();
