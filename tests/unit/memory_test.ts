import assert from "node:assert/strict";
import { MEMORY_CHUNK, MemoryNode } from "../../src/block/memory.ts";

Deno.test("memory node: writes across chunks read back; untouched bytes are zero", async () => {
  const node = new MemoryNode(3 * MEMORY_CHUNK + 100);
  const data = new Uint8Array(MEMORY_CHUNK + 10).map((_, i) => (i % 250) + 1);
  await node.write(MEMORY_CHUNK - 5, data);
  const back = new Uint8Array(data.length + 10);
  await node.read(MEMORY_CHUNK - 10, back);
  assert.deepEqual([...back.subarray(0, 5)], [0, 0, 0, 0, 0]);
  assert.deepEqual(back.subarray(5, 5 + data.length), data);
  assert.deepEqual([...back.subarray(5 + data.length)], [0, 0, 0, 0, 0]);
});

Deno.test("memory node: block status reports allocated chunks as data and the rest as holes", async () => {
  const node = new MemoryNode(4 * MEMORY_CHUNK);
  await node.write(MEMORY_CHUNK + 1, new Uint8Array([1]));
  assert.deepEqual(await node.blockStatus(0, 4 * MEMORY_CHUNK), [
    { length: MEMORY_CHUNK, data: false, zero: true, allocated: true },
    { length: MEMORY_CHUNK, data: true, zero: false, allocated: true },
    { length: 2 * MEMORY_CHUNK, data: false, zero: true, allocated: true },
  ]);
});

Deno.test("memory node: zeroing whole chunks frees them unless a hole is forbidden", async () => {
  const node = new MemoryNode(2 * MEMORY_CHUNK);
  await node.write(0, new Uint8Array(2 * MEMORY_CHUNK).fill(9));
  await node.writeZeroes(0, MEMORY_CHUNK, { mayTrim: false });
  await node.writeZeroes(MEMORY_CHUNK, MEMORY_CHUNK, { mayTrim: true });
  const status = await node.blockStatus(0, 2 * MEMORY_CHUNK);
  assert.deepEqual(status.map((e) => e.data), [true, false]);
  const back = new Uint8Array(2 * MEMORY_CHUNK);
  await node.read(0, back);
  assert.ok(back.every((b) => b === 0));
});

Deno.test("memory node: read-only refuses changes with kind read-only", async () => {
  const node = new MemoryNode(1024, { readOnly: true });
  await assert.rejects(() => node.write(0, new Uint8Array(1)), { kind: "read-only" });
  assert.equal(node.capabilities.writable, false);
});

Deno.test("memory node: a growable node grows on writes past the end and reads zeroes there", async () => {
  const node = new MemoryNode(1000, { growable: true });
  const tail = new Uint8Array(100).fill(9);
  await node.read(900, tail);
  assert.ok(tail.every((byte) => byte === 0), "reading past the end gives zeroes");
  assert.equal(node.size, 1000);
  await node.write(70000, new Uint8Array([1, 2, 3]));
  assert.equal(node.size, 70003);
  await node.writeZeroes(80000, 5000);
  assert.equal(node.size, 85000);
  const back = new Uint8Array(4);
  await node.read(70000, back);
  assert.deepEqual(back, new Uint8Array([1, 2, 3, 0]));
  await assert.rejects(() => node.trim(85000, 1), { kind: "invalid" });
  const fixed = new MemoryNode(1000);
  await assert.rejects(() => fixed.write(999, new Uint8Array(2)), { kind: "no-space" });
  assert.equal(fixed.size, 1000);
});
