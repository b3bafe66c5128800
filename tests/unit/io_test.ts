import assert from "node:assert/strict";
import { BufferedReader, READ_BUFFER_SIZES, UnexpectedEof } from "../../src/io/buffered-reader.ts";
import { BufferSizing } from "../../src/io/buffer-sizing.ts";
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

/** A buffer size range of one size. */
function fixed(size: number) {
  return { initial: size, maximum: size };
}

/** A stream of `total` bytes (byte i is i % 251) that hands out as much as each read asks for. */
function flood(total: number): ByteStream & { reads: number } {
  let sent = 0;
  return {
    reads: 0,
    read(buffer) {
      this.reads++;
      if (sent === total) return Promise.resolve(null);
      const count = Math.min(buffer.length, total - sent);
      for (let i = 0; i < count; i++) buffer[i] = (sent + i) % 251;
      sent += count;
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
  const reader = new BufferedReader(stream, fixed(16));
  assert.deepEqual([...await reader.readExact(3)], [1, 2, 3]);
  assert.deepEqual([...await reader.readExact(2)], [4, 5]);
  assert.deepEqual([...await reader.readExact(3)], [6, 7, 8]);
  assert.equal(stream.reads, 2);
  assert.equal(await reader.readExactOrEof(1), null);
});

Deno.test("the end of the stream mid-message is UnexpectedEof", async () => {
  const reader = new BufferedReader(pieces([1, 2]), fixed(16));
  await assert.rejects(reader.readExact(4), UnexpectedEof);
  await assert.rejects(new BufferedReader(pieces()).readExact(1), UnexpectedEof);
});

Deno.test("readInto takes buffered bytes first, then reads the rest directly", async () => {
  const reader = new BufferedReader(pieces([1, 2, 3], [4, 5, 6, 7]), fixed(4));
  assert.deepEqual([...await reader.readExact(1)], [1]);
  const target = new Uint8Array(6);
  await reader.readInto(target);
  assert.deepEqual([...target], [2, 3, 4, 5, 6, 7]);
  await assert.rejects(reader.readInto(new Uint8Array(1)), UnexpectedEof);
});

Deno.test("skip drops bytes without keeping them; compaction keeps order", async () => {
  const reader = new BufferedReader(pieces([1, 2, 3, 4, 5], [6, 7, 8, 9]), fixed(4));
  await reader.skip(3);
  assert.deepEqual([...await reader.readExact(4)], [4, 5, 6, 7]);
  assert.deepEqual([...await reader.readExact(2)], [8, 9]);
});

Deno.test("reads larger than the buffer are refused; stream swaps need an empty buffer", async () => {
  const reader = new BufferedReader(pieces([1, 2, 3]), fixed(2));
  await assert.rejects(reader.readExact(3), RangeError);
  await reader.readExact(1);
  assert.throws(() => reader.replaceStream(pieces()), /unread bytes/);
});

Deno.test("discardBuffered drops what arrived unread, reads nothing more, and allows a swap", async () => {
  const old = pieces([1, 2, 3, 4, 5], [6]);
  const reader = new BufferedReader(old, fixed(8));
  await reader.readExact(2);
  const readsBefore = old.reads;
  assert.equal(reader.discardBuffered(), 3);
  assert.equal(old.reads, readsBefore);
  assert.equal(reader.discardBuffered(), 0);
  reader.replaceStream(pieces([7, 8]));
  assert.deepEqual([...await reader.readExact(2)], [7, 8]);
});

Deno.test("a reader starts with 1 KiB and grows while reads fill it, up to its maximum", async () => {
  const stream = flood(8 * READ_BUFFER_SIZES.maximum);
  const reader = new BufferedReader(stream);
  assert.ok(reader.capacity <= 1024, `a fresh reader holds ${reader.capacity} bytes`);
  const message = 100;
  for (let offset = 0; offset < 8 * READ_BUFFER_SIZES.maximum; offset += message) {
    const view = await reader.readExact(Math.min(message, 8 * READ_BUFFER_SIZES.maximum - offset));
    assert.equal(view[0], offset % 251);
  }
  assert.equal(reader.capacity, READ_BUFFER_SIZES.maximum);
  // Doubling from 1 KiB reaches 256 KiB in 9 reads (511 KiB); the other 1.5 MiB takes 7 more.
  assert.ok(stream.reads <= 9 + 7, `${stream.reads} reads for 2 MiB of small messages`);
});

Deno.test("a reader gives its memory back after a run of small reads", async () => {
  const sizes = { initial: 16, maximum: 1024 };
  const big = Array.from({ length: 4000 }, (_, i) => i % 251);
  // Halving from 1024 to 16 takes six runs of sparse reads.
  const small = Array.from({ length: BufferSizing.SHRINK_AFTER_SPARSE_USES * 6 }, () => [7]);
  const reader = new BufferedReader(pieces(big, ...small), sizes);
  for (let offset = 0; offset < big.length; offset += 100) {
    assert.equal((await reader.readExact(100))[0], offset % 251);
  }
  assert.equal(reader.capacity, sizes.maximum, "reads that filled the buffer grew it");
  for (const _ of small) assert.deepEqual([...await reader.readExact(1)], [7]);
  assert.equal(await reader.readExactOrEof(1), null); // the buffer is resized before a read
  assert.equal(reader.capacity, sizes.initial);
});

Deno.test("a message longer than the current buffer is read whole, in order", async () => {
  const reader = new BufferedReader(pieces([1, 2, 3], [4, 5, 6, 7, 8, 9, 10]), {
    initial: 2,
    maximum: 16,
  });
  assert.deepEqual([...await reader.readExact(1)], [1]);
  assert.deepEqual([...await reader.readExact(9)], [2, 3, 4, 5, 6, 7, 8, 9, 10]);
  assert.ok(reader.capacity >= 9 && reader.capacity <= 16);
});

Deno.test("buffer sizing doubles on full uses, fits a message and halves after sparse ones", () => {
  const sizing = new BufferSizing({ initial: 8, maximum: 64 });
  sizing.record(8, 8);
  assert.equal(sizing.size, 16);
  sizing.record(10, 16); // neither full nor sparse: no change
  sizing.fit(40);
  assert.equal(sizing.size, 64);
  sizing.fit(1000); // never beyond the maximum
  assert.equal(sizing.size, 64);
  for (let use = 1; use < BufferSizing.SHRINK_AFTER_SPARSE_USES; use++) sizing.record(8, 64);
  assert.equal(sizing.size, 64);
  sizing.record(30, 64); // a fuller use breaks the run
  for (let use = 1; use < BufferSizing.SHRINK_AFTER_SPARSE_USES; use++) sizing.record(8, 64);
  assert.equal(sizing.size, 64);
  sizing.record(8, 64);
  assert.equal(sizing.size, 32);
  for (let use = 0; use < 10 * BufferSizing.SHRINK_AFTER_SPARSE_USES; use++) sizing.record(0, 8);
  assert.equal(sizing.size, 8); // never below the initial size
  assert.throws(() => new BufferSizing({ initial: 0, maximum: 8 }), RangeError);
  assert.throws(() => new BufferSizing({ initial: 16, maximum: 8 }), RangeError);
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

Deno.test("chunks larger than the first coalescing buffer are still written whole, in order", async () => {
  const { stream, written, calls } = sink();
  const queue = new WriteQueue(stream);
  const messages = [1, 10_000, 3, 60_000, 5000, 2].map((length, index) =>
    new Uint8Array(length).fill(index + 1)
  );
  await Promise.all(messages.map((message) => queue.send([message])));
  const expected = messages.flatMap((message) => [...message]);
  assert.equal(written.length, expected.length);
  assert.ok(written.every((byte, i) => byte === expected[i]), "bytes out of order");
  await Promise.all(messages.map((message) => queue.send([message])));
  assert.ok(calls() <= 8, `expected coalesced writes once the buffer grew, got ${calls()}`);
});

Deno.test("a small message alone in its write goes out as it is, without a copy", async () => {
  const seen: Uint8Array[] = [];
  const stream: ByteStream = {
    read: () => Promise.resolve(null),
    write(data) {
      seen.push(data);
      return Promise.resolve(data.length);
    },
    close() {},
  };
  const queue = new WriteQueue(stream);
  const greeting = new Uint8Array(18).fill(3);
  await queue.send([greeting]);
  assert.equal(seen.length, 1);
  assert.equal(seen[0].buffer, greeting.buffer, "the lone chunk was copied");
  const [a, b] = [new Uint8Array([1]), new Uint8Array([2])];
  await queue.send([a, b]);
  assert.deepEqual([...seen[1]], [1, 2]);
});

/** A stream whose every write fails with EPIPE (the peer went away). */
function brokenPipe(): ByteStream {
  return {
    read: () => Promise.resolve(null),
    write: () => Promise.reject(new Deno.errors.BrokenPipe("gone")),
    close() {},
  };
}

Deno.test("after a failed write every pending and later send rejects", async () => {
  const queue = new WriteQueue(brokenPipe());
  const results = await Promise.allSettled([
    queue.send([new Uint8Array(1)]),
    queue.send([new Uint8Array(1)]),
  ]);
  assert.deepEqual(results.map((r) => r.status), ["rejected", "rejected"]);
  await assert.rejects(queue.send([new Uint8Array(1)]), Deno.errors.BrokenPipe);
});

Deno.test("messages queued in one turn go out in one write; each is told once written", async () => {
  const { stream, written, calls } = sink();
  const queue = new WriteQueue(stream);
  const told: unknown[] = [];
  for (let i = 1; i <= 5; i++) queue.queue([new Uint8Array([i])], (failure) => told.push(failure));
  assert.deepEqual(told, [], "never told before queue returns");
  await queue.drain();
  assert.deepEqual(written, [1, 2, 3, 4, 5]);
  assert.equal(calls(), 1, "one write for the turn's messages");
  assert.deepEqual(told, [null, null, null, null, null]);
});

Deno.test("queue after a failed write tells the failure, later, never synchronously", async () => {
  const queue = new WriteQueue(brokenPipe());
  await assert.rejects(queue.send([new Uint8Array(1)]), Deno.errors.BrokenPipe);
  const told: unknown[] = [];
  queue.queue([new Uint8Array(1)], (failure) => told.push(failure));
  assert.equal(told.length, 0, "not told before queue returns");
  await Promise.resolve();
  assert.equal(told.length, 1);
  assert.ok(told[0] instanceof Deno.errors.BrokenPipe);
});
