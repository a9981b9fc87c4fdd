"""Starts one live `tenantry serve --dev` for the session: the built binary,
ports chosen by the OS, a private data directory (its own PostgreSQL
cluster, no Redis), stopped at the end."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

import tenantry
from tenantry.v1 import auth_service_pb2, tenant_service_pb2

REPO = Path(__file__).resolve().parents[3]
BINARY = Path(os.environ.get("TENANTRY_BIN", REPO / "target" / "debug" / "tenantry"))
PASSWORD = "correct horse battery staple"


@dataclass
class Server:
    grpc: str
    http: str
    admin_key: str


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    if not BINARY.exists():
        pytest.fail(f"{BINARY} is missing: run `cargo build` first (or set TENANTRY_BIN)")
    data_dir = tempfile.mkdtemp(prefix="tenantry-sdk-py-")
    # Run as root, the private cluster runs as an unprivileged user who must reach its directory.
    os.chmod(data_dir, 0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["TENANTRY_LOG_FORMAT"] = "json"
    log = open(Path(data_dir) / "server.log", "w")
    process = subprocess.Popen(
        [str(BINARY), "serve", "--dev", "--data-dir", data_dir, "--grpc-addr", "127.0.0.1:0",
         "--http-addr", "127.0.0.1:0", "--usage-flush-interval", "200ms"],
        stdout=subprocess.PIPE, stderr=log, text=True, env=env,
    )
    assert process.stdout is not None
    banner = ""
    deadline = time.monotonic() + 120
    while "Try:" not in banner:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the server exited ({process.wait()}); see {log.name}")
        banner += line
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not start within 120 s")
    # Keep draining stdout so the server never blocks on it.
    threading.Thread(target=lambda: [None for _ in process.stdout or ()], daemon=True).start()
    grpc_addr = re.search(r"gRPC: (\S+)", banner)
    http_addr = re.search(r"HTTP: (\S+)", banner)
    assert grpc_addr and http_addr, banner
    key = (Path(data_dir) / "admin-api-key").read_text().strip()
    try:
        yield Server(grpc=grpc_addr.group(1), http=http_addr.group(1), admin_key=key)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture
def admin(server: Server) -> Iterator[tenantry.Client]:
    with tenantry.Client(server.grpc, credentials=tenantry.ApiKey(server.admin_key)) as client:
        yield client


@dataclass
class Tenant:
    id: str
    slug: str
    owner_email: str


def make_tenant(admin: tenantry.Client, plan_id: str = "free") -> Tenant:
    slug = f"t-{uuid.uuid4().hex[:10]}"
    email = f"owner@{slug}.test"
    created = admin.tenants.CreateTenant(
        tenant_service_pb2.CreateTenantRequest(
            slug=slug, display_name=slug, plan_id=plan_id, owner_email=email, owner_password=PASSWORD
        )
    )
    return Tenant(id=created.tenant.id, slug=slug, owner_email=email)


@pytest.fixture
def tenant(admin: tenantry.Client) -> Tenant:
    return make_tenant(admin)


@pytest.fixture
def owner(server: Server, tenant: Tenant) -> Iterator[tenantry.Client]:
    """A client logged in as the tenant's owner."""
    credentials = tenantry.PasswordLogin(tenant.slug, tenant.owner_email, PASSWORD)
    with tenantry.Client(server.grpc, credentials=credentials) as client:
        yield client


def api_key_for(owner: tenantry.Client, name: str = "sdk-test") -> str:
    created = owner.auth.CreateApiKey(auth_service_pb2.CreateApiKeyRequest(name=name, scopes=["jobs:read"]))
    return created.secret
