-- Reverses 20261127040000_jobs: the job queue and the scaling data go.
DROP TABLE platform.scaling_decisions;
DROP TABLE platform.scaling_state;
DROP TABLE platform.scaling_policies;
DROP TABLE platform.jobs;
