import assert from "node:assert/strict";
import { scanUnsignedLong } from "../../src/cli/scanf-number.ts";

Deno.test("%lu: leading space and sign, the digits there are, the rest ignored", () => {
  assert.equal(scanUnsignedLong("512"), 512n);
  assert.equal(scanUnsignedLong("1k"), 1n, "no size suffixes");
  assert.equal(scanUnsignedLong("\t +20 bytes"), 20n);
  assert.equal(scanUnsignedLong("007"), 7n, "decimal, not octal");
  assert.equal(scanUnsignedLong("0x10"), 0n, "decimal, not hex");
  assert.equal(scanUnsignedLong("-1"), 2n ** 64n - 1n, "a minus sign wraps");
  assert.equal(scanUnsignedLong("-18446744073709551615"), 1n);
  assert.equal(scanUnsignedLong("99999999999999999999999"), 2n ** 64n - 1n, "clamped");
  for (const text of ["", "lots", "k1", "- 1", "+"]) {
    assert.equal(scanUnsignedLong(text), undefined, text);
  }
});
