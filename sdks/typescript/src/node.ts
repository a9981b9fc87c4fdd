/** Node: gRPC over HTTP/2 (connect-node's gRPC transport). */
import { createGrpcTransport } from "@connectrpc/connect-node";
import { type ClientOptions, TenantryClient } from "./client.js";

export * from "./index.js";

/** A client for `baseUrl` (`http://host:50051`; `https://` for TLS). */
export function createNodeClient(baseUrl: string, options: ClientOptions = {}): TenantryClient {
  return new TenantryClient((interceptors) => createGrpcTransport({ baseUrl, interceptors }), options);
}
