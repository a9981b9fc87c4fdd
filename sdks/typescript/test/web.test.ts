/**
 * A browser-style gRPC-Web call through the whole stack: CORS preflight, the
 * SDK's gRPC-Web transport over fetch (HTTP/1.1) with the page's Origin, rate
 * limits, rich errors and the server's metrics, on the gRPC port.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { randomUUID } from "node:crypto";
import { Code, TenantryError, type TenantryClient } from "../src/index.js";
import { createWebClient } from "../src/web.js";
import { admin, makeTenant, ORIGIN, ownerLogin, type Server, startServer } from "./server.js";

let server: Server;
let seen: Headers[] = [];

before(async () => {
  server = await startServer();
});
after(async () => server.stop());

/** fetch as a page on ORIGIN would call it, keeping the response headers. */
const browserFetch: typeof fetch = async (input, init) => {
  const headers = new Headers(init?.headers);
  headers.set("origin", ORIGIN);
  const response = await fetch(input, { ...init, headers });
  seen.push(response.headers);
  return response;
};

async function callsOf(method: string, code: string): Promise<number> {
  const text = await (await fetch(`${server.http}/metrics`)).text();
  const line = text
    .split("\n")
    .find((l) => l.startsWith("tenantry_rpc_calls_total{") && l.includes(`method="${method}"`) && l.includes(`code="${code}"`));
  return line ? Number(line.split(" ").pop()) : 0;
}

test("a preflight from the allowed origin is answered on the gRPC port; others are refused", async () => {
  const url = `${server.grpc}/tenantry.v1.JobsService/ListJobs`;
  const ask = (origin: string) =>
    fetch(url, {
      method: "OPTIONS",
      headers: {
        origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type, x-grpc-web, x-user-agent, authorization",
      },
    });
  const allowed = await ask(ORIGIN);
  assert.equal(allowed.status, 204);
  assert.equal(allowed.headers.get("access-control-allow-origin"), ORIGIN);
  assert.match(allowed.headers.get("access-control-allow-headers") ?? "", /x-grpc-web/);
  assert.equal((await ask("http://evil.test")).status, 403);
});

test("a gRPC-Web call passes the whole stack: auth, tenant, rate limit headers, metrics", async () => {
  const tenant = await makeTenant(admin(server));
  const client: TenantryClient = createWebClient(server.grpc, { credentials: ownerLogin(tenant), fetch: browserFetch });
  const before = await callsOf("ListJobs", "OK");
  seen = [];
  await client.jobs.listJobs({});
  const headers = seen.at(-1);
  assert.ok(headers);
  assert.equal(headers.get("access-control-allow-origin"), ORIGIN);
  assert.match(headers.get("access-control-expose-headers") ?? "", /x-ratelimit-remaining/);
  assert.ok(headers.get("x-ratelimit-remaining"), "the rate limiter ran and reported");
  assert.ok(client.rateLimit && client.rateLimit.limit > 0);
  assert.equal((await client.auth.whoAmI({})).tenantId, tenant.id);
  assert.equal(await callsOf("ListJobs", "OK"), before + 1, "counted by the same metrics as native gRPC");
});

test("gRPC-Web errors carry the rich details, and a rate-limited call is retried", async () => {
  const root = createWebClient(server.grpc, { credentials: admin(server).options.credentials, fetch: browserFetch });
  await assert.rejects(root.tenants.createTenant({ slug: "Not A Slug!", displayName: "x", planId: "free" }), (e) => {
    assert.ok(e instanceof TenantryError);
    assert.equal(e.code, Code.InvalidArgument);
    assert.ok("slug" in e.fieldViolations);
    return true;
  });
  const plan = `tiny-${randomUUID().slice(0, 8)}`;
  await root.tenants.upsertPlan({
    plan: { id: plan, displayName: plan, requestsPerSecond: 1, burst: 1, maxConcurrentJobs: 5, minReplicas: 1, maxReplicas: 3 },
  });
  const tenant = await makeTenant(root, plan);
  const client = createWebClient(server.grpc, { credentials: ownerLogin(tenant), fetch: browserFetch });
  const limitedBefore = await callsOf("ListJobs", "RESOURCE_EXHAUSTED");
  for (let i = 0; i < 3; i++) await client.jobs.listJobs({});
  assert.ok(client.attempts > 3, "refused calls were retried after RetryInfo");
  assert.ok((await callsOf("ListJobs", "RESOURCE_EXHAUSTED")) > limitedBefore, "refusals are in the metrics");
});
