import assert from "node:assert/strict";
import { WriteBehind } from "../../src/copy/write-behind.ts";

Deno.test("a background flush starts every interval, one at a time", async () => {
  const flushes: (() => void)[] = [];
  const behind = new WriteBehind(() => new Promise((resolve) => flushes.push(resolve)), 100);
  behind.written(60);
  assert.equal(flushes.length, 0);
  behind.written(60);
  assert.equal(flushes.length, 1, "120 bytes: one flush");
  behind.written(500);
  assert.equal(flushes.length, 1, "no second flush while one is under way");
  flushes[0]();
  await behind.settle();
  behind.written(1);
  assert.equal(flushes.length, 2, "what was written during the flush counts for the next");
  flushes[1]();
  await behind.settle();
  behind.written(99);
  assert.equal(flushes.length, 2, "the count restarts when a flush starts");
});

Deno.test("a failed background flush is reported by settle and stops further ones", async () => {
  let calls = 0;
  const behind = new WriteBehind(() => {
    calls++;
    return Promise.reject(new Error("EIO"));
  }, 10);
  behind.written(10);
  await assert.rejects(behind.settle(), /EIO/);
  behind.written(10);
  assert.equal(calls, 1);
  await assert.rejects(behind.settle(), /EIO/);
});
