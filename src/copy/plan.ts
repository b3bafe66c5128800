/**
 * What to do with each range of the source, decided from its extents before
 * any byte moves: runs that read as zeroes become one zero step each, data
 * becomes read-then-write steps of at most the request size (cut on the
 * request-size grid, so requests stay aligned), and data that was read is
 * cut again into data and zero runs of whole sparse blocks. Pure functions
 * and one generator over an extents query; no I/O of their own.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { planSteps } from "./plan.ts";
 * const extents = [
 *   { offset: 0, length: 8192, zero: false },
 *   { offset: 8192, length: 4096, zero: true },
 * ];
 * assert.deepEqual(planSteps(extents, 4096), [
 *   { kind: "data", offset: 0, length: 4096 },
 *   { kind: "data", offset: 4096, length: 4096 },
 *   { kind: "zero", offset: 8192, length: 4096 },
 * ]);
 * ```
 * @module
 */

import { DenbdError } from "../errors.ts";

/** A run of source bytes that either reads as zeroes or holds data. */
export interface Extent {
  /** Where the run starts. */
  readonly offset: number;
  /** Bytes in the run; always > 0. */
  readonly length: number;
  /** The bytes are known to read as zeroes. */
  readonly zero: boolean;
}

/** One unit of work: copy a range of data, or make a range read as zeroes. */
export interface Step {
  /** "data": read the range and write it; "zero": zero the range on the destination. */
  readonly kind: "data" | "zero";
  /** Where the range starts. */
  readonly offset: number;
  /** Bytes in the range; always > 0. */
  readonly length: number;
}

/** Asks the source for the extents from `offset` (at most `length` bytes, at least one). */
export type ExtentsQuery = (offset: number, length: number) => Promise<Extent[]>;

/** Bytes of the source whose extents are asked for at once. */
export const EXTENTS_WINDOW = 128 * 1024 * 1024;

/**
 * The steps for `extents` (in order, without gaps): adjacent zero extents
 * merge into one zero step; data is cut wherever the offset crosses a
 * multiple of `requestSize`, and so are zero ranges with `cutZeroes`
 * (nbdcopy's synchronous copy, which looks at one request's range at a time).
 */
export function planSteps(
  extents: readonly Extent[],
  requestSize: number,
  cutZeroes = false,
): Step[] {
  const steps: Step[] = [];
  for (const extent of extents) {
    const end = extent.offset + extent.length;
    if (extent.zero && !cutZeroes) {
      const last = steps.at(-1);
      if (last?.kind === "zero" && last.offset + last.length === extent.offset) {
        steps[steps.length - 1] = { kind: "zero", offset: last.offset, length: end - last.offset };
      } else {
        steps.push({ kind: "zero", offset: extent.offset, length: extent.length });
      }
      continue;
    }
    const kind = extent.zero ? "zero" : "data";
    for (let offset = extent.offset; offset < end;) {
      const next = Math.min(end, (Math.floor(offset / requestSize) + 1) * requestSize);
      steps.push({ kind, offset, length: next - offset });
      offset = next;
    }
  }
  return steps;
}

/**
 * Clip `extents` reported from `offset` to the range [offset, end): drop
 * empty ones, shorten the last. Throws when they do not start at `offset`
 * or leave a gap (a broken source).
 */
export function clipExtents(extents: readonly Extent[], offset: number, end: number): Extent[] {
  const clipped: Extent[] = [];
  let position = offset;
  for (const extent of extents) {
    if (position >= end) break;
    if (extent.offset !== position) {
      throw new DenbdError("io", `extents leave a gap at offset ${position}`);
    }
    const length = Math.min(extent.length, end - position);
    if (length > 0) clipped.push({ offset: position, length, zero: extent.zero });
    position += length;
  }
  return clipped;
}

/**
 * Every step for a source of `size` bytes, asking `query` for extents one
 * window at a time (zero ranges cut as data with `cutZeroes`, see
 * {@linkcode planSteps}). Throws when the source reports no progress.
 */
export async function* planCopy(
  size: number,
  query: ExtentsQuery,
  requestSize: number,
  window = EXTENTS_WINDOW,
  cutZeroes = false,
): AsyncGenerator<Step> {
  for (let offset = 0; offset < size;) {
    const end = Math.min(size, offset + window);
    const extents = clipExtents(await query(offset, end - offset), offset, end);
    if (extents.length === 0) {
      throw new DenbdError("io", `the source reported no extents at offset ${offset}`);
    }
    yield* planSteps(extents, requestSize, cutZeroes);
    const last = extents[extents.length - 1];
    offset = last.offset + last.length;
  }
}

/**
 * Steps for a source of unknown size (a stream): data steps of
 * `requestSize` bytes, one after another, for as long as the caller asks.
 */
export function* streamSteps(requestSize: number): Generator<Step> {
  for (let offset = 0;; offset += requestSize) yield { kind: "data", offset, length: requestSize };
}

/**
 * Whether every byte of `bytes` is zero. Reads four bytes at a time where
 * the view allows; data usually fails on the first word.
 */
export function isAllZero(bytes: Uint8Array): boolean {
  const head = (4 - (bytes.byteOffset % 4)) % 4;
  const words = Math.max(0, Math.floor((bytes.length - head) / 4));
  for (let i = 0; i < Math.min(head, bytes.length); i++) if (bytes[i] !== 0) return false;
  const wide = new Uint32Array(bytes.buffer, bytes.byteOffset + head, words);
  for (let i = 0; i < wide.length; i++) if (wide[i] !== 0) return false;
  for (let i = head + words * 4; i < bytes.length; i++) if (bytes[i] !== 0) return false;
  return true;
}

/**
 * Cut `data` (the source bytes at `offset`) into data and zero runs: a zero
 * run is made of whole `blockSize` blocks (aligned to absolute offsets) that
 * hold only zeroes; everything else, including partial blocks at either end,
 * is data. Adjacent runs of one kind are merged.
 */
export function sparseRuns(data: Uint8Array, offset: number, blockSize: number): Step[] {
  const end = offset + data.length;
  const runs: Step[] = [];
  const add = (kind: Step["kind"], start: number, stop: number) => {
    if (stop <= start) return;
    const last = runs.at(-1);
    if (last?.kind === kind) {
      runs[runs.length - 1] = { kind, offset: last.offset, length: stop - last.offset };
    } else {
      runs.push({ kind, offset: start, length: stop - start });
    }
  };
  const firstBlock = Math.min(end, Math.ceil(offset / blockSize) * blockSize);
  add("data", offset, firstBlock);
  let block = firstBlock;
  for (; block + blockSize <= end; block += blockSize) {
    const bytes = data.subarray(block - offset, block - offset + blockSize);
    add(isAllZero(bytes) ? "zero" : "data", block, block + blockSize);
  }
  add("data", block, end);
  return runs;
}
