/**
 * The external-worker loop: lease jobs, heartbeat while they run, then
 * complete or fail them, fenced by the attempt number.
 *
 * The handler gets a `RunningJob` and returns a result object (stored as the
 * job's result) or throws: `RetryLater` asks for a later retry, `Discard`
 * gives up for good, anything else fails the attempt. Heartbeats run every
 * third of the lease; when the server refuses one because the lease is lost
 * (`JOB_LEASE_LOST`: rescued and leased elsewhere, or finished), the job's
 * `signal` aborts and the late result is not sent.
 */
import { type JsonObject } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import type { Job } from "../gen/tenantry/v1/jobs_service_pb.js";
import type { TenantryClient } from "./client.js";
import { TenantryError } from "./errors.js";

export class RetryLater extends Error {
  constructor(
    message: string,
    readonly delayMs: number,
  ) {
    super(message);
  }
}

export class Discard extends Error {}

export interface RunningJob {
  job: Job;
  /** The fencing token: the attempt this lease is for. */
  attempt: number;
  /** Aborted when the lease is lost or cancellation was requested; `cancelRequested` tells which. */
  signal: AbortSignal;
  cancelRequested: boolean;
  leaseLost: boolean;
  /** When the lease ends unless renewed (ms since the epoch); each heartbeat moves it. */
  leaseExpireTime: number;
}

export type Outcome = "completed" | "failed" | "discarded" | "lost";
export type Handler = (job: RunningJob) => Promise<JsonObject | void>;

export interface WorkerOptions {
  queue?: string;
  workerId?: string;
  leaseMs?: number;
  waitMs?: number;
  maxJobs?: number;
}

const millis = (t?: { seconds: bigint; nanos: number }) => (t ? Number(t.seconds) * 1000 + t.nanos / 1e6 : 0);
const duration = (ms: number) => ({ seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1e6 });

export class Worker {
  readonly workerId: string;
  private readonly leaseMs: number;
  private readonly waitMs: number;

  constructor(
    private readonly client: TenantryClient,
    private readonly kinds: string[],
    private readonly options: WorkerOptions = {},
  ) {
    this.workerId = options.workerId ?? `ts-${Math.random().toString(36).slice(2, 10)}`;
    this.leaseMs = options.leaseMs ?? 30_000;
    this.waitMs = options.waitMs ?? 5_000;
  }

  /** Leases up to `maxJobs` jobs, waiting up to `waitMs` for one. */
  async lease(): Promise<RunningJob[]> {
    const response = await this.client.jobs.leaseJobs(
      {
        kinds: this.kinds,
        queue: this.options.queue ?? "",
        maxJobs: this.options.maxJobs ?? 1,
        leaseDuration: duration(this.leaseMs),
        waitDuration: duration(this.waitMs),
        workerId: this.workerId,
      },
      { timeoutMs: this.waitMs + 10_000 },
    );
    return response.jobs.flatMap((leased) =>
      leased.job
        ? [
            {
              job: leased.job,
              attempt: leased.attempt,
              signal: new AbortController().signal,
              cancelRequested: false,
              leaseLost: false,
              leaseExpireTime: millis(leased.leaseExpireTime),
            },
          ]
        : [],
    );
  }

  /** Leases once and runs every leased job; job id → outcome. */
  async runOnce(handler: Handler): Promise<Record<string, Outcome>> {
    const outcomes: Record<string, Outcome> = {};
    for (const running of await this.lease()) outcomes[running.job.id] = await this.process(running, handler);
    return outcomes;
  }

  /** Leases and runs jobs until `stop` aborts. */
  async run(handler: Handler, stop: AbortSignal): Promise<void> {
    while (!stop.aborted) {
      try {
        await this.runOnce(handler);
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 1_000));
      }
    }
  }

  /** Runs the handler on one leased job with heartbeats, then reports the outcome. */
  async process(running: RunningJob, handler: Handler): Promise<Outcome> {
    const controller = new AbortController();
    running.signal = controller.signal;
    const timer = setInterval(() => void this.heartbeat(running, controller), this.leaseMs / 3);
    let result: JsonObject | void;
    try {
      result = await handler(running);
    } catch (failure) {
      clearInterval(timer);
      return this.fail(running, failure);
    }
    clearInterval(timer);
    if (running.leaseLost) return "lost";
    try {
      await this.client.jobs.completeJob({ jobId: running.job.id, attempt: running.attempt, result: result ?? {} });
      return "completed";
    } catch (error) {
      return this.lost(running, error);
    }
  }

  private async fail(running: RunningJob, failure: unknown): Promise<Outcome> {
    if (running.leaseLost) return "lost";
    const discard = failure instanceof Discard;
    try {
      await this.client.jobs.failJob({
        jobId: running.job.id,
        attempt: running.attempt,
        errorMessage: failure instanceof Error ? failure.message || failure.name : String(failure),
        retryAfter: failure instanceof RetryLater ? duration(failure.delayMs) : undefined,
        discard,
      });
      return discard ? "discarded" : "failed";
    } catch (error) {
      return this.lost(running, error);
    }
  }

  private async heartbeat(running: RunningJob, controller: AbortController): Promise<void> {
    try {
      const beat = await this.client.jobs.heartbeatJob({
        jobId: running.job.id,
        attempt: running.attempt,
        leaseDuration: duration(this.leaseMs),
      });
      running.leaseExpireTime = millis(beat.leaseExpireTime);
      if (beat.cancelRequested && !running.cancelRequested) {
        running.cancelRequested = true;
        controller.abort(new Error("cancellation requested"));
      }
    } catch (error) {
      const failure = TenantryError.from(error);
      if (failure.code === Code.FailedPrecondition || failure.code === Code.NotFound) {
        running.leaseLost = true;
        controller.abort(failure);
      }
      // Anything else is transient: the lease outlives a missed beat.
    }
  }

  private lost(running: RunningJob, error: unknown): Outcome {
    const failure = TenantryError.from(error);
    if (failure.code === Code.FailedPrecondition || failure.code === Code.NotFound) {
      running.leaseLost = true;
      return "lost";
    }
    throw failure;
  }
}
