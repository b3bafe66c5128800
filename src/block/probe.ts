/**
 * Image format probing: what an image looks like from its first 512 bytes,
 * for when the user did not name a format. The rules are QEMU's: each
 * format that QEMU recognises by content has one entry in
 * {@linkcode FORMAT_SIGNATURES}, and anything none of them claims is raw.
 * The same table keeps a probed raw image raw (see the raw node's
 * `probed` option): a write that would make block 0 match an entry is
 * refused, as QEMU refuses it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatOfFirstBlock } from "./probe.ts";
 * const block = new Uint8Array(512);
 * assert.equal(formatOfFirstBlock(block), "raw");
 * block.set([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3]); // "QFI\xfb", version 3
 * assert.equal(formatOfFirstBlock(block), "qcow2");
 * ```
 * @module
 */

import { checkImagePath } from "./file.ts";

/** How many bytes at the start of an image probing looks at (QEMU's BLOCK_PROBE_BUF_SIZE). */
export const PROBE_BYTES = 512;

const ascii = (text: string) => Uint8Array.from(text, (char) => char.charCodeAt(0));

/** Whether `block` holds `bytes` at `offset`. */
function hasBytes(block: Uint8Array, offset: number, bytes: Uint8Array): boolean {
  if (block.length < offset + bytes.length) return false;
  return bytes.every((byte, i) => block[offset + i] === byte);
}

/** Whether `block` holds the C string `text` (with its terminating NUL) at `offset`. */
function hasCString(block: Uint8Array, offset: number, text: string): boolean {
  return hasBytes(block, offset, ascii(`${text}\0`));
}

const view = (block: Uint8Array) => new DataView(block.buffer, block.byteOffset, block.length);

const QCOW_MAGIC = ascii("QFI\xfb");
const VMDK_MAGICS = [ascii("KDMV"), ascii("COWD")];
const PARALLELS_MAGICS = [ascii("WithoutFreeSpace"), ascii("WithouFreSpacExt")];
const CLOOP_MAGIC = ascii(
  "#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n",
);
const VMDK_VERSION_LINE = /^version=[123]\r?\n/;

/**
 * A VMDK text descriptor: comment lines and blank lines, then a
 * `version=1`, `2` or `3` line (QEMU's rule for descriptor files).
 */
function isVmdkDescriptor(block: Uint8Array): boolean {
  const text = new TextDecoder("latin1").decode(block);
  for (let at = 0; at < text.length;) {
    if (text[at] === "#") {
      const end = text.indexOf("\n", at);
      at = end < 0 ? text.length : end + 1;
    } else if (text[at] === " ") {
      const blank = /^ +\r?\n/.exec(text.slice(at));
      if (!blank) return false;
      at += blank[0].length;
    } else {
      return VMDK_VERSION_LINE.test(text.slice(at));
    }
  }
  return false;
}

/**
 * The formats QEMU recognises from an image's first bytes, each with the
 * test its driver applies, in QEMU's order of preference (the first match
 * wins; raw is what is left).
 */
export const FORMAT_SIGNATURES = {
  qcow2: (block: Uint8Array) =>
    block.length >= 104 && hasBytes(block, 0, QCOW_MAGIC) && view(block).getUint32(4) >= 2,
  qcow: (block: Uint8Array) =>
    block.length >= 48 && hasBytes(block, 0, QCOW_MAGIC) && view(block).getUint32(4) === 1,
  qed: (block: Uint8Array) => hasBytes(block, 0, ascii("QED\0")) && block.length >= 64,
  vmdk: (block: Uint8Array) =>
    VMDK_MAGICS.some((magic) => hasBytes(block, 0, magic)) || isVmdkDescriptor(block),
  vdi: (block: Uint8Array) => block.length >= 512 && view(block).getUint32(64, true) === 0xbeda107f,
  vhdx: (block: Uint8Array) => hasBytes(block, 0, ascii("vhdxfile")),
  vpc: (block: Uint8Array) => hasBytes(block, 0, ascii("conectix")),
  luks: (block: Uint8Array) =>
    hasBytes(block, 0, ascii("LUKS\xba\xbe")) && block.length >= 8 &&
    view(block).getUint16(6) === 1,
  parallels: (block: Uint8Array) =>
    block.length >= 64 && PARALLELS_MAGICS.some((magic) => hasBytes(block, 0, magic)) &&
    view(block).getUint32(16, true) === 2,
  bochs: (block: Uint8Array) =>
    block.length >= 512 && hasCString(block, 0, "Bochs Virtual HD Image") &&
    hasCString(block, 32, "Redolog") && hasCString(block, 48, "Growing") &&
    [0x00010000, 0x00020000].includes(view(block).getUint32(64, true)),
  cloop: (block: Uint8Array) => hasBytes(block, 0, CLOOP_MAGIC),
} as const;

/** Formats denbd can recognise: raw, or one of {@linkcode FORMAT_SIGNATURES}. */
export type ImageFormat = "raw" | keyof typeof FORMAT_SIGNATURES;

/** The format the first bytes of an image (up to {@linkcode PROBE_BYTES}) say it is in. */
export function formatOfFirstBlock(block: Uint8Array): ImageFormat {
  const head = block.subarray(0, PROBE_BYTES);
  const entries = Object.entries(FORMAT_SIGNATURES) as [ImageFormat, (b: Uint8Array) => boolean][];
  return entries.find(([, matches]) => matches(head))?.[0] ?? "raw";
}

/**
 * The format `path` appears to be in; anything unrecognised is raw. Throws
 * {@linkcode checkImagePath}'s errors for a path that is not an image.
 */
export async function probeFormat(path: string): Promise<ImageFormat> {
  await checkImagePath(path);
  const file = await Deno.open(path, { read: true });
  try {
    const head = new Uint8Array(PROBE_BYTES);
    let length = 0;
    while (length < head.length) {
      const count = await file.read(head.subarray(length));
      if (count === null) break;
      length += count;
    }
    return formatOfFirstBlock(head.subarray(0, length));
  } finally {
    file.close();
  }
}
