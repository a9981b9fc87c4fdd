-- The W3C traceparent of the call that enqueued a job (NULL when traces are
-- not exported), so the job's execution span links to the enqueuing trace.
ALTER TABLE platform.jobs ADD COLUMN traceparent text;
