-- Reverses 20261127030000_usage_counters: metered usage is lost.
DROP TABLE platform.usage_counters;
