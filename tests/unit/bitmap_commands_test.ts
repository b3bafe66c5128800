import assert from "node:assert/strict";
import { DirtyBitmapCommands } from "../../src/block/bitmap-commands.ts";
import { DirtyTrackingNode } from "../../src/block/dirty-tracking.ts";
import { MemoryNode } from "../../src/block/memory.ts";
import { DenbdError } from "../../src/errors.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

function setup() {
  const nodes = new Map([
    ["file0", new DirtyTrackingNode(new MemoryNode(64 * MiB))],
    ["file1", new DirtyTrackingNode(new MemoryNode(64 * MiB))],
    ["small", new DirtyTrackingNode(new MemoryNode(32 * MiB))],
    ["ro", new DirtyTrackingNode(new MemoryNode(64 * MiB, { readOnly: true }))],
  ]);
  return { nodes, commands: new DirtyBitmapCommands((name) => nodes.get(name)) };
}

/** Assert that `body` throws QEMU's `message`. */
function fails(body: () => unknown, message: string) {
  assert.throws(body, (error: unknown) => {
    assert.ok(error instanceof DenbdError, String(error));
    assert.equal(error.message, message);
    return true;
  });
}

Deno.test("block-dirty-bitmap-add: defaults, and QEMU's checks in QEMU's order", () => {
  const { commands, nodes } = setup();
  const b0 = commands.add("file0", "b0");
  assert.deepEqual(b0.info(), {
    name: "b0",
    recording: true,
    persistent: false,
    busy: false,
    granularity: 65536,
    count: 0,
  });
  commands.add("file0", "d0", { disabled: true, granularity: 512 });
  commands.add("file0", "big", { granularity: 2 ** 31 });
  assert.deepEqual(commands.query("file0").map((b) => [b.name, b.recording, b.granularity]), [
    ["big", true, 2 ** 31],
    ["d0", false, 512],
    ["b0", true, 65536],
  ]);
  assert.deepEqual(commands.query("nope"), []);

  fails(() => commands.add("nope", ""), "Bitmap name cannot be empty");
  fails(
    () => commands.add("nope", "b", { granularity: 3 }),
    "Cannot find device='nope' nor node-name='nope'",
  );
  for (const granularity of [0, 256, 1000, 2 ** 32]) {
    fails(
      () => commands.add("file0", "b0", { granularity, persistent: true }),
      "Granularity must be power of 2 and at least 512",
    );
  }
  fails(
    () => commands.add("file0", "b0", { persistent: true }),
    "Can't store persistent bitmaps to file0: Operation not supported",
  );
  fails(() => commands.add("file0", "b0"), "Bitmap already exists: b0");
  commands.add("file0", "n".repeat(1023));
  fails(
    () => commands.add("file0", "m".repeat(1024)),
    `Bitmap name too long: ${"m".repeat(1024)}`,
  );
  // Names are measured in UTF-8 bytes.
  fails(
    () => commands.add("file0", "é".repeat(512)),
    `Bitmap name too long: ${"é".repeat(512)}`,
  );
  // A read-only node may have (non-persistent) bitmaps.
  commands.add("ro", "r");
  assert.equal(nodes.get("ro")!.bitmaps.length, 1);
});

Deno.test("remove, clear, enable, disable: lookups and busy bitmaps", () => {
  const { commands, nodes } = setup();
  const b0 = commands.add("file0", "b0");
  for (const op of ["remove", "clear", "enable", "disable"] as const) {
    fails(() => commands[op]("nope", "b0"), "Node 'nope' not found");
    fails(() => commands[op]("file0", "zz"), "Dirty bitmap 'zz' not found");
  }
  nodes.get("file0")!.bitmaps.markDirty(0, 1);
  commands.disable("file0", "b0");
  commands.disable("file0", "b0");
  assert.equal(b0.enabled, false);
  commands.clear("file0", "b0");
  assert.equal(b0.count, 0);
  commands.enable("file0", "b0");
  commands.enable("file0", "b0");
  assert.equal(b0.enabled, true);

  const claim = commands.claimForExport(nodes.get("file0")!, ["b0"], false);
  for (const op of ["remove", "clear", "enable", "disable"] as const) {
    fails(
      () => commands[op]("file0", "b0"),
      "Bitmap 'b0' is currently in use by another operation and cannot be used",
    );
  }
  claim.release();
  commands.remove("file0", "b0");
  assert.equal(nodes.get("file0")!.bitmaps.find("b0"), undefined);
});

Deno.test("read-only and inconsistent bitmaps are refused where QEMU refuses them", () => {
  const { commands } = setup();
  const ro = commands.add("file0", "ro");
  const bad = commands.add("file0", "bad");
  const other = commands.add("file0", "other");
  ro.readOnly = true;
  bad.inconsistent = true;
  const readOnly = "Bitmap 'ro' is readonly and cannot be modified";
  const inconsistent = "Bitmap 'bad' is inconsistent and cannot be used";
  fails(() => commands.clear("file0", "ro"), readOnly);
  fails(() => commands.remove("file0", "ro"), readOnly);
  fails(() => commands.merge("file0", "ro", ["other"]), readOnly);
  commands.disable("file0", "ro");
  commands.merge("file0", "other", ["ro"]);

  fails(() => commands.clear("file0", "bad"), inconsistent);
  fails(() => commands.enable("file0", "bad"), inconsistent);
  fails(() => commands.merge("file0", "other", ["bad"]), inconsistent);
  assert.equal(bad.info().inconsistent, true);
  commands.remove("file0", "bad");
  assert.equal(other.count, 0);
});

Deno.test("block-dirty-bitmap-merge: sources by name or node, all or nothing", () => {
  const { commands, nodes } = setup();
  const b0 = commands.add("file0", "b0");
  commands.add("file0", "b1", { granularity: 512 });
  const s1 = commands.add("file1", "s1", { granularity: 4096, disabled: true });
  const z = commands.add("small", "z");
  nodes.get("file0")!.bitmaps.markDirty(MiB, 1);
  b0.clear();
  b0.enabled = false;

  fails(() => commands.merge("nope", "b0", []), "Node 'nope' not found");
  fails(
    () => commands.merge("file0", "zz", ["b1"]),
    "Dirty bitmap 'zz' not found",
  );
  fails(
    () => commands.merge("file0", "b0", ["zz"]),
    "Dirty bitmap 'zz' not found",
  );
  fails(
    () => commands.merge("file0", "b0", [{ node: "nope", name: "x" }]),
    "Node 'nope' not found",
  );
  fails(
    () => commands.merge("file1", "s1", ["b1"]),
    "Dirty bitmap 'b1' not found",
  );
  fails(
    () => commands.merge("file1", "s1", [{ node: "small", name: "z" }]),
    "Bitmaps are of different sizes (destination size is 67108864, source size is 33554432) " +
      "and can't be merged",
  );
  // A later failing source leaves the target unchanged.
  fails(
    () => commands.merge("file1", "s1", [{ node: "file0", name: "b1" }, "nope"]),
    "Dirty bitmap 'nope' not found",
  );
  assert.equal(s1.count, 0);

  commands.merge("file0", "b0", []);
  commands.merge("file0", "b0", ["b1", "b0"]);
  assert.equal(b0.count, 64 * KiB);
  assert.equal(b0.enabled, false);
  commands.merge("file1", "s1", [{ node: "file0", name: "b1" }]);
  assert.equal(s1.count, 4096);
  assert.equal(z.count, 0);

  // The target is checked before the sources.
  const claim = commands.claimForExport(nodes.get("file0")!, ["b0", "b1"], false);
  fails(
    () => commands.merge("file0", "b0", ["b1"]),
    "Bitmap 'b0' is currently in use by another operation and cannot be used",
  );
  fails(
    () => commands.merge("file1", "s1", [{ node: "file0", name: "b1" }]),
    "Bitmap 'b1' is currently in use by another operation and cannot be used",
  );
  claim.release();
});

Deno.test("block-export-add bitmaps: lookups, read-only exports, busy while exported", () => {
  const { commands, nodes } = setup();
  const file0 = nodes.get("file0")!;
  const b0 = commands.add("file0", "b0");
  const d0 = commands.add("file0", "d0", { disabled: true });
  const s1 = commands.add("file1", "s1");
  commands.add("ro", "r");

  fails(() => commands.claimForExport(file0, ["nope"], false), "Bitmap 'nope' is not found");
  fails(
    () => commands.claimForExport(file0, [{ node: "nope", name: "x" }], false),
    "Node 'nope' not found",
  );
  fails(
    () => commands.claimForExport(file0, [{ node: "file1", name: "x" }], false),
    "Dirty bitmap 'x' not found",
  );
  fails(
    () => commands.claimForExport(file0, ["b0"], true),
    "Enabled bitmap 'b0' incompatible with readonly export",
  );
  // Not checked for bitmaps given with their node, nor on a read-only node.
  commands.claimForExport(file0, [{ node: "file0", name: "b0" }], true).release();
  commands.claimForExport(nodes.get("ro")!, ["r"], true).release();
  // A failed claim marks nothing busy.
  fails(() => commands.claimForExport(file0, ["d0", "nope"], false), "Bitmap 'nope' is not found");
  assert.equal(d0.busy, false);

  const refs = ["d0", "b0", "d0", { node: "file1", name: "s1" }];
  const claim = commands.claimForExport(file0, refs, false);
  assert.deepEqual(claim.bitmaps.map((b) => b.name), ["d0", "b0", "s1"]);
  assert.ok(d0.busy && b0.busy && s1.busy);
  fails(
    () => commands.claimForExport(nodes.get("file1")!, ["s1"], false),
    "Bitmap 's1' is currently in use by another operation and cannot be used",
  );
  claim.release();
  claim.release();
  assert.ok(!d0.busy && !b0.busy && !s1.busy);
});

Deno.test("x-debug-block-dirty-bitmap-sha256 works on busy bitmaps and reports lookups", async () => {
  const { commands, nodes } = setup();
  commands.add("file0", "b0");
  const claim = commands.claimForExport(nodes.get("file0")!, ["b0"], false);
  assert.equal(
    await commands.sha256("file0", "b0"),
    "38723a2e5e8a17aa7950dc008209944e898f69a7bd10a23c839d341e935fd5ca",
  );
  await assert.rejects(() => commands.sha256("file0", "x"), {
    message: "Dirty bitmap 'x' not found",
  });
  claim.release();
});
