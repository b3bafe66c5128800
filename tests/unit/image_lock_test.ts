import assert from "node:assert/strict";
import { FileNode, type FileNodeOptions } from "../../src/block/file.ts";
import { ImageLock } from "../../src/block/image-lock.ts";
import { loadLibc, OpenFlag } from "../../src/block/libc.ts";
import {
  lockRequestOf,
  READ_ONLY_USE,
  takePermissions,
  WRITABLE_USE,
} from "../../src/block/permissions.ts";
import { RawNode } from "../../src/block/raw.ts";
import { DirtyTrackingNode } from "../../src/block/dirty-tracking.ts";
import { LayeredNode } from "./layered_node.ts";
import { createQcow2, Qcow2Node } from "../../src/block/qcow2/qcow2-node.ts";

const WRITABLE_IMAGE = lockRequestOf([WRITABLE_USE]);
const READ_ONLY_IMAGE = lockRequestOf([READ_ONLY_USE]);

/** Open `path` and use it as the daemon does: writable or read-only, as the node is. */
async function openUsed(path: string, options: FileNodeOptions = {}): Promise<FileNode> {
  const node = await FileNode.open(path, options);
  try {
    takePermissions(node, options.readOnly ? READ_ONLY_USE : WRITABLE_USE);
  } catch (error) {
    await node.close();
    throw error;
  }
  return node;
}

/** Run `body` with a 1 MiB image in a fresh temporary directory, removed afterwards. */
async function withImage(body: (path: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "denbd-lock-" });
  try {
    const path = `${dir}/disk.img`;
    await Deno.writeFile(path, new Uint8Array(1 << 20));
    await body(path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

interface Outcome {
  code: number;
  output: string;
}

async function qemuIo(...args: string[]): Promise<Outcome> {
  const result = await new Deno.Command("qemu-io", { args, stdout: "piped", stderr: "piped" })
    .output();
  const decoder = new TextDecoder();
  return {
    code: result.code,
    output: decoder.decode(result.stdout) + decoder.decode(result.stderr),
  };
}

/** The OFD lock ranges held on `path`'s inode, as "start-end" strings, sorted. */
async function lockedRanges(path: string): Promise<string[]> {
  const inode = (await Deno.stat(path)).ino;
  const lines = (await Deno.readTextFile("/proc/locks")).split("\n");
  return lines
    .filter((line) => line.includes("OFDLCK") && !line.includes("->"))
    .map((line) => line.trim().split(/\s+/))
    .filter((fields) => fields.at(-3)?.endsWith(`:${inode}`))
    .map((fields) => `${fields.at(-2)}-${fields.at(-1)}`)
    .sort();
}

async function waitFor(condition: () => Promise<boolean>, what: string): Promise<void> {
  for (let attempt = 0; attempt < 100; attempt++) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Run `body` while an interactive `qemu-io` holds `path` open (read-write unless `-r`). */
async function whileQemuIoHolds(
  path: string,
  extraArgs: string[],
  body: () => Promise<void>,
): Promise<void> {
  const before = (await lockedRanges(path)).length;
  const child = new Deno.Command("qemu-io", {
    args: [...extraArgs, "-f", "raw", path],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  try {
    await waitFor(async () => (await lockedRanges(path)).length > before, "qemu-io's locks");
    await body();
  } finally {
    await child.stdin.close();
    await child.output();
  }
}

async function assertBusy(opening: Promise<unknown>, reason: string, path: string): Promise<void> {
  await assert.rejects(opening, (error: Error & { kind?: string }) => {
    assert.equal(error.kind, "busy");
    assert.equal(error.message, `${reason}\nIs another process using the image [${path}]?`);
    return true;
  });
}

Deno.test("image lock: a writable node holds bytes 100-101, 201 and 203", async () => {
  await withImage(async (path) => {
    const node = await openUsed(path);
    try {
      assert.deepEqual(await lockedRanges(path), ["100-101", "201-201", "203-203"]);
    } finally {
      await node.close();
    }
    assert.deepEqual(await lockedRanges(path), []);
  });
});

Deno.test("image lock: a read-only node holds bytes 100 and 203, like qemu-nbd -r", async () => {
  await withImage(async (path) => {
    const node = await openUsed(path, { readOnly: true });
    try {
      assert.deepEqual(await lockedRanges(path), ["100-100", "203-203"]);
    } finally {
      await node.close();
    }
  });
});

Deno.test("image lock: qemu-io cannot write while a writable node is open, but can read", async () => {
  await withImage(async (path) => {
    const node = await openUsed(path);
    try {
      const write = await qemuIo("-f", "raw", "-c", "write 0 512", path);
      assert.notEqual(write.code, 0);
      assert.match(write.output, /Failed to get "write" lock/);
      assert.match(write.output, /Is another process using the image/);
      const read = await qemuIo("-r", "-f", "raw", "-c", "read 0 512", path);
      assert.equal(read.code, 0, read.output);
      const info = await new Deno.Command("qemu-img", {
        args: ["info", "-f", "raw", path],
        stdout: "null",
        stderr: "piped",
      }).output();
      assert.equal(info.code, 0, new TextDecoder().decode(info.stderr));
    } finally {
      await node.close();
    }
    const write = await qemuIo("-f", "raw", "-c", "write -P 7 0 512", path);
    assert.equal(write.code, 0, write.output);
    assert.equal((await Deno.readFile(path))[0], 7);
  });
});

Deno.test("image lock: a second writable node is refused with kind busy", async () => {
  await withImage(async (path) => {
    const node = await openUsed(path);
    try {
      await assertBusy(openUsed(path), 'Failed to get "write" lock', path);
      assert.deepEqual(await lockedRanges(path), ["100-101", "201-201", "203-203"]);
    } finally {
      await node.close();
    }
    const again = await openUsed(path);
    await again.close();
  });
});

Deno.test("image lock: read-only nodes coexist with each other and with qemu-io -r", async () => {
  await withImage(async (path) => {
    const first = await openUsed(path, { readOnly: true });
    try {
      const second = await openUsed(path, { readOnly: true });
      try {
        const read = await qemuIo("-r", "-f", "raw", "-c", "read 0 512", path);
        assert.equal(read.code, 0, read.output);
      } finally {
        await second.close();
      }
    } finally {
      await first.close();
    }
  });
});

Deno.test("image lock: a writable node is refused while qemu-io has the image writable", async () => {
  await withImage(async (path) => {
    await whileQemuIoHolds(path, [], async () => {
      await assertBusy(openUsed(path), 'Failed to get shared "write" lock', path);
      const reader = await openUsed(path, { readOnly: true });
      await reader.close();
    });
    const node = await openUsed(path);
    await node.close();
  });
});

Deno.test("image lock: a writable node opens beside qemu-io -r", async () => {
  await withImage(async (path) => {
    await whileQemuIoHolds(path, ["-r"], async () => {
      const node = await openUsed(path);
      await node.close();
    });
  });
});

Deno.test("image lock: lock=false takes no lock and lets qemu-io write", async () => {
  await withImage(async (path) => {
    const node = await FileNode.open(path, { lock: false });
    try {
      assert.deepEqual(await lockedRanges(path), []);
      const write = await qemuIo("-f", "raw", "-c", "write 0 512", path);
      assert.equal(write.code, 0, write.output);
    } finally {
      await node.close();
    }
  });
});

Deno.test("image lock: a refused ImageLock.set leaves no byte locked", async () => {
  const libc = loadLibc();
  assert.ok(libc, "FFI is needed");
  await withImage(async (path) => {
    const open = () => libc.open(path, OpenFlag.READ_WRITE | OpenFlag.CLOSE_ON_EXEC);
    let holder: number | undefined = open();
    const refused = open();
    try {
      new ImageLock(holder, path).set(WRITABLE_IMAGE);
      assert.throws(() => new ImageLock(refused, path).set(WRITABLE_IMAGE), { kind: "busy" });
      libc.close(holder);
      holder = undefined;
      // Had `refused` kept any of its bytes, this writer would be refused too.
      const writer = open();
      try {
        new ImageLock(writer, path).set(WRITABLE_IMAGE);
        assert.deepEqual(await lockedRanges(path), ["100-101", "201-201", "203-203"]);
      } finally {
        libc.close(writer);
      }
    } finally {
      if (holder !== undefined) libc.close(holder);
      libc.close(refused);
    }
  });
});

Deno.test("image lock: the read-only request conflicts with nothing a writer holds", async () => {
  const libc = loadLibc();
  assert.ok(libc, "FFI is needed");
  await withImage(async (path) => {
    const writer = libc.open(path, OpenFlag.READ_WRITE | OpenFlag.CLOSE_ON_EXEC);
    const reader = libc.open(path, OpenFlag.READ_ONLY | OpenFlag.CLOSE_ON_EXEC);
    try {
      new ImageLock(writer, path).set(WRITABLE_IMAGE);
      new ImageLock(reader, path).set(READ_ONLY_IMAGE);
      assert.deepEqual(await lockedRanges(path), [
        "100-100",
        "100-101",
        "201-201",
        "203-203",
        "203-203",
      ]);
    } finally {
      libc.close(writer);
      libc.close(reader);
    }
  });
});

Deno.test("image lock: nothing is locked at open; users' permissions come and go", async () => {
  await withImage(async (path) => {
    const node = await FileNode.open(path);
    try {
      assert.deepEqual(await lockedRanges(path), []);
      const reader = takePermissions(node, READ_ONLY_USE);
      assert.deepEqual(await lockedRanges(path), ["100-100", "203-203"]);
      const writer = takePermissions(node, WRITABLE_USE);
      assert.deepEqual(await lockedRanges(path), ["100-101", "201-201", "203-203"]);
      writer.release();
      writer.release();
      assert.deepEqual(await lockedRanges(path), ["100-100", "203-203"]);
      reader.release();
      assert.deepEqual(await lockedRanges(path), []);
    } finally {
      await node.close();
    }
  });
});

Deno.test("image lock: a refused user leaves the node's locks as they were", async () => {
  await withImage(async (path) => {
    const node = await FileNode.open(path);
    try {
      takePermissions(node, READ_ONLY_USE);
      await whileQemuIoHolds(path, ["-r"], async () => {
        // qemu-io -r holds consistent read: a user that shares nothing conflicts with it.
        await assertBusy(
          Promise.try(() => takePermissions(node, { take: ["consistent read"], share: [] })),
          'Failed to get shared "consistent read" lock',
          path,
        );
        const ours = (await lockedRanges(path)).filter((range) => range !== "100-100");
        assert.deepEqual(ours, ["203-203"]);
      });
      const readOnly = await FileNode.open(path, { readOnly: true });
      try {
        assert.throws(() => takePermissions(readOnly, WRITABLE_USE), {
          kind: "read-only",
          message: "Block node is read-only",
        });
      } finally {
        await readOnly.close();
      }
    } finally {
      await node.close();
    }
  });
});

Deno.test("image lock: permissions reach the file through filters, a backing child gets read only", async () => {
  await withImage(async (path) => {
    const file = await FileNode.open(path);
    try {
      const top = new DirtyTrackingNode(RawNode.open(file));
      const grant = takePermissions(top, WRITABLE_USE);
      assert.deepEqual(await lockedRanges(path), ["100-101", "201-201", "203-203"]);
      grant.release();
      assert.deepEqual(await lockedRanges(path), []);
      // As the backing file of a writable layer: consistent read, sharing no write or resize
      // (the writable user does not share write), so qemu-io may read but not write.
      const layer = new LayeredNode(1 << 20, file);
      const used = takePermissions(layer, WRITABLE_USE);
      assert.deepEqual(await lockedRanges(path), ["100-100", "201-201", "203-203"]);
      const write = await qemuIo("-f", "raw", "-c", "write 0 512", path);
      assert.match(write.output, /Failed to get "write" lock/);
      used.release();
      // A parent that shares write lets the backing file be written and resized.
      takePermissions(layer, { take: ["consistent read"], share: ["consistent read", "write"] });
      assert.deepEqual(await lockedRanges(path), ["100-100"]);
    } finally {
      await file.close();
    }
  });
});

Deno.test("image lock: a writable qcow2 node takes write and resize on its file even for a reader", async () => {
  await withImage(async (path) => {
    await Deno.truncate(path, 0);
    const file = await FileNode.open(path, { growable: true });
    try {
      await createQcow2(file, { size: 1 << 20 });
      const image = await Qcow2Node.open(file);
      const grant = takePermissions(image, READ_ONLY_USE);
      // Holds consistent read (100), write (101) and resize (103); shares no write (201) or resize (203).
      assert.deepEqual(await lockedRanges(path), ["100-101", "103-103", "201-201", "203-203"]);
      grant.release();
      await image.close();
      const readOnly = await Qcow2Node.open(file, { readOnly: true });
      const reader = takePermissions(readOnly, READ_ONLY_USE);
      assert.deepEqual(await lockedRanges(path), ["100-100", "201-201", "203-203"]);
      reader.release();
      await readOnly.close();
    } finally {
      await file.close();
    }
  });
});
