"""Typed exceptions for failed calls, carrying the rich error details.

Tenantry answers errors with the rich gRPC error model: a `google.rpc.Status`
in the `grpc-status-details-bin` trailer, holding `BadRequest` (which field is
wrong), `ErrorInfo` (a machine-readable reason), `RetryInfo` (when to retry)
and `QuotaFailure` (which limit was hit). Every failed call made through
`tenantry.Client` raises a `TenantryError` subclass chosen by the status code,
with those details decoded. It is also a `grpc.RpcError`, so code that
catches that keeps working.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Sequence

import grpc
from google.rpc import error_details_pb2, status_pb2

Metadata = Sequence[tuple[str, "str | bytes"]]


class TenantryError(grpc.RpcError):
    """A call failed. Subclasses name the status code."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        status: status_pb2.Status | None = None,
        initial_metadata: Metadata = (),
        trailing_metadata: Metadata = (),
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self._code = code
        self.message = message
        self._initial = tuple(initial_metadata)
        self._trailing = tuple(trailing_metadata)
        #: Which fields of the request were invalid (INVALID_ARGUMENT).
        self.bad_request: error_details_pb2.BadRequest | None = None
        #: The machine-readable reason and its domain.
        self.error_info: error_details_pb2.ErrorInfo | None = None
        #: How long the server asks the client to wait before retrying.
        self.retry_info: error_details_pb2.RetryInfo | None = None
        #: Which quota or rate limit was exhausted.
        self.quota_failure: error_details_pb2.QuotaFailure | None = None
        #: Every detail, decoded where known (unknown ones stay `Any`).
        self.all_details: list[Any] = []
        for detail in status.details if status is not None else ():
            for attribute, message_type in _KNOWN_DETAILS:
                if detail.Is(message_type.DESCRIPTOR):
                    decoded = message_type()
                    detail.Unpack(decoded)
                    setattr(self, attribute, decoded)
                    self.all_details.append(decoded)
                    break
            else:
                self.all_details.append(detail)

    def code(self) -> grpc.StatusCode:
        """The gRPC status code."""
        return self._code

    def initial_metadata(self) -> tuple[Any, ...]:
        """The response headers, as `grpc.Call.initial_metadata()`."""
        return self._initial

    def trailing_metadata(self) -> tuple[Any, ...]:
        """The response trailers, as `grpc.Call.trailing_metadata()`."""
        return self._trailing

    def details(self) -> str:
        """The status message, as `grpc.Call.details()`."""
        return self.message

    @property
    def reason(self) -> str | None:
        """`ErrorInfo.reason`, such as `JOB_LEASE_LOST`."""
        return self.error_info.reason if self.error_info is not None else None

    @property
    def retry_delay(self) -> timedelta | None:
        """`RetryInfo.retry_delay`, when the server sent one."""
        if self.retry_info is None or not self.retry_info.HasField("retry_delay"):
            return None
        delay: timedelta = self.retry_info.retry_delay.ToTimedelta()
        return delay

    @property
    def field_violations(self) -> dict[str, str]:
        """Invalid field path → why, from `BadRequest`."""
        if self.bad_request is None:
            return {}
        return {v.field: v.description for v in self.bad_request.field_violations}

    @property
    def request_id(self) -> str | None:
        """The call's `x-request-id`, for support and server logs."""
        for key, value in (*self._initial, *self._trailing):
            if key == "x-request-id" and isinstance(value, str):
                return value
        return None


_KNOWN_DETAILS: tuple[tuple[str, Any], ...] = (
    ("bad_request", error_details_pb2.BadRequest),
    ("error_info", error_details_pb2.ErrorInfo),
    ("retry_info", error_details_pb2.RetryInfo),
    ("quota_failure", error_details_pb2.QuotaFailure),
)


class InvalidArgument(TenantryError):
    """The request is malformed; `field_violations` names the fields."""


class NotFound(TenantryError):
    """The resource does not exist (or belongs to another tenant)."""


class AlreadyExists(TenantryError):
    """The resource already exists."""


class PermissionDenied(TenantryError):
    """The credential lacks the permission the method requires."""


class Unauthenticated(TenantryError):
    """No credential, or a bad, expired or revoked one."""


class FailedPrecondition(TenantryError):
    """The system is not in a state that allows the call (see `reason`)."""


class ResourceExhausted(TenantryError):
    """A rate limit or quota was hit (see `retry_delay`, `quota_failure`), or the message is too large."""


class Unavailable(TenantryError):
    """The server is overloaded or a dependency is down; retry with backoff."""


class DeadlineExceeded(TenantryError):
    """The call's deadline passed."""


class Cancelled(TenantryError):
    """The call was cancelled."""


class Internal(TenantryError):
    """A server bug; quote `request_id` when reporting it."""


_BY_CODE: dict[grpc.StatusCode, type[TenantryError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.INTERNAL: Internal,
}


def from_rpc_error(error: grpc.RpcError) -> TenantryError:
    """The typed exception for a failed call (`error` is a grpc.Call)."""
    if isinstance(error, TenantryError):
        return error
    call: Any = error
    code: grpc.StatusCode = call.code()
    trailing = tuple(call.trailing_metadata() or ())
    initial = tuple(call.initial_metadata() or ()) if hasattr(call, "initial_metadata") else ()
    status = None
    for key, value in trailing:
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
    cls = _BY_CODE.get(code, TenantryError)
    return cls(
        code, call.details() or "", status=status, initial_metadata=initial, trailing_metadata=trailing
    )
