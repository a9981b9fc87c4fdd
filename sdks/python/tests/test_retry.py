"""The retry policy: which calls are repeated and how long the client waits,
against a live server's rate limits, and on the contract's method list."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import grpc
import pytest
from google.protobuf import struct_pb2

import tenantry
from tenantry import errors
from tenantry.retry import METHODS, RetryPolicy, may_repeat
from tenantry.v1 import (
    auth_service_pb2,
    jobs_service_pb2,
    scaling_service_pb2,
    tenant_service_pb2,
    usage_service_pb2,
)

from .conftest import PASSWORD, Server, make_tenant


def test_every_method_of_the_contract_has_an_idempotency_class() -> None:
    declared = {
        f"{service.name}/{method.name}"
        for module in (auth_service_pb2, jobs_service_pb2, scaling_service_pb2, tenant_service_pb2, usage_service_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert declared == set(METHODS), declared ^ set(METHODS)


def test_keyed_calls_repeat_only_with_their_key() -> None:
    method = "/tenantry.v1.JobsService/EnqueueJob"
    assert not may_repeat(method, jobs_service_pb2.EnqueueJobRequest(kind="k"))
    assert may_repeat(method, jobs_service_pb2.EnqueueJobRequest(kind="k", unique_key="order-1"))
    assert not may_repeat("/tenantry.v1.AuthService/Login", auth_service_pb2.LoginRequest())
    assert may_repeat("/tenantry.v1.JobsService/GetJob", jobs_service_pb2.GetJobRequest())


def _error(code: grpc.StatusCode, delay: float | None) -> errors.TenantryError:
    from google.rpc import error_details_pb2, status_pb2

    status = status_pb2.Status(code=code.value[0])
    if delay is not None:
        info = error_details_pb2.RetryInfo()
        info.retry_delay.FromTimedelta(timedelta(seconds=delay))
        status.details.add().Pack(info)
    return errors.TenantryError(code, "x", status=status)


def test_waits_honour_retry_info_with_bounded_jitter_and_back_off_without_it() -> None:
    policy = RetryPolicy()
    for _ in range(100):
        wait = policy.delay(_error(grpc.StatusCode.RESOURCE_EXHAUSTED, 2.0), 1)
        assert wait is not None and 2.0 <= wait <= 2.4
        backoff = policy.delay(_error(grpc.StatusCode.UNAVAILABLE, None), 3)
        assert backoff is not None and 0 <= backoff <= 0.4
    assert policy.delay(_error(grpc.StatusCode.RESOURCE_EXHAUSTED, None), 1) is None, "too large: waiting won't help"
    assert policy.delay(_error(grpc.StatusCode.RESOURCE_EXHAUSTED, 3600), 1) is None, "a quota: give up"
    assert policy.delay(_error(grpc.StatusCode.INVALID_ARGUMENT, 1), 1) is None
    assert policy.delay(_error(grpc.StatusCode.UNAVAILABLE, None), policy.max_attempts) is None


@pytest.fixture
def throttled(server: Server, admin: tenantry.Client) -> tenantry.Client:
    """A tenant on a plan of 1 request per second with a burst of 1, logged in as its owner."""
    plan = f"tiny-{uuid.uuid4().hex[:8]}"
    admin.tenants.UpsertPlan(
        tenant_service_pb2.UpsertPlanRequest(
            plan=tenant_service_pb2.Plan(
                id=plan, display_name=plan, requests_per_second=1, burst=1, max_concurrent_jobs=5, max_replicas=3,
                min_replicas=1,
            )
        )
    )
    tenant = make_tenant(admin, plan)
    credentials = tenantry.PasswordLogin(tenant.slug, tenant.owner_email, PASSWORD)
    return tenantry.Client(server.grpc, credentials=credentials)


def test_a_rate_limited_safe_call_is_retried_after_the_servers_delay(throttled: tenantry.Client) -> None:
    started = time.monotonic()
    for _ in range(3):
        throttled.jobs.ListJobs(jobs_service_pb2.ListJobsRequest())
    elapsed = time.monotonic() - started
    assert throttled.attempts > 3, "some calls were refused and retried"
    assert elapsed >= 1.0, f"the client waited for the bucket to refill ({elapsed:.2f}s)"


def test_a_rate_limited_non_idempotent_call_is_not_retried(throttled: tenantry.Client) -> None:
    enqueue = jobs_service_pb2.EnqueueJobRequest(kind="sdk.retry", payload=struct_pb2.Struct())
    with pytest.raises(errors.ResourceExhausted) as raised:
        for _ in range(5):
            before = throttled.attempts
            throttled.jobs.EnqueueJob(enqueue)
    assert throttled.attempts == before + 1, "refused once, not repeated"
    error = raised.value
    assert error.retry_delay is not None and error.retry_delay > timedelta(0)
    metadata = dict(error.initial_metadata() + error.trailing_metadata())
    assert "retry-after" in metadata


def test_a_rate_limited_keyed_call_is_retried(throttled: tenantry.Client) -> None:
    for n in range(3):
        response = throttled.jobs.EnqueueJob(
            jobs_service_pb2.EnqueueJobRequest(kind="sdk.retry", payload=struct_pb2.Struct(), unique_key=f"k-{n}")
        )
        assert not response.duplicate
    assert throttled.attempts > 3


def test_retries_never_outlive_the_calls_deadline(throttled: tenantry.Client) -> None:
    throttled.jobs.ListJobs(jobs_service_pb2.ListJobsRequest())
    started = time.monotonic()
    with pytest.raises(errors.ResourceExhausted):
        throttled.jobs.ListJobs(jobs_service_pb2.ListJobsRequest(), timeout=0.3)
    assert time.monotonic() - started < 0.6


def test_recorded_usage_is_retried_since_events_carry_their_ids(throttled: tenantry.Client) -> None:
    for n in range(2):
        event = usage_service_pb2.UsageEvent(event_id=f"e-{uuid.uuid4().hex}", metric="sdk.calls", quantity=1)
        throttled.usage.RecordUsage(usage_service_pb2.RecordUsageRequest(events=[event]))
    assert throttled.attempts >= 2
