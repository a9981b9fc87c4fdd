/** WatchJob and the external-worker helper against a live server's queue. */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { randomUUID } from "node:crypto";
import { Discard, type RunningJob, type TenantryClient, v1, Worker } from "../src/index.js";
import { createNodeClient } from "../src/node.js";
import { admin, makeTenant, ownerLogin, type Server, startServer } from "./server.js";

let server: Server;
let owner: TenantryClient;

before(async () => {
  server = await startServer();
  owner = createNodeClient(server.grpc, { credentials: ownerLogin(await makeTenant(admin(server))) });
});
after(async () => server.stop());

const kind = () => `sdk.${randomUUID().slice(0, 8)}`;
const enqueue = async (k: string, payload = {}) =>
  (await owner.jobs.enqueueJob({ kind: k, payload, maxAttempts: 3 })).job?.id ?? "";
const getJob = async (jobId: string) => (await owner.jobs.getJob({ jobId })).job;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test("a worker completes a job and watchJob sees it to the final state", async () => {
  const k = kind();
  const jobId = await enqueue(k, { n: 21 });
  const states: v1.JobState[] = [];
  const watching = (async () => {
    for await (const job of owner.watchJob(jobId, { signal: AbortSignal.timeout(30_000) })) states.push(job.state);
  })();
  const worker = new Worker(owner, [k]);
  const outcomes = await worker.runOnce(async (job) => ({ double: Number(job.job.payload?.n) * 2 }));
  await watching;
  assert.deepEqual(outcomes, { [jobId]: "completed" });
  const job = await getJob(jobId);
  assert.equal(job?.state, v1.JobState.COMPLETED);
  assert.equal(job?.result?.double, 42);
  assert.equal(states.at(-1), v1.JobState.COMPLETED);
});

test("heartbeats renew the lease while the handler runs", async () => {
  const k = kind();
  const jobId = await enqueue(k);
  const worker = new Worker(owner, [k], { leaseMs: 5_000 });
  const [running] = await worker.lease();
  assert.ok(running && running.job.id === jobId);
  const firstExpiry = running.leaseExpireTime;
  const outcome = await worker.process(running, async (job) => {
    await sleep(4_000); // long enough for two heartbeats (every third of the lease)
    assert.equal(job.leaseLost, false);
    return { ok: true };
  });
  assert.equal(outcome, "completed");
  assert.ok(running.leaseExpireTime > firstExpiry, "heartbeats moved the lease forward");
});

test("a stale attempt cannot complete a job (fencing)", async () => {
  const k = kind();
  const jobId = await enqueue(k);
  const worker = new Worker(owner, [k]);
  const [running] = await worker.lease();
  assert.ok(running);
  const stale: RunningJob = { ...running, attempt: running.attempt + 1 };
  assert.equal(await worker.process(stale, async () => ({ late: true })), "lost");
  assert.equal((await getJob(jobId))?.state, v1.JobState.RUNNING);
  assert.equal(await worker.process(running, async () => undefined), "completed");
});

test("a failing handler fails the attempt; a cancellation reaches the handler through heartbeats", async () => {
  const k = kind();
  const failing = await enqueue(k);
  const worker = new Worker(owner, [k], { leaseMs: 5_000 });
  assert.deepEqual(
    await worker.runOnce(async () => {
      throw new Error("the printer is on fire");
    }),
    { [failing]: "failed" },
  );
  const failed = await getJob(failing);
  assert.equal(failed?.errors.at(-1)?.message, "the printer is on fire");

  const cancelled = await enqueue(k);
  await owner.jobs.cancelJob({ jobId: failing }).catch(() => undefined);
  const [running] = await worker.lease();
  assert.ok(running && running.job.id === cancelled);
  await worker.process(running, async (job) => {
    await owner.jobs.cancelJob({ jobId: cancelled });
    const deadline = Date.now() + 5_000;
    while (!job.signal.aborted && Date.now() < deadline) await sleep(50);
    throw new Discard("cancelled");
  });
  assert.ok(running.cancelRequested || running.leaseLost);
});
