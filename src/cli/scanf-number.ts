/**
 * Numbers read from option values as C's `sscanf` reads them with "%u" and
 * "%d", the way nbdcopy reads its numeric options: leading white space and
 * a sign are allowed, then decimal digits; whatever follows the digits is
 * ignored ("64M" reads as 64). "%u" wraps a negative number around and
 * keeps the low 32 bits of a large one, as glibc does.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { scanInt, scanUnsigned } from "./scanf-number.ts";
 * assert.equal(scanUnsigned(" 4096x"), 4096);
 * assert.equal(scanUnsigned("-1"), 4294967295);
 * assert.equal(scanUnsigned("1k"), 1);
 * assert.equal(scanUnsigned("k"), undefined);
 * assert.equal(scanInt("-3"), -3);
 * ```
 * @module
 */

/** Leading C white space, an optional sign, then at least one digit. */
const SCANF_INTEGER = /^[ \t\n\v\f\r]*([+-]?)([0-9]+)/;
const UINT64_MAX = (1n << 64n) - 1n;
const INT64_MIN = -(1n << 63n);
const INT64_MAX = (1n << 63n) - 1n;

/** The sign and digits at the start of `text`, or undefined when there are none. */
function leadingInteger(text: string): { negative: boolean; magnitude: bigint } | undefined {
  const match = SCANF_INTEGER.exec(text);
  return match ? { negative: match[1] === "-", magnitude: BigInt(match[2]) } : undefined;
}

/** `sscanf(text, "%u")`: the unsigned int read, or undefined when nothing could be read. */
export function scanUnsigned(text: string): number | undefined {
  const integer = leadingInteger(text);
  if (!integer) return undefined;
  // strtoul: the largest value on overflow, otherwise a negated value wraps around.
  const value = integer.magnitude > UINT64_MAX
    ? UINT64_MAX
    : integer.negative
    ? BigInt.asUintN(64, -integer.magnitude)
    : integer.magnitude;
  return Number(BigInt.asUintN(32, value));
}

/** `sscanf(text, "%d")`: the int read, or undefined when nothing could be read. */
export function scanInt(text: string): number | undefined {
  const integer = leadingInteger(text);
  if (!integer) return undefined;
  const signed = integer.negative ? -integer.magnitude : integer.magnitude;
  // strtol clamps to the range of long, then the value is cut to an int.
  const clamped = signed < INT64_MIN ? INT64_MIN : signed > INT64_MAX ? INT64_MAX : signed;
  return Number(BigInt.asIntN(32, clamped));
}
