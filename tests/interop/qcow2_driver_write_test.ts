/**
 * Writes through the qcow2 driver leave the image as qemu-io leaves it: the
 * same script (writes, zero writes with and without unmapping, discards)
 * run through a Qcow2Node and by qemu-io on copies of the same image, then
 * `qemu-img check` clean and `qemu-img convert` equal; on versions 2 and 3,
 * small and large clusters, narrow and wide refcounts, subclusters,
 * compressed clusters and a backing chain.
 */

import assert from "node:assert/strict";
import { copyFile } from "node:fs/promises";
import { join } from "node:path";
import { check, needs, run, withTempDir } from "./harness.ts";
import { assertSameBytes, openImage, qemuIo, qemuRead, readAll } from "./qcow2_driver_support.ts";
import type { BlockNode } from "../../src/block/node.ts";

const MiB = 1 << 20;

/** One step of a script, as qemu-io says it and as node calls. */
type Step =
  | { op: "write"; offset: number; length: number; pattern: number }
  | { op: "zero"; offset: number; length: number; unmap: boolean }
  | { op: "discard"; offset: number; length: number };

const SCRIPT: Step[] = [
  { op: "write", offset: 0, length: 4096, pattern: 0x11 },
  { op: "write", offset: 70000, length: 200000, pattern: 0x22 },
  { op: "write", offset: 1048064, length: 1024, pattern: 0x33 },
  { op: "write", offset: 72000, length: 1000, pattern: 0x34 },
  { op: "zero", offset: 2097152, length: 131072, unmap: false },
  { op: "write", offset: 3145728, length: 300000, pattern: 0x44 },
  { op: "zero", offset: 3150000, length: 5000, unmap: false },
  { op: "zero", offset: 3211264, length: 65536, unmap: true },
  { op: "discard", offset: 3276800, length: 100000 },
  { op: "zero", offset: 2170000, length: 3000, unmap: false },
  { op: "zero", offset: 4190000, length: 4304, unmap: false },
  { op: "write", offset: 2100000, length: 10, pattern: 0x55 },
  { op: "discard", offset: 0, length: 65536 },
  { op: "write", offset: 5000, length: 3000, pattern: 0x66 },
];

function qemuCommand(step: Step): string {
  switch (step.op) {
    case "write":
      return `write -P ${step.pattern} ${step.offset} ${step.length}`;
    case "zero":
      return `write -z${step.unmap ? " -u" : ""} ${step.offset} ${step.length}`;
    default:
      return `discard ${step.offset} ${step.length}`;
  }
}

async function runOnNode(node: BlockNode, steps: readonly Step[]): Promise<void> {
  for (const step of steps) {
    if (step.op === "write") {
      await node.write(step.offset, new Uint8Array(step.length).fill(step.pattern));
    } else if (step.op === "zero") {
      await node.writeZeroes(step.offset, step.length, { mayTrim: step.unmap });
    } else {
      await node.trim(step.offset, step.length);
    }
  }
}

/** Run SCRIPT on copies of `source` through qemu-io and through the node; compare. */
async function compareScript(
  dir: string,
  source: string,
  name: string,
  steps: readonly Step[] = SCRIPT,
): Promise<void> {
  const ours = join(dir, `${name}.ours.qcow2`);
  const theirs = join(dir, `${name}.qemu.qcow2`);
  await copyFile(source, ours);
  await copyFile(source, theirs);
  await check("qemu-io", [
    "--image-opts",
    ...steps.flatMap((step) => ["-c", qemuCommand(step)]),
    `driver=qcow2,file.filename=${theirs},discard=unmap`,
  ]);
  const image = await openImage(ours, "qcow2", { discard: "unmap" });
  try {
    await runOnNode(image.node, steps);
    await image.node.flush();
    const expected = await qemuRead(theirs, join(dir, `${name}.qemu.raw`));
    assertSameBytes(await readAll(image.node), expected, `${name}: node reads`);
  } finally {
    await image.close();
  }
  const checked = await run("qemu-img", ["check", ours]);
  if (checked.code !== 0 || !checked.stdout.includes("No errors were found on the image.")) {
    throw new Error(`${name}: qemu-img check: ${checked.stdout}${checked.stderr}`);
  }
  assertSameBytes(
    await qemuRead(ours, join(dir, `${name}.ours.raw`)),
    await Deno.readFile(join(dir, `${name}.qemu.raw`)),
    `${name}: qemu-img reads`,
  );
  assert.deepEqual(await mapOf(ours), await mapOf(theirs), `${name}: qemu-img map`);
}

interface MapRun {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
}

/** `qemu-img map` of an image without host offsets (which may differ), runs merged. */
async function mapOf(path: string): Promise<MapRun[]> {
  const map = JSON.parse(await check("qemu-img", ["map", "--output=json", path])) as MapRun[];
  const runs: MapRun[] = [];
  for (const { start, length, depth, present, zero, data } of map) {
    const last = runs[runs.length - 1];
    if (
      last && last.depth === depth && last.present === present && last.zero === zero &&
      last.data === data
    ) {
      last.length += length;
    } else {
      runs.push({ start, length, depth, present, zero, data });
    }
  }
  return runs;
}

async function compareFresh(dir: string, name: string, options: string): Promise<void> {
  const source = join(dir, `${name}.qcow2`);
  await check("qemu-img", ["create", "-f", "qcow2", "-o", options, source, String(4 * MiB)]);
  await compareScript(dir, source, name);
}

Deno.test(
  "qcow2 write: versions, cluster sizes, refcount widths",
  needs("qemu-img", "qemu-io"),
  () =>
    withTempDir(async (dir) => {
      await compareFresh(dir, "v3", "compat=1.1");
      await compareFresh(dir, "v2", "compat=0.10");
      await compareFresh(dir, "c512", "cluster_size=512");
      await compareFresh(dir, "c2m", "cluster_size=2M");
      await compareFresh(dir, "r1", "refcount_bits=1,cluster_size=4096");
      for (const bits of [2, 8, 32, 64]) {
        await compareFresh(dir, `r${bits}`, `refcount_bits=${bits},cluster_size=4096`);
      }
    }),
);

Deno.test(
  "qcow2 write: new refcount blocks and a growing refcount table",
  needs("qemu-img", "qemu-io"),
  () =>
    withTempDir(async (dir) => {
      const source = join(dir, "grow.qcow2");
      await check("qemu-img", [
        "create",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=512,refcount_bits=64",
        source,
        String(4 * MiB),
      ]);
      const fill: Step = { op: "write", offset: 0, length: 4 * MiB, pattern: 0x5a };
      await compareScript(dir, source, "grow", [fill, ...SCRIPT]);
    }),
);

Deno.test(
  "qcow2 write: subclusters",
  needs("qemu-img", "qemu-io"),
  () =>
    withTempDir(async (dir) => {
      await compareFresh(dir, "x", "extended_l2=on");
      await compareFresh(dir, "x16k", "extended_l2=on,cluster_size=16384");
    }),
);

Deno.test(
  "qcow2 write: over compressed and existing clusters",
  needs("qemu-img", "qemu-io"),
  () =>
    withTempDir(async (dir) => {
      const raw = join(dir, "source.raw");
      await check("qemu-img", ["create", "-f", "raw", raw, String(4 * MiB)]);
      await qemuIo(raw, ["write -P 0x77 0 4194304"], "raw");
      const compressed = join(dir, "compressed.qcow2");
      await check("qemu-img", ["convert", "-c", "-O", "qcow2", raw, compressed]);
      await compareScript(dir, compressed, "compressed");
      const full = join(dir, "full.qcow2");
      await check("qemu-img", ["convert", "-O", "qcow2", raw, full]);
      await compareScript(dir, full, "full");
    }),
);

Deno.test(
  "qcow2 write: over a backing chain",
  needs("qemu-img", "qemu-io"),
  () =>
    withTempDir(async (dir) => {
      const base = join(dir, "base.raw");
      await check("qemu-img", ["create", "-f", "raw", base, String(3 * MiB)]);
      await qemuIo(base, ["write -P 0x78 0 3145728"], "raw");
      for (const [name, options] of [["top", "compat=1.1"], ["topx", "extended_l2=on"]]) {
        const top = join(dir, `${name}.qcow2`);
        await check("qemu-img", [
          "create",
          "-f",
          "qcow2",
          "-b",
          "base.raw",
          "-F",
          "raw",
          "-o",
          options,
          top,
          String(4 * MiB),
        ]);
        await compareScript(dir, top, name);
      }
    }),
);
