/**
 * Differential tests of `denbd daemon`'s block graph beyond raw: the
 * detect-zeroes option, and qcow2 nodes with their file and backing
 * children (a chain opened from the headers, a backing given by node name,
 * inline or null), as query-named-block-nodes shows them (flat and nested),
 * compared with qemu-storage-daemon 7.2. The qcow2 images are made by
 * qemu-img in each daemon's directory.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Daemon } from "../../src/daemon/daemon.ts";
import { Logger } from "../../src/log.ts";
import { check, makeSparseImage, needs, withTempDir } from "./harness.ts";
import { type Json, qmp, withDaemonPair } from "./daemon_harness.ts";

const MiB = 1 << 20;

const add = (args: Json) => qmp("blockdev-add", args);
const del = (name: string) => qmp("blockdev-del", { "node-name": name });
const file = (name: string) => ({ driver: "file", filename: `$DIR/${name}` });

Deno.test(
  "detect-zeroes on file and raw nodes answers and is described as qsd's",
  needs("qemu-storage-daemon"),
  async () => {
    const setup = (dir: string) => makeSparseImage(join(dir, "e.img"), MiB);
    await withDaemonPair({ args: [], setup }, (pair) =>
      pair.expectSame([
        add({ ...file("e.img"), "node-name": "f0", "detect-zeroes": "on" }),
        add({ ...file("e.img"), "node-name": "f1", "detect-zeroes": "unmap" }),
        add({ ...file("e.img"), "node-name": "f1", "detect-zeroes": "bogus" }),
        add({ driver: "raw", "node-name": "r0", file: "f0", "detect-zeroes": "unmap" }),
        add({
          driver: "raw",
          "node-name": "r0",
          file: "f0",
          "detect-zeroes": "unmap",
          discard: "unmap",
        }),
        qmp("query-named-block-nodes"),
      ]));
  },
);

/** base.qcow2 <- mid.qcow2 <- top.qcow2 (relative names), sub/rel.qcow2 -> ../base.qcow2, miss.qcow2 -> missing. */
async function chain(dir: string): Promise<void> {
  const create = (...args: string[]) => check("qemu-img", ["create", "-q", "-f", "qcow2", ...args]);
  await create(join(dir, "base.qcow2"), "1M");
  await create("-b", "base.qcow2", "-F", "qcow2", join(dir, "mid.qcow2"));
  await create("-b", "mid.qcow2", "-F", "qcow2", join(dir, "top.qcow2"));
  await create(join(dir, "other.qcow2"), "1M");
  await create(join(dir, "lone.qcow2"), "1M");
  await create(join(dir, "lone2.qcow2"), "1M");
  await Deno.mkdir(join(dir, "sub"));
  await create("-b", "../base.qcow2", "-F", "qcow2", join(dir, "sub", "rel.qcow2"));
  await create("-u", "-b", "missing.qcow2", "-F", "qcow2", join(dir, "miss.qcow2"), "1M");
}

Deno.test(
  "qcow2 nodes: backing chains from headers, by name, inline and null, as qsd shows them",
  needs("qemu-storage-daemon", "qemu-img"),
  async () => {
    await withDaemonPair({ args: [], setup: chain }, (pair) =>
      pair.expectSame([
        add({ driver: "qcow2", "node-name": "top", file: file("top.qcow2") }),
        qmp("query-named-block-nodes"),
        qmp("query-named-block-nodes", { flat: true }),
        add({ driver: "qcow2", "node-name": "rel", file: file("sub/rel.qcow2") }),
        add({ driver: "qcow2", "node-name": "miss", file: file("miss.qcow2") }),
        add({ driver: "qcow2", "node-name": "o", "read-only": true, file: file("other.qcow2") }),
        add({ driver: "qcow2", "node-name": "nul", file: file("miss.qcow2"), backing: null }),
        add({ driver: "qcow2", "node-name": "byname", file: file("lone.qcow2"), backing: "o" }),
        add({ driver: "qcow2", "node-name": "x", file: file("lone2.qcow2"), backing: "nonode" }),
        qmp("query-named-block-nodes"),
        del("o"),
        del("byname"),
        del("o"),
        del("top"),
        del("rel"),
        del("nul"),
        qmp("query-named-block-nodes", { flat: true }),
        add({
          driver: "qcow2",
          "node-name": "inl",
          file: file("top.qcow2"),
          backing: { driver: "qcow2", file: file("other.qcow2"), "read-only": true },
        }),
        qmp("query-named-block-nodes"),
        qmp("query-block"),
      ]));
  },
);

Deno.test(
  "an internal snapshot of a chain opens the backing file once (qemu-nbd -l's node)",
  needs("qemu-img", "qemu-io"),
  () =>
    withTempDir(async (dir) => {
      const daemon = new Daemon(new Logger());
      try {
        const top = join(dir, "top.qcow2");
        await check("qemu-img", ["create", "-q", "-f", "raw", join(dir, "base.raw"), "4M"]);
        await check("qemu-img", [
          "create",
          "-q",
          "-f",
          "qcow2",
          "-b",
          "base.raw",
          "-F",
          "raw",
          top,
        ]);
        await check("qemu-io", ["-c", "write -P 1 0 64k", top]);
        await check("qemu-img", ["snapshot", "-c", "s1", top]);
        await daemon.blockdevAdd({
          driver: "qcow2",
          "node-name": "disk",
          "read-only": true,
          file: { driver: "file", filename: top },
        }, { loadSnapshot: "s1" });
        const files = (await daemon.queryNamedBlockNodes()).map((node) => node.file);
        assert.deepEqual(files.filter((file) => file === join(dir, "base.raw")).length, 2);
        assert.equal(files.length, 4, "top, its file, the backing raw node and its file");
      } finally {
        await daemon.shutdown("answered");
      }
    }),
);
