import assert from "node:assert/strict";
import { scanUnsigned } from "../../src/cli/scanf-number.ts";

Deno.test("%lu: leading space and sign, the digits there are, the rest ignored", () => {
  assert.equal(scanUnsigned("512"), 512n);
  assert.equal(scanUnsigned("1k"), 1n, "no size suffixes");
  assert.equal(scanUnsigned("\t +20 bytes"), 20n);
  assert.equal(scanUnsigned("007"), 7n, "decimal, not octal");
  assert.equal(scanUnsigned("0x10"), 0n, "decimal, not hex");
  assert.equal(scanUnsigned("-1"), 2n ** 64n - 1n, "a minus sign wraps");
  assert.equal(scanUnsigned("-18446744073709551615"), 1n);
  assert.equal(scanUnsigned("99999999999999999999999"), 2n ** 64n - 1n, "clamped");
  for (const text of ["", "lots", "k1", "- 1", "+"]) assert.equal(scanUnsigned(text), null, text);
});
