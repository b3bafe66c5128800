/**
 * Durability behind the copy: after every {@linkcode WRITE_BEHIND_BYTES}
 * written, a flush of the destination starts in the background (one at a
 * time), so that the disk under it works while the copy goes on and the
 * final flush has little left to do. nbdcopy gets the same effect for files
 * from sync_file_range; here it works for any destination that can flush.
 *
 * @example
 * ```ts
 * import { WriteBehind } from "./write-behind.ts";
 * import { MemoryNode } from "../block/memory.ts";
 * const node = new MemoryNode(1 << 20);
 * const chunk = new Uint8Array(65536).fill(1);
 * const behind = new WriteBehind(() => node.flush(), 4 * chunk.length);
 * for (let offset = 0; offset < node.size; offset += chunk.length) {
 *   await node.write(offset, chunk);
 *   behind.written(chunk.length); // every 4 chunks, a flush starts in the background
 * }
 * // ... at the end:
 * await behind.settle();
 * await node.flush();
 * ```
 * @module
 */

/** Bytes written between two background flushes. */
export const WRITE_BEHIND_BYTES = 64 * 1024 * 1024;

/** Starts background flushes as writes accumulate. */
export class WriteBehind {
  readonly #flush: () => Promise<void>;
  readonly #interval: number;
  #unflushed = 0;
  #flushing?: Promise<void>;
  #failure?: { error: unknown };

  /** Call `flush` in the background every `interval` bytes written. */
  constructor(flush: () => Promise<void>, interval = WRITE_BEHIND_BYTES) {
    this.#flush = flush;
    this.#interval = interval;
  }

  /** Count `bytes` written; start a flush when enough have been and none is under way. */
  written(bytes: number): void {
    this.#unflushed += bytes;
    if (this.#unflushed < this.#interval || this.#flushing || this.#failure) return;
    this.#unflushed = 0;
    this.#flushing = this.#flush()
      .catch((error) => void (this.#failure = { error }))
      .finally(() => this.#flushing = undefined);
  }

  /** Wait for the flush under way; throw the failure of any background flush. */
  async settle(): Promise<void> {
    await this.#flushing;
    if (this.#failure) throw this.#failure.error;
  }
}
