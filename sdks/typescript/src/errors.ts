/**
 * Typed errors carrying the rich error details.
 *
 * Tenantry sends a `google.rpc.Status` in `grpc-status-details-bin` with
 * `BadRequest`, `ErrorInfo`, `RetryInfo` and `QuotaFailure`. Every failed call
 * made through a Tenantry client throws a `TenantryError`: a `ConnectError`
 * (same `code`, `rawMessage`, `metadata`, `findDetails`) with those details
 * decoded.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type BadRequest,
  BadRequestSchema,
  type ErrorInfo,
  ErrorInfoSchema,
  type QuotaFailure,
  QuotaFailureSchema,
  type RetryInfo,
  RetryInfoSchema,
} from "../gen/google/rpc/error_details_pb.js";

export class TenantryError extends ConnectError {
  /** Which fields of the request were invalid (INVALID_ARGUMENT). */
  readonly badRequest?: BadRequest;
  /** The machine-readable reason and its domain. */
  readonly errorInfo?: ErrorInfo;
  /** How long the server asks the client to wait before retrying. */
  readonly retryInfo?: RetryInfo;
  /** Which quota or rate limit was exhausted. */
  readonly quotaFailure?: QuotaFailure;

  constructor(error: ConnectError) {
    super(error.rawMessage, error.code, error.metadata, undefined, error.cause);
    // ConnectError pins its own prototype; restore ours so the getters below exist.
    // The name stays "ConnectError": connect-es recognises its errors by it and
    // would otherwise wrap this one into a plain ConnectError again.
    Object.setPrototypeOf(this, TenantryError.prototype);
    // Keep the incoming details so findDetails() works as on any ConnectError.
    this.details.push(...error.details);
    this.badRequest = error.findDetails(BadRequestSchema)[0];
    this.errorInfo = error.findDetails(ErrorInfoSchema)[0];
    this.retryInfo = error.findDetails(RetryInfoSchema)[0];
    this.quotaFailure = error.findDetails(QuotaFailureSchema)[0];
  }

  /** ConnectError answers `instanceof` for any Connect error; this class only for its own. */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === "object" && value !== null && TenantryError.prototype.isPrototypeOf(value);
  }

  /** Any error as a TenantryError (a non-Connect error becomes UNKNOWN). */
  static override from(error: unknown): TenantryError {
    return error instanceof TenantryError ? error : new TenantryError(ConnectError.from(error));
  }

  /** `ErrorInfo.reason`, such as `JOB_LEASE_LOST`. */
  get reason(): string | undefined {
    return this.errorInfo?.reason;
  }

  /** `RetryInfo.retryDelay` in milliseconds, when the server sent one. */
  get retryDelayMs(): number | undefined {
    const delay = this.retryInfo?.retryDelay;
    return delay ? Number(delay.seconds) * 1000 + delay.nanos / 1e6 : undefined;
  }

  /** Invalid field path → why, from `BadRequest`. */
  get fieldViolations(): Record<string, string> {
    return Object.fromEntries((this.badRequest?.fieldViolations ?? []).map((v) => [v.field, v.description]));
  }

  /** The call's `x-request-id`, for support and the server's logs. */
  get requestId(): string | undefined {
    return this.metadata.get("x-request-id") ?? undefined;
  }
}

export { Code };
