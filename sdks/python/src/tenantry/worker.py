"""The external-worker loop: lease jobs, heartbeat while they run, then
complete or fail them, fenced by the attempt number.

    worker = Worker(client, kinds=["thumbnail"])
    worker.run_once(handle)          # or worker.run(handle, stop_event)

`handle(job)` gets a `RunningJob` and returns a result (a dict, stored as the
job's result) or raises: `RetryLater(seconds)` asks for a later retry,
`Discard` gives up for good, any other exception fails the attempt (the server
retries with backoff until `max_attempts`). While the handler runs a thread
heartbeats every third of the lease. If the lease is lost (the job was rescued
and leased again elsewhere, or cancelled) the server refuses the heartbeat
with `JOB_LEASE_LOST`; the job's `lease_lost` event is set and the late
result is not sent: the attempt number fences it anyway.
"""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

from google.protobuf import duration_pb2, struct_pb2

from .client import Client
from .errors import FailedPrecondition, NotFound, TenantryError
from .v1 import jobs_service_pb2

log = logging.getLogger(__name__)


class RetryLater(Exception):
    """Fail this attempt and ask for the next one after `delay` seconds."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


class Discard(Exception):
    """Fail the job for good: no further attempt."""


@dataclass
class RunningJob:
    """A leased job, as the handler sees it."""

    job: jobs_service_pb2.Job
    #: The fencing token: the attempt this lease is for.
    attempt: int
    #: Set when a heartbeat learns that cancellation was requested.
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    #: Set when the server says this lease is lost; stop work, the result will be dropped.
    lease_lost: threading.Event = field(default_factory=threading.Event)
    #: When the lease ends unless renewed; each heartbeat moves it.
    lease_expire_time: datetime | None = None

    @property
    def payload(self) -> dict[str, Any]:
        """The job's payload as plain Python values."""
        from google.protobuf.json_format import MessageToDict

        return MessageToDict(self.job.payload)


#: What happened to one job: "completed", "failed", "discarded" or "lost".
Outcome = str


class Worker:
    """Leases jobs of some kinds and runs a handler on each."""

    def __init__(
        self,
        client: Client,
        kinds: list[str],
        *,
        queue: str = "",
        worker_id: str | None = None,
        lease: timedelta = timedelta(seconds=30),
        wait: timedelta = timedelta(seconds=5),
        max_jobs: int = 1,
    ) -> None:
        self.client = client
        self.kinds = kinds
        self.queue = queue
        self.worker_id = worker_id or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self.lease = lease
        self.wait = wait
        self.max_jobs = max_jobs

    def lease_jobs(self) -> list[RunningJob]:
        """Leases up to `max_jobs` jobs, waiting up to `wait` for one."""
        response = self.client.jobs.LeaseJobs(
            jobs_service_pb2.LeaseJobsRequest(
                kinds=self.kinds,
                queue=self.queue,
                max_jobs=self.max_jobs,
                lease_duration=_duration(self.lease),
                wait_duration=_duration(self.wait),
                worker_id=self.worker_id,
            ),
            timeout=self.wait.total_seconds() + 10,
        )
        return [
            RunningJob(job=leased.job, attempt=leased.attempt, lease_expire_time=leased.lease_expire_time.ToDatetime())
            for leased in response.jobs
        ]

    def run_once(self, handler: Callable[[RunningJob], Mapping[str, Any] | None]) -> dict[str, Outcome]:
        """Leases once and runs every leased job; job id → outcome."""
        return {running.job.id: self.process(running, handler) for running in self.lease_jobs()}

    def run(self, handler: Callable[[RunningJob], Mapping[str, Any] | None], stop: threading.Event) -> None:
        """Leases and runs jobs until `stop` is set."""
        while not stop.is_set():
            try:
                self.run_once(handler)
            except TenantryError as error:
                log.warning("leasing failed: %s", error)
                stop.wait(1.0)

    def process(self, running: RunningJob, handler: Callable[[RunningJob], Mapping[str, Any] | None]) -> Outcome:
        """Runs the handler on one leased job with heartbeats, then reports the outcome."""
        done = threading.Event()
        beats = threading.Thread(target=self._heartbeat, args=(running, done), daemon=True)
        beats.start()
        try:
            result = handler(running)
        except Exception as failure:  # the handler's failure is the job's, reported below
            done.set()
            beats.join()
            return self._fail(running, failure)
        done.set()
        beats.join()
        if running.lease_lost.is_set():
            return "lost"
        result_struct = struct_pb2.Struct()
        if result:
            result_struct.update(dict(result))
        try:
            self.client.jobs.CompleteJob(
                jobs_service_pb2.CompleteJobRequest(job_id=running.job.id, attempt=running.attempt, result=result_struct)
            )
        except (FailedPrecondition, NotFound):
            running.lease_lost.set()
            return "lost"
        return "completed"

    def _fail(self, running: RunningJob, failure: Exception) -> Outcome:
        if running.lease_lost.is_set():
            return "lost"
        request = jobs_service_pb2.FailJobRequest(
            job_id=running.job.id, attempt=running.attempt, error_message=str(failure) or type(failure).__name__
        )
        if isinstance(failure, RetryLater):
            request.retry_after.CopyFrom(_duration(timedelta(seconds=failure.delay)))
        request.discard = isinstance(failure, Discard)
        try:
            self.client.jobs.FailJob(request)
        except (FailedPrecondition, NotFound):
            running.lease_lost.set()
            return "lost"
        return "discarded" if request.discard else "failed"

    def _heartbeat(self, running: RunningJob, done: threading.Event) -> None:
        interval = self.lease.total_seconds() / 3
        while not done.wait(interval):
            try:
                beat = self.client.jobs.HeartbeatJob(
                    jobs_service_pb2.HeartbeatJobRequest(
                        job_id=running.job.id, attempt=running.attempt, lease_duration=_duration(self.lease)
                    )
                )
            except (FailedPrecondition, NotFound):
                running.lease_lost.set()
                return
            except TenantryError as error:
                # Transient: the lease outlives a missed beat; the next one may pass.
                log.warning("heartbeat for %s failed: %s", running.job.id, error)
                continue
            running.lease_expire_time = beat.lease_expire_time.ToDatetime()
            if beat.cancel_requested:
                running.cancel_requested.set()


def _duration(delta: timedelta) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(delta)
    return duration
