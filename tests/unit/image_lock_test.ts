import assert from "node:assert/strict";
import { FileNode } from "../../src/block/file.ts";
import { lockImage, READ_ONLY_IMAGE, WRITABLE_IMAGE } from "../../src/block/image-lock.ts";
import { loadLibc, OpenFlag } from "../../src/block/libc.ts";

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
    const node = await FileNode.open(path);
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
    const node = await FileNode.open(path, { readOnly: true });
    try {
      assert.deepEqual(await lockedRanges(path), ["100-100", "203-203"]);
    } finally {
      await node.close();
    }
  });
});

Deno.test("image lock: qemu-io cannot write while a writable node is open, but can read", async () => {
  await withImage(async (path) => {
    const node = await FileNode.open(path);
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
    const node = await FileNode.open(path);
    try {
      await assertBusy(FileNode.open(path), 'Failed to get "write" lock', path);
      assert.deepEqual(await lockedRanges(path), ["100-101", "201-201", "203-203"]);
    } finally {
      await node.close();
    }
    const again = await FileNode.open(path);
    await again.close();
  });
});

Deno.test("image lock: read-only nodes coexist with each other and with qemu-io -r", async () => {
  await withImage(async (path) => {
    const first = await FileNode.open(path, { readOnly: true });
    try {
      const second = await FileNode.open(path, { readOnly: true });
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
      await assertBusy(FileNode.open(path), 'Failed to get shared "write" lock', path);
      const reader = await FileNode.open(path, { readOnly: true });
      await reader.close();
    });
    const node = await FileNode.open(path);
    await node.close();
  });
});

Deno.test("image lock: a writable node opens beside qemu-io -r", async () => {
  await withImage(async (path) => {
    await whileQemuIoHolds(path, ["-r"], async () => {
      const node = await FileNode.open(path);
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

Deno.test("image lock: a refused lockImage leaves no byte locked", async () => {
  const libc = loadLibc();
  assert.ok(libc, "FFI is needed");
  await withImage(async (path) => {
    const open = () => libc.open(path, OpenFlag.READ_WRITE | OpenFlag.CLOSE_ON_EXEC);
    let holder: number | undefined = open();
    const refused = open();
    try {
      lockImage(holder, path, WRITABLE_IMAGE);
      assert.throws(() => lockImage(refused, path, WRITABLE_IMAGE), { kind: "busy" });
      libc.close(holder);
      holder = undefined;
      // Had `refused` kept any of its bytes, this writer would be refused too.
      const writer = open();
      try {
        lockImage(writer, path, WRITABLE_IMAGE);
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
      lockImage(writer, path, WRITABLE_IMAGE);
      lockImage(reader, path, READ_ONLY_IMAGE);
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
