/**
 * Byte buffers reused across requests instead of allocated for each: a
 * large fresh buffer costs the allocator, the page faults of its first
 * touch and the garbage collector more than the copy it is for. Buffers
 * are kept by exact length (a server's requests come in few sizes), and the
 * pool holds at most its limit in free buffers, so memory at rest stays
 * bounded whatever sizes were asked for under load.
 *
 * A buffer given back must no longer be used by its taker: it is handed
 * out again as it is, not zeroed.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { BufferPool } from "./buffer-pool.ts";
 * const pool = new BufferPool(1 << 20);
 * const first = pool.take(4096);
 * pool.give(first);
 * assert.equal(pool.take(4096), first); // the same buffer again
 * assert.notEqual(pool.take(4096), first); // none free: a new one
 * ```
 * @module
 */

/** Free buffers by length, within a byte limit. */
export class BufferPool {
  readonly #limit: number;
  readonly #free = new Map<number, Uint8Array[]>();
  #freeBytes = 0;

  /** A pool holding at most `limit` bytes of free buffers. */
  constructor(limit: number) {
    this.#limit = limit;
  }

  /** Bytes held in free buffers now. */
  get freeBytes(): number {
    return this.#freeBytes;
  }

  /** A buffer of exactly `length` bytes: a free one (old contents) or a new one (zeroes). */
  take(length: number): Uint8Array {
    const free = this.#free.get(length);
    const buffer = free?.pop();
    if (!buffer) return new Uint8Array(length);
    if (free!.length === 0) this.#free.delete(length);
    this.#freeBytes -= length;
    return buffer;
  }

  /** Hand `buffer` back for reuse; dropped when the pool is full. */
  give(buffer: Uint8Array): void {
    const length = buffer.length;
    if (length === 0 || this.#freeBytes + length > this.#limit) return;
    let free = this.#free.get(length);
    if (!free) this.#free.set(length, free = []);
    free.push(buffer);
    this.#freeBytes += length;
  }
}
