-- Platform-admin keys are cached by every node's identity cache: any change
-- to one (revocation, expiry moved, deletion) is announced on the identity
-- channel, so revoking a key with plain SQL takes effect on every node.
CREATE FUNCTION platform.announce_admin_key_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tenantry_identity', 'key:' || OLD.public_id);
    RETURN NULL;
END
$$;

CREATE TRIGGER admin_api_keys_announce
    AFTER UPDATE OR DELETE ON platform.admin_api_keys
    FOR EACH ROW EXECUTE FUNCTION platform.announce_admin_key_change();
