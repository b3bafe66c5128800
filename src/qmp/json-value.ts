/**
 * JSON values as QMP carries them, and their text as QEMU writes it.
 *
 * QEMU keeps integers and floating-point numbers apart (an `int` argument
 * refuses `1.0`), so a parsed integer is a `bigint` and only a number written
 * with a fraction or an exponent (or an integer too large for 64 bits) is a
 * `number`. {@linkcode formatJson} writes what QEMU's JSON formatter writes:
 * `{"a": 1, "b": [2, 3]}` with a space after `:` and `,`, non-ASCII characters
 * as upper-case `\uXXXX` escapes, doubles as C's `%.17g`, and the members of
 * every object in the order QEMU's hash-table dictionaries (QDict) enumerate
 * them, so replies built in QAPI member order come out byte for byte as
 * qemu-storage-daemon's.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatJson } from "./json-value.ts";
 * assert.equal(formatJson({ major: 7, minor: 2, micro: 0 }), '{"micro": 0, "minor": 2, "major": 7}');
 * assert.equal(
 *   formatJson({ b: 1, a: [true, null] }, { order: "insertion" }),
 *   '{"b": 1, "a": [true, null]}',
 * );
 * ```
 * @module
 */

/**
 * A JSON value: `bigint` for integers (QEMU's int64/uint64), `number` for
 * doubles, plain objects and arrays for containers.
 */
export type JsonValue = null | boolean | string | number | bigint | JsonValue[] | JsonObject;

/** A JSON object. */
export interface JsonObject {
  /** Members by name. */
  [key: string]: JsonValue;
}

/** Whether `value` is a JSON object (not null, not an array). */
export function isJsonObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Set `object[key]` as an own property, even for the key "__proto__". */
export function setMember(object: JsonObject, key: string, value: JsonValue): void {
  if (key === "__proto__") {
    Object.defineProperty(object, key, { value, enumerable: true, writable: true });
  } else {
    object[key] = value;
  }
}

/** How {@linkcode formatJson} orders the members of objects. */
export interface FormatOptions {
  /**
   * "qdict" (default): the order qemu-storage-daemon writes them in, given
   * that each object's own key order is the order QEMU would have inserted
   * them (QAPI member order, or the order they were parsed in).
   * "insertion": each object's own key order.
   */
  readonly order?: "qdict" | "insertion";
  /** Indent nested values by this many spaces per level, one member per line. */
  readonly indent?: number;
}

/**
 * The JSON text of `value`. Accepts {@linkcode JsonValue}s and plain objects
 * with `undefined` members (which are left out, like absent optional members).
 */
export function formatJson(value: unknown, options: FormatOptions = {}): string {
  return format(value, options.order ?? "qdict", options.indent ?? 0, 0);
}

function format(
  value: unknown,
  order: "qdict" | "insertion",
  indent: number,
  depth: number,
): string {
  switch (typeof value) {
    case "string":
      return quote(value);
    case "boolean":
      return String(value);
    case "bigint":
      return value.toString();
    case "number":
      return Number.isSafeInteger(value) && !Object.is(value, -0)
        ? String(value)
        : formatDouble(value);
  }
  if (value === null) return "null";
  if (typeof value !== "object") throw new TypeError(`not JSON: ${String(value)}`);
  const inner = indent ? "\n" + " ".repeat(indent * (depth + 1)) : "";
  const outer = indent ? "\n" + " ".repeat(indent * depth) : "";
  const separator = indent ? "," + inner : ", ";
  if (Array.isArray(value)) {
    if (value.length === 0) return "[]";
    const items = value.map((item) => format(item, order, indent, depth + 1));
    return `[${inner}${items.join(separator)}${outer}]`;
  }
  const record = value as Record<string, unknown>;
  const keys = (order === "qdict" ? qdictKeys(record) : Object.keys(record))
    .filter((key) => record[key] !== undefined);
  if (keys.length === 0) return "{}";
  const members = keys.map((key) =>
    `${quote(key)}: ${format(record[key], order, indent, depth + 1)}`
  );
  return `{${inner}${members.join(separator)}${outer}}`;
}

/** Short escapes QEMU writes for these control characters. */
const SHORT_ESCAPES: Readonly<Record<string, string>> = {
  '"': '\\"',
  "\\": "\\\\",
  "\b": "\\b",
  "\f": "\\f",
  "\n": "\\n",
  "\r": "\\r",
  "\t": "\\t",
};

/** A JSON string literal: printable ASCII as is, everything else escaped. */
function quote(text: string): string {
  let result = '"';
  for (let i = 0; i < text.length; i++) {
    const char = text[i];
    const code = text.charCodeAt(i);
    const short = SHORT_ESCAPES[char];
    if (short) result += short;
    else if (code >= 0x20 && code < 0x7f) result += char;
    else result += "\\u" + code.toString(16).toUpperCase().padStart(4, "0");
  }
  return result + '"';
}

/** A double as C's printf("%.17g") writes it (inf and nan included, as QEMU does). */
export function formatDouble(value: number): string {
  if (Number.isNaN(value)) return "nan";
  if (!Number.isFinite(value)) return value > 0 ? "inf" : "-inf";
  const sign = value < 0 || Object.is(value, -0) ? "-" : "";
  const magnitude = Math.abs(value);
  const [mantissa, exponentText] = magnitude.toExponential(16).split("e");
  const exponent = Number(exponentText);
  if (exponent < -4 || exponent >= 17) {
    const digits = stripZeros(mantissa);
    const expSign = exponent < 0 ? "-" : "+";
    return `${sign}${digits}e${expSign}${String(Math.abs(exponent)).padStart(2, "0")}`;
  }
  return sign + stripZeros(magnitude.toFixed(16 - exponent));
}

/** Drop trailing zeros of a fraction, and the point if nothing is left after it. */
function stripZeros(text: string): string {
  return text.includes(".") ? text.replace(/\.?0+$/, "") : text;
}

/** Number of hash buckets of a QDict. */
const QDICT_BUCKETS = 512;

/**
 * The keys of `object` in the order a QDict enumerates them, given that
 * `object`'s own key order is the order they were inserted in: by hash
 * bucket, and within a bucket the most recently inserted first.
 */
export function qdictKeys(object: object): string[] {
  return Object.keys(object)
    .map((key, index) => ({ key, index, bucket: qdictBucket(key) }))
    .sort((a, b) => a.bucket - b.bucket || b.index - a.index)
    .map(({ key }) => key);
}

const utf8 = new TextEncoder();

/** The bucket QEMU's QDict puts `key` in (the gdbm/tdb string hash, modulo 512). */
export function qdictBucket(key: string): number {
  const bytes = utf8.encode(key);
  let hash = Math.imul(0x238f13af, bytes.length) >>> 0;
  for (let i = 0; i < bytes.length; i++) {
    hash = (hash + ((bytes[i] << ((i * 5) % 24)) >>> 0)) >>> 0;
  }
  return ((Math.imul(1103515243, hash) + 12345) >>> 0) % QDICT_BUCKETS;
}
