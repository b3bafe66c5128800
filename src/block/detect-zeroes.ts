/**
 * QEMU's `detect-zeroes` option as a filter node: a write whose data is all
 * zeroes becomes a write-zeroes request to the node underneath, so a format
 * that can record zeroes (a sparse file, qcow2's zero clusters) stores no
 * data for it. In mode "unmap" the zeroing may also deallocate (`mayTrim`),
 * as QEMU sets BDRV_REQ_MAY_UNMAP; QEMU allows that mode only on a node
 * opened with discard=unmap, which the caller checks (see
 * {@linkcode DETECT_ZEROES_UNMAP_NEEDS_DISCARD}). Everything else passes
 * through unchanged.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DetectZeroesNode } from "./detect-zeroes.ts";
 * import { MemoryNode } from "./memory.ts";
 * const node = new DetectZeroesNode(new MemoryNode(1 << 20), "unmap");
 * await node.write(0, new Uint8Array(65536));
 * const [extent] = await node.blockStatus(0, 65536);
 * assert.equal(extent.data, false); // stored as a hole, not as 64 KiB of zeroes
 * await node.close();
 * ```
 * @module
 */

import { FilterNode } from "./filter.ts";
import type { BlockNode, WriteOptions } from "./node.ts";

/** The modes of detect-zeroes that do something ("off" means no filter at all). */
export type DetectZeroesMode = "on" | "unmap";

/** QEMU's refusal of detect-zeroes=unmap on a node that does not discard. */
export const DETECT_ZEROES_UNMAP_NEEDS_DISCARD =
  "setting detect-zeroes to unmap is not allowed without setting discard operation to unmap";

/** Whether every byte of `data` is zero (word by word where the buffer is aligned). */
export function isAllZeroes(data: Uint8Array): boolean {
  let at = 0;
  const misaligned = (8 - (data.byteOffset % 8)) % 8;
  for (; at < Math.min(misaligned, data.length); at++) if (data[at] !== 0) return false;
  const words = Math.floor((data.length - at) / 8);
  if (words > 0) {
    const view = new BigUint64Array(data.buffer, data.byteOffset + at, words);
    for (let i = 0; i < words; i++) if (view[i] !== 0n) return false;
    at += words * 8;
  }
  for (; at < data.length; at++) if (data[at] !== 0) return false;
  return true;
}

/** A filter that turns writes of zeroes into write-zeroes requests on its child. */
export class DetectZeroesNode extends FilterNode {
  /** What a detected zero write becomes: plain zeroing ("on") or zeroing that may deallocate. */
  readonly mode: DetectZeroesMode;

  /** Filter `file`; it is closed when this node is closed. */
  constructor(file: BlockNode, mode: DetectZeroesMode) {
    super(file, { ownsFile: true });
    this.mode = mode;
  }

  /** Write `data`, or zero the range instead when `data` is all zeroes. */
  protected override driverWrite(
    offset: number,
    data: Uint8Array,
    options: WriteOptions,
  ): Promise<void> {
    if (!isAllZeroes(data)) return this.file.write(offset, data, options);
    return this.file.writeZeroes(offset, data.length, {
      fua: options.fua,
      mayTrim: this.mode === "unmap",
    });
  }
}
