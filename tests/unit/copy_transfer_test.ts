import assert from "node:assert/strict";
import type { Destination, Source } from "../../src/copy/endpoint.ts";
import type { Extent } from "../../src/copy/plan.ts";
import { transfer, type TransferSettings } from "../../src/copy/transfer.ts";

const KiB = 1024;

/** Resolve after a few turns of the event loop, so that requests overlap and finish out of order. */
function later(turns: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, turns));
}

/** A source in memory with given extents; records reads and how many overlapped. */
class MemorySource implements Source {
  readonly name = "memory-source";
  readonly kind = "memory";
  readonly sequential: boolean;
  readonly connections = 1;
  readonly maxRequest = Infinity;
  readonly reads: [number, number][] = [];
  readonly buffers = new Set<ArrayBufferLike>();
  maxReading = 0;
  #reading = 0;
  #position = 0;

  constructor(
    readonly bytes: Uint8Array,
    readonly extentList: Extent[],
    options: { stream?: boolean } = {},
  ) {
    this.sequential = options.stream ?? false;
  }

  get size(): number | undefined {
    return this.sequential ? undefined : this.bytes.length;
  }

  extents(offset: number, length: number): Promise<Extent[]> {
    const end = offset + length;
    return Promise.resolve(
      this.extentList.filter((e) => e.offset + e.length > offset && e.offset < end).map((e) => {
        const start = Math.max(e.offset, offset);
        return { offset: start, length: e.offset + e.length - start, zero: e.zero };
      }),
    );
  }

  async read(offset: number, into: Uint8Array): Promise<number> {
    if (this.sequential) assert.equal(offset, this.#position, "stream read out of order");
    this.reads.push([offset, into.length]);
    this.buffers.add(into.buffer);
    this.maxReading = Math.max(this.maxReading, ++this.#reading);
    await later((offset / 4096) % 3);
    this.#reading--;
    const count = Math.max(0, Math.min(into.length, this.bytes.length - offset));
    into.set(this.bytes.subarray(offset, offset + count));
    this.#position += count;
    return count;
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** A destination in memory; records every request and checks order where it must hold. */
class MemoryDestination implements Destination {
  readonly name = "memory-destination";
  readonly kind = "memory";
  readonly connections = 1;
  readonly maxRequest = Infinity;
  readonly sequential: boolean;
  readonly startsZeroed: boolean;
  readonly bytes: Uint8Array;
  readonly requests: string[] = [];
  maxBusy = 0;
  flushed = false;
  failWriteAt?: number;
  #busy = 0;
  #position = 0;

  constructor(
    size: number,
    options: { stream?: boolean; startsZeroed?: boolean } = {},
  ) {
    this.sequential = options.stream ?? false;
    this.startsZeroed = options.startsZeroed ?? false;
    this.bytes = new Uint8Array(size).fill(0xee);
  }

  get size(): number | undefined {
    return this.sequential ? undefined : this.bytes.length;
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.requests.push(`write ${offset}+${data.length}`);
    await this.#busyFor(offset, data.length);
    if (offset === this.failWriteAt) throw new Error("disk on fire");
    this.bytes.set(data, offset);
  }

  async zero(offset: number, length: number, allocate: boolean): Promise<void> {
    this.requests.push(`${allocate ? "allocated " : ""}zero ${offset}+${length}`);
    await this.#busyFor(offset, length);
    this.bytes.fill(0, offset, offset + length);
  }

  flush(): Promise<void> {
    this.flushed = true;
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  async #busyFor(offset: number, length: number): Promise<void> {
    if (this.sequential) {
      assert.equal(offset, this.#position, "stream written out of order");
      this.#position += length;
    }
    this.maxBusy = Math.max(this.maxBusy, ++this.#busy);
    await later(1);
    this.#busy--;
  }
}

/** 64 KiB: data [0,16K) with a zero block at [8K,12K), hole [16K,40K), data [40K,64K). */
function sampleSource(options: { stream?: boolean } = {}): MemorySource {
  const bytes = new Uint8Array(64 * KiB).map((_, i) => (i % 251) + 1);
  bytes.fill(0, 8 * KiB, 12 * KiB);
  bytes.fill(0, 16 * KiB, 40 * KiB);
  return new MemorySource(bytes, [
    { offset: 0, length: 16 * KiB, zero: false },
    { offset: 16 * KiB, length: 24 * KiB, zero: true },
    { offset: 40 * KiB, length: 24 * KiB, zero: false },
  ], options);
}

const SETTINGS: TransferSettings = {
  requestSize: 8 * KiB,
  maxInFlight: 3,
  maxBuffers: 3,
  sparseBlock: 4 * KiB,
  skipZeroes: false,
  allocate: false,
  extents: true,
};

Deno.test("holes are never read; zero ranges and zero blocks in data become zero requests", async () => {
  const source = sampleSource();
  const destination = new MemoryDestination(64 * KiB);
  const progress = { data: 0, zero: 0 };
  const bytes = await transfer(source, destination, {
    ...SETTINGS,
    onProgress: (done, data) => progress[data ? "data" : "zero"] += done,
  });
  assert.equal(bytes, 64 * KiB);
  assert.deepEqual(progress, { data: 40 * KiB, zero: 24 * KiB }, "read steps count as data");
  assert.deepEqual(destination.bytes, source.bytes);
  assert.ok(source.reads.every(([offset]) => offset < 16 * KiB || offset >= 40 * KiB));
  assert.deepEqual(destination.requests.filter((r) => r.startsWith("zero")).sort(), [
    "zero 16384+24576",
    "zero 8192+4096",
  ]);
  assert.ok(!destination.requests.includes("write 8192+4096"), "the zero block is not written");
});

Deno.test("with skipZeroes the destination gets no zero requests at all", async () => {
  const source = sampleSource();
  const destination = new MemoryDestination(64 * KiB, { startsZeroed: true });
  destination.bytes.fill(0);
  await transfer(source, destination, { ...SETTINGS, skipZeroes: true });
  assert.deepEqual(destination.bytes, source.bytes);
  assert.ok(destination.requests.every((r) => r.startsWith("write")), String(destination.requests));
});

Deno.test("allocate: zero ranges are zeroed allocated; without sparse detection zeroes are data", async () => {
  const source = sampleSource();
  const destination = new MemoryDestination(64 * KiB);
  await transfer(source, destination, { ...SETTINGS, allocate: true, sparseBlock: 0 });
  assert.deepEqual(destination.bytes, source.bytes);
  assert.deepEqual(destination.requests.filter((r) => r.includes("zero")), [
    "allocated zero 16384+24576",
  ]);
  assert.ok(destination.requests.includes("write 8192+8192"), "the zero block is written");
});

Deno.test("without extents the holes are read as data too", async () => {
  const source = sampleSource();
  const destination = new MemoryDestination(64 * KiB);
  await transfer(source, destination, { ...SETTINGS, extents: false, sparseBlock: 0 });
  assert.deepEqual(destination.bytes, source.bytes);
  assert.deepEqual(
    source.reads.map(([offset]) => offset).sort((a, b) => a - b),
    [0, 8, 16, 24, 32, 40, 48, 56].map((k) => k * KiB),
  );
  assert.ok(destination.requests.every((r) => r.startsWith("write")), String(destination.requests));
});

Deno.test("requests in flight and buffers stay within maxInFlight", async () => {
  const size = 1024 * KiB;
  const bytes = new Uint8Array(size).map((_, i) => (i % 13) + 1);
  const source = new MemorySource(bytes, [{ offset: 0, length: size, zero: false }]);
  const destination = new MemoryDestination(size);
  await transfer(source, destination, { ...SETTINGS, maxInFlight: 4, maxBuffers: 4 });
  assert.deepEqual(destination.bytes, bytes);
  assert.equal(source.reads.length, size / (8 * KiB));
  assert.ok(source.maxReading <= 4 && source.maxReading > 1, `reads at once: ${source.maxReading}`);
  assert.ok(destination.maxBusy <= 4, `writes at once: ${destination.maxBusy}`);
  assert.ok(source.buffers.size <= 4, `buffers: ${source.buffers.size}`);
});

Deno.test("data steps stay within maxBuffers while zero steps fill maxInFlight", async () => {
  // 128 KiB of data (16 steps), then 4 KiB zero and data extents taking turns: the zero
  // steps (never merged across data) overlap the data steps only when they need no buffer.
  const size = 256 * KiB;
  const bytes = new Uint8Array(size).map((_, i) => (i % 13) + 1);
  const extentList: Extent[] = [{ offset: 0, length: 128 * KiB, zero: false }];
  for (let offset = 128 * KiB; offset < size; offset += 8 * KiB) {
    bytes.fill(0, offset, offset + 4 * KiB);
    extentList.push({ offset, length: 4 * KiB, zero: true });
    extentList.push({ offset: offset + 4 * KiB, length: 4 * KiB, zero: false });
  }
  const source = new MemorySource(bytes, extentList);
  const destination = new MemoryDestination(size);
  await transfer(source, destination, { ...SETTINGS, maxInFlight: 8, maxBuffers: 2 });
  assert.deepEqual(destination.bytes, bytes);
  assert.equal(source.maxReading, 2, `reads at once: ${source.maxReading}`);
  assert.ok(source.buffers.size <= 2, `buffers: ${source.buffers.size}`);
  assert.ok(destination.maxBusy > 2 && destination.maxBusy <= 8, `busy: ${destination.maxBusy}`);
});

Deno.test("a stream destination is written in order while reads overlap; no sparse detection", async () => {
  const source = sampleSource();
  const destination = new MemoryDestination(64 * KiB, { stream: true });
  await transfer(source, destination, { ...SETTINGS, sparseBlock: 0 });
  assert.deepEqual(destination.bytes, source.bytes);
  assert.ok(source.maxReading > 1, "reads ran ahead of the ordered writes");
  assert.equal(destination.maxBusy, 1);
});

Deno.test("a stream source is read in order to its end, whatever its length", async () => {
  const bytes = new Uint8Array(21 * KiB + 5).map((_, i) => (i % 7) + 1);
  const source = new MemorySource(bytes, [], { stream: true });
  const destination = new MemoryDestination(32 * KiB);
  const copied = await transfer(source, destination, { ...SETTINGS, sparseBlock: 0 });
  assert.equal(copied, bytes.length);
  assert.deepEqual(destination.bytes.subarray(0, bytes.length), bytes);
  assert.equal(destination.bytes[bytes.length], 0xee, "nothing written past the stream's end");
  assert.equal(source.maxReading, 1);
});

Deno.test("a stream source longer than the destination fails with a clear message", async () => {
  const source = new MemorySource(new Uint8Array(20 * KiB).fill(1), [], { stream: true });
  const destination = new MemoryDestination(16 * KiB);
  await assert.rejects(
    transfer(source, destination, SETTINGS),
    /memory-destination: the source is larger than the destination \(16384 bytes\)/,
  );
});

Deno.test("the first failure stops new requests and names the end, offset and length", async () => {
  const size = 512 * KiB;
  const source = new MemorySource(new Uint8Array(size).fill(3), [
    { offset: 0, length: size, zero: false },
  ]);
  const destination = new MemoryDestination(size);
  destination.failWriteAt = 16 * KiB;
  await assert.rejects(
    transfer(source, destination, SETTINGS),
    /^DenbdError: memory-destination: write of 8192 bytes at offset 16384 failed: disk on fire$/m,
  );
  assert.ok(source.reads.length < 10, `reads after the failure: ${source.reads.length}`);
});

Deno.test("a failing extents query is reported with the source's name", async () => {
  const source = sampleSource();
  source.extents = () => Promise.reject(new Error("block status broke"));
  await assert.rejects(
    transfer(source, new MemoryDestination(64 * KiB), SETTINGS),
    /memory-source: block status broke/,
  );
});
