/** Option values read as QEMU 7.2 reads them (strtoll/strtoull base 0, qemu_strtosz, strtod). */

import assert from "node:assert/strict";
import { parseCDouble, parseCInteger, parseSize } from "../../src/qmp/c-number.ts";

Deno.test("C integers: base prefixes, signs, blanks, ranges", () => {
  const signed: [string, bigint | string][] = [
    ["0", 0n],
    ["-9223372036854775808", -(2n ** 63n)],
    ["9223372036854775808", "range"],
    ["0x7fffffffffffffff", 2n ** 63n - 1n],
    ["\t\n 017", 15n],
    ["-0x10", -16n],
    ["08", "invalid"],
    ["0x", "invalid"],
    ["1 ", "invalid"],
    ["", "invalid"],
    ["+", "invalid"],
  ];
  for (const [text, value] of signed) assert.equal(parseCInteger(text, "signed"), value, text);
  const unsigned: [string, bigint | string][] = [
    ["18446744073709551615", 2n ** 64n - 1n],
    ["18446744073709551616", "range"],
    ["-1", 2n ** 64n - 1n],
    ["-18446744073709551615", 1n],
    ["-0", 0n],
  ];
  for (const [text, value] of unsigned) assert.equal(parseCInteger(text, "unsigned"), value, text);
});

Deno.test("sizes: suffixes, fractions rounded to bytes, hex, overflow", () => {
  const sizes: [string, bigint | string][] = [
    ["1.0000000001k", 1024n],
    ["1.5e", 3n * 2n ** 59n],
    ["0.0001k", 0n],
    ["0.0005k", 1n],
    ["1.", 1n],
    ["+2M", 2n * 2n ** 20n],
    ["15.9999999999999999E", 2n ** 64n - 128n],
    ["16E", "range"],
    ["0x10.5", "invalid"],
    ["0X1F", 31n],
    ["00x10", "invalid"],
    ["1.5e3", "invalid"],
    [".5k", "invalid"],
    ["-0", "invalid"],
  ];
  for (const [text, value] of sizes) assert.equal(parseSize(text), value, text);
});

Deno.test("doubles: decimal and hex, finite and normal only", () => {
  const doubles: [string, number | null][] = [
    ["1.5", 1.5],
    [" -2e3", -2000],
    [".5", 0.5],
    ["5.", 5],
    ["0x1p4", 16],
    ["0x.8", 0.5],
    ["0", 0],
    ["0e5", 0],
    ["inf", null],
    ["nan", null],
    ["1e999", null],
    ["1e-400", null],
    ["1x", null],
    ["", null],
    ["0x", null],
  ];
  for (const [text, value] of doubles) assert.equal(parseCDouble(text), value, text);
});
