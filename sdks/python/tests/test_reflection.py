"""Server reflection with grpcio-reflection's own client over the network: an
unknown symbol is an error answer on the stream, and the stream stays open."""

from __future__ import annotations

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from .conftest import Server


def test_an_unknown_symbol_is_answered_and_the_stream_stays_open(server: Server) -> None:
    with grpc.insecure_channel(server.grpc) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert "tenantry.v1.JobsService" in services
        # The client keeps one stream for every request: these all travel on it.
        with pytest.raises(KeyError):
            database.FindFileContainingSymbol("no.such.Symbol")
        found = database.FindFileContainingSymbol("tenantry.v1.JobsService.EnqueueJob")
        assert found.name == "tenantry/v1/jobs_service.proto"
        with pytest.raises(KeyError):
            database.FindFileByName("no/such/file.proto")
        assert database.FindFileByName("tenantry/v1/options.proto").package == "tenantry.v1"
        assert 50100 in database.FindAllExtensionNumbers("google.protobuf.MethodOptions")
