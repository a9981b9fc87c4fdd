/**
 * `TenantryClient`: the typed service clients over one transport, and what
 * every call needs.
 *
 * Each call gets the credential's bearer token and the selected tenant
 * (`x-tenant-id`), is retried by the retry policy when that is safe, records
 * the rate-limit state the server sent (`x-ratelimit-*`), and fails with a
 * typed `TenantryError`. The transport is the caller's choice: gRPC over
 * HTTP/2 for Node (`./node.js`), gRPC-Web for browsers (`./web.js`).
 */
import { type Client, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { AuthService } from "../gen/tenantry/v1/auth_service_pb.js";
import { type Job, JobState, JobsService } from "../gen/tenantry/v1/jobs_service_pb.js";
import { ScalingService } from "../gen/tenantry/v1/scaling_service_pb.js";
import { TenantService } from "../gen/tenantry/v1/tenant_service_pb.js";
import { UsageService } from "../gen/tenantry/v1/usage_service_pb.js";
import type { Credentials } from "./credentials.js";
import { TenantryError } from "./errors.js";
import { DEFAULT_RETRY, mayRepeat, methodKey, type RetryPolicy, retryDelayMs, sleep } from "./retry.js";

/** The tenant's rate-limit state from the last response that carried it. */
export interface RateLimit {
  limit: number;
  remaining: number;
  resetSeconds: number;
  observedAt: number;
}

export interface ClientOptions {
  credentials?: Credentials;
  /** The tenant calls act in (`x-tenant-id`: id or slug); for platform admins. */
  tenant?: string;
  retry?: RetryPolicy;
}

/** Makes a transport with the given interceptors (first is outermost). */
export type TransportFactory = (interceptors: Interceptor[]) => Transport;

/** Job states after which a job never changes again. */
export const FINAL_JOB_STATES: ReadonlySet<JobState> = new Set([
  JobState.COMPLETED,
  JobState.CANCELLED,
  JobState.DISCARDED,
]);

export class TenantryClient {
  readonly auth: Client<typeof AuthService>;
  readonly tenants: Client<typeof TenantService>;
  readonly usage: Client<typeof UsageService>;
  readonly jobs: Client<typeof JobsService>;
  readonly scaling: Client<typeof ScalingService>;
  /** Calls sent, retries included. */
  attempts = 0;
  /** The last rate-limit state the server reported. */
  rateLimit?: RateLimit;
  readonly retry: RetryPolicy;
  private readonly bare: Client<typeof AuthService>;

  constructor(
    private readonly makeTransport: TransportFactory,
    readonly options: ClientOptions = {},
  ) {
    this.retry = options.retry ?? DEFAULT_RETRY;
    this.bare = createClient(AuthService, makeTransport([]));
    const transport = makeTransport([this.errors(), this.retries(), this.metadata()]);
    this.auth = createClient(AuthService, transport);
    this.tenants = createClient(TenantService, transport);
    this.usage = createClient(UsageService, transport);
    this.jobs = createClient(JobsService, transport);
    this.scaling = createClient(ScalingService, transport);
  }

  /** A client with the same transport kind and credentials acting in another tenant. */
  withTenant(tenant: string | undefined): TenantryClient {
    return new TenantryClient(this.makeTransport, { ...this.options, tenant });
  }

  /** Every item of a List call, page after page; `field` names the response's list. */
  async *paginate<Req extends { pageToken?: string }, Res extends { nextPageToken: string }, K extends keyof Res>(
    method: (request: Req) => Promise<Res>,
    request: Req,
    field: K,
  ): AsyncGenerator<Res[K] extends readonly (infer Item)[] ? Item : never> {
    let next: Req = { ...request };
    for (;;) {
      const response = await method(next);
      yield* response[field] as unknown as Iterable<Res[K] extends readonly (infer Item)[] ? Item : never>;
      if (!response.nextPageToken) return;
      next = { ...next, pageToken: response.nextPageToken };
    }
  }

  /** The job's states as they change, ending after a final one. A dropped
   * stream is reopened (WatchJob has no side effects); repeats are skipped. */
  async *watchJob(jobId: string, options: { signal?: AbortSignal } = {}): AsyncGenerator<Job> {
    let last = "";
    let attempt = 0;
    for (;;) {
      try {
        for await (const update of this.jobs.watchJob({ jobId }, { signal: options.signal })) {
          attempt = 0;
          const job = update.job;
          if (!job) continue;
          const key = `${job.state}/${job.attempt}/${job.finishTime?.seconds ?? ""}`;
          if (key === last) continue;
          last = key;
          yield job;
          if (FINAL_JOB_STATES.has(job.state)) return;
        }
        return;
      } catch (raw) {
        const error = TenantryError.from(raw);
        attempt += 1;
        const wait = retryDelayMs(this.retry, error, attempt);
        if (wait === undefined) throw error;
        await sleep(wait, options.signal, error);
      }
    }
  }

  /** Outermost: every failure leaves as a TenantryError with decoded details. */
  private errors(): Interceptor {
    return (next) => async (req) => {
      try {
        return await next(req);
      } catch (error) {
        throw TenantryError.from(error);
      }
    };
  }

  /** Repeats refused unary calls when the policy and the method allow it. */
  private retries(): Interceptor {
    return (next) => async (req) => {
      const repeatable = !req.stream && mayRepeat(methodKey(req.service.typeName, req.method.name), req.message);
      for (let attempt = 1; ; attempt++) {
        try {
          this.attempts += 1;
          const res = await next(req);
          if (!res.stream) this.observe(res.header);
          return res;
        } catch (raw) {
          const error = TenantryError.from(raw);
          this.observe(error.metadata);
          const wait = repeatable ? retryDelayMs(this.retry, error, attempt) : undefined;
          if (wait === undefined) throw error;
          // The call's deadline or cancellation ends the wait, and the call, with this error.
          await sleep(wait, req.signal, error);
        }
      }
    };
  }

  /** Innermost: the bearer token and the tenant on every attempt (a retry may need a fresh token). */
  private metadata(): Interceptor {
    return (next) => async (req) => {
      const { credentials, tenant } = this.options;
      if (credentials) {
        req.header.set("authorization", `Bearer ${await credentials.token(this.bare)}`);
      }
      if (tenant && !req.header.has("x-tenant-id")) req.header.set("x-tenant-id", tenant);
      return next(req);
    };
  }

  private observe(headers: Headers): void {
    const limit = Number(headers.get("x-ratelimit-limit"));
    const remaining = Number(headers.get("x-ratelimit-remaining"));
    const reset = Number(headers.get("x-ratelimit-reset"));
    if (!headers.has("x-ratelimit-limit") || [limit, remaining, reset].some(Number.isNaN)) return;
    this.rateLimit = { limit, remaining, resetSeconds: reset, observedAt: Date.now() };
  }
}

export { ConnectError };
