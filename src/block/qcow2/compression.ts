/**
 * Decompression of qcow2 compressed clusters: raw deflate (compression type
 * zlib) and zstd, each bounded to one cluster of output whatever the
 * compressed bytes claim.
 *
 * @module
 */

import zlib from "node:zlib";
import { DenbdError } from "../../errors.ts";

/** The compression types of the header's compression_type field. */
export type CompressionType = "zlib" | "zstd";

/**
 * Decompress `input` into exactly one cluster (`into.length` bytes). Fails
 * with kind "io" when the data does not decompress to a whole cluster, as
 * QEMU does; never produces more than one cluster of output.
 */
export function decompressCluster(
  type: CompressionType,
  input: Uint8Array,
  into: Uint8Array,
): void {
  if (type === "zstd" && typeof zlib.zstdDecompressSync !== "function") {
    throw new DenbdError("not-supported", "qcow2: zstd compression is not supported here");
  }
  let output: Uint8Array;
  try {
    output = type === "zlib"
      ? zlib.inflateRawSync(input, {
        maxOutputLength: into.length + 1,
        finishFlush: zlib.constants.Z_SYNC_FLUSH,
      })
      : zlib.zstdDecompressSync(input.subarray(0, zstdFrameLength(input)), {
        maxOutputLength: into.length + 1,
      });
  } catch (error) {
    throw new DenbdError("io", `qcow2: bad compressed cluster: ${(error as Error).message}`);
  }
  if (output.length !== into.length) {
    throw new DenbdError(
      "io",
      `qcow2: compressed cluster decompresses to ${output.length} bytes, not ${into.length}`,
    );
  }
  into.set(output);
}

/** The zstd frame magic number (little endian). */
const ZSTD_MAGIC = 0xfd2fb528;

/**
 * The length of the zstd frame at the start of `input` (the rest is padding
 * or the next cluster's data, which QEMU ignores too), or the whole input
 * when the frame runs past its end (decompression then fails on it).
 */
function zstdFrameLength(input: Uint8Array): number {
  const view = new DataView(input.buffer, input.byteOffset, input.byteLength);
  if (input.length < 6 || view.getUint32(0, true) !== ZSTD_MAGIC) return input.length;
  const descriptor = input[4];
  const singleSegment = (descriptor >> 5) & 1;
  const contentSizeBytes = [singleSegment, 2, 4, 8][descriptor >> 6];
  const dictionaryBytes = [0, 1, 2, 4][descriptor & 3];
  let at = 5 + (singleSegment ? 0 : 1) + dictionaryBytes + contentSizeBytes;
  for (let last = 0; !last;) {
    if (at + 3 > input.length) return input.length;
    const header = input[at] | (input[at + 1] << 8) | (input[at + 2] << 16);
    last = header & 1;
    const type = (header >> 1) & 3;
    at += 3 + (type === 1 ? 1 : header >>> 3);
  }
  if ((descriptor >> 2) & 1) at += 4;
  return Math.min(at, input.length);
}
