/**
 * Image format probing: what an image file looks like from its first bytes,
 * for when the user did not name a format.
 *
 * @module
 */

/** Formats denbd can recognise. */
export type ImageFormat = "raw" | "qcow2";

/** The magic at the start of every qcow2 image ("QFI\xfb"). */
const QCOW2_MAGIC = [0x51, 0x46, 0x49, 0xfb];

/** The format `path` appears to be in; anything unrecognised is raw. */
export async function probeFormat(path: string): Promise<ImageFormat> {
  const file = await Deno.open(path, { read: true });
  try {
    const head = new Uint8Array(QCOW2_MAGIC.length);
    const count = await file.read(head);
    const isQcow2 = count === head.length && QCOW2_MAGIC.every((byte, i) => head[i] === byte);
    return isQcow2 ? "qcow2" : "raw";
  } finally {
    file.close();
  }
}
