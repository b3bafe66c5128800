/**
 * C scanf's `%lu` (SCNu64 on 64-bit Linux), as nbddump 1.14 reads `-n`:
 * leading white space, an optional sign, then as many decimal digits as
 * there are; whatever follows is ignored (so `1k` is 1: there are no size
 * suffixes). A minus sign wraps modulo 2^64 and a value past 2^64 - 1 is
 * 2^64 - 1, as glibc's strtoul does. Text without digits is not a number.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { scanUnsigned } from "./scanf-number.ts";
 * assert.equal(scanUnsigned(" +10k"), 10n);
 * assert.equal(scanUnsigned("-1"), 2n ** 64n - 1n);
 * assert.equal(scanUnsigned("lots"), null);
 * ```
 * @module
 */

const UINT64_MAX = (1n << 64n) - 1n;
/** C's isspace() in the C locale, a sign, and the digits. */
const LEADING_NUMBER = /^[ \t\n\v\f\r]*([+-]?)([0-9]+)/;

/** The number `%lu` reads at the start of `text`, or null if it reads none. */
export function scanUnsigned(text: string): bigint | null {
  const match = LEADING_NUMBER.exec(text);
  if (!match) return null;
  const magnitude = BigInt(match[2]);
  if (magnitude > UINT64_MAX) return UINT64_MAX;
  return match[1] === "-" ? (UINT64_MAX + 1n - magnitude) & UINT64_MAX : magnitude;
}
