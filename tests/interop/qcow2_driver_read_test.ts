/**
 * The qcow2 driver reads what qemu-img reads and reports this layer's
 * allocation as `qemu-img map` does, on images made by qemu-img and qemu-io:
 * versions 2 and 3, cluster sizes from 512 bytes to 2 MiB, every refcount
 * width, compressed clusters (deflate and zstd), zero clusters, subclusters,
 * and backing chains down to a raw base shorter than the top.
 */

import { join } from "node:path";
import { check, needs, withTempDir } from "./harness.ts";
import { assertMatchesQemu, openImage, qemuIo } from "./qcow2_driver_support.ts";

const MiB = 1 << 20;

/** Writes of patterns, zeroes and discards at cluster-unaligned places. */
const SCRIPT = [
  "write -P 0x11 0 4096",
  "write -P 0x22 70000 100000",
  "write -P 0x33 1048064 1024",
  "write -z 2097152 131072",
  "write -P 0x44 3145728 65536",
  "write -z 3150000 5000",
  "discard 3211264 65536",
];

async function checkImage(dir: string, name: string, createOptions: string, size = 4 * MiB) {
  const path = join(dir, name);
  await check("qemu-img", ["create", "-f", "qcow2", "-o", createOptions, path, String(size)]);
  await qemuIo(path, SCRIPT);
  const image = await openImage(path, "qcow2", { readOnly: true });
  try {
    await assertMatchesQemu(image.node, path, join(dir, `${name}.raw`));
  } finally {
    await image.close();
  }
}

Deno.test(
  "qcow2 read: versions, cluster sizes and refcount widths",
  needs("qemu-img", "qemu-io"),
  () =>
    withTempDir(async (dir) => {
      await checkImage(dir, "v2.qcow2", "compat=0.10");
      for (const clusterSize of [512, 4096, 65536, 2 * MiB]) {
        await checkImage(dir, `c${clusterSize}.qcow2`, `cluster_size=${clusterSize}`);
      }
      for (const bits of [1, 2, 4, 8, 16, 32, 64]) {
        await checkImage(dir, `r${bits}.qcow2`, `refcount_bits=${bits}`);
      }
    }),
);

Deno.test(
  "qcow2 read: subclusters (extended L2)",
  needs("qemu-img", "qemu-io"),
  () =>
    withTempDir(async (dir) => {
      await checkImage(dir, "x64k.qcow2", "extended_l2=on");
      await checkImage(dir, "x32k.qcow2", "extended_l2=on,cluster_size=32768");
    }),
);

Deno.test(
  "qcow2 read: compressed clusters, deflate and zstd",
  needs("qemu-img", "qemu-io"),
  () =>
    withTempDir(async (dir) => {
      const raw = join(dir, "source.raw");
      await check("qemu-img", ["create", "-f", "raw", raw, String(4 * MiB)]);
      await qemuIo(raw, SCRIPT.filter((line) => !line.startsWith("discard")), "raw");
      await qemuIo(raw, ["write -P 0x55 1572864 200000"], "raw");
      for (const type of ["zlib", "zstd"]) {
        for (const clusterSize of [4096, 65536]) {
          const path = join(dir, `${type}-${clusterSize}.qcow2`);
          await check("qemu-img", [
            "convert",
            "-c",
            "-O",
            "qcow2",
            "-o",
            `compression_type=${type},cluster_size=${clusterSize}`,
            raw,
            path,
          ]);
          // A normal cluster over a compressed one, as a guest write makes it.
          await qemuIo(path, ["write -P 0x66 1576960 512"]);
          const image = await openImage(path, "qcow2", { readOnly: true });
          try {
            await assertMatchesQemu(image.node, path, join(dir, `${type}-${clusterSize}.raw`));
          } finally {
            await image.close();
          }
        }
      }
    }),
);

Deno.test(
  "qcow2 read: backing chain over a shorter raw base",
  needs("qemu-img", "qemu-io"),
  () =>
    withTempDir(async (dir) => {
      const base = join(dir, "base.raw");
      await check("qemu-img", ["create", "-f", "raw", base, String(3 * MiB)]);
      await qemuIo(base, ["write -P 0x77 0 3145728"], "raw");
      const middle = join(dir, "middle.qcow2");
      await check("qemu-img", [
        "create",
        "-f",
        "qcow2",
        "-b",
        "base.raw",
        "-F",
        "raw",
        middle,
        String(4 * MiB),
      ]);
      await qemuIo(middle, ["write -P 0x88 65536 65536", "write -z 1048576 65536"]);
      for (const options of ["", "extended_l2=on"]) {
        const top = join(dir, `top${options ? "-x" : ""}.qcow2`);
        await check("qemu-img", [
          "create",
          "-f",
          "qcow2",
          "-b",
          "middle.qcow2",
          "-F",
          "qcow2",
          ...(options ? ["-o", options] : []),
          top,
          String(5 * MiB),
        ]);
        await qemuIo(top, ["write -P 0x99 100000 5000", "write -z 2000000 70000"]);
        const image = await openImage(top, "qcow2", { readOnly: true });
        try {
          await assertMatchesQemu(image.node, top, join(dir, "top.raw"));
        } finally {
          await image.close();
        }
      }
    }),
);
