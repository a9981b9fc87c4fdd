/**
 * Tenantry's TypeScript SDK on connect-es. Pick a transport entry point:
 * `@tenantry/sdk/node` (gRPC over HTTP/2) or `@tenantry/sdk/web` (gRPC-Web,
 * for browsers). Everything else is shared and exported here.
 */
export { FINAL_JOB_STATES, type ClientOptions, type RateLimit, TenantryClient, type TransportFactory } from "./client.js";
export { apiKey, type Credentials, PasswordLogin, type PasswordLoginOptions } from "./credentials.js";
export { Code, TenantryError } from "./errors.js";
export { DEFAULT_RETRY, Idempotency, METHODS, mayRepeat, NO_RETRY, type RetryPolicy, retryDelayMs } from "./retry.js";
export { Discard, type Handler, type Outcome, RetryLater, type RunningJob, Worker, type WorkerOptions } from "./worker.js";
export * as v1 from "./v1.js";
