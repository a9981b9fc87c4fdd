"""The retry policy every Tenantry SDK follows.

Only UNAVAILABLE and RESOURCE_EXHAUSTED are retried, and only when repeating
the call is harmless: methods without side effects, idempotent methods, and
keyed methods whose request carries its idempotency key (`EnqueueJob` with a
`unique_key`). A non-idempotent call (Login, Create…, LeaseJobs, EnqueueJob
without a key) is never repeated by the client: the caller decides.

The wait honours the server: with a `RetryInfo` the client waits at least
that long, plus up to 20 % jitter so clients refused together do not return
together; a RESOURCE_EXHAUSTED without `RetryInfo` (a message too large) is
not retried, nor is one whose delay exceeds `max_retry_info_delay` (a monthly
quota). Without `RetryInfo`, UNAVAILABLE backs off exponentially with full
jitter. No retry outlives the call's deadline.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import grpc

from .errors import TenantryError


class Idempotency(Enum):
    """Whether a method may be repeated."""

    NO_SIDE_EFFECTS = "no_side_effects"
    IDEMPOTENT = "idempotent"
    #: Idempotent only when the request carries its key (see `KEYED_BY`).
    KEYED = "keyed"
    NOT_IDEMPOTENT = "not_idempotent"


_SAFE = Idempotency.NO_SIDE_EFFECTS
_IDEM = Idempotency.IDEMPOTENT
_NOT = Idempotency.NOT_IDEMPOTENT

#: Every method of the contract, `Service/Method` → idempotency. A test
#: checks that every method of every service is listed.
METHODS: dict[str, Idempotency] = {
    # AuthService
    "AuthService/Login": _NOT,
    "AuthService/RefreshToken": _NOT,  # rotation: a repeat would reuse the old token and revoke the family
    "AuthService/Logout": _IDEM,
    "AuthService/WhoAmI": _SAFE,
    "AuthService/IntrospectToken": _SAFE,
    "AuthService/GetJwks": _SAFE,
    "AuthService/CreateUser": _NOT,
    "AuthService/GetUser": _SAFE,
    "AuthService/ListUsers": _SAFE,
    "AuthService/UpdateUser": _IDEM,
    "AuthService/DeleteUser": _IDEM,
    "AuthService/ChangePassword": _NOT,
    "AuthService/CreateApiKey": _NOT,
    "AuthService/ListApiKeys": _SAFE,
    "AuthService/RevokeApiKey": _IDEM,
    "AuthService/CreateRole": _NOT,
    "AuthService/ListRoles": _SAFE,
    "AuthService/UpdateRole": _IDEM,
    "AuthService/DeleteRole": _IDEM,
    "AuthService/AssignRole": _IDEM,
    "AuthService/UnassignRole": _IDEM,
    "AuthService/ListAuditEvents": _SAFE,
    # JobsService
    "JobsService/EnqueueJob": Idempotency.KEYED,
    "JobsService/EnqueueJobs": _NOT,  # a repeat would enqueue the items without a unique_key again
    "JobsService/GetJob": _SAFE,
    "JobsService/ListJobs": _SAFE,
    "JobsService/CancelJob": _IDEM,
    "JobsService/RetryJob": _NOT,
    "JobsService/WatchJob": _SAFE,
    "JobsService/LeaseJobs": _NOT,  # a lost answer's leases would only come back after they expire
    "JobsService/HeartbeatJob": _IDEM,
    "JobsService/CompleteJob": _IDEM,  # fenced by the attempt number
    "JobsService/FailJob": _IDEM,  # fenced by the attempt number
    # ScalingService
    "ScalingService/GetScalingPolicy": _SAFE,
    "ScalingService/UpdateScalingPolicy": _IDEM,
    "ScalingService/GetScalingStatus": _SAFE,
    "ScalingService/ListScalingDecisions": _SAFE,
    "ScalingService/SimulateScaling": _SAFE,
    # TenantService
    "TenantService/CreateTenant": _NOT,
    "TenantService/GetTenant": _SAFE,
    "TenantService/ListTenants": _SAFE,
    "TenantService/UpdateTenant": _IDEM,
    "TenantService/SuspendTenant": _IDEM,
    "TenantService/ResumeTenant": _IDEM,
    "TenantService/DeleteTenant": _IDEM,
    "TenantService/ListPlans": _SAFE,
    "TenantService/UpsertPlan": _IDEM,
    # UsageService
    "UsageService/RecordUsage": _IDEM,  # every event carries its event_id
    "UsageService/GetUsage": _SAFE,
    "UsageService/GetQuota": _SAFE,
}

#: The request field that makes a KEYED method idempotent.
KEYED_BY: dict[str, str] = {"JobsService/EnqueueJob": "unique_key"}

RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


def method_key(full_method: str) -> str:
    """`/tenantry.v1.JobsService/GetJob` → `JobsService/GetJob`."""
    service, _, method = full_method.lstrip("/").partition("/")
    return f"{service.rsplit('.', 1)[-1]}/{method}"


def may_repeat(full_method: str, request: Any) -> bool:
    """Whether repeating this call is harmless."""
    key = method_key(full_method)
    kind = METHODS.get(key, Idempotency.NOT_IDEMPOTENT)
    if kind is Idempotency.KEYED:
        return bool(getattr(request, KEYED_BY[key], ""))
    return kind in (Idempotency.NO_SIDE_EFFECTS, Idempotency.IDEMPOTENT)


@dataclass(frozen=True)
class RetryPolicy:
    """How failed calls are retried (see the module doc)."""

    #: Attempts in all, the first included; 1 turns retries off.
    max_attempts: int = 4
    #: First backoff ceiling without RetryInfo, in seconds.
    initial_backoff: float = 0.1
    #: Largest backoff ceiling without RetryInfo, in seconds.
    max_backoff: float = 5.0
    #: A server-requested delay longer than this is not waited out; the error is raised.
    max_retry_info_delay: float = 30.0
    #: Extra random wait on top of RetryInfo, as a fraction of it.
    retry_info_jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay(self, error: TenantryError, attempt: int) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None not to retry
        (the call itself must already be known to be repeatable)."""
        if attempt >= self.max_attempts or error.code() not in RETRYABLE_CODES:
            return None
        asked = error.retry_delay
        if asked is not None:
            seconds = asked.total_seconds()
            if seconds > self.max_retry_info_delay:
                return None
            return seconds + self.rng.uniform(0, seconds * self.retry_info_jitter)
        if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return None  # nothing says waiting helps (message too large)
        ceiling = min(self.max_backoff, self.initial_backoff * 2 ** (attempt - 1))
        return self.rng.uniform(0, ceiling)


NO_RETRY = RetryPolicy(max_attempts=1)
