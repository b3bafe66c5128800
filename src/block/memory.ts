/**
 * A sparse in-memory node, for tests and benchmarks. Storage is allocated in
 * fixed-size chunks on first write; untouched or zeroed chunks are holes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { MemoryNode } from "./memory.ts";
 * const node = new MemoryNode(1 << 20);
 * await node.write(0, new TextEncoder().encode("hello"));
 * const into = new Uint8Array(5);
 * await node.read(0, into);
 * assert.equal(new TextDecoder().decode(into), "hello");
 * ```
 * @module
 */

import { CheckedNode } from "./checked-node.ts";
import type { BlockExtent, NodeCapabilities, NodeChild, ZeroOptions } from "./node.ts";

/** Granularity of allocation, in bytes. */
export const MEMORY_CHUNK = 64 * 1024;

const CAPABILITIES: NodeCapabilities = {
  writable: true,
  trim: true,
  fastZero: true,
  cache: false,
  multiConn: true,
  blockStatus: true,
};

/** How a {@linkcode MemoryNode} behaves. */
export interface MemoryNodeOptions {
  /** Refuse writes, zeroing and discards. */
  readonly readOnly?: boolean;
  /** Take writes past the end and grow to cover them (as a file under qcow2 does). */
  readonly growable?: boolean;
}

/** A sparse node that lives in memory and is lost when closed. */
export class MemoryNode extends CheckedNode {
  /** Writable, with real holes; flush is meaningless. */
  readonly capabilities: NodeCapabilities;
  /** Any alignment is as good as another. */
  readonly requestAlignment = 1;
  /** A protocol node: no children. */
  readonly children: readonly NodeChild[] = [];
  readonly #chunks = new Map<number, Uint8Array>();
  #size: number;

  /** An all-zero node of `size` bytes. */
  constructor(size: number, options: MemoryNodeOptions = {}) {
    super({ growable: options.growable });
    this.#size = size;
    this.capabilities = { ...CAPABILITIES, writable: !options.readOnly };
  }

  /** Size in bytes; a growable node grows when written past its end. */
  get size(): number {
    return this.#size;
  }

  /** Copy the bytes at `offset` into `into`; holes read as zeroes. */
  protected driverRead(offset: number, into: Uint8Array): Promise<void> {
    this.#forEachPiece(offset, into.length, (chunk, within, length, done) => {
      const target = into.subarray(done, done + length);
      if (chunk) target.set(chunk.subarray(within, within + length));
      else target.fill(0);
    });
    return Promise.resolve();
  }

  /** Memory is always at hand: reads are done at once. */
  protected override driverReadNow(offset: number, into: Uint8Array): boolean {
    void this.driverRead(offset, into);
    return true;
  }

  /** Memory is always at hand: writes within the node are done at once. */
  protected override driverWriteNow(offset: number, data: Uint8Array): boolean {
    void this.driverWrite(offset, data);
    return true;
  }

  /** Store `data` at `offset`, allocating chunks as needed (and growing, when growable). */
  protected driverWrite(offset: number, data: Uint8Array): Promise<void> {
    this.#grow(offset + data.length);
    this.#forEachPiece(offset, data.length, (chunk, within, length, done, index) => {
      const target = chunk ?? this.#allocate(index);
      target.set(data.subarray(done, done + length), within);
    });
    return Promise.resolve();
  }

  /**
   * Zero a range (growing a growable node past its end); with `mayTrim`
   * whole chunks become holes, the rest is cleared in place.
   */
  protected driverWriteZeroes(offset: number, length: number, options: ZeroOptions) {
    this.#grow(offset + length);
    this.#forEachPiece(offset, length, (chunk, within, pieceLength, _done, index) => {
      if (!chunk) return;
      const whole = within === 0 && pieceLength === chunkLength(this.size, index);
      if (whole && options.mayTrim) this.#chunks.delete(index);
      else chunk.fill(0, within, within + pieceLength);
    });
    return Promise.resolve();
  }

  /** Discard a range: whole chunks in it become holes. */
  protected driverTrim(offset: number, length: number): Promise<void> {
    this.#forEachPiece(offset, length, (_chunk, within, pieceLength, _done, index) => {
      if (within === 0 && pieceLength === chunkLength(this.size, index)) {
        this.#chunks.delete(index);
      }
    });
    return Promise.resolve();
  }

  /** Nothing to make durable. */
  flush(): Promise<void> {
    return Promise.resolve();
  }

  /** Nothing to prefetch. */
  protected driverCache(): Promise<void> {
    return Promise.resolve();
  }

  /** Data where every chunk of the range is allocated. */
  protected override driverHoldsDataNow(offset: number, length: number): boolean {
    let allData = true;
    this.#forEachPiece(offset, length, (chunk) => {
      if (!chunk) allData = false;
    });
    return allData;
  }

  /** Allocated chunks are data, the rest are zero holes; runs are merged. */
  protected driverBlockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    const extents: { length: number; data: boolean; zero: boolean; allocated: true }[] = [];
    this.#forEachPiece(offset, length, (chunk, _within, pieceLength) => {
      const data = chunk !== undefined;
      const last = extents.at(-1);
      if (last && last.data === data) last.length += pieceLength;
      else extents.push({ length: pieceLength, data, zero: !data, allocated: true });
    });
    return Promise.resolve(extents);
  }

  /** Drop all stored data. */
  close(): Promise<void> {
    this.#chunks.clear();
    return Promise.resolve();
  }

  /** Grow to `end` bytes (only a growable node is ever asked to). */
  #grow(end: number): void {
    this.#size = Math.max(this.#size, end);
  }

  #allocate(index: number): Uint8Array {
    // Whole chunks, so that a node that grows never outgrows its last chunk.
    const chunk = new Uint8Array(MEMORY_CHUNK);
    this.#chunks.set(index, chunk);
    return chunk;
  }

  /** Visit the chunk pieces covering [offset, offset + length). */
  #forEachPiece(
    offset: number,
    length: number,
    visit: (
      chunk: Uint8Array | undefined,
      within: number,
      length: number,
      done: number,
      index: number,
    ) => void,
  ): void {
    let done = 0;
    while (done < length) {
      const position = offset + done;
      const index = Math.floor(position / MEMORY_CHUNK);
      const within = position - index * MEMORY_CHUNK;
      const pieceLength = Math.min(length - done, MEMORY_CHUNK - within);
      visit(this.#chunks.get(index), within, pieceLength, done, index);
      done += pieceLength;
    }
  }
}

/** Length of chunk `index` of a node of `size` bytes (the last may be short). */
function chunkLength(size: number, index: number): number {
  return Math.min(MEMORY_CHUNK, size - index * MEMORY_CHUNK);
}
