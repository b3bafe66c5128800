import assert from "node:assert/strict";
import { FileNode, type FileNodeOptions } from "../../src/block/file.ts";
import { Errno, errnoError, errnoKind } from "../../src/block/libc.ts";
import type { BlockExtent } from "../../src/block/node.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/** Run `body` with a fresh temporary directory (under `parent` if given), removed afterwards. */
async function withTempDir(body: (dir: string) => Promise<void>, parent?: string): Promise<void> {
  const dir = await Deno.makeTempDir({ dir: parent, prefix: "denbd-file-" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A sparse file of `size` bytes (all hole). */
async function makeSparseFile(path: string, size: number): Promise<void> {
  using file = await Deno.open(path, { create: true, write: true, truncate: true });
  await file.truncate(size);
}

/** Open `path`, run `body` with the node, and close it whatever happens. */
async function withNode(
  path: string,
  options: FileNodeOptions,
  body: (node: FileNode) => Promise<void>,
): Promise<void> {
  const node = await FileNode.open(path, options);
  try {
    await body(node);
  } finally {
    await node.close();
  }
}

/** `length` bytes of a pattern that differs between `seed`s. */
function pattern(length: number, seed: number): Uint8Array {
  return new Uint8Array(length).map((_, i) => ((i * 7 + seed * 13) % 251) + 1);
}

async function readBack(node: FileNode, offset: number, length: number): Promise<Uint8Array> {
  const into = new Uint8Array(length);
  await node.read(offset, into);
  return into;
}

/** 512-byte blocks the file occupies on disk. */
async function allocatedBlocks(path: string): Promise<number> {
  return (await Deno.stat(path)).blocks ?? 0;
}

/** Extents merged into [start, end, data] runs, for comparing with qemu-img map. */
function runs(extents: BlockExtent[], start = 0): [number, number, boolean][] {
  const result: [number, number, boolean][] = [];
  let position = start;
  for (const extent of extents) {
    const last = result.at(-1);
    if (last && last[2] === extent.data) last[1] += extent.length;
    else result.push([position, position + extent.length, extent.data]);
    position += extent.length;
  }
  return result;
}

interface QemuMapEntry {
  start: number;
  length: number;
  data: boolean;
  zero: boolean;
}

async function qemuImgMap(path: string): Promise<QemuMapEntry[]> {
  const output = await new Deno.Command("qemu-img", {
    args: ["map", "--output=json", "-f", "raw", "-U", path],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
  return JSON.parse(new TextDecoder().decode(output.stdout));
}

/** tmpfs has fallocate PUNCH_HOLE but no ZERO_RANGE: the write-zeroes fallback path. */
const SHM = "/dev/shm";

Deno.test("file node: writes at unaligned offsets read back and reach the file", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/disk.img`;
    await makeSparseFile(path, 256 * KiB);
    const writes = [[1, 10], [4095, 2], [4097, 5000], [65535, 70000], [256 * KiB - 7, 7]];
    await withNode(path, {}, async (node) => {
      assert.equal(node.size, 256 * KiB);
      assert.equal(node.requestAlignment, 1);
      for (const [index, [offset, length]] of writes.entries()) {
        await node.write(offset, pattern(length, index));
      }
      for (const [index, [offset, length]] of writes.entries()) {
        assert.deepEqual(await readBack(node, offset, length), pattern(length, index));
      }
      assert.deepEqual(await readBack(node, 0, 1), new Uint8Array(1));
    });
    const onDisk = await Deno.readFile(path);
    for (const [index, [offset, length]] of writes.entries()) {
      assert.deepEqual(onDisk.subarray(offset, offset + length), pattern(length, index));
    }
  });
});

Deno.test("file node: page-cache misses and reads above the fast-path size read right", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/disk.img`;
    const data = pattern(3 * MiB, 5);
    await makeSparseFile(path, data.length);
    // Written with O_DIRECT, so none of it is in the page cache for the reads below.
    await withNode(path, { direct: true }, (node) => node.write(0, data));
    await withNode(path, {}, async (node) => {
      assert.deepEqual(await readBack(node, 8192, 4096), data.subarray(8192, 12288));
      assert.deepEqual(await readBack(node, 8192 - 100, 4296), data.subarray(8092, 12388));
      assert.deepEqual(await readBack(node, 0, 3 * MiB), data);
      assert.deepEqual(
        await readBack(node, 12345, 300 * KiB),
        data.subarray(12345, 12345 + 300 * KiB),
      );
    });
  });
});

Deno.test({
  name: "file node: a failed worker-thread call reports its errno (pwrite to /dev/full)",
  fn: async () => {
    // /dev/full has size 0: growable, so that the write reaches pwrite.
    await withNode("/dev/full", { lock: false, growable: true }, async (node) => {
      await assert.rejects(() => node.write(0, new Uint8Array(10)), {
        kind: "no-space",
        message: "pwrite: No space left on device",
      });
    });
  },
});

Deno.test("file node: FUA and flush work with every cache option", async () => {
  const modes = [{}, { noFlush: true }, { direct: true }, { direct: true, noFlush: true }];
  for (const cache of modes) {
    await withTempDir(async (dir) => {
      const path = `${dir}/disk.img`;
      await makeSparseFile(path, MiB);
      const label = JSON.stringify(cache);
      await withNode(path, { ...cache, discard: "unmap" }, async (node) => {
        await node.write(4096, pattern(8192, 1), { fua: true });
        await node.write(3, pattern(5, 2), { fua: false });
        await node.writeZeroes(65536, 65536, { fua: true });
        await node.trim(131072, 65536, { fua: true });
        await node.flush();
        assert.deepEqual(await readBack(node, 4096, 8192), pattern(8192, 1), label);
        assert.deepEqual(await readBack(node, 3, 5), pattern(5, 2), label);
      });
    });
  }
});

Deno.test("file node: capabilities follow the options", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/disk.img`;
    await makeSparseFile(path, MiB);
    await withNode(path, { readOnly: true }, (node) => {
      assert.deepEqual(node.capabilities, {
        writable: false,
        trim: false,
        fastZero: true,
        cache: true,
        multiConn: true,
        blockStatus: true,
      });
      return Promise.resolve();
    });
    await withNode(path, { direct: true, discard: "unmap" }, (node) => {
      assert.equal(node.capabilities.trim, true);
      assert.equal(node.capabilities.cache, false);
      assert.ok([512, 4096].includes(node.requestAlignment));
      return Promise.resolve();
    });
    await assert.rejects(
      () => FileNode.open(path, { discard: "bogus" as "unmap" }),
      { kind: "invalid" },
    );
  });
});

Deno.test("file node: write zeroes punches with mayTrim, else keeps blocks", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/disk.img`;
    await makeSparseFile(path, MiB);
    await withNode(path, { discard: "unmap" }, async (node) => {
      await node.write(0, pattern(MiB, 3));
      const full = await allocatedBlocks(path);
      await node.writeZeroes(256 * KiB, 256 * KiB, { mayTrim: true });
      assert.ok(await allocatedBlocks(path) <= full - 512, "the range was punched");
      assert.deepEqual(runs(await node.blockStatus(0, MiB)), [
        [0, 256 * KiB, true],
        [256 * KiB, 512 * KiB, false],
        [512 * KiB, MiB, true],
      ]);
      const afterPunch = await allocatedBlocks(path);
      await node.writeZeroes(600 * KiB, 100 * KiB, { mayTrim: false });
      assert.equal(await allocatedBlocks(path), afterPunch, "ZERO_RANGE keeps the blocks");
      const back = await readBack(node, 0, MiB);
      assert.ok(back.subarray(256 * KiB, 512 * KiB).every((byte) => byte === 0));
      assert.ok(back.subarray(600 * KiB, 700 * KiB).every((byte) => byte === 0));
      assert.deepEqual(back.subarray(0, 256 * KiB), pattern(MiB, 3).subarray(0, 256 * KiB));
      assert.deepEqual(back.subarray(700 * KiB), pattern(MiB, 3).subarray(700 * KiB));
      for (const extent of await node.blockStatus(256 * KiB, 256 * KiB)) {
        assert.deepEqual(extent, { length: 256 * KiB, data: false, zero: true, allocated: true });
      }
    });
  });
});

Deno.test("file node: mayTrim punches with discard=ignore too, as QEMU's file driver", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/disk.img`;
    await makeSparseFile(path, MiB);
    await withNode(path, { discard: "ignore" }, async (node) => {
      await node.write(0, pattern(MiB, 4));
      const full = await allocatedBlocks(path);
      await node.writeZeroes(0, MiB, { mayTrim: true, fast: true });
      assert.ok(await allocatedBlocks(path) <= full - 2048, "the whole range was punched");
      assert.ok((await readBack(node, 0, MiB)).every((byte) => byte === 0));
    });
  });
});

Deno.test({
  name: "file node: without ZERO_RANGE, fast zero fails untouched and slow zero writes zeroes",
  fn: () =>
    withTempDir(async (dir) => {
      const path = `${dir}/disk.img`;
      await makeSparseFile(path, 3 * MiB);
      await withNode(path, {}, async (node) => {
        await node.write(0, pattern(3 * MiB, 6));
        await assert.rejects(
          () => node.writeZeroes(100, 2 * MiB + 5, { fast: true }),
          { kind: "not-supported" },
        );
        assert.deepEqual(await readBack(node, 0, 3 * MiB), pattern(3 * MiB, 6));
        await node.writeZeroes(100, 2 * MiB + 5);
        const back = await readBack(node, 0, 3 * MiB);
        assert.ok(back.subarray(100, 100 + 2 * MiB + 5).every((byte) => byte === 0));
        assert.deepEqual(back.subarray(0, 100), pattern(3 * MiB, 6).subarray(0, 100));
        assert.deepEqual(back.subarray(2 * MiB + 105), pattern(3 * MiB, 6).subarray(2 * MiB + 105));
      });
    }, SHM),
});

Deno.test("file node: trim punches with discard=unmap and does nothing with ignore", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/disk.img`;
    await makeSparseFile(path, MiB);
    await withNode(path, { discard: "ignore" }, async (node) => {
      await node.write(0, pattern(MiB, 7));
      assert.equal(node.capabilities.trim, false);
      await node.trim(0, MiB);
      assert.deepEqual(await readBack(node, 0, MiB), pattern(MiB, 7));
    });
    await withNode(path, { discard: "unmap" }, async (node) => {
      const full = await allocatedBlocks(path);
      await node.trim(0, 512 * KiB);
      assert.ok(await allocatedBlocks(path) <= full - 1024);
      assert.deepEqual(runs(await node.blockStatus(0, MiB)), [
        [0, 512 * KiB, false],
        [512 * KiB, MiB, true],
      ]);
    });
  });
});

Deno.test("file node: block status matches qemu-img map on a sparse file", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/disk.img`;
    const size = 8 * MiB + 3000;
    await makeSparseFile(path, size);
    await withNode(path, {}, async (node) => {
      await node.write(0, pattern(100, 1));
      await node.write(MiB + 5, pattern(200 * KiB, 2));
      await node.write(4 * MiB, pattern(MiB, 3));
      await node.write(size - 10, pattern(10, 4));
      const ours = runs(await node.blockStatus(0, size));
      // QEMU rounds a raw image's size up to 512 bytes: ignore what it says past the end.
      const theirs = (await qemuImgMap(path)).filter((entry) => entry.start < size).map((entry) => {
        assert.equal(entry.zero, !entry.data);
        return [entry.start, Math.min(entry.start + entry.length, size), entry.data];
      });
      assert.deepEqual(ours, theirs);
      const middle = await node.blockStatus(MiB + 1000, 3 * MiB);
      assert.deepEqual(runs(middle, MiB + 1000), [
        [MiB + 1000, MiB + 204800 + 4096, true],
        [MiB + 204800 + 4096, 4 * MiB, false],
        [4 * MiB, 4 * MiB + 1000, true],
      ]);
    });
  });
});

Deno.test("file node: block status stops after a bounded number of extents", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/disk.img`;
    const stride = 8 * KiB;
    await makeSparseFile(path, 1500 * stride);
    await withNode(path, {}, async (node) => {
      for (let offset = 0; offset < node.size; offset += stride) {
        await node.write(offset, pattern(4 * KiB, 1));
      }
      const extents = await node.blockStatus(0, node.size);
      assert.equal(extents.length, 1024);
      const covered = extents.reduce((sum, extent) => sum + extent.length, 0);
      assert.equal(covered, 512 * stride);
    });
  });
});

Deno.test("file node: a fully allocated range is one data extent", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/disk.img`;
    await Deno.writeFile(path, pattern(MiB, 1));
    await withNode(path, { readOnly: true }, async (node) => {
      assert.deepEqual(await node.blockStatus(100, 5000), [
        { length: 5000, data: true, zero: false, allocated: true },
      ]);
    });
  });
});

for (const noFlush of [false, true]) {
  Deno.test(`file node: direct I/O (noFlush ${noFlush}) serialises concurrent unaligned writes (RMW)`, async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/disk.img`;
      const size = 64 * KiB;
      const expected = pattern(size, 50);
      await Deno.writeFile(path, expected);
      // Disjoint ranges that share blocks: each write must survive the others' RMW.
      const writes: [number, Uint8Array][] = [];
      for (let offset = 3, seed = 0; offset < size - 3 * 4096; seed++) {
        const length = 1 + ((seed * 97) % 700);
        const data = pattern(length, seed);
        writes.push([offset, data]);
        expected.set(data, offset);
        offset += length + (seed % 3);
      }
      await withNode(path, { direct: true, noFlush }, async (node) => {
        const alignment = node.requestAlignment;
        assert.ok(alignment === 512 || alignment === 4096);
        // Aligned writes from an unaligned buffer and zeroing join the fray.
        const aligned = pattern(alignment + 1, 99).subarray(1);
        const alignedAt = size - 2 * alignment;
        expected.set(aligned, alignedAt);
        expected.fill(0, size - alignment + 1, size - 1);
        await Promise.all([
          ...writes.map(([offset, data]) => node.write(offset, data)),
          node.write(alignedAt, aligned),
          node.writeZeroes(size - alignment + 1, alignment - 2),
        ]);
        assert.deepEqual(await readBack(node, 0, size), expected);
        assert.deepEqual(await readBack(node, 777, 5), expected.subarray(777, 782));
      });
      assert.deepEqual(await Deno.readFile(path), expected);
    });
  });
}

Deno.test("file node: cache=none keeps an unaligned file size and its last bytes", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/disk.img`;
    const size = 10000;
    const expected = pattern(size, 8);
    await Deno.writeFile(path, expected);
    await withNode(path, { direct: true }, async (node) => {
      assert.equal(node.size, size);
      const data = pattern(3000, 9);
      expected.set(data, 7000);
      await node.write(7000, data, { fua: true });
      await node.write(size - 1, new Uint8Array([42]));
      expected[size - 1] = 42;
      assert.deepEqual(await readBack(node, 0, size), expected);
      assert.deepEqual(await readBack(node, 9990, 10), expected.subarray(9990));
    });
    assert.equal((await Deno.stat(path)).size, size);
    assert.deepEqual(await Deno.readFile(path), expected);
  });
});

Deno.test("file node: past the end, a growable node reads zeroes and grows, with and without cache=none", async () => {
  await withTempDir(async (dir) => {
    const size = 64 * KiB;
    for (const direct of [false, true]) {
      const path = `${dir}/disk-${direct}.img`;
      await Deno.writeFile(path, pattern(size, 10));
      await withNode(path, { direct }, async (node) => {
        assert.equal(node.size, size);
        assert.deepEqual(await readBack(node, size, 0), new Uint8Array(0));
        await assert.rejects(() => readBack(node, size, 512), { kind: "invalid" });
        await assert.rejects(() => readBack(node, size - 1, 2), { kind: "invalid" });
        await assert.rejects(() => node.write(size, pattern(10, 11)), { kind: "no-space" });
        await assert.rejects(() => node.writeZeroes(size - 1, 2), { kind: "no-space" });
        await assert.rejects(() => node.trim(size, 1), { kind: "invalid" });
        await assert.rejects(() => node.blockStatus(size, 1), { kind: "invalid" });
      });
      await withNode(path, { direct, growable: true }, async (node) => {
        const expected = new Uint8Array(size + 512);
        expected.set(pattern(size, 10));
        assert.deepEqual(await readBack(node, size - 512, 1024), expected.subarray(size - 512));
        assert.equal(node.size, size, `direct ${direct}: reading does not grow`);
        await node.write(size + 100, pattern(10, 11));
        assert.equal(node.size, size + 110);
        await node.writeZeroes(size + 4 * KiB, 8 * KiB, { mayTrim: true });
        assert.equal(node.size, size + 12 * KiB);
        const grown = new Uint8Array(size + 12 * KiB);
        grown.set(pattern(size, 10));
        grown.set(pattern(10, 11), size + 100);
        assert.deepEqual(await readBack(node, 0, size + 12 * KiB), grown, `direct ${direct}`);
      });
      const onDisk = await Deno.readFile(path);
      assert.equal(onDisk.length, size + 12 * KiB, `direct ${direct}`);
      assert.deepEqual(
        onDisk.subarray(size + 100, size + 110),
        pattern(10, 11),
        `direct ${direct}`,
      );
    }
  });
});

Deno.test("file node: read-only refuses changes with kind read-only", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/disk.img`;
    await Deno.writeFile(path, pattern(8192, 1));
    await withNode(path, { readOnly: true }, async (node) => {
      await assert.rejects(() => node.write(0, new Uint8Array(1)), { kind: "read-only" });
      await assert.rejects(() => node.writeZeroes(0, 512), { kind: "read-only" });
      await assert.rejects(() => node.trim(0, 512), { kind: "read-only" });
      assert.deepEqual(await readBack(node, 0, 8192), pattern(8192, 1));
    });
  });
});

Deno.test("file node: a file that shrank gives an io error, never stale bytes", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/disk.img`;
    await Deno.writeFile(path, pattern(64 * KiB, 1));
    await withNode(path, {}, async (node) => {
      await Deno.truncate(path, 10 * KiB);
      await assert.rejects(() => readBack(node, 8 * KiB, 8 * KiB), { kind: "io" });
      await assert.rejects(() => readBack(node, 32 * KiB, 4 * KiB), { kind: "io" });
    });
  });
});

Deno.test("file node: opening a missing file is kind not-found", async () => {
  await withTempDir(async (dir) => {
    await assert.rejects(() => FileNode.open(`${dir}/missing.img`), (error: Error) => {
      assert.equal((error as { kind?: string }).kind, "not-found");
      assert.match(error.message, /^Could not open '.*missing\.img': No such file or directory$/);
      return true;
    });
  });
});

Deno.test("file node: close waits for requests in flight, later requests fail", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/disk.img`;
    await makeSparseFile(path, 4 * MiB);
    const node = await FileNode.open(path);
    const writing = node.write(0, pattern(4 * MiB, 2));
    const closing = node.close();
    await writing;
    await closing;
    await node.close();
    await assert.rejects(() => readBack(node, 0, 1), { kind: "io" });
    assert.deepEqual(await Deno.readFile(path), pattern(4 * MiB, 2));
  });
});

Deno.test("libc: errno values map to error kinds and strerror messages", () => {
  assert.equal(errnoKind(Errno.ENOSPC), "no-space");
  assert.equal(errnoKind(Errno.EDQUOT), "no-space");
  assert.equal(errnoKind(Errno.EFBIG), "no-space");
  assert.equal(errnoKind(Errno.EROFS), "read-only");
  assert.equal(errnoKind(Errno.EPERM), "read-only");
  assert.equal(errnoKind(Errno.EACCES), "read-only");
  assert.equal(errnoKind(Errno.EOPNOTSUPP), "not-supported");
  assert.equal(errnoKind(Errno.EINVAL), "invalid");
  assert.equal(errnoKind(Errno.ENOENT), "not-found");
  assert.equal(errnoKind(Errno.EAGAIN), "busy");
  assert.equal(errnoKind(Errno.EIO), "io");
  assert.equal(errnoKind(Errno.ENXIO), "io");
  const error = errnoError("pwrite", Errno.ENOSPC);
  assert.equal(error.kind, "no-space");
  assert.equal(error.message, "pwrite: No space left on device");
});

Deno.test("file node: without FFI the portable fallback reads and writes, unlocked only", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/disk.img`;
    await makeSparseFile(path, MiB);
    const script = `${dir}/portable.ts`;
    const moduleUrl = new URL("../../src/block/file.ts", import.meta.url).href;
    await Deno.writeTextFile(
      script,
      `import { FileNode } from ${JSON.stringify(moduleUrl)};
// Writable with its lock (the default) is refused: the lock needs FFI.
const locked = await FileNode.open(${JSON.stringify(path)}).then(() => "opened", (e) => e.kind);
const node = await FileNode.open(${JSON.stringify(path)}, { discard: "unmap", lock: false });
await Promise.all([1, 2, 3].map((i) => node.write(i * 1000 + 1, new Uint8Array(700).fill(i))));
await node.writeZeroes(2100, 100, { fua: true });
let fast = "ok";
await node.writeZeroes(0, 10, { fast: true }).catch((error) => fast = error.kind);
await node.trim(0, 4096);
await node.flush();
const back = new Uint8Array(3000);
await node.read(1000, back);
const status = await node.blockStatus(0, node.size);
console.log(JSON.stringify({ caps: node.capabilities, back: [...back], status, fast, locked }));
await node.close();
`,
    );
    const output = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--no-config",
        `--allow-read=${dir},${new URL("../../", import.meta.url).pathname}`,
        `--allow-write=${dir}`,
        script,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
    const result = JSON.parse(new TextDecoder().decode(output.stdout));
    assert.deepEqual(result.caps, {
      writable: true,
      trim: false,
      fastZero: false,
      cache: false,
      multiConn: true,
      blockStatus: false,
    });
    assert.equal(result.fast, "not-supported");
    assert.equal(result.locked, "not-supported");
    assert.deepEqual(result.status, [{ length: MiB, data: true, zero: false, allocated: true }]);
    const expected = new Uint8Array(3000);
    for (const i of [1, 2, 3]) expected.fill(i, i * 1000 + 1 - 1000, i * 1000 + 701 - 1000);
    expected.fill(0, 1100, 1200);
    assert.deepEqual(result.back, [...expected]);
  });
});
