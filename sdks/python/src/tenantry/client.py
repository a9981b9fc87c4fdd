"""`Client`: one channel, the typed stubs, and what every call needs.

Every call made through the client's stubs (`client.jobs.GetJob(...)`) gets
the credential's bearer token and the selected tenant (`x-tenant-id`), is
retried by the `RetryPolicy` when that is safe, records the rate-limit state
the server sent (`x-ratelimit-*`), and fails with a typed `TenantryError`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence, TypeVar

import grpc

from . import errors
from .credentials import Credentials
from .retry import RetryPolicy, may_repeat
from .v1 import (
    auth_service_pb2_grpc,
    jobs_service_pb2,
    jobs_service_pb2_grpc,
    scaling_service_pb2_grpc,
    tenant_service_pb2_grpc,
    usage_service_pb2_grpc,
)

#: Job states after which a job never changes again.
FINAL_JOB_STATES = frozenset(
    {
        jobs_service_pb2.JOB_STATE_COMPLETED,
        jobs_service_pb2.JOB_STATE_CANCELLED,
        jobs_service_pb2.JOB_STATE_DISCARDED,
    }
)


@dataclass(frozen=True)
class RateLimit:
    """The tenant's rate-limit state from the last response that carried it."""

    #: Requests per window the plan allows (the bucket's size).
    limit: int
    #: Requests left before calls are refused.
    remaining: int
    #: Seconds until the bucket is full again.
    reset_seconds: int
    #: When it was observed (time.monotonic()).
    observed_at: float


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, base: Any, metadata: list[tuple[str, str]], timeout: float | None) -> None:
        self.method = base.method
        self.timeout = timeout
        self.metadata = tuple(metadata)
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


class _Interceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds credentials and tenant, retries, and records rate limits."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def _details(self, base: Any, timeout: float | None) -> _CallDetails:
        metadata = list(base.metadata or ())
        client = self._client
        if client.credentials is not None and not any(k == "authorization" for k, _ in metadata):
            try:
                token = client.credentials.token(client.raw_channel)
            except grpc.RpcError as refused:  # a refused login or refresh fails the call, typed
                raise errors.from_rpc_error(refused) from None
            metadata.append(("authorization", f"Bearer {token}"))
        if client.tenant and not any(k == "x-tenant-id" for k, _ in metadata):
            metadata.append(("x-tenant-id", client.tenant))
        return _CallDetails(base, metadata, timeout)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        client = self._client
        deadline = None if details.timeout is None else time.monotonic() + details.timeout
        repeatable = may_repeat(details.method, request)
        attempt = 0
        while True:
            attempt += 1
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            outcome = continuation(self._details(details, remaining), request)
            client.attempts += 1
            if isinstance(outcome, grpc.RpcError):
                error = errors.from_rpc_error(outcome)
                client._observe(error.initial_metadata() + error.trailing_metadata())
                wait = client.retry.delay(error, attempt) if repeatable else None
                if wait is None or (deadline is not None and time.monotonic() + wait >= deadline):
                    raise error
                time.sleep(wait)
                continue
            client._observe(tuple(outcome.initial_metadata() or ()))
            return outcome

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details, details.timeout), request)


Item = TypeVar("Item")


class Client:
    """A Tenantry client over one gRPC channel.

    >>> client = Client("localhost:50051", credentials=ApiKey(key), tenant="acme")
    >>> client.auth.WhoAmI(auth_service_pb2.WhoAmIRequest())
    """

    def __init__(
        self,
        target: str,
        *,
        credentials: Credentials | None = None,
        tenant: str | None = None,
        retry: RetryPolicy | None = None,
        channel_credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
        _channel: grpc.Channel | None = None,
    ) -> None:
        if _channel is not None:
            self.raw_channel = _channel
        elif channel_credentials is not None:
            self.raw_channel = grpc.secure_channel(target, channel_credentials, options=options)
        else:
            self.raw_channel = grpc.insecure_channel(target, options=options)
        self._owns_channel = _channel is None
        self.target = target
        self.credentials = credentials
        #: The tenant calls act in (`x-tenant-id`: id or slug); for platform admins.
        self.tenant = tenant
        self.retry = retry or RetryPolicy()
        #: Calls sent, retries included.
        self.attempts = 0
        self._rate_lock = threading.Lock()
        self._rate_limit: RateLimit | None = None
        channel = grpc.intercept_channel(self.raw_channel, _Interceptor(self))
        self.channel = channel
        self.auth = auth_service_pb2_grpc.AuthServiceStub(channel)
        self.tenants = tenant_service_pb2_grpc.TenantServiceStub(channel)
        self.usage = usage_service_pb2_grpc.UsageServiceStub(channel)
        self.jobs = jobs_service_pb2_grpc.JobsServiceStub(channel)
        self.scaling = scaling_service_pb2_grpc.ScalingServiceStub(channel)

    def with_tenant(self, tenant: str | None) -> Client:
        """A client on the same channel and credentials acting in another tenant."""
        return Client(
            self.target, credentials=self.credentials, tenant=tenant, retry=self.retry, _channel=self.raw_channel
        )

    @property
    def rate_limit(self) -> RateLimit | None:
        """The last rate-limit state the server reported, if any."""
        with self._rate_lock:
            return self._rate_limit

    def _observe(self, metadata: Sequence[tuple[str, Any]]) -> None:
        values = {k: v for k, v in metadata if k.startswith("x-ratelimit-") and isinstance(v, str)}
        try:
            state = RateLimit(
                limit=int(values["x-ratelimit-limit"]),
                remaining=int(values["x-ratelimit-remaining"]),
                reset_seconds=int(values["x-ratelimit-reset"]),
                observed_at=time.monotonic(),
            )
        except (KeyError, ValueError):
            return
        with self._rate_lock:
            self._rate_limit = state

    def paginate(self, method: Callable[[Any], Any], request: Any, field: str | None = None) -> Iterator[Any]:
        """Every item of a List call, page after page (`page_token` /
        `next_page_token`). `field` is the repeated field of the response;
        by default its only repeated message field.

        >>> for job in client.paginate(client.jobs.ListJobs, ListJobsRequest(page_size=100)): ...
        """
        request = type(request).FromString(request.SerializeToString())
        while True:
            response = method(request)
            name = field or _items_field(response)
            yield from getattr(response, name)
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    def watch_job(self, job_id: str, *, timeout: float | None = None) -> Iterator[jobs_service_pb2.Job]:
        """The job's states as they change, ending after a final state
        (completed, cancelled, discarded). A dropped stream is reopened
        (WatchJob has no side effects); states already seen are not repeated."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last: bytes | None = None
        attempt = 0
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            stream = self.jobs.WatchJob(jobs_service_pb2.WatchJobRequest(job_id=job_id), timeout=remaining)
            try:
                for update in stream:
                    attempt = 0
                    encoded = update.job.SerializeToString(deterministic=True)
                    if encoded == last:
                        continue
                    last = encoded
                    yield update.job
                    if update.job.state in FINAL_JOB_STATES:
                        stream.cancel()
                        return
                return
            except grpc.RpcError as raw:
                error = errors.from_rpc_error(raw)
                attempt += 1
                wait = self.retry.delay(error, attempt)
                if wait is None or (deadline is not None and time.monotonic() + wait >= deadline):
                    raise error from None
                time.sleep(wait)

    def close(self) -> None:
        """Closes the channel (unless it was borrowed from another client)."""
        if self._owns_channel:
            self.raw_channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _items_field(response: Any) -> str:
    repeated = [
        f.name
        for f in response.DESCRIPTOR.fields
        if f.is_repeated and f.message_type is not None and not f.message_type.GetOptions().map_entry
    ]
    if len(repeated) != 1:
        raise ValueError(f"{response.DESCRIPTOR.full_name} has no single list field; name it with field=")
    name: str = repeated[0]
    return name
