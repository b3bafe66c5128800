import assert from "node:assert/strict";
import { BufferPool } from "../../src/io/buffer-pool.ts";

Deno.test("buffer pool: buffers come back by exact length, within the byte limit", () => {
  const pool = new BufferPool(10_000);
  const a = pool.take(4096);
  const b = pool.take(4096);
  const c = pool.take(4096);
  assert.equal(a.length, 4096);
  pool.give(a);
  pool.give(b);
  pool.give(c); // over the limit: dropped
  assert.equal(pool.freeBytes, 8192);
  assert.notEqual(pool.take(1000), a, "another length: a new buffer");
  const again = [pool.take(4096), pool.take(4096)];
  assert.ok(again.includes(a) && again.includes(b));
  assert.equal(pool.freeBytes, 0);
  const fresh = pool.take(4096);
  assert.ok(fresh !== a && fresh !== b && fresh.every((byte) => byte === 0));
});
