"""WatchJob and the external-worker helper against a live server's queue."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

from google.protobuf import struct_pb2

import tenantry
from tenantry import RunningJob, Worker
from tenantry.v1 import jobs_service_pb2

S = jobs_service_pb2


def _enqueue(client: tenantry.Client, kind: str, **payload: object) -> str:
    body = struct_pb2.Struct()
    body.update(payload)
    return client.jobs.EnqueueJob(S.EnqueueJobRequest(kind=kind, payload=body, max_attempts=3)).job.id


def _kind() -> str:
    return f"sdk.{uuid.uuid4().hex[:8]}"


def test_a_worker_completes_a_job_and_watch_job_sees_every_state(owner: tenantry.Client) -> None:
    kind = _kind()
    job_id = _enqueue(owner, kind, n=21)
    states: list[int] = []
    watcher = threading.Thread(target=lambda: states.extend(j.state for j in owner.watch_job(job_id, timeout=30)))
    watcher.start()
    worker = Worker(owner, [kind], wait=timedelta(seconds=5))
    outcomes = worker.run_once(lambda job: {"double": job.payload["n"] * 2})
    watcher.join(30)
    assert outcomes == {job_id: "completed"}
    job = owner.jobs.GetJob(S.GetJobRequest(job_id=job_id)).job
    assert job.state == S.JOB_STATE_COMPLETED
    assert job.result["double"] == 42
    assert states[-1] == S.JOB_STATE_COMPLETED
    assert S.JOB_STATE_RUNNING in states or S.JOB_STATE_AVAILABLE in states


def test_heartbeats_renew_the_lease_while_the_handler_runs(owner: tenantry.Client) -> None:
    kind = _kind()
    job_id = _enqueue(owner, kind)
    worker = Worker(owner, [kind], lease=timedelta(seconds=5), wait=timedelta(seconds=5))
    (running,) = worker.lease_jobs()
    first_expiry = running.lease_expire_time

    def slow(job: RunningJob) -> dict[str, object]:
        time.sleep(4)  # long enough for two heartbeats (every third of the lease)
        assert not job.lease_lost.is_set()
        return {"ok": True}

    assert worker.process(running, slow) == "completed"
    assert first_expiry is not None and running.lease_expire_time is not None
    assert running.lease_expire_time > first_expiry, "heartbeats moved the lease forward"
    job = owner.jobs.GetJob(S.GetJobRequest(job_id=job_id)).job
    assert job.state == S.JOB_STATE_COMPLETED and job.attempt == 1


def test_a_failing_handler_fails_the_attempt_with_its_message(owner: tenantry.Client) -> None:
    kind = _kind()
    job_id = _enqueue(owner, kind)
    worker = Worker(owner, [kind], wait=timedelta(seconds=5))

    def broken(job: RunningJob) -> None:
        raise tenantry.RetryLater("the printer is on fire", delay=60)

    assert worker.run_once(broken) == {job_id: "failed"}
    job = owner.jobs.GetJob(S.GetJobRequest(job_id=job_id)).job
    assert job.state == S.JOB_STATE_RETRYABLE
    assert job.errors[-1].message == "the printer is on fire"


def test_a_stale_attempt_cannot_complete_a_job_fencing(owner: tenantry.Client) -> None:
    kind = _kind()
    job_id = _enqueue(owner, kind)
    worker = Worker(owner, [kind], wait=timedelta(seconds=5))
    (running,) = worker.lease_jobs()
    stale = RunningJob(job=running.job, attempt=running.attempt + 1)  # not the lease's attempt
    assert worker.process(stale, lambda job: {"late": True}) == "lost"
    assert stale.lease_lost.is_set()
    job = owner.jobs.GetJob(S.GetJobRequest(job_id=job_id)).job
    assert job.state == S.JOB_STATE_RUNNING, "the stale completion changed nothing"
    assert worker.process(running, lambda job: None) == "completed"


def test_a_cancellation_reaches_the_running_handler_through_its_heartbeats(owner: tenantry.Client) -> None:
    kind = _kind()
    job_id = _enqueue(owner, kind)
    worker = Worker(owner, [kind], lease=timedelta(seconds=5), wait=timedelta(seconds=5))
    (running,) = worker.lease_jobs()

    def cancelled_meanwhile(job: RunningJob) -> None:
        owner.jobs.CancelJob(S.CancelJobRequest(job_id=job_id))
        deadline = time.monotonic() + 5
        while not (job.cancel_requested.is_set() or job.lease_lost.is_set()) and time.monotonic() < deadline:
            time.sleep(0.05)
        raise tenantry.Discard("cancelled")

    worker.process(running, cancelled_meanwhile)
    assert running.cancel_requested.is_set() or running.lease_lost.is_set()
    job = owner.jobs.GetJob(S.GetJobRequest(job_id=job_id)).job
    assert job.state in (S.JOB_STATE_CANCELLED, S.JOB_STATE_DISCARDED), job
