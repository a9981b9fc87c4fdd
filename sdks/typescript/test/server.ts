/**
 * Starts one live `tenantry serve --dev` per test file: the built binary, ports
 * chosen by the OS, a private data directory (its own PostgreSQL cluster, no
 * Redis), browser origin `http://app.test` allowed for CORS.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdtempSync, openSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { randomUUID } from "node:crypto";
import { TenantryClient, apiKey, PasswordLogin } from "../src/index.js";
import { createNodeClient } from "../src/node.js";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "../../../..");
export const BINARY = process.env.TENANTRY_BIN ?? join(repo, "target", "debug", "tenantry");
export const ORIGIN = "http://app.test";
export const PASSWORD = "correct horse battery staple";

export interface Server {
  grpc: string;
  http: string;
  adminKey: string;
  stop(): Promise<void>;
}

export async function startServer(): Promise<Server> {
  const dataDir = mkdtempSync(join(tmpdir(), "tenantry-sdk-ts-"));
  // Run as root, the private cluster runs as an unprivileged user who must reach its directory.
  chmodSync(dataDir, 0o755);
  const env: NodeJS.ProcessEnv = { ...process.env, TENANTRY_LOG_FORMAT: "json" };
  delete env.DATABASE_URL;
  delete env.REDIS_URL;
  const log = openSync(join(dataDir, "server.log"), "w");
  const child: ChildProcess = spawn(
    BINARY,
    ["serve", "--dev", "--data-dir", dataDir, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
     "--cors-allowed-origins", ORIGIN],
    { env, stdio: ["ignore", "pipe", log] },
  );
  const banner = await new Promise<string>((ok, fail) => {
    let text = "";
    const timer = setTimeout(() => fail(new Error("the server did not start within 120 s")), 120_000);
    child.stdout?.on("data", (chunk: Buffer) => {
      text += chunk.toString();
      if (text.includes("Try:")) {
        clearTimeout(timer);
        ok(text);
      }
    });
    child.on("exit", (code) => fail(new Error(`the server exited (${code}); see ${dataDir}/server.log`)));
  });
  const grpc = /gRPC: (\S+)/.exec(banner)?.[1];
  const http = /HTTP: (\S+)/.exec(banner)?.[1];
  if (!grpc || !http) throw new Error(`unexpected banner: ${banner}`);
  return {
    grpc: `http://${grpc}`,
    http,
    adminKey: readFileSync(join(dataDir, "admin-api-key"), "utf8").trim(),
    stop: () =>
      new Promise((done) => {
        child.once("exit", () => done());
        child.kill("SIGTERM");
      }),
  };
}

export function admin(server: Server): TenantryClient {
  return createNodeClient(server.grpc, { credentials: apiKey(server.adminKey) });
}

export interface Tenant {
  id: string;
  slug: string;
  ownerEmail: string;
}

export async function makeTenant(adminClient: TenantryClient, planId = "free"): Promise<Tenant> {
  const slug = `t-${randomUUID().slice(0, 10)}`;
  const ownerEmail = `owner@${slug}.test`;
  const created = await adminClient.tenants.createTenant({
    slug,
    displayName: slug,
    planId,
    ownerEmail,
    ownerPassword: PASSWORD,
  });
  return { id: created.tenant?.id ?? "", slug, ownerEmail };
}

export function ownerLogin(tenant: Tenant, refreshMarginMs?: number): PasswordLogin {
  return new PasswordLogin(tenant.slug, tenant.ownerEmail, PASSWORD, { refreshMarginMs });
}
