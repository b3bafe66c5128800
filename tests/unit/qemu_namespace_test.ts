import assert from "node:assert/strict";
import { join } from "node:path";
import {
  ALLOCATION_DEPTH_CONTEXT,
  NBD_STATE_DIRTY,
  qemuNamespace,
} from "../../src/nbd/server/qemu-namespace.ts";
import { ExportTable, NbdExport } from "../../src/nbd/server/export.ts";
import { HandshakeState } from "../../src/nbd/server/handshake.ts";
import { MemoryNode } from "../../src/block/memory.ts";
import { LayeredNode } from "./layered_node.ts";
import { DirtyBitmap } from "../../src/block/dirty-bitmap.ts";
import { Daemon } from "../../src/daemon/daemon.ts";
import { NbdClient } from "../../src/nbd/client/client.ts";
import { Logger } from "../../src/log.ts";
import { NBD_CLIENT_FLAG, NBD_OPT, NBD_REP, NBD_SIZE } from "../../src/nbd/protocol.ts";
import {
  decodeOptionReplyHeader,
  decodeRepMetaContext,
  encodeMetaContextRequest,
} from "../../src/nbd/wire.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

function handshake(options: { depth?: boolean; bitmaps?: string[] } = {}) {
  const node = new MemoryNode(MiB);
  const bitmaps = (options.bitmaps ?? []).map((name) => new DirtyBitmap(name, MiB));
  const table = new ExportTable();
  table.add(
    new NbdExport({
      name: "e",
      node,
      extraNamespaces: [
        qemuNamespace({ allocationDepth: options.depth ? node : undefined, bitmaps }),
      ],
    }),
  );
  const state = new HandshakeState(table);
  state.acceptClientFlags(NBD_CLIENT_FLAG.FIXED_NEWSTYLE | NBD_CLIENT_FLAG.NO_ZEROES);
  state.handleOption(NBD_OPT.STRUCTURED_REPLY, new Uint8Array());
  const ask = (option: number, queries: string[]) =>
    state.handleOption(option, encodeMetaContextRequest({ exportName: "e", queries }))
      .replies.map((bytes) => ({
        ...decodeOptionReplyHeader(bytes.subarray(0, NBD_SIZE.OPTION_REPLY_HEADER)),
        payload: bytes.subarray(NBD_SIZE.OPTION_REPLY_HEADER),
      }))
      .filter((reply) => reply.type === NBD_REP.META_CONTEXT)
      .map((reply) => decodeRepMetaContext(reply.payload).name);
  return {
    list: (...queries: string[]) => ask(NBD_OPT.LIST_META_CONTEXT, queries),
    set: (...queries: string[]) => ask(NBD_OPT.SET_META_CONTEXT, queries),
  };
}

const DEPTH = ALLOCATION_DEPTH_CONTEXT;
const B1 = "qemu:dirty-bitmap:b1";
const A = "qemu:dirty-bitmap:a";
const B0 = "qemu:dirty-bitmap:b0";

Deno.test("qemu namespace: LIST answers as qemu-storage-daemon 7.2 does", () => {
  // qsd: allocation-depth=on, bitmaps b1, a, b0 (in that order).
  const { list } = handshake({ depth: true, bitmaps: ["b1", "a", "b0"] });
  assert.deepEqual(list(), ["base:allocation", DEPTH, B1, A, B0]);
  assert.deepEqual(list("qemu:"), [DEPTH, B1, A, B0]);
  assert.deepEqual(list("qemu:dirty-bitmap:"), [B1, A, B0]);
  assert.deepEqual(list("qemu:allocation-depth"), [DEPTH]);
  assert.deepEqual(list("qemu:dirty-bitmap:a"), [A]);
  assert.deepEqual(list("base:allocation", "qemu:dirty-bitmap:a"), ["base:allocation", A]);
  for (
    const nothing of [
      "qemu:dirty-bitmap:b",
      "qemu:dirty-bitmap:b1x",
      "qemu:dirty-bitmap:B1",
      "qemu:dirty-bitmap",
      "qemu:allocation-depth:",
      "qemu:allocation",
      "qemu:x",
      "QEMU:",
    ]
  ) {
    assert.deepEqual(list(nothing), [], nothing);
  }
});

Deno.test("qemu namespace: LIST without allocation depth or bitmaps (qemu-nbd -A, plain exports)", () => {
  const depthOnly = handshake({ depth: true });
  assert.deepEqual(depthOnly.list(), ["base:allocation", DEPTH]);
  assert.deepEqual(depthOnly.list("qemu:"), [DEPTH]);
  assert.deepEqual(depthOnly.list("qemu:dirty-bitmap:"), []);
  const plain = handshake();
  assert.deepEqual(plain.list(), ["base:allocation"]);
  assert.deepEqual(plain.list("qemu:"), []);
  assert.deepEqual(plain.list("qemu:allocation-depth"), []);
  // A bitmap given twice is offered once.
  assert.deepEqual(handshake({ bitmaps: ["b1", "b1"] }).list("qemu:"), [B1]);
});

Deno.test("qemu namespace: SET selects exact names only", () => {
  const { set } = handshake({ depth: true, bitmaps: ["b0"] });
  assert.deepEqual(set("qemu:"), []);
  assert.deepEqual(set("qemu:dirty-bitmap:"), []);
  assert.deepEqual(set("qemu:allocation-depth"), [DEPTH]);
  assert.deepEqual(set("base:allocation", DEPTH, B0, B0), ["base:allocation", DEPTH, B0]);
});

Deno.test("qemu namespace: block status of allocation depth and of a dirty bitmap", async () => {
  const node = new MemoryNode(MiB);
  const bitmap = new DirtyBitmap("b0", MiB);
  bitmap.mark(100 * KiB, 1);
  const space = qemuNamespace({ allocationDepth: node, bitmaps: [bitmap] });
  const depth = space.select(DEPTH)!;
  assert.deepEqual(await depth.statusOf(4096, 8192, 100), [{ length: 8192, flags: 1 }]);
  // Depths 0 (nothing below), 2 (the backing node), 1 (the node itself).
  const backing = new MemoryNode(1536);
  const layered = new LayeredNode(MiB, backing);
  await layered.write(1536, new Uint8Array(MiB - 1536));
  const chain = qemuNamespace({ allocationDepth: layered }).select(DEPTH)!;
  assert.deepEqual(await chain.statusOf(0, 4096, 100), [
    { length: 1536, flags: 2 },
    { length: 2560, flags: 1 },
  ]);
  assert.deepEqual(await chain.statusOf(0, 4096, 1), [{ length: 1536, flags: 2 }]);
  const shorter = new LayeredNode(MiB, new MemoryNode(512));
  await shorter.write(1536, new Uint8Array(512));
  assert.deepEqual(
    await qemuNamespace({ allocationDepth: shorter }).select(DEPTH)!.statusOf(0, 4096, 100),
    // Past the end of the shorter backing node, its zeroes are at its depth (QEMU's report).
    [
      { length: 1536, flags: 2 },
      { length: 512, flags: 1 },
      { length: 2048, flags: 2 },
    ],
  );
  const dirty = space.select(B0)!;
  assert.deepEqual(await dirty.statusOf(0, MiB, 100), [
    { length: 64 * KiB, flags: 0 },
    { length: 64 * KiB, flags: NBD_STATE_DIRTY },
    { length: MiB - 128 * KiB, flags: 0 },
  ]);
  assert.deepEqual(await dirty.statusOf(70000, 10, 1), [{ length: 10, flags: 1 }]);
  assert.deepEqual(await dirty.statusOf(0, MiB, 1), [{ length: 64 * KiB, flags: 0 }]);
  assert.equal(space.select("qemu:dirty-bitmap:"), undefined);
  assert.equal(space.select("qemu:"), undefined);
});

Deno.test("daemon: an export with bitmaps and allocation depth, written through NBD", async () => {
  const dir = await Deno.makeTempDir({ prefix: "denbd-test-" });
  const daemon = new Daemon(new Logger());
  try {
    const image = join(dir, "d.img");
    await Deno.writeFile(image, new Uint8Array(4 * MiB));
    await daemon.blockdevAdd({ driver: "file", "node-name": "file0", filename: image });
    await daemon.blockdevAdd({ driver: "raw", "node-name": "fmt0", file: "file0" });
    const b0 = daemon.dirtyBitmaps.add("file0", "b0");
    const x = daemon.dirtyBitmaps.add("fmt0", "x", { granularity: 512 });
    const socket = join(dir, "nbd.sock");
    daemon.nbdServerStart({ addr: { type: "unix", path: socket } });
    assert.throws(
      () =>
        daemon.blockExportAdd({
          type: "nbd",
          id: "ro",
          "node-name": "fmt0",
          name: "ro",
          bitmaps: ["b0"],
        }),
      { message: "Bitmap 'b0' is not found" },
    );
    assert.throws(
      () =>
        daemon.blockExportAdd({
          type: "nbd",
          id: "ro",
          "node-name": "fmt0",
          name: "ro",
          bitmaps: ["x"],
        }),
      { message: "Enabled bitmap 'x' incompatible with readonly export" },
    );
    daemon.blockExportAdd({
      type: "nbd",
      id: "e0",
      "node-name": "fmt0",
      name: "e",
      writable: true,
      "allocation-depth": true,
      bitmaps: [{ node: "file0", name: "b0" }, "x"],
    });
    assert.ok(b0.busy && x.busy);
    assert.throws(() => daemon.dirtyBitmaps.clear("file0", "b0"), {
      message: "Bitmap 'b0' is currently in use by another operation and cannot be used",
    });
    const client = await NbdClient.connect(`nbd+unix:///e?socket=${socket}`, {
      metaContexts: ["base:allocation", DEPTH, "qemu:dirty-bitmap:b0", "qemu:dirty-bitmap:x"],
    });
    try {
      await client.write(100 * KiB, new Uint8Array(1).fill(1));
      await client.zero(MiB, 4096);
      const status = (context: string) => client.blockStatus(0, 4 * MiB, { context });
      assert.deepEqual(await status(DEPTH), [{ length: 4 * MiB, flags: 1 }]);
      assert.deepEqual(await status("qemu:dirty-bitmap:b0"), [
        { length: 64 * KiB, flags: 0 },
        { length: 64 * KiB, flags: 1 },
        { length: MiB - 128 * KiB, flags: 0 },
        { length: 64 * KiB, flags: 1 },
        { length: 3 * MiB - 64 * KiB, flags: 0 },
      ]);
      assert.deepEqual(await status("qemu:dirty-bitmap:x"), [
        { length: 100 * KiB, flags: 0 },
        { length: 512, flags: 1 },
        { length: MiB - 100 * KiB - 512, flags: 0 },
        { length: 4096, flags: 1 },
        { length: 3 * MiB - 4096, flags: 0 },
      ]);
    } finally {
      await client.disconnect();
    }
  } finally {
    await daemon.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
