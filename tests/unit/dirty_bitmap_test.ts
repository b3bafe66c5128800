import assert from "node:assert/strict";
import {
  BITMAP_DEFAULT_GRANULARITY,
  defaultBitmapGranularity,
  DirtyBitmap,
  DirtyBitmapSet,
  isValidGranularity,
} from "../../src/block/dirty-bitmap.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

Deno.test("dirty bitmap: granularity limits and defaults are QEMU's", () => {
  assert.equal(BITMAP_DEFAULT_GRANULARITY, 64 * KiB);
  for (const ok of [512, 1024, 64 * KiB, 2 ** 31]) assert.ok(isValidGranularity(ok), `${ok}`);
  for (const bad of [0, 256, 511, 1000, 3 * 512, 2 ** 32, -512, 512.5]) {
    assert.ok(!isValidGranularity(bad), `${bad}`);
  }
  assert.equal(defaultBitmapGranularity(), 64 * KiB);
  assert.equal(defaultBitmapGranularity(512), 4 * KiB);
  assert.equal(defaultBitmapGranularity(16 * KiB), 16 * KiB);
  assert.equal(defaultBitmapGranularity(2 * MiB), 64 * KiB);
  assert.throws(() => new DirtyBitmap("b", MiB, { granularity: 1000 }), RangeError);
});

Deno.test("dirty bitmap: marks round out to whole granules; count is granules times granularity", () => {
  const bitmap = new DirtyBitmap("b", 4 * MiB, { granularity: 64 * KiB });
  bitmap.mark(100 * KiB, 1);
  assert.equal(bitmap.count, 64 * KiB);
  bitmap.mark(64 * KiB - 1, 2); // straddles granules 0 and 1
  assert.equal(bitmap.count, 128 * KiB);
  bitmap.mark(0, 0); // empty ranges mark nothing
  bitmap.mark(4 * MiB, 512); // past the end: nothing
  assert.equal(bitmap.count, 128 * KiB);
  assert.ok(bitmap.isDirty(0) && bitmap.isDirty(128 * KiB - 1) && !bitmap.isDirty(128 * KiB));
  assert.deepEqual(bitmap.dirtyExtents(0, 4 * MiB), [
    { length: 128 * KiB, dirty: true },
    { length: 4 * MiB - 128 * KiB, dirty: false },
  ]);
  bitmap.clear();
  assert.equal(bitmap.count, 0);
  assert.deepEqual(bitmap.dirtyExtents(0, 4 * MiB), [{ length: 4 * MiB, dirty: false }]);
});

Deno.test("dirty bitmap: extents are clipped to the request, as qemu-storage-daemon answers", () => {
  // The same writes and requests as against qsd 7.2 (64 KiB granules, 4 MiB + 1000 bytes).
  const size = 4 * MiB + 1024;
  const bitmap = new DirtyBitmap("b", size, { granularity: 64 * KiB });
  bitmap.mark(size - 1, 1);
  bitmap.mark(70000, 1);
  bitmap.mark(200 * KiB, 1);
  const runs = (offset: number, length: number, max = Infinity) =>
    bitmap.dirtyExtents(offset, length, max).map((e) => [e.length, e.dirty ? 1 : 0]);
  assert.deepEqual(runs(0, size), [
    [65536, 0],
    [65536, 1],
    [65536, 0],
    [65536, 1],
    [3932160, 0],
    [1024, 1],
  ]);
  assert.deepEqual(runs(4096, 100000), [[61440, 0], [38560, 1]]);
  assert.deepEqual(runs(70000, 10), [[10, 1]]);
  assert.deepEqual(runs(100000, 100000), [[31072, 1], [65536, 0], [3392, 1]]);
  assert.deepEqual(runs(4194000, 1304), [[304, 0], [1000, 1]]);
  assert.deepEqual(runs(1, 1), [[1, 0]]);
  assert.deepEqual(runs(0, size, 2), [[65536, 0], [65536, 1]]);
});

Deno.test("dirty bitmap: the last, partial granule and bytes past the size", () => {
  const bitmap = new DirtyBitmap("b", 1000 + 512, { granularity: 1024 });
  bitmap.mark(1400, 5);
  assert.equal(bitmap.count, 1024);
  assert.deepEqual(bitmap.dirtyExtents(0, 3000), [
    { length: 1024, dirty: false },
    { length: 488, dirty: true },
    { length: 1488, dirty: false },
  ]);
});

Deno.test("dirty bitmap: runs across many words, against a plain model", () => {
  const granularity = 512;
  const granules = 5000;
  const bitmap = new DirtyBitmap("b", granules * granularity, { granularity });
  const model = new Array<boolean>(granules).fill(false);
  let seed = 7;
  const random = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
  for (let i = 0; i < 300; i++) {
    const start = random(granules * granularity);
    const length = 1 + random(40 * granularity);
    bitmap.mark(start, length);
    const end = Math.min(start + length, granules * granularity);
    for (let g = Math.floor(start / granularity); g * granularity < end; g++) model[g] = true;
  }
  assert.equal(bitmap.count, model.filter(Boolean).length * granularity);
  for (let i = 0; i < 100; i++) {
    const offset = random(granules * granularity);
    const length = 1 + random(granules * granularity - offset);
    const extents = bitmap.dirtyExtents(offset, length);
    assert.equal(extents.reduce((sum, e) => sum + e.length, 0), length);
    let position = offset;
    for (const [index, extent] of extents.entries()) {
      if (index > 0) assert.notEqual(extent.dirty, extents[index - 1].dirty);
      for (let byte = position; byte < position + extent.length; byte += 256) {
        assert.equal(model[Math.floor(byte / granularity)], extent.dirty);
      }
      position += extent.length;
    }
  }
});

Deno.test("dirty bitmap: merge ORs bits, across granularities, only between equal sizes", () => {
  const size = 1 * MiB;
  const fine = new DirtyBitmap("fine", size, { granularity: 512 });
  const coarse = new DirtyBitmap("coarse", size, { granularity: 64 * KiB });
  const same = new DirtyBitmap("same", size, { granularity: 512 });
  fine.mark(100 * KiB, 1);
  coarse.mark(300 * KiB, 1);
  same.mark(0, 512);

  same.mergeFrom(fine);
  assert.equal(same.count, 1024);
  coarse.mergeFrom(fine); // a fine granule marks the coarse granule holding it
  assert.deepEqual(coarse.dirtyExtents(0, size).map((e) => [e.length, e.dirty]), [
    [64 * KiB, false],
    [64 * KiB, true],
    [128 * KiB, false],
    [64 * KiB, true],
    [size - 320 * KiB, false],
  ]);
  fine.mergeFrom(coarse); // a coarse granule marks every fine granule it covers
  assert.equal(fine.count, 128 * KiB);
  fine.mergeFrom(fine);
  assert.equal(fine.count, 128 * KiB);
  assert.throws(() => fine.mergeFrom(new DirtyBitmap("x", size + 512)), RangeError);
});

Deno.test("dirty bitmap: sha256 matches QEMU's x-debug-block-dirty-bitmap-sha256", async () => {
  const bitmap = new DirtyBitmap("b0", 64 * MiB);
  assert.equal(
    await bitmap.sha256(),
    "38723a2e5e8a17aa7950dc008209944e898f69a7bd10a23c839d341e935fd5ca",
  );
  // qsd 7.2, 64 MiB raw, 64 KiB granules: write 100k 1; write 1M 4k;
  // write -z 2040k 100k; discard 63M 1M (discard=unmap).
  bitmap.mark(100 * KiB, 1);
  bitmap.mark(MiB, 4 * KiB);
  bitmap.mark(2040 * KiB, 100 * KiB);
  bitmap.mark(63 * MiB, MiB);
  assert.equal(
    await bitmap.sha256(),
    "f33b9a84fe08c70889963664127a45df2d9173a47785ec1afedb860b44e710b8",
  );
});

Deno.test("dirty bitmap: busy is claimed once and released once", () => {
  const bitmap = new DirtyBitmap("b", MiB);
  const release = bitmap.claim();
  assert.ok(bitmap.busy && bitmap.info().busy);
  assert.throws(() => bitmap.claim());
  release();
  release();
  assert.ok(!bitmap.busy);
  assert.deepEqual(bitmap.info(), {
    name: "b",
    recording: true,
    persistent: false,
    busy: false,
    granularity: 64 * KiB,
    count: 0,
  });
});

Deno.test("dirty bitmap set: only enabled bitmaps record; newest listed first", () => {
  const set = new DirtyBitmapSet(MiB, { defaultGranularity: 4096 });
  const on = set.create("on");
  const off = set.create("off", { disabled: true, granularity: 512 });
  assert.equal(on.granularity, 4096);
  assert.deepEqual(set.list().map((b) => b.name), ["off", "on"]);
  set.markDirty(0, 1);
  assert.equal(on.count, 4096);
  assert.equal(off.count, 0);
  off.enabled = true;
  on.enabled = false;
  set.markDirty(8192, 1);
  assert.equal(on.count, 4096);
  assert.equal(off.count, 512);
  assert.equal(off.info().recording, true);
  assert.throws(() => set.create("on"));
  assert.ok(set.delete(on));
  assert.ok(!set.delete(on));
  assert.equal(set.find("on"), undefined);
  assert.equal(set.length, 1);
});
