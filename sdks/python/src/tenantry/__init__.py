"""Tenantry's Python SDK.

- `Client`: a channel with the typed stubs (`auth`, `tenants`, `usage`,
  `jobs`, `scaling`), credentials, tenant selection, retries, rate-limit
  state, `paginate` and `watch_job`.
- `ApiKey`, `PasswordLogin`: credentials (login refreshes before expiry).
- `RetryPolicy`: which failures are retried and how long to wait.
- `errors`: `TenantryError` and one subclass per status code, carrying
  `BadRequest`, `ErrorInfo`, `RetryInfo` and `QuotaFailure`.
- `Worker`: the external-worker loop (lease, heartbeat, complete or fail).
- `tenantry.v1`: the generated messages and stubs.
"""

from . import errors
from .client import FINAL_JOB_STATES, Client, RateLimit
from .credentials import ApiKey, Credentials, PasswordLogin
from .errors import TenantryError
from .retry import NO_RETRY, Idempotency, RetryPolicy
from .worker import Discard, RetryLater, RunningJob, Worker

__all__ = [
    "ApiKey",
    "Client",
    "Credentials",
    "Discard",
    "FINAL_JOB_STATES",
    "Idempotency",
    "NO_RETRY",
    "PasswordLogin",
    "RateLimit",
    "RetryLater",
    "RetryPolicy",
    "RunningJob",
    "TenantryError",
    "Worker",
    "errors",
]
