-- Reverses 20261127000001_audit inside one tenant schema: the audit log goes.
DROP TABLE audit_events;
