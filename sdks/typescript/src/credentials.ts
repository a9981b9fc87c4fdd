/**
 * Credentials: how a client proves who it is.
 *
 * - `apiKey(key)`: a tenant API key or a platform-admin key, as a bearer token.
 * - `PasswordLogin`: a tenant user's email and password. It logs in on first
 *   use, refreshes the access token `refreshMarginMs` before it expires (the
 *   refresh token rotates on every use), and logs in again when the refresh
 *   token is refused. Concurrent calls share one refresh.
 */
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import type { AuthService } from "../gen/tenantry/v1/auth_service_pb.js";

/** Anything that yields the current bearer token; `auth` calls the server without credentials. */
export interface Credentials {
  token(auth: Client<typeof AuthService>): Promise<string>;
}

export function apiKey(key: string): Credentials {
  if (!key) throw new Error("the API key is empty");
  return { token: async () => key };
}

export interface PasswordLoginOptions {
  /** Refresh this long before the access token expires (default 30 s). */
  refreshMarginMs?: number;
  now?: () => number;
}

export class PasswordLogin implements Credentials {
  /** Tokens obtained, by kind (for tests and metrics). */
  logins = 0;
  refreshes = 0;
  private access = "";
  private refresh = "";
  private expiresAt = 0;
  private pending?: Promise<string>;
  private readonly marginMs: number;
  private readonly now: () => number;

  constructor(
    readonly tenant: string,
    readonly email: string,
    private readonly password: string,
    options: PasswordLoginOptions = {},
  ) {
    this.marginMs = options.refreshMarginMs ?? 30_000;
    this.now = options.now ?? Date.now;
  }

  /** The refresh token in use (tests check its rotation). */
  get refreshToken(): string {
    return this.refresh;
  }

  async token(auth: Client<typeof AuthService>): Promise<string> {
    if (this.access && this.now() < this.expiresAt - this.marginMs) return this.access;
    this.pending ??= this.renew(auth).finally(() => {
      this.pending = undefined;
    });
    return this.pending;
  }

  private async renew(auth: Client<typeof AuthService>): Promise<string> {
    if (this.refresh) {
      try {
        const refreshed = await auth.refreshToken({ refreshToken: this.refresh });
        this.store(refreshed.accessToken, refreshed.refreshToken, refreshed.expiresIn);
        this.refreshes += 1;
        return this.access;
      } catch (error) {
        // Expired or revoked refresh token: start over with the password.
        if (ConnectError.from(error).code !== Code.Unauthenticated) throw error;
      }
    }
    const login = await auth.login({ tenant: this.tenant, email: this.email, password: this.password });
    this.store(login.accessToken, login.refreshToken, login.expiresIn);
    this.logins += 1;
    return this.access;
  }

  private store(access: string, refresh: string, expiresIn: bigint): void {
    this.access = access;
    this.refresh = refresh;
    this.expiresAt = this.now() + Number(expiresIn) * 1000;
  }
}
