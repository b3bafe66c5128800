/**
 * Mutual exclusion over byte ranges, for layers that must not let
 * overlapping requests interleave (read-modify-write of shared blocks).
 *
 * @example
 * ```ts
 * import { RangeLock } from "./range-lock.ts";
 * const lock = new RangeLock();
 * const release = await lock.acquire(0, 4096);
 * try {
 *   // read, modify and write the block
 * } finally {
 *   release();
 * }
 * ```
 * @module
 */

/**
 * Mutual exclusion over byte ranges: a holder waits until no earlier holder
 * overlaps its range.
 */
export class RangeLock {
  readonly #held = new Set<{ start: number; end: number; released: Promise<void> }>();

  /** Wait for [start, end) to be free, take it, and return the function that frees it. */
  async acquire(start: number, end: number): Promise<() => void> {
    for (let other = this.#overlap(start, end); other; other = this.#overlap(start, end)) {
      await other.released;
    }
    const { promise, resolve } = Promise.withResolvers<void>();
    const range = { start, end, released: promise };
    this.#held.add(range);
    return () => {
      this.#held.delete(range);
      resolve();
    };
  }

  #overlap(start: number, end: number) {
    for (const range of this.#held) {
      if (range.start < end && start < range.end) return range;
    }
    return undefined;
  }
}
