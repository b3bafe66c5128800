import assert from "node:assert/strict";
import { KNOWN_DATA_LIMIT, KnownData } from "../../src/block/known-data.ts";

/** A seeded generator, so a failure repeats. */
function random(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return state / 2147483648;
  };
}

Deno.test("known data: ranges added and forgotten match a byte-by-byte model", () => {
  const next = random(7);
  const domain = 200;
  for (let round = 0; round < 200; round++) {
    const known = new KnownData();
    const model = new Array<boolean>(domain).fill(false);
    for (let step = 0; step < 30; step++) {
      const start = Math.floor(next() * domain);
      const length = Math.floor(next() * 40);
      const end = Math.min(domain, start + length);
      if (next() < 0.6) {
        known.add(start, end);
        for (let i = start; i < end; i++) model[i] = true;
      } else {
        known.forget(start, end - start);
        for (let i = start; i < end; i++) model[i] = false;
      }
      for (let offset = 0; offset < domain; offset++) {
        let expected = -1;
        if (model[offset]) {
          expected = offset;
          while (expected < domain && model[expected]) expected++;
        }
        assert.equal(known.endOfDataAt(offset), expected, `round ${round} offset ${offset}`);
      }
    }
  }
});

Deno.test("known data: touching ranges merge, and the count stays bounded", () => {
  const known = new KnownData();
  known.add(0, 10);
  known.add(10, 20);
  assert.equal(known.size, 1);
  assert.equal(known.endOfDataAt(5), 20);
  for (let i = 1; i <= KNOWN_DATA_LIMIT + 10; i++) known.add(i * 100, i * 100 + 50);
  assert.ok(known.size <= KNOWN_DATA_LIMIT, `${known.size} ranges kept`);
  assert.equal(
    known.endOfDataAt((KNOWN_DATA_LIMIT + 10) * 100),
    (KNOWN_DATA_LIMIT + 10) * 100 + 50,
  );
});
