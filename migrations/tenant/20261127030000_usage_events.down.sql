-- Reverses 20261127030000_usage_events inside one tenant schema: recorded
-- usage events (and with them the idempotency of their ids) go.
DROP TABLE usage_events;
