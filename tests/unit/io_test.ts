import assert from "node:assert/strict";
import { BufferedReader, UnexpectedEof } from "../../src/io/buffered-reader.ts";
import { WriteQueue } from "../../src/io/write-queue.ts";
import type { ByteStream } from "../../src/io/byte-stream.ts";

/** A stream that yields the given pieces one read at a time, then ends. */
function pieces(...parts: number[][]): ByteStream & { reads: number } {
  const queue = parts.map((part) => new Uint8Array(part));
  return {
    reads: 0,
    read(buffer) {
      this.reads++;
      const next = queue.shift();
      if (!next) return Promise.resolve(null);
      const count = Math.min(next.length, buffer.length);
      buffer.set(next.subarray(0, count));
      if (count < next.length) queue.unshift(next.subarray(count));
      return Promise.resolve(count);
    },
    write: () => Promise.reject(new Error("read-only stream")),
    close() {},
  };
}

/** A stream that records writes, writing at most `step` bytes per call. */
function sink(step = Infinity) {
  const written: number[] = [];
  let calls = 0;
  const stream: ByteStream = {
    read: () => Promise.resolve(null),
    async write(data) {
      calls++;
      await new Promise((resolve) => setTimeout(resolve, 0));
      const count = Math.min(step, data.length);
      written.push(...data.subarray(0, count));
      return count;
    },
    close() {},
  };
  return { stream, written, calls: () => calls };
}

Deno.test("readExact assembles messages split across reads and serves many from one read", async () => {
  const stream = pieces([1, 2], [3, 4, 5, 6, 7, 8]);
  const reader = new BufferedReader(stream, 16);
  assert.deepEqual([...await reader.readExact(3)], [1, 2, 3]);
  assert.deepEqual([...await reader.readExact(2)], [4, 5]);
  assert.deepEqual([...await reader.readExact(3)], [6, 7, 8]);
  assert.equal(stream.reads, 2);
  assert.equal(await reader.readExactOrEof(1), null);
});

Deno.test("the end of the stream mid-message is UnexpectedEof", async () => {
  const reader = new BufferedReader(pieces([1, 2]), 16);
  await assert.rejects(reader.readExact(4), UnexpectedEof);
  await assert.rejects(new BufferedReader(pieces()).readExact(1), UnexpectedEof);
});

Deno.test("readInto takes buffered bytes first, then reads the rest directly", async () => {
  const reader = new BufferedReader(pieces([1, 2, 3], [4, 5, 6, 7]), 4);
  assert.deepEqual([...await reader.readExact(1)], [1]);
  const target = new Uint8Array(6);
  await reader.readInto(target);
  assert.deepEqual([...target], [2, 3, 4, 5, 6, 7]);
  await assert.rejects(reader.readInto(new Uint8Array(1)), UnexpectedEof);
});

Deno.test("skip drops bytes without keeping them; compaction keeps order", async () => {
  const reader = new BufferedReader(pieces([1, 2, 3, 4, 5], [6, 7, 8, 9]), 4);
  await reader.skip(3);
  assert.deepEqual([...await reader.readExact(4)], [4, 5, 6, 7]);
  assert.deepEqual([...await reader.readExact(2)], [8, 9]);
});

Deno.test("reads larger than the buffer are refused; stream swaps need an empty buffer", async () => {
  const reader = new BufferedReader(pieces([1, 2, 3]), 2);
  await assert.rejects(reader.readExact(3), RangeError);
  await reader.readExact(1);
  assert.throws(() => reader.replaceStream(pieces()), /unread bytes/);
});

Deno.test("messages are written whole, in order, coalesced while a write is under way", async () => {
  const { stream, written, calls } = sink();
  const queue = new WriteQueue(stream);
  await Promise.all([
    queue.send([new Uint8Array([1]), new Uint8Array([2])]),
    queue.send([new Uint8Array([3])]),
    queue.send([new Uint8Array([4, 5])]),
  ]);
  assert.deepEqual(written, [1, 2, 3, 4, 5]);
  assert.ok(calls() <= 2, `expected coalesced writes, got ${calls()}`);
});

Deno.test("short writes are continued and large chunks are written directly", async () => {
  const { stream, written } = sink(1000);
  const queue = new WriteQueue(stream);
  const big = new Uint8Array(100_000).map((_, i) => i % 256);
  await Promise.all([queue.send([new Uint8Array([7])]), queue.send([big])]);
  assert.equal(written.length, 100_001);
  assert.equal(written[0], 7);
  assert.deepEqual(written.slice(1, 5), [0, 1, 2, 3]);
  await queue.drain();
});

Deno.test("after a failed write every pending and later send rejects", async () => {
  const stream: ByteStream = {
    read: () => Promise.resolve(null),
    write: () => Promise.reject(new Deno.errors.BrokenPipe("gone")),
    close() {},
  };
  const queue = new WriteQueue(stream);
  const results = await Promise.allSettled([
    queue.send([new Uint8Array(1)]),
    queue.send([new Uint8Array(1)]),
  ]);
  assert.deepEqual(results.map((r) => r.status), ["rejected", "rejected"]);
  await assert.rejects(queue.send([new Uint8Array(1)]), Deno.errors.BrokenPipe);
});
