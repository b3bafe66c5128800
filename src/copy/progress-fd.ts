/**
 * nbdcopy's machine-readable progress (`--progress=FD`): lines "N/100"
 * (N the whole percent done, rounded down) written to a descriptor, at the
 * moments nbdcopy 1.14 writes them:
 *
 * - "0/100" when the copy starts, and "100/100" when it has completed (not
 *   after a failure);
 * - a copy of many requests at once: one line per {@linkcode WORK_UNIT} of
 *   the source, the start of that unit over the size, as the copy reaches it
 *   (so a copy of 16 MiB writes "0/100", "0/100", "100/100");
 * - a copy in order (`--synchronous`, or a stream at either end): a line
 *   after each piece of data copied, giving the bytes done so far over the
 *   size ("0/100" throughout when the size is unknown; nbdcopy reads a pipe
 *   as it comes, up to 64 KiB at a time, denbd a request at a time, so the
 *   count of these lines differs);
 * - nothing in between for an empty source.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ProgressLines } from "./progress-fd.ts";
 * let text = "";
 * const progress = new ProgressLines({
 *   writeSync: (data) => (text += new TextDecoder().decode(data), data.length),
 * });
 * progress.start(1000, true);
 * progress.advance(300, true);
 * progress.advance(200, false); // zeroes: no line
 * progress.advance(500, true);
 * progress.finish(true);
 * assert.equal(text, "0/100\n30/100\n100/100\n100/100\n");
 * ```
 * @module
 */

import type { ProgressReporter, TextSink } from "./progress.ts";

/** The part of the source nbdcopy's workers take at a time (THREAD_WORK_SIZE). */
export const WORK_UNIT = 128 * 1024 * 1024;

/** "N/100" lines on a descriptor, as nbdcopy's --progress=FD. */
export class ProgressLines implements ProgressReporter {
  readonly #sink: TextSink;
  readonly #encoder = new TextEncoder();
  #total: number | undefined;
  #inOrder = false;
  #done = 0;
  /** The next work unit whose start gets a line (copies of many requests at once). */
  #nextUnit = 0;

  /** Write the lines to `sink` (a descriptor opened by the caller); failed writes are ignored. */
  constructor(sink: TextSink) {
    this.#sink = sink;
  }

  /** Write "0/100", and the first unit's line for a copy of many requests at once. */
  start(total: number | undefined, inOrder: boolean): void {
    this.#total = total;
    this.#inOrder = inOrder;
    this.#line(0, 1);
    if (!inOrder) this.#reachUnits();
  }

  /** Count `bytes`; write the lines this brings (see the module documentation). */
  advance(bytes: number, data: boolean): void {
    this.#done += bytes;
    if (!this.#inOrder) this.#reachUnits();
    else if (data && bytes > 0) this.#line(this.#done, this.#total ?? -1);
  }

  /** Write "100/100" when the copy completed. */
  finish(completed: boolean): void {
    if (completed) this.#line(1, 1);
  }

  /** A line for each work unit whose start the copy has reached. */
  #reachUnits(): void {
    const total = this.#total ?? 0;
    while (this.#nextUnit * WORK_UNIT < total && this.#nextUnit * WORK_UNIT <= this.#done) {
      this.#line(this.#nextUnit * WORK_UNIT, total);
      this.#nextUnit++;
    }
  }

  /** The line for `position` of `size` bytes (none when `size` is 0, as nbdcopy). */
  #line(position: number, size: number): void {
    if (size === 0) return;
    const fraction = Math.min(1, Math.max(0, position / size));
    const text = fraction === 1 ? "100/100\n" : `${Math.trunc(100 * fraction)}/100\n`;
    const bytes = this.#encoder.encode(text);
    try {
      for (let done = 0; done < bytes.length;) done += this.#sink.writeSync(bytes.subarray(done));
    } catch {
      // nbdcopy ignores a descriptor it cannot write to.
    }
  }
}
