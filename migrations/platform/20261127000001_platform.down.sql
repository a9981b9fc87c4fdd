-- Reverses 20261127000001_platform: the control plane goes, with every plan,
-- tenant row and platform-admin key in it. Tenant schemas are not touched:
-- take every tenant schema down first (`tenantry migrate down --tenant --to 0`).
DROP TABLE platform.admin_api_keys;
DROP TABLE platform.tenants;
DROP TABLE platform.plans;
DROP SCHEMA platform;
