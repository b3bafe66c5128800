/**
 * The image `denbd serve` exports when no file is given: a sparse file with
 * a few data regions between holes, so that every client tool has something
 * to show (data, holes, a readable banner).
 *
 * @module
 */

import { join } from "node:path";
import { writeAll } from "../io/byte-stream.ts";

/** Size of the demo image. */
export const DEMO_IMAGE_SIZE = 64 * 1024 * 1024;

/** The banner written at offset 0 of the demo image. */
export const DEMO_BANNER = "denbd demo image: served by denbd, readable by any NBD client\n";

/** Regions of the demo image that hold data, as [offset, length]; the rest are holes. */
const DEMO_DATA_REGIONS: readonly (readonly [number, number])[] = [
  [0, 4096],
  [1024 * 1024, 64 * 1024],
  [32 * 1024 * 1024, 1024 * 1024],
];

/**
 * Create the demo image in a new temporary directory. Returns its path and a
 * function that removes the directory again.
 */
export async function createDemoImage(): Promise<{ path: string; remove: () => Promise<void> }> {
  const dir = await Deno.makeTempDir({ prefix: "denbd-demo-" });
  const path = join(dir, "demo.img");
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    await file.truncate(DEMO_IMAGE_SIZE);
    for (const [offset, length] of DEMO_DATA_REGIONS) {
      await file.seek(offset, Deno.SeekMode.Start);
      await writeAll(file, regionContent(offset, length));
    }
  } finally {
    file.close();
  }
  return { path, remove: () => Deno.remove(dir, { recursive: true }) };
}

/** Bytes of a data region: the banner at offset 0, a repeating byte pattern elsewhere. */
function regionContent(offset: number, length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  if (offset === 0) bytes.set(new TextEncoder().encode(DEMO_BANNER));
  else for (let i = 0; i < length; i++) bytes[i] = (offset / 65536 + i) % 251 + 1;
  return bytes;
}
