import assert from "node:assert/strict";
import { humanSize } from "../../src/cli/human-size.ts";

Deno.test("sizes take the largest unit that divides them exactly", () => {
  assert.deepEqual(humanSize(64 * 1024 * 1024), { text: "64M", scaled: true });
  assert.deepEqual(humanSize(1024), { text: "1K", scaled: true });
  assert.deepEqual(humanSize(3 * 1024 ** 4), { text: "3T", scaled: true });
  assert.deepEqual(humanSize(1536 * 1024), { text: "1536K", scaled: true });
  assert.deepEqual(humanSize(2 ** 60), { text: "1E", scaled: true });
  assert.deepEqual(humanSize(1099511631872), { text: "1073741828K", scaled: true });
});

Deno.test("zero and sizes that are not whole KiB stay plain numbers", () => {
  assert.deepEqual(humanSize(0), { text: "0", scaled: false });
  assert.deepEqual(humanSize(1000003), { text: "1000003", scaled: false });
  assert.deepEqual(humanSize(1536), { text: "1536", scaled: false });
});
