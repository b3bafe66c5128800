/**
 * Export sizes as libnbd's tools abbreviate them: the largest binary unit
 * (K, M, G, T, P, E) that divides the size exactly, so nothing is rounded.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { humanSize } from "./human-size.ts";
 * assert.deepEqual(humanSize(64 * 1024 * 1024), { text: "64M", scaled: true });
 * assert.deepEqual(humanSize(1536), { text: "1536", scaled: false });
 * ```
 * @module
 */

/** Unit suffixes, each 1024 times the one before. */
const UNITS = ["", "K", "M", "G", "T", "P", "E"] as const;

/** A size written with the largest unit that divides it exactly. */
export interface HumanSize {
  /** The number and its unit, e.g. "64M"; the plain number when no unit divides it. */
  readonly text: string;
  /** Whether a unit was used (false for 0 and for sizes that are not multiples of 1 KiB). */
  readonly scaled: boolean;
}

/** Write `bytes` with the largest unit that divides it exactly. */
export function humanSize(bytes: number): HumanSize {
  let value = bytes;
  let unit = 0;
  while (value !== 0 && value % 1024 === 0 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return { text: `${value}${UNITS[unit]}`, scaled: unit > 0 };
}
