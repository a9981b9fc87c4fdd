/** Credentials, tenant selection, typed errors, rate limits, retries and paging over gRPC (Node). */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { randomUUID } from "node:crypto";
import { Code, METHODS, mayRepeat, TenantryError, type TenantryClient, v1 } from "../src/index.js";
import { createNodeClient } from "../src/node.js";
import { admin, makeTenant, ownerLogin, type Server, startServer } from "./server.js";

let server: Server;
let root: TenantryClient;

before(async () => {
  server = await startServer();
  root = admin(server);
});
after(async () => server.stop());

test("every method of the contract has an idempotency class", () => {
  const declared = [v1.AuthService, v1.JobsService, v1.ScalingService, v1.TenantService, v1.UsageService].flatMap(
    (service) => service.methods.map((m) => `${service.name}/${m.name}`),
  );
  assert.deepEqual(new Set(declared), new Set(Object.keys(METHODS)));
  assert.equal(mayRepeat("JobsService/EnqueueJob", { uniqueKey: "" }), false);
  assert.equal(mayRepeat("JobsService/EnqueueJob", { uniqueKey: "order-1" }), true);
});

test("an admin key calls as platform admin and selects the tenant with x-tenant-id", async () => {
  const me = await root.auth.whoAmI({});
  assert.equal(me.principal?.kind, v1.PrincipalKind.PLATFORM_ADMIN);
  const tenant = await makeTenant(root);
  assert.equal((await root.withTenant(tenant.slug).auth.whoAmI({})).tenantId, tenant.id);
});

test("a login is refreshed before expiry, and redone when its refresh token family is revoked", async () => {
  const tenant = await makeTenant(root);
  const login = ownerLogin(tenant, 24 * 3600 * 1000); // always "about to expire"
  const client = createNodeClient(server.grpc, { credentials: login });
  await client.auth.whoAmI({});
  const first = login.refreshToken;
  await client.auth.whoAmI({});
  await client.auth.whoAmI({});
  assert.deepEqual([login.logins, login.refreshes], [1, 2]);
  assert.notEqual(login.refreshToken, first, "the refresh token rotates");
  await assert.rejects(client.auth.refreshToken({ refreshToken: first }), (e: TenantryError) => e.code === Code.Unauthenticated);
  assert.equal((await client.auth.whoAmI({})).tenantId, tenant.id);
  assert.equal(login.logins, 2);
});

test("an invalid argument carries BadRequest naming the field", async () => {
  await assert.rejects(root.tenants.createTenant({ slug: "Not A Slug!", displayName: "x", planId: "free" }), (e) => {
    assert.ok(e instanceof TenantryError);
    assert.equal(e.code, Code.InvalidArgument);
    assert.ok("slug" in e.fieldViolations, JSON.stringify(e.fieldViolations));
    return true;
  });
});

test("a refusal carries ErrorInfo with its reason", async () => {
  const tenant = await makeTenant(root);
  const owner = createNodeClient(server.grpc, { credentials: ownerLogin(tenant) });
  await owner.jobs.listJobs({});
  await root.tenants.suspendTenant({ tenantId: tenant.id });
  await assert.rejects(owner.jobs.listJobs({}), (e: TenantryError) => {
    assert.equal(e.errorInfo?.domain, "tenantry.v1");
    assert.ok(e.reason);
    return true;
  });
});

test("rate-limit state is read from the response metadata, and pages iterate to the end", async () => {
  const tenant = await makeTenant(root);
  const owner = createNodeClient(server.grpc, { credentials: ownerLogin(tenant) });
  const ids = new Set<string>();
  for (let i = 0; i < 5; i++) {
    ids.add((await owner.jobs.enqueueJob({ kind: "sdk.page", queue: "paging", payload: {} })).job?.id ?? "");
  }
  assert.ok(owner.rateLimit && owner.rateLimit.limit > 0);
  const seen: string[] = [];
  for await (const job of owner.paginate(owner.jobs.listJobs, { pageSize: 2, queue: "paging" }, "jobs")) {
    seen.push(job.id);
  }
  assert.deepEqual(new Set(seen), ids);
  assert.equal(seen.length, 5);
});

async function throttled(): Promise<TenantryClient> {
  const plan = `tiny-${randomUUID().slice(0, 8)}`;
  await root.tenants.upsertPlan({
    plan: { id: plan, displayName: plan, requestsPerSecond: 1, burst: 1, maxConcurrentJobs: 5, minReplicas: 1, maxReplicas: 3 },
  });
  const tenant = await makeTenant(root, plan);
  return createNodeClient(server.grpc, { credentials: ownerLogin(tenant) });
}

test("a rate-limited safe call is retried after the server's RetryInfo delay", async () => {
  const client = await throttled();
  const started = Date.now();
  for (let i = 0; i < 3; i++) await client.jobs.listJobs({});
  assert.ok(client.attempts > 3, `retried (${client.attempts} attempts)`);
  assert.ok(Date.now() - started >= 1000, "waited for the bucket to refill");
});

test("a rate-limited non-idempotent call is not retried; a keyed one is", async () => {
  const client = await throttled();
  let before = 0;
  await assert.rejects(
    (async () => {
      for (let i = 0; i < 5; i++) {
        before = client.attempts;
        await client.jobs.enqueueJob({ kind: "sdk.retry", payload: {} });
      }
    })(),
    (e: TenantryError) => {
      assert.equal(e.code, Code.ResourceExhausted);
      assert.ok((e.retryDelayMs ?? 0) > 0);
      assert.ok(e.metadata.get("retry-after"));
      return true;
    },
  );
  assert.equal(client.attempts, before + 1, "refused once, not repeated");
  for (let i = 0; i < 3; i++) await client.jobs.enqueueJob({ kind: "sdk.retry", payload: {}, uniqueKey: `k-${i}` });
});

test("a retry never outlives the call's deadline", async () => {
  const client = await throttled();
  await client.jobs.listJobs({});
  const started = Date.now();
  await assert.rejects(client.jobs.listJobs({}, { timeoutMs: 300 }));
  assert.ok(Date.now() - started < 600);
});
