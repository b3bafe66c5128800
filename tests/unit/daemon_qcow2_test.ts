import assert from "node:assert/strict";
import { join } from "node:path";
import { Daemon } from "../../src/daemon/daemon.ts";
import { FileNode } from "../../src/block/file.ts";
import { createQcow2 } from "../../src/block/qcow2/qcow2-node.ts";
import { backingPath } from "../../src/daemon/qcow2-nodes.ts";
import { Logger } from "../../src/log.ts";

/** Create an empty qcow2 image at `path` naming `backing` (qcow2) as its backing file. */
async function qcow2(path: string, backing?: string): Promise<void> {
  await Deno.writeFile(path, new Uint8Array(0));
  const file = await FileNode.open(path, { growable: true });
  try {
    await createQcow2(file, {
      size: 1 << 20,
      ...(backing !== undefined && { backing: { filename: backing, format: "qcow2" } }),
    });
    await file.flush();
  } finally {
    await file.close();
  }
}

async function withDaemon(body: (daemon: Daemon, dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  const daemon = new Daemon(new Logger());
  try {
    await body(daemon, dir);
  } finally {
    await daemon.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("backingPath: relative names join the image's directory as text, absolute ones stay", () => {
  assert.equal(backingPath("top.qcow2", "base.qcow2"), "base.qcow2");
  assert.equal(backingPath("sub/top.qcow2", "../base.qcow2"), "sub/../base.qcow2");
  assert.equal(backingPath("/a/b/top.qcow2", "c/base.qcow2"), "/a/b/c/base.qcow2");
  assert.equal(backingPath("/a/top.qcow2", "/x/base.qcow2"), "/x/base.qcow2");
});

Deno.test("a chain from headers: generated read-only backing nodes, by role, nested in queries", async () => {
  await withDaemon(async (daemon, dir) => {
    await Deno.mkdir(join(dir, "sub"));
    await qcow2(join(dir, "base.qcow2"));
    await qcow2(join(dir, "sub", "top.qcow2"), "../base.qcow2");
    const filename = join(dir, "sub", "top.qcow2");
    await daemon.blockdevAdd({
      driver: "qcow2",
      "node-name": "top",
      file: { driver: "file", filename },
    });
    const top = daemon.nodes.get("top")!;
    assert.deepEqual(top.children.map((child) => [child.role, child.owned]), [
      ["file", true],
      ["backing", true],
    ]);
    const [nested] = (await daemon.queryNamedBlockNodes()).filter((n) => n["node-name"] === "top");
    assert.equal(nested.backing_file, `${dir}/sub/../base.qcow2`);
    assert.equal(nested.backing_file_depth, 1);
    assert.equal(nested.image["backing-filename"], "../base.qcow2");
    assert.equal(nested.image["backing-image"]?.filename, `${dir}/sub/../base.qcow2`);
    const flat = await daemon.queryNamedBlockNodes(true);
    assert.equal(flat.find((n) => n["node-name"] === "top")!.image["backing-image"], undefined);
    const backing = flat.find((n) => n.file === `${dir}/sub/../base.qcow2` && n.drv === "qcow2");
    assert.equal(backing?.ro, true);
    assert.match(backing!["node-name"]!, /^#block\d+$/);
    await assert.rejects(daemon.blockdevDel(backing!["node-name"]!), /Failed to find node/);
    await daemon.blockdevDel("top");
    assert.deepEqual(await daemon.queryNamedBlockNodes(), [], "the chain went with its top");
  });
});

Deno.test("loops and missing backing files are refused, and nothing is left open", async () => {
  await withDaemon(async (daemon, dir) => {
    await qcow2(join(dir, "a.qcow2"), "b.qcow2");
    await qcow2(join(dir, "b.qcow2"), "a.qcow2");
    await qcow2(join(dir, "m.qcow2"), "missing.qcow2");
    const open = (name: string, extra = {}) =>
      daemon.blockdevAdd({
        driver: "qcow2",
        "node-name": "n",
        "read-only": true,
        file: { driver: "file", filename: join(dir, name) },
        ...extra,
      });
    await assert.rejects(
      open("a.qcow2"),
      /Could not open backing file: .*creates an infinite loop/,
    );
    await assert.rejects(
      open("m.qcow2"),
      /^DenbdError: Could not open backing file: Could not open .*missing.qcow2/,
    );
    assert.deepEqual(await daemon.queryNamedBlockNodes(), []);
    // backing null (or the deprecated ""): no backing, whatever the header says.
    await open("m.qcow2", { backing: "" });
    assert.equal(daemon.nodes.get("n")!.children.length, 1);
  });
});

Deno.test("blockdev-del of a node used as backing is refused with QEMU's message", async () => {
  await withDaemon(async (daemon, dir) => {
    await qcow2(join(dir, "base.qcow2"));
    await qcow2(join(dir, "top.qcow2"));
    const file = (name: string) => ({ driver: "file" as const, filename: join(dir, name) });
    await daemon.blockdevAdd({
      driver: "qcow2",
      "node-name": "b",
      "read-only": true,
      file: file("base.qcow2"),
    });
    await daemon.blockdevAdd({
      driver: "qcow2",
      "node-name": "t",
      file: file("top.qcow2"),
      backing: "b",
    });
    await assert.rejects(
      daemon.blockdevDel("b"),
      /^DenbdError: Node 'b' is busy: node is used as backing hd of 't'$/,
    );
    await daemon.blockdevDel("t");
    await daemon.blockdevDel("b");
  });
});
