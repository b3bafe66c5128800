import assert from "node:assert/strict";
import { printfFixed, printfGeneral } from "../../src/cli/printf-number.ts";

// Expected strings are what glibc's printf (and Python's %-formatting) print.

Deno.test("%.1f rounds the exact binary value, ties to even", () => {
  assert.equal(printfFixed(0.25, 1), "0.2");
  assert.equal(printfFixed(0.75, 1), "0.8");
  assert.equal(printfFixed(1.5625, 1), "1.6");
  assert.equal(printfFixed(98.4375, 1), "98.4");
  assert.equal(printfFixed(99.9939, 1), "100.0");
  assert.equal(printfFixed(0.05, 1), "0.1", "0.05 is slightly above a half in binary");
  assert.equal(printfFixed(100, 1), "100.0");
  assert.equal(printfFixed(0, 1), "0.0");
  assert.equal(printfFixed(2.5, 0), "2");
});

Deno.test("%g keeps six significant digits and drops trailing zeros", () => {
  assert.equal(printfGeneral(100 * 4096 / 67108864), "0.00610352");
  assert.equal(printfGeneral(100 * 67104768 / 67108864), "99.9939");
  assert.equal(printfGeneral(1.5625), "1.5625");
  assert.equal(printfGeneral(1.953125), "1.95312", "a tie goes to the even digit");
  assert.equal(printfGeneral(100), "100");
  assert.equal(printfGeneral(0), "0");
  assert.equal(printfGeneral(0.0001), "0.0001");
  assert.equal(printfGeneral(9.9999996), "10");
});

Deno.test("%g switches to exponent notation outside [1e-4, 1e6)", () => {
  assert.equal(printfGeneral(1e-7), "1e-07");
  assert.equal(printfGeneral(0.00001234), "1.234e-05");
  assert.equal(printfGeneral(123456789), "1.23457e+08");
  assert.equal(printfGeneral(999999.5), "1e+06");
  assert.equal(printfGeneral(5e-324), "4.94066e-324");
  assert.equal(printfGeneral(1e300), "1e+300");
});

Deno.test("negative and non-finite values are refused", () => {
  assert.throws(() => printfFixed(-1, 1), RangeError);
  assert.throws(() => printfGeneral(NaN), RangeError);
});
