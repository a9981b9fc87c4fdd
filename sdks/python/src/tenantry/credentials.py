"""Credentials: how a client proves who it is.

- `ApiKey`: a tenant API key or a platform-admin key, sent as a bearer token.
- `PasswordLogin`: a tenant user's email and password. The client logs in on
  first use, refreshes the access token `refresh_margin` before it expires
  (the refresh token rotates on every use), and logs in again when the
  refresh token is refused (expired, or its family revoked).

Both are thread-safe; one instance may serve many clients.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Callable, Protocol

import grpc

from .v1 import auth_service_pb2, auth_service_pb2_grpc


class Credentials(Protocol):
    """Anything that yields the current bearer token."""

    def token(self, channel: grpc.Channel) -> str:
        """The bearer token to send now; `channel` reaches the server without credentials."""
        ...


class ApiKey:
    """A tenant API key or a platform-admin key, sent as a bearer token."""

    def __init__(self, key: str) -> None:
        if not key:
            raise ValueError("the API key is empty")
        self._key = key

    def token(self, channel: grpc.Channel) -> str:
        return self._key

    def __repr__(self) -> str:
        return "ApiKey(<secret>)"


class PasswordLogin:
    """A tenant user's login, with access tokens refreshed before expiry."""

    def __init__(
        self,
        tenant: str,
        email: str,
        password: str,
        *,
        refresh_margin: timedelta = timedelta(seconds=30),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._request = auth_service_pb2.LoginRequest(tenant=tenant, email=email, password=password)
        self._margin = refresh_margin.total_seconds()
        self._clock = clock
        self._lock = threading.Lock()
        self._access = ""
        self._refresh = ""
        self._expires_at = 0.0
        #: How many times a token was obtained, by kind (for tests and metrics).
        self.logins = 0
        self.refreshes = 0

    def token(self, channel: grpc.Channel) -> str:
        with self._lock:
            if self._access and self._clock() < self._expires_at - self._margin:
                return self._access
            stub = auth_service_pb2_grpc.AuthServiceStub(channel)
            if self._refresh:
                try:
                    refreshed = stub.RefreshToken(auth_service_pb2.RefreshTokenRequest(refresh_token=self._refresh))
                    self._store(refreshed.access_token, refreshed.refresh_token, refreshed.expires_in)
                    self.refreshes += 1
                    return self._access
                except grpc.RpcError as error:
                    if error.code() != grpc.StatusCode.UNAUTHENTICATED:
                        raise
                    # Expired or revoked refresh token: start over with the password.
            login = stub.Login(self._request)
            self._store(login.access_token, login.refresh_token, login.expires_in)
            self.logins += 1
            return self._access

    def _store(self, access: str, refresh: str, expires_in: int) -> None:
        self._access, self._refresh = access, refresh
        self._expires_at = self._clock() + expires_in

    def __repr__(self) -> str:
        return f"PasswordLogin(tenant={self._request.tenant!r}, email={self._request.email!r})"
