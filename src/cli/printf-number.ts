/**
 * C printf's `%.Nf` and `%g` for non-negative doubles, rounded as glibc
 * rounds: on the exact binary value, ties to even. (JavaScript's toFixed
 * and toPrecision round ties away from zero, so 1.953125 would become
 * "1.95313" where C prints "1.95312".)
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { printfFixed, printfGeneral } from "./printf-number.ts";
 * assert.equal(printfFixed(0.25, 1), "0.2");
 * assert.equal(printfGeneral(100 * 4096 / 67108864), "0.00610352");
 * ```
 * @module
 */

/** Significant digits of `%g` without an explicit precision. */
const GENERAL_PRECISION = 6;

/** A non-negative value as `digits / 10^scale`, exactly. */
interface ExactDecimal {
  readonly digits: bigint;
  readonly scale: number;
}

/** The exact decimal value of a finite non-negative double. */
function exactDecimal(value: number): ExactDecimal {
  if (!Number.isFinite(value) || value < 0) {
    throw new RangeError(`expected a finite non-negative number, got ${value}`);
  }
  const bits = new DataView(new ArrayBuffer(8));
  bits.setFloat64(0, value);
  const high = bits.getUint32(0);
  const biased = (high >>> 20) & 0x7ff;
  let mantissa = (BigInt(high & 0xfffff) << 32n) | BigInt(bits.getUint32(4));
  let exponent = -1074;
  if (biased !== 0) {
    mantissa |= 1n << 52n;
    exponent = biased - 1075;
  }
  if (exponent >= 0) return { digits: mantissa << BigInt(exponent), scale: 0 };
  return { digits: mantissa * 5n ** BigInt(-exponent), scale: -exponent };
}

/** `value` rounded to `decimals` fractional digits (ties to even), as an integer of that scale. */
function roundTo(value: ExactDecimal, decimals: number): bigint {
  if (decimals >= value.scale) return value.digits * 10n ** BigInt(decimals - value.scale);
  const divisor = 10n ** BigInt(value.scale - decimals);
  let quotient = value.digits / divisor;
  const twiceRest = 2n * (value.digits % divisor);
  if (twiceRest > divisor || (twiceRest === divisor && quotient % 2n === 1n)) quotient++;
  return quotient;
}

/** An integer of scale `decimals` written with its decimal point. */
function withPoint(scaled: bigint, decimals: number): string {
  const text = scaled.toString().padStart(decimals + 1, "0");
  return decimals === 0 ? text : `${text.slice(0, -decimals)}.${text.slice(-decimals)}`;
}

/** `printf("%.<decimals>f", value)` for a finite non-negative `value`. */
export function printfFixed(value: number, decimals: number): string {
  return withPoint(roundTo(exactDecimal(value), decimals), decimals);
}

/** `printf("%g", value)` for a finite non-negative `value`. */
export function printfGeneral(value: number): string {
  if (value === 0) return "0";
  const exact = exactDecimal(value);
  // Decimal exponent of the leading digit, then of the value rounded to the precision.
  let exponent = exact.digits.toString().length - 1 - exact.scale;
  let rounded = roundTo(exact, GENERAL_PRECISION - 1 - exponent);
  if (rounded.toString().length > GENERAL_PRECISION) {
    exponent++;
    rounded = roundTo(exact, GENERAL_PRECISION - 1 - exponent);
  }
  if (exponent >= -4 && exponent < GENERAL_PRECISION) {
    return stripZeros(withPoint(rounded, GENERAL_PRECISION - 1 - exponent));
  }
  const mantissa = stripZeros(withPoint(rounded, GENERAL_PRECISION - 1));
  const sign = exponent < 0 ? "-" : "+";
  return `${mantissa}e${sign}${String(Math.abs(exponent)).padStart(2, "0")}`;
}

/** Drop trailing fractional zeros, and the point if nothing follows it. */
function stripZeros(text: string): string {
  return text.includes(".") ? text.replace(/\.?0+$/, "") : text;
}
