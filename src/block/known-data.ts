/**
 * Ranges of a file known to hold data, remembered from earlier SEEK_HOLE
 * answers, so that a read need not ask the kernel again whether it covers a
 * hole. Remembering only data is safe against staleness in one direction:
 * a range that became a hole since (punched by another process) is then
 * reported as data, which the NBD protocol allows (a hole is a hint), and it
 * reads the same zeroes. The node forgets ranges it zeroes or discards
 * itself. Memory is bounded: past {@linkcode KNOWN_DATA_LIMIT} ranges, all
 * are forgotten and learning starts again.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { KnownData } from "./known-data.ts";
 * const known = new KnownData();
 * known.add(0, 1 << 20);
 * assert.equal(known.endOfDataAt(4096), 1 << 20); // data from 4096 up to 1 MiB
 * known.forget(8192, 4096);
 * assert.equal(known.endOfDataAt(4096), 8192);
 * assert.equal(known.endOfDataAt(8192), -1); // not known
 * ```
 * @module
 */

/** Most ranges remembered at once. */
export const KNOWN_DATA_LIMIT = 4096;

/** Disjoint, sorted ranges known to hold data. */
export class KnownData {
  /** Range starts, ascending. */
  #starts: number[] = [];
  /** Range ends (exclusive), by the same index; ranges never touch or overlap. */
  #ends: number[] = [];

  /** Ranges remembered now. */
  get size(): number {
    return this.#starts.length;
  }

  /** Where the known data containing `offset` ends; -1 when `offset` is not known to be data. */
  endOfDataAt(offset: number): number {
    const index = this.#lastStartingAtOrBefore(offset);
    return index >= 0 && this.#ends[index] > offset ? this.#ends[index] : -1;
  }

  /** Remember `[start, end)` as data, merged with the ranges it touches. */
  add(start: number, end: number): void {
    if (end <= start) return;
    let first = this.#lastStartingAtOrBefore(start);
    if (first < 0 || this.#ends[first] < start) first++;
    let last = first;
    while (last < this.#starts.length && this.#starts[last] <= end) last++;
    // Ranges first..last-1 touch [start, end): replace them with their union.
    const mergedStart = last > first ? Math.min(start, this.#starts[first]) : start;
    const mergedEnd = last > first ? Math.max(end, this.#ends[last - 1]) : end;
    if (last === first && this.#starts.length >= KNOWN_DATA_LIMIT) {
      this.#starts = [];
      this.#ends = [];
      first = last = 0;
    }
    this.#starts.splice(first, last - first, mergedStart);
    this.#ends.splice(first, last - first, mergedEnd);
  }

  /** Forget what is known of `length` bytes from `offset` (they may be holes now). */
  forget(offset: number, length: number): void {
    const end = offset + length;
    if (length <= 0) return;
    let first = this.#lastStartingAtOrBefore(offset);
    if (first < 0 || this.#ends[first] <= offset) first++;
    let last = first;
    while (last < this.#starts.length && this.#starts[last] < end) last++;
    if (last === first) return;
    // Ranges first..last-1 overlap [offset, end): keep only what lies outside it.
    const starts: number[] = [];
    const ends: number[] = [];
    if (this.#starts[first] < offset) {
      starts.push(this.#starts[first]);
      ends.push(offset);
    }
    if (this.#ends[last - 1] > end) {
      starts.push(end);
      ends.push(this.#ends[last - 1]);
    }
    this.#starts.splice(first, last - first, ...starts);
    this.#ends.splice(first, last - first, ...ends);
  }

  /** Index of the last range starting at or before `offset`; -1 when none does. */
  #lastStartingAtOrBefore(offset: number): number {
    let low = 0;
    let high = this.#starts.length - 1;
    let found = -1;
    while (low <= high) {
      const middle = (low + high) >> 1;
      if (this.#starts[middle] <= offset) {
        found = middle;
        low = middle + 1;
      } else {
        high = middle - 1;
      }
    }
    return found;
  }
}
