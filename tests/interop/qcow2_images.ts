/**
 * qcow2 test images made the way users make them, with qemu-img and qemu-io,
 * each with known content patterns so that reads compare meaningfully: a
 * 3-deep chain mixing raw and qcow2, a v2 image (compat=0.10), a compressed
 * image, zero clusters, subclusters (extended L2 over a backing file) and
 * persistent bitmaps. Every image lives in its own directory with its
 * backing files named relative to it (as `qemu-img create -b NAME` writes
 * them), so {@linkcode copyImage} makes a self-contained copy of a chain.
 *
 * @module
 */

import { basename, join } from "node:path";
import { check } from "./harness.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/** A test image and the files behind it. */
export interface TestImage {
  /** A short label for test names. */
  readonly name: string;
  /** The image (the top of its chain). */
  readonly path: string;
  /** Its format. */
  readonly format: "qcow2" | "raw";
  /** The persistent bitmaps it holds, by name. */
  readonly bitmaps: readonly string[];
  /** Every file of the chain, top first (all in one directory). */
  readonly files: readonly string[];
}

/** Run qemu-io on `image` (format given, so no probing) with one `-c` per command. */
export async function qemuIo(
  image: string,
  format: string,
  commands: readonly string[],
): Promise<string> {
  return await check("qemu-io", ["-f", format, ...commands.flatMap((c) => ["-c", c]), image]);
}

/** `qemu-img create` with the given options, size in bytes. */
async function create(
  path: string,
  format: string,
  size: number,
  options: readonly string[] = [],
): Promise<void> {
  await check("qemu-img", ["create", "-q", "-f", format, ...options, path, String(size)]);
}

/** A fresh directory `dir/name`. */
async function imageDir(dir: string, name: string): Promise<string> {
  const path = join(dir, name);
  await Deno.mkdir(path, { recursive: true });
  return path;
}

/**
 * raw base (6 MiB) <- qcow2 mid (7 MiB, v3) <- qcow2 top (8 MiB), each layer
 * with its own ranges: data over data, zeroes over backing data, writes
 * crossing cluster boundaries, and reads past the end of a shorter backing file.
 */
export async function makeChain(dir: string): Promise<TestImage> {
  const at = await imageDir(dir, "chain");
  const base = join(at, "base.raw");
  const mid = join(at, "mid.qcow2");
  const top = join(at, "top.qcow2");
  await create(base, "raw", 6 * MiB);
  await qemuIo(base, "raw", ["write -P 0x11 0 3M", "write -P 0x12 5M 1M"]);
  await create(mid, "qcow2", 7 * MiB, ["-b", "base.raw", "-F", "raw"]);
  await qemuIo(mid, "qcow2", [
    "write -P 0x22 1M 1M",
    "write -z 5M 512k",
    "write -P 0x23 6200k 100k",
  ]);
  await create(top, "qcow2", 8 * MiB, ["-b", "mid.qcow2", "-F", "qcow2"]);
  await qemuIo(top, "qcow2", [
    "write -P 0x33 512k 256k",
    "write -P 0x34 2052k 8k",
    "write -z 2560k 128k",
    "write -P 0x35 7M 300k",
    "write -z -u 5632k 64k",
  ]);
  return {
    name: "chain",
    path: top,
    format: "qcow2",
    bitmaps: [],
    files: [top, mid, base],
  };
}

/** A version 2 image (compat=0.10): data, a zeroed range, a partly written cluster. */
export async function makeV2(dir: string): Promise<TestImage> {
  const path = join(await imageDir(dir, "v2"), "v2.qcow2");
  await create(path, "qcow2", 4 * MiB, ["-o", "compat=0.10"]);
  await qemuIo(path, "qcow2", [
    "write -P 0x41 0 1M",
    "write -z 256k 128k",
    "write -P 0x42 3M 5k",
  ]);
  return { name: "v2", path, format: "qcow2", bitmaps: [], files: [path] };
}

/** Bytes that do not compress (xorshift32 from `seed`). */
function incompressible(length: number, seed: number): Uint8Array {
  const words = new Uint32Array(length / 4);
  let x = seed | 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x;
  }
  return new Uint8Array(words.buffer);
}

/**
 * `qemu-img convert -c` of a raw image with compressible patterns, a range
 * that does not compress (stored uncompressed), and holes.
 */
export async function makeCompressed(dir: string): Promise<TestImage> {
  const at = await imageDir(dir, "compressed");
  const source = join(at, "source.raw");
  const path = join(at, "compressed.qcow2");
  await create(source, "raw", 4 * MiB);
  await qemuIo(source, "raw", ["write -P 0x51 0 1M", "write -P 0x52 2M 300k"]);
  const file = await Deno.open(source, { write: true });
  try {
    await file.seek(1536 * KiB, Deno.SeekMode.Start);
    const bytes = incompressible(192 * KiB, 0x5eed);
    for (let done = 0; done < bytes.length;) done += await file.write(bytes.subarray(done));
  } finally {
    file.close();
  }
  await check("qemu-img", ["convert", "-q", "-c", "-f", "raw", "-O", "qcow2", source, path]);
  await Deno.remove(source);
  return { name: "compressed", path, format: "qcow2", bitmaps: [], files: [path] };
}

/**
 * Zero clusters of every kind: zeroed with the cluster kept (zero flag and an
 * offset), zeroed and unmapped, zeroed where nothing was, and partial zeroing.
 */
export async function makeZeroClusters(dir: string): Promise<TestImage> {
  const path = join(await imageDir(dir, "zero"), "zero.qcow2");
  await create(path, "qcow2", 4 * MiB);
  await qemuIo(path, "qcow2", [
    "write -P 0x61 0 2M",
    "write -z 128k 128k",
    "write -z -u 512k 192k",
    "write -z 3M 256k",
    "write -z 1M 10k",
  ]);
  return { name: "zero", path, format: "qcow2", bitmaps: [], files: [path] };
}

/**
 * Subclusters: extended_l2=on with 128 KiB clusters over a raw backing file
 * full of data, with small writes and zeroes inside clusters, so reads
 * alternate between this layer and the backing within one cluster.
 */
export async function makeSubclusters(dir: string): Promise<TestImage> {
  const at = await imageDir(dir, "subclusters");
  const base = join(at, "base.raw");
  const path = join(at, "sub.qcow2");
  await create(base, "raw", 4 * MiB);
  await qemuIo(base, "raw", ["write -P 0x71 0 4M"]);
  await create(path, "qcow2", 4 * MiB, [
    "-b",
    "base.raw",
    "-F",
    "raw",
    "-o",
    "extended_l2=on,cluster_size=128k",
  ]);
  await qemuIo(path, "qcow2", [
    "write -P 0x72 4k 4k",
    "write -P 0x73 20k 8k",
    "write -z 64k 4k",
    "write -P 0x74 1M 1k",
    "write -P 0x75 2040k 16k",
    "write -z -u 3M 128k",
  ]);
  return {
    name: "subclusters",
    path,
    format: "qcow2",
    bitmaps: [],
    files: [path, base],
  };
}

/**
 * Persistent bitmaps: b0 (64 KiB granularity) and b1 (128 KiB) recording
 * from the start, b2 disabled before the writes, b3 added after the first
 * writes; each ends up with a different set of dirty bits.
 */
export async function makeBitmaps(dir: string): Promise<TestImage> {
  const path = join(await imageDir(dir, "bitmaps"), "bitmaps.qcow2");
  await create(path, "qcow2", 8 * MiB);
  await check("qemu-img", ["bitmap", "--add", path, "b0"]);
  await check("qemu-img", ["bitmap", "--add", "-g", "128k", path, "b1"]);
  await check("qemu-img", ["bitmap", "--add", "--disable", path, "b2"]);
  await qemuIo(path, "qcow2", ["write -P 0x81 64k 64k", "write -P 0x82 1M 300k"]);
  await check("qemu-img", ["bitmap", "--add", path, "b3"]);
  await qemuIo(path, "qcow2", ["write -z 3M 64k", "write -P 0x83 7M 4k"]);
  return {
    name: "bitmaps",
    path,
    format: "qcow2",
    bitmaps: ["b0", "b1", "b2", "b3"],
    files: [path],
  };
}

/** Every image kind by name, in the order tests report them. */
export const IMAGE_BUILDERS: Readonly<Record<string, (dir: string) => Promise<TestImage>>> = {
  chain: makeChain,
  v2: makeV2,
  compressed: makeCompressed,
  zero: makeZeroClusters,
  subclusters: makeSubclusters,
  bitmaps: makeBitmaps,
};

/** The qcow2 layers of `image`'s chain, top first, each a test image of its own. */
export function qcow2Layers(image: TestImage): TestImage[] {
  return image.files.flatMap((file, index) =>
    file.endsWith(".qcow2")
      ? [{
        ...image,
        name: index === 0 ? image.name : `${image.name}/${basename(file)}`,
        path: file,
        bitmaps: index === 0 ? image.bitmaps : [],
        files: image.files.slice(index),
      }]
      : []
  );
}

/** Copy every file of `image`'s chain into `dir` (relative backing names keep working). */
export async function copyImage(image: TestImage, dir: string): Promise<TestImage> {
  await Deno.mkdir(dir, { recursive: true });
  const files = [];
  for (const file of image.files) {
    const target = join(dir, basename(file));
    await Deno.copyFile(file, target);
    files.push(target);
  }
  return { ...image, path: files[0], files };
}

/** The guest-visible content of `image` (whole chain) as a raw file at `output`, by qemu-img. */
export async function convertToRaw(image: TestImage, output: string): Promise<void> {
  await check("qemu-img", ["convert", "-f", image.format, "-O", "raw", image.path, output]);
}
