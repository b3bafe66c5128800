/**
 * Numbers read from option values as C's `sscanf` reads them, the way
 * libnbd's tools read their numeric options: nbddump's `-n` with "%lu",
 * nbdcopy's with "%u" and "%d". Leading white space and a sign are allowed,
 * then decimal digits; whatever follows the digits is ignored (`1k` reads as
 * 1, `64M` as 64: there are no size suffixes). Text without digits is not a
 * number. As glibc does, "%lu" wraps a negative number around modulo 2^64 and
 * reads a value past 2^64 - 1 as 2^64 - 1; "%u" keeps the low 32 bits of
 * that; "%d" clamps to the range of a long, then keeps the low 32 bits.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { scanInt, scanUnsigned, scanUnsignedLong } from "./scanf-number.ts";
 * assert.equal(scanUnsignedLong(" +10k"), 10n);
 * assert.equal(scanUnsignedLong("-1"), 2n ** 64n - 1n);
 * assert.equal(scanUnsignedLong("lots"), undefined);
 * assert.equal(scanUnsigned(" 4096x"), 4096);
 * assert.equal(scanUnsigned("-1"), 4294967295);
 * assert.equal(scanInt("-3"), -3);
 * ```
 * @module
 */

/** Leading C white space (isspace in the C locale), an optional sign, then at least one digit. */
const SCANF_INTEGER = /^[ \t\n\v\f\r]*([+-]?)([0-9]+)/;
const UINT64_MAX = (1n << 64n) - 1n;
const INT64_MIN = -(1n << 63n);
const INT64_MAX = (1n << 63n) - 1n;

/** The sign and digits at the start of `text`, or undefined when there are none. */
function leadingInteger(text: string): { negative: boolean; magnitude: bigint } | undefined {
  const match = SCANF_INTEGER.exec(text);
  return match ? { negative: match[1] === "-", magnitude: BigInt(match[2]) } : undefined;
}

/** `sscanf(text, "%lu")` (strtoul on 64-bit Linux): the value read, or undefined when none. */
export function scanUnsignedLong(text: string): bigint | undefined {
  const integer = leadingInteger(text);
  if (!integer) return undefined;
  if (integer.magnitude > UINT64_MAX) return UINT64_MAX;
  return integer.negative ? BigInt.asUintN(64, -integer.magnitude) : integer.magnitude;
}

/** `sscanf(text, "%u")`: the unsigned int read, or undefined when nothing could be read. */
export function scanUnsigned(text: string): number | undefined {
  const value = scanUnsignedLong(text);
  return value === undefined ? undefined : Number(BigInt.asUintN(32, value));
}

/** `sscanf(text, "%d")`: the int read, or undefined when nothing could be read. */
export function scanInt(text: string): number | undefined {
  const integer = leadingInteger(text);
  if (!integer) return undefined;
  const signed = integer.negative ? -integer.magnitude : integer.magnitude;
  const clamped = signed < INT64_MIN ? INT64_MIN : signed > INT64_MAX ? INT64_MAX : signed;
  return Number(BigInt.asIntN(32, clamped));
}
