"""Credentials, tenant selection, typed errors, rate-limit state and paging
against a live server."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest
from google.protobuf import struct_pb2

import tenantry
from tenantry import errors
from tenantry.v1 import auth_service_pb2, common_pb2, jobs_service_pb2, tenant_service_pb2

from .conftest import PASSWORD, Server, Tenant, api_key_for


def test_an_admin_api_key_calls_as_platform_admin(admin: tenantry.Client) -> None:
    me = admin.auth.WhoAmI(auth_service_pb2.WhoAmIRequest())
    assert me.principal.kind == common_pb2.PRINCIPAL_KIND_PLATFORM_ADMIN


def test_an_admin_selects_the_tenant_a_call_acts_in(admin: tenantry.Client, tenant: Tenant) -> None:
    me = admin.with_tenant(tenant.slug).auth.WhoAmI(auth_service_pb2.WhoAmIRequest())
    assert me.tenant_id == tenant.id
    assert admin.auth.WhoAmI(auth_service_pb2.WhoAmIRequest()).tenant_id == ""


def test_a_tenant_api_key_acts_in_its_own_tenant(server: Server, owner: tenantry.Client, tenant: Tenant) -> None:
    key = api_key_for(owner)
    with tenantry.Client(server.grpc, credentials=tenantry.ApiKey(key)) as client:
        me = client.auth.WhoAmI(auth_service_pb2.WhoAmIRequest())
    assert me.principal.kind == common_pb2.PRINCIPAL_KIND_API_KEY
    assert me.tenant_id == tenant.id


def test_a_login_is_refreshed_before_it_expires_and_redone_when_refresh_is_refused(
    server: Server, tenant: Tenant
) -> None:
    # A margin longer than the access token's life: every call finds the token about to expire.
    login = tenantry.PasswordLogin(tenant.slug, tenant.owner_email, PASSWORD, refresh_margin=timedelta(days=1))
    with tenantry.Client(server.grpc, credentials=login) as client:
        client.auth.WhoAmI(auth_service_pb2.WhoAmIRequest())
        assert (login.logins, login.refreshes) == (1, 0)
        first_refresh = login._refresh
        client.auth.WhoAmI(auth_service_pb2.WhoAmIRequest())
        client.auth.WhoAmI(auth_service_pb2.WhoAmIRequest())
        assert (login.logins, login.refreshes) == (1, 2)
        assert login._refresh != first_refresh, "the refresh token rotates on every use"
        # Replaying an old refresh token revokes the family: the next refresh is refused, so it logs in again.
        with pytest.raises(errors.Unauthenticated):
            client.auth.RefreshToken(auth_service_pb2.RefreshTokenRequest(refresh_token=first_refresh))
        me = client.auth.WhoAmI(auth_service_pb2.WhoAmIRequest())
        assert me.tenant_id == tenant.id
        assert login.logins == 2


def test_an_invalid_argument_carries_bad_request_naming_the_field(admin: tenantry.Client) -> None:
    with pytest.raises(errors.InvalidArgument) as raised:
        admin.tenants.CreateTenant(
            tenant_service_pb2.CreateTenantRequest(slug="Not A Slug!", display_name="x", plan_id="free")
        )
    error = raised.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "slug" in error.field_violations, error.field_violations
    assert isinstance(error, grpc.RpcError), "callers catching grpc.RpcError keep working"


def test_a_refusal_carries_error_info_with_its_reason(
    owner: tenantry.Client, admin: tenantry.Client, tenant: Tenant
) -> None:
    owner.jobs.ListJobs(jobs_service_pb2.ListJobsRequest())
    admin.tenants.SuspendTenant(tenant_service_pb2.SuspendTenantRequest(tenant_id=tenant.id))
    with pytest.raises(errors.TenantryError) as raised:
        owner.jobs.ListJobs(jobs_service_pb2.ListJobsRequest())
    error = raised.value
    assert error.error_info is not None, error.all_details
    assert error.error_info.domain == "tenantry.v1"
    assert error.reason


def test_a_missing_resource_is_not_found(owner: tenantry.Client) -> None:
    with pytest.raises(errors.NotFound):
        owner.jobs.GetJob(jobs_service_pb2.GetJobRequest(job_id="job_doesnotexist"))


def test_rate_limit_state_is_read_from_the_response_metadata(owner: tenantry.Client) -> None:
    owner.jobs.ListJobs(jobs_service_pb2.ListJobsRequest())
    first = owner.rate_limit
    assert first is not None and first.limit > 0
    owner.jobs.ListJobs(jobs_service_pb2.ListJobsRequest())
    second = owner.rate_limit
    assert second is not None and second.remaining <= first.remaining


def test_pages_are_iterated_to_the_last_item(owner: tenantry.Client) -> None:
    ids = {
        owner.jobs.EnqueueJob(
            jobs_service_pb2.EnqueueJobRequest(kind="sdk.page", payload=struct_pb2.Struct(), queue="paging")
        ).job.id
        for _ in range(5)
    }
    request = jobs_service_pb2.ListJobsRequest(page_size=2, queue="paging")
    seen = [job.id for job in owner.paginate(owner.jobs.ListJobs, request)]
    assert set(seen) == ids and len(seen) == 5
