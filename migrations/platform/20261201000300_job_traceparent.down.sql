ALTER TABLE platform.jobs DROP COLUMN traceparent;
