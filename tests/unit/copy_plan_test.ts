import assert from "node:assert/strict";
import {
  clipExtents,
  type Extent,
  isAllZero,
  planCopy,
  planSteps,
  sparseRuns,
  type Step,
  streamSteps,
} from "../../src/copy/plan.ts";

const KiB = 1024;

Deno.test("planSteps merges zero extents and cuts data on the request-size grid", () => {
  const extents: Extent[] = [
    { offset: 0, length: 6 * KiB, zero: false },
    { offset: 6 * KiB, length: 2 * KiB, zero: true },
    { offset: 8 * KiB, length: 4 * KiB, zero: true },
    { offset: 12 * KiB, length: 1 * KiB, zero: false },
  ];
  assert.deepEqual(planSteps(extents, 4 * KiB), [
    { kind: "data", offset: 0, length: 4 * KiB },
    { kind: "data", offset: 4 * KiB, length: 2 * KiB },
    { kind: "zero", offset: 6 * KiB, length: 6 * KiB },
    { kind: "data", offset: 12 * KiB, length: 1 * KiB },
  ]);
});

Deno.test("planSteps starts data that begins off the grid with a short request", () => {
  assert.deepEqual(planSteps([{ offset: 3 * KiB, length: 6 * KiB, zero: false }], 4 * KiB), [
    { kind: "data", offset: 3 * KiB, length: 1 * KiB },
    { kind: "data", offset: 4 * KiB, length: 4 * KiB },
    { kind: "data", offset: 8 * KiB, length: 1 * KiB },
  ]);
});

Deno.test("clipExtents shortens the last extent and refuses gaps", () => {
  const extents: Extent[] = [
    { offset: 100, length: 50, zero: true },
    { offset: 150, length: 1000, zero: false },
  ];
  assert.deepEqual(clipExtents(extents, 100, 200), [
    { offset: 100, length: 50, zero: true },
    { offset: 150, length: 50, zero: false },
  ]);
  assert.deepEqual(clipExtents(extents, 100, 120), [{ offset: 100, length: 20, zero: true }]);
  assert.throws(
    () => clipExtents([{ offset: 10, length: 5, zero: false }], 0, 20),
    /gap at offset 0/,
  );
});

Deno.test("planCopy asks for extents window by window and resumes where the answer ended", async () => {
  const asked: [number, number][] = [];
  // A source that answers with at most 3 KiB, zero below 2 KiB, data from there.
  const query = (offset: number, length: number): Promise<Extent[]> => {
    asked.push([offset, length]);
    const end = Math.min(offset + length, offset + 3 * KiB);
    const extents: Extent[] = [];
    if (offset < 2 * KiB) {
      extents.push({ offset, length: Math.min(end, 2 * KiB) - offset, zero: true });
    }
    const dataStart = Math.max(offset, 2 * KiB);
    if (end > dataStart) extents.push({ offset: dataStart, length: end - dataStart, zero: false });
    return Promise.resolve(extents);
  };
  const steps: Step[] = [];
  for await (const step of planCopy(10 * KiB, query, 4 * KiB, 8 * KiB)) steps.push(step);
  assert.deepEqual(asked, [[0, 8 * KiB], [3 * KiB, 7 * KiB], [6 * KiB, 4 * KiB], [9 * KiB, KiB]]);
  assert.deepEqual(steps, [
    { kind: "zero", offset: 0, length: 2 * KiB },
    { kind: "data", offset: 2 * KiB, length: 1 * KiB },
    { kind: "data", offset: 3 * KiB, length: 1 * KiB },
    { kind: "data", offset: 4 * KiB, length: 2 * KiB },
    { kind: "data", offset: 6 * KiB, length: 2 * KiB },
    { kind: "data", offset: 8 * KiB, length: 1 * KiB },
    { kind: "data", offset: 9 * KiB, length: 1 * KiB },
  ]);
});

Deno.test("planCopy fails when the source makes no progress", async () => {
  const steps = planCopy(4096, () => Promise.resolve([]), 4096);
  await assert.rejects(steps.next(), /no extents at offset 0/);
});

Deno.test("streamSteps yields request-sized data steps one after another", () => {
  const steps = streamSteps(512);
  assert.deepEqual([steps.next().value, steps.next().value], [
    { kind: "data", offset: 0, length: 512 },
    { kind: "data", offset: 512, length: 512 },
  ]);
});

Deno.test("isAllZero looks at every byte, whatever the alignment of the view", () => {
  const bytes = new Uint8Array(67);
  for (let start = 0; start < 4; start++) {
    for (let end = start; end <= bytes.length; end += 7) {
      assert.equal(isAllZero(bytes.subarray(start, end)), true);
    }
  }
  for (const index of [0, 1, 2, 3, 4, 33, 63, 64, 65, 66]) {
    const copy = new Uint8Array(67);
    copy[index] = 1;
    assert.equal(isAllZero(copy), false, `byte ${index}`);
    assert.equal(isAllZero(copy.subarray(1)), index === 0, `byte ${index} in an unaligned view`);
  }
});

Deno.test("sparseRuns finds whole zero blocks on absolute boundaries and keeps partial ones as data", () => {
  const block = 16;
  // 80 bytes at offset 8: a partial block [8,16), blocks 16..80, then a partial [80,88).
  const data = new Uint8Array(80);
  data.fill(7, 12, 30); // bytes [20,38): blocks [16,32) and [32,48) hold data
  const runs = sparseRuns(data, 8, block);
  assert.deepEqual(runs, [
    { kind: "data", offset: 8, length: 40 },
    { kind: "zero", offset: 48, length: 32 },
    { kind: "data", offset: 80, length: 8 },
  ]);
  assert.deepEqual(sparseRuns(new Uint8Array(64), 0, block), [{
    kind: "zero",
    offset: 0,
    length: 64,
  }]);
  assert.deepEqual(sparseRuns(new Uint8Array(10), 3, block), [{
    kind: "data",
    offset: 3,
    length: 10,
  }]);
});
