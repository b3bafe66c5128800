/**
 * The writer that qcow2_driver_crash_test.ts kills: writes slot after slot
 * into the qcow2 image named by its argument (slot i: 4 KiB at a scattered
 * place, filled with a byte derived from i), flushing every few slots and
 * printing "flushed N" once slots 0..N-1 are durable. Runs until killed.
 *
 * @module
 */

import { FileNode } from "../../src/block/file.ts";
import { Qcow2Node } from "../../src/block/qcow2/qcow2-node.ts";

/** Bytes in one slot. */
export const SLOT = 4096;
/** Slots in the image (the image has SLOTS * SLOT bytes). */
export const SLOTS = 16384;

/** Where slot `i` lives (a permutation of the slots: 7919 is prime to SLOTS). */
export function slotOffset(i: number): number {
  return ((i * 7919) % SLOTS) * SLOT;
}

/** The byte slot `i` is filled with. */
export function slotByte(i: number): number {
  return (i % 250) + 1;
}

if (import.meta.main) {
  const file = await FileNode.open(Deno.args[0], { growable: true });
  const node = await Qcow2Node.open(file, { backing: null });
  const encoder = new TextEncoder();
  for (let i = 0; i < SLOTS; i++) {
    const pending = [];
    // A few writes in flight at once, as an NBD client sends them.
    for (let j = i; j < Math.min(i + 4, SLOTS); j++) {
      pending.push(node.write(slotOffset(j), new Uint8Array(SLOT).fill(slotByte(j))));
    }
    await Promise.all(pending);
    i += pending.length - 1;
    if ((i + 1) % 16 === 0) {
      await node.flush();
      await Deno.stdout.write(encoder.encode(`flushed ${i + 1}\n`));
    }
  }
  await node.flush();
  await Deno.stdout.write(encoder.encode(`flushed ${SLOTS}\n`));
  await Deno.stdout.write(encoder.encode("done\n"));
  await new Promise(() => {});
}
