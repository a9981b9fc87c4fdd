/**
 * The retry policy every Tenantry SDK follows.
 *
 * Only UNAVAILABLE and RESOURCE_EXHAUSTED are retried, and only when repeating
 * the call is harmless: methods without side effects, idempotent methods, and
 * keyed methods whose request carries its key (`EnqueueJob` with a
 * `uniqueKey`). Non-idempotent calls (Login, Create…, LeaseJobs, EnqueueJob
 * without a key) are never repeated by the client.
 *
 * With a `RetryInfo` the client waits at least that long plus up to 20 %
 * jitter; a RESOURCE_EXHAUSTED without one (a message too large) or with a
 * delay over `maxRetryInfoDelayMs` (a monthly quota) is not retried. Without
 * `RetryInfo`, UNAVAILABLE backs off exponentially with full jitter. A retry
 * never outlives the call's deadline (its abort signal).
 */
import { Code } from "@connectrpc/connect";
import type { TenantryError } from "./errors.js";

export enum Idempotency {
  NoSideEffects = "no_side_effects",
  Idempotent = "idempotent",
  /** Idempotent only when the request carries its key (see `KEYED_BY`). */
  Keyed = "keyed",
  NotIdempotent = "not_idempotent",
}

const SAFE = Idempotency.NoSideEffects;
const IDEM = Idempotency.Idempotent;
const NOT = Idempotency.NotIdempotent;

/** Every method of the contract, `Service/Method`; a test checks the list is complete. */
export const METHODS: Readonly<Record<string, Idempotency>> = {
  "AuthService/Login": NOT,
  "AuthService/RefreshToken": NOT, // rotation: a repeat would replay the old token and revoke the family
  "AuthService/Logout": IDEM,
  "AuthService/WhoAmI": SAFE,
  "AuthService/IntrospectToken": SAFE,
  "AuthService/GetJwks": SAFE,
  "AuthService/CreateUser": NOT,
  "AuthService/GetUser": SAFE,
  "AuthService/ListUsers": SAFE,
  "AuthService/UpdateUser": IDEM,
  "AuthService/DeleteUser": IDEM,
  "AuthService/ChangePassword": NOT,
  "AuthService/CreateApiKey": NOT,
  "AuthService/ListApiKeys": SAFE,
  "AuthService/RevokeApiKey": IDEM,
  "AuthService/CreateRole": NOT,
  "AuthService/ListRoles": SAFE,
  "AuthService/UpdateRole": IDEM,
  "AuthService/DeleteRole": IDEM,
  "AuthService/AssignRole": IDEM,
  "AuthService/UnassignRole": IDEM,
  "AuthService/ListAuditEvents": SAFE,
  "JobsService/EnqueueJob": Idempotency.Keyed,
  "JobsService/EnqueueJobs": NOT, // a repeat would enqueue the items without a uniqueKey again
  "JobsService/GetJob": SAFE,
  "JobsService/ListJobs": SAFE,
  "JobsService/CancelJob": IDEM,
  "JobsService/RetryJob": NOT,
  "JobsService/WatchJob": SAFE,
  "JobsService/LeaseJobs": NOT, // a lost answer's leases only come back when they expire
  "JobsService/HeartbeatJob": IDEM,
  "JobsService/CompleteJob": IDEM, // fenced by the attempt number
  "JobsService/FailJob": IDEM, // fenced by the attempt number
  "ScalingService/GetScalingPolicy": SAFE,
  "ScalingService/UpdateScalingPolicy": IDEM,
  "ScalingService/GetScalingStatus": SAFE,
  "ScalingService/ListScalingDecisions": SAFE,
  "ScalingService/SimulateScaling": SAFE,
  "TenantService/CreateTenant": NOT,
  "TenantService/GetTenant": SAFE,
  "TenantService/ListTenants": SAFE,
  "TenantService/UpdateTenant": IDEM,
  "TenantService/SuspendTenant": IDEM,
  "TenantService/ResumeTenant": IDEM,
  "TenantService/DeleteTenant": IDEM,
  "TenantService/ListPlans": SAFE,
  "TenantService/UpsertPlan": IDEM,
  "UsageService/RecordUsage": IDEM, // every event carries its eventId
  "UsageService/GetUsage": SAFE,
  "UsageService/GetQuota": SAFE,
};

/** The request field that makes a keyed method idempotent. */
export const KEYED_BY: Readonly<Record<string, string>> = { "JobsService/EnqueueJob": "uniqueKey" };

/** `tenantry.v1.JobsService` + `GetJob` → `JobsService/GetJob`. */
export function methodKey(serviceTypeName: string, method: string): string {
  return `${serviceTypeName.split(".").pop() ?? serviceTypeName}/${method}`;
}

/** Whether repeating this call is harmless. */
export function mayRepeat(key: string, request: unknown): boolean {
  const kind = METHODS[key] ?? NOT;
  if (kind === Idempotency.Keyed) {
    const field = KEYED_BY[key];
    const value = field && typeof request === "object" && request !== null ? (request as Record<string, unknown>)[field] : "";
    return typeof value === "string" && value.length > 0;
  }
  return kind === SAFE || kind === IDEM;
}

export interface RetryPolicy {
  /** Attempts in all, the first included; 1 turns retries off. */
  maxAttempts: number;
  /** First backoff ceiling without RetryInfo. */
  initialBackoffMs: number;
  /** Largest backoff ceiling without RetryInfo. */
  maxBackoffMs: number;
  /** A server-requested delay longer than this is not waited out. */
  maxRetryInfoDelayMs: number;
  /** Extra random wait on top of RetryInfo, as a fraction of it. */
  retryInfoJitter: number;
  random: () => number;
}

export const DEFAULT_RETRY: RetryPolicy = {
  maxAttempts: 4,
  initialBackoffMs: 100,
  maxBackoffMs: 5_000,
  maxRetryInfoDelayMs: 30_000,
  retryInfoJitter: 0.2,
  random: Math.random,
};

export const NO_RETRY: RetryPolicy = { ...DEFAULT_RETRY, maxAttempts: 1 };

/** Milliseconds to wait before attempt `attempt + 1`, or undefined not to retry. */
export function retryDelayMs(policy: RetryPolicy, error: TenantryError, attempt: number): number | undefined {
  if (attempt >= policy.maxAttempts) return undefined;
  if (error.code !== Code.Unavailable && error.code !== Code.ResourceExhausted) return undefined;
  const asked = error.retryDelayMs;
  if (asked !== undefined) {
    if (asked > policy.maxRetryInfoDelayMs) return undefined;
    return asked + policy.random() * asked * policy.retryInfoJitter;
  }
  if (error.code === Code.ResourceExhausted) return undefined; // nothing says waiting helps
  const ceiling = Math.min(policy.maxBackoffMs, policy.initialBackoffMs * 2 ** (attempt - 1));
  return policy.random() * ceiling;
}

/** Resolves after `ms`, or rejects with `reason` when `signal` aborts first. */
export function sleep(ms: number, signal?: AbortSignal, reason?: unknown): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(reason ?? signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(reason ?? signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
