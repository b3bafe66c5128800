/**
 * Numbers written as text, read the way QEMU 7.2 reads option values: C's
 * strtoll/strtoull with base 0 (decimal, 0x hex, 0 octal, leading
 * whitespace and a sign allowed, nothing after), QEMU's size syntax
 * (`1k`, `1.5G`, `0x200`, binary units B K M G T P E) and strtod for floats.
 * The integer and size parsers say why they fail ("invalid" syntax, or out
 * of "range"), as QemuOpts words the two differently; strtod returns null.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseCInteger, parseSize } from "./c-number.ts";
 * assert.equal(parseCInteger("0x10", "unsigned"), 16n);
 * assert.equal(parseCInteger("-1", "unsigned"), 18446744073709551615n); // strtoull wraps
 * assert.equal(parseSize("1.5k"), 1536n);
 * ```
 * @module
 */

const INT64_MIN = -(1n << 63n);
const INT64_MAX = (1n << 63n) - 1n;
const UINT64_MAX = (1n << 64n) - 1n;
const TWO_64 = 1n << 64n;

/** C's isspace() in the C locale. */
const C_SPACE = "[ \\t\\n\\v\\f\\r]*";
const INTEGER = new RegExp(`^${C_SPACE}([+-]?)(?:0[xX]([0-9a-fA-F]+)|0([0-7]*)|([1-9][0-9]*))$`);

/** Why a number could not be read: bad syntax, or a value out of range. */
export type NumberFailure = "invalid" | "range";

/**
 * strtoll ("signed") or strtoull ("unsigned") with base 0, requiring the
 * whole text to be consumed. strtoull accepts a minus sign and wraps, as C does.
 */
export function parseCInteger(
  text: string,
  signedness: "signed" | "unsigned",
): bigint | NumberFailure {
  const match = INTEGER.exec(text);
  if (!match) return "invalid";
  const [, sign, hex, octal, decimal] = match;
  const magnitude = hex !== undefined
    ? BigInt(`0x${hex}`)
    : octal !== undefined
    ? BigInt(`0o0${octal}`)
    : BigInt(decimal);
  if (signedness === "signed") {
    const value = sign === "-" ? -magnitude : magnitude;
    return value < INT64_MIN || value > INT64_MAX ? "range" : value;
  }
  if (magnitude > UINT64_MAX) return "range";
  return sign === "-" ? (TWO_64 - magnitude) % TWO_64 : magnitude;
}

/** Multipliers of the size suffixes (case-insensitive). */
const SIZE_SUFFIXES: Readonly<Record<string, bigint>> = {
  b: 1n,
  k: 1n << 10n,
  m: 1n << 20n,
  g: 1n << 30n,
  t: 1n << 40n,
  p: 1n << 50n,
  e: 1n << 60n,
};

const SIZE_DECIMAL = new RegExp(`^${C_SPACE}\\+?([0-9]+)`);
const SIZE_HEX = new RegExp(`^${C_SPACE}\\+?0[xX]([0-9a-fA-F]+)`);
const SIZE_FRACTION = /^\.[0-9]+(?:[eE][+-]?[0-9]+)?/;

/**
 * A size as QEMU 7.2's qemu_strtosz() reads it: a decimal integer with an
 * optional fraction (which then needs a suffix), or a hex integer (no
 * fraction), then an optional binary-unit suffix; the result rounded to
 * bytes, at most 2^64-1. Hex with a suffix is accepted (QEMU 7.2 only warns).
 */
export function parseSize(text: string): bigint | NumberFailure {
  const decimal = SIZE_DECIMAL.exec(text);
  if (!decimal) return "invalid";
  let value = BigInt(decimal[1]);
  let rest = text.slice(decimal[0].length);
  let fraction = 0n;
  if (value === 0n && (rest[0] === "x" || rest[0] === "X")) {
    const hex = SIZE_HEX.exec(text);
    if (!hex) return "invalid";
    value = BigInt(`0x${hex[1]}`);
    rest = text.slice(hex[0].length);
    if (rest[0] === ".") return "invalid";
  } else if (rest[0] === ".") {
    const digits = SIZE_FRACTION.exec(rest);
    if (digits && /[eE]/.test(digits[0])) return "invalid";
    fraction = digits ? BigInt(Math.trunc(Number(digits[0]) * 2 ** 64)) : 0n;
    rest = rest.slice(digits ? digits[0].length : 1);
  }
  // An integer past 2^64 stops QEMU's parse there: out of range if nothing follows it.
  if (value > UINT64_MAX) return rest === "" && fraction === 0n ? "range" : "invalid";
  const suffix = rest[0] === undefined ? undefined : SIZE_SUFFIXES[rest[0].toLowerCase()];
  if (suffix !== undefined) rest = rest.slice(1);
  if (rest !== "") return "invalid";
  const multiplier = suffix ?? 1n;
  if (multiplier === 1n) return fraction === 0n ? value : "invalid";
  const total = value * multiplier + ((fraction * multiplier + (1n << 63n)) >> 64n);
  return total > UINT64_MAX ? "range" : total;
}

/** A hex size with a unit suffix (`0x10k`): QEMU 7.2 accepts it with a deprecation warning. */
export function isHexSizeWithSuffix(text: string): boolean {
  return new RegExp(`^${C_SPACE}\\+?0[xX][0-9a-fA-F]+[bBkKmMgGtTpPeE]$`).test(text);
}

const DECIMAL_FLOAT = new RegExp(
  `^${C_SPACE}([+-]?(?:[0-9]+\\.?[0-9]*|\\.[0-9]+)(?:[eE][+-]?[0-9]+)?)$`,
);
const HEX_FLOAT = new RegExp(
  `^${C_SPACE}([+-]?)0[xX]([0-9a-fA-F]*)(?:\\.([0-9a-fA-F]*))?(?:[pP]([+-]?[0-9]+))?$`,
);

/**
 * strtod requiring the whole text and a finite, normal result (QEMU's
 * qemu_strtod_finite): decimal or hex floats; no inf, nan, overflow or underflow.
 */
export function parseCDouble(text: string): number | null {
  let value: number;
  let mantissaIsZero: boolean;
  const decimal = DECIMAL_FLOAT.exec(text);
  const hex = decimal ? null : HEX_FLOAT.exec(text);
  if (decimal) {
    value = Number(decimal[1]);
    mantissaIsZero = !/[1-9]/.test(decimal[1].split(/[eE]/)[0]);
  } else if (hex && (hex[2] || hex[3])) {
    const [, sign, whole, fractionDigits = "", exponent = "0"] = hex;
    const mantissa = BigInt(`0x0${whole}${fractionDigits}`);
    value = Number(mantissa) * 2 ** (Number(exponent) - 4 * fractionDigits.length);
    if (sign === "-") value = -value;
    mantissaIsZero = mantissa === 0n;
  } else {
    return null;
  }
  const underflow = !mantissaIsZero && Math.abs(value) < 2.2250738585072014e-308;
  return Number.isFinite(value) && !underflow ? value : null;
}
