/** Browsers: gRPC-Web over fetch (connect-web's gRPC-Web transport), served on the gRPC port. */
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { type ClientOptions, TenantryClient } from "./client.js";

export * from "./index.js";

/** A client for `baseUrl` (the gRPC port, `https://api.example.com`). The page's
 * origin must be in the server's `--cors-allowed-origins`. */
export function createWebClient(
  baseUrl: string,
  options: ClientOptions & { fetch?: typeof globalThis.fetch } = {},
): TenantryClient {
  return new TenantryClient(
    (interceptors) => createGrpcWebTransport({ baseUrl, interceptors, fetch: options.fetch }),
    options,
  );
}
