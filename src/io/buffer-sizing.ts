/**
 * How big a reusable I/O buffer should be, judged from how full its recent
 * uses were: it starts small (an idle connection costs little), doubles each
 * time a use fills it (a busy stream soon moves many messages per system
 * call) and halves again after a run of uses that each filled at most an
 * eighth of it (a stream that went quiet gives the memory back).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { BufferSizing } from "./buffer-sizing.ts";
 * const sizing = new BufferSizing({ initial: 4096, maximum: 16384 });
 * assert.equal(sizing.size, 4096);
 * sizing.record(4096, 4096); // a read filled the whole buffer: more was probably waiting
 * assert.equal(sizing.size, 8192);
 * sizing.fit(30000); // one message needs more: grow to hold it, up to the maximum
 * assert.equal(sizing.size, 16384);
 * for (let use = 0; use < BufferSizing.SHRINK_AFTER_SPARSE_USES; use++) sizing.record(100, 16384);
 * assert.equal(sizing.size, 8192);
 * ```
 * @module
 */

/** The smallest and largest size of a buffer. */
export interface BufferSizeRange {
  /** Size to start at, and never to shrink below. */
  readonly initial: number;
  /** Size never to grow beyond. */
  readonly maximum: number;
}

/** The size a buffer should have next, from the uses recorded so far. */
export class BufferSizing {
  /** Consecutive sparse uses (each at most an eighth full) after which the size halves. */
  static readonly SHRINK_AFTER_SPARSE_USES = 64;
  /** The smallest and largest size. */
  readonly range: BufferSizeRange;
  #size: number;
  #sparseUses = 0;

  /** Sizes between `range.initial` and `range.maximum` (both at least 1). */
  constructor(range: BufferSizeRange) {
    if (!(range.initial >= 1 && range.maximum >= range.initial)) {
      throw new RangeError(`bad buffer size range ${range.initial}..${range.maximum}`);
    }
    this.range = range;
    this.#size = range.initial;
  }

  /** The size the buffer should have now. */
  get size(): number {
    return this.#size;
  }

  /** Record a use that filled `used` bytes of the `offered` bytes it had room for. */
  record(used: number, offered: number): void {
    if (used >= offered) {
      this.#sparseUses = 0;
      this.#size = Math.min(this.#size * 2, this.range.maximum);
    } else if (used * 8 <= this.#size) {
      if (++this.#sparseUses < BufferSizing.SHRINK_AFTER_SPARSE_USES) return;
      this.#sparseUses = 0;
      this.#size = Math.max(Math.floor(this.#size / 2), this.range.initial);
    } else {
      this.#sparseUses = 0;
    }
  }

  /** Grow (doubling) until `length` bytes fit, up to the maximum. */
  fit(length: number): void {
    while (this.#size < length && this.#size < this.range.maximum) {
      this.#size = Math.min(this.#size * 2, this.range.maximum);
    }
  }
}
