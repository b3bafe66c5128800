/**
 * The qcow2 image as a {@linkcode PersistentBitmapStore}: what the node's
 * dirty tracking needs to load, store and remove persistent bitmaps, with
 * QEMU's checks of a new persistent bitmap made against what the image holds.
 *
 * @module
 */

import { DenbdError } from "../../errors.ts";
import type { DirtyBitmap } from "../dirty-bitmap.ts";
import type { PersistentBitmapStore } from "../dirty-tracking.ts";
import {
  bitmapConstraintError,
  type BitmapDirectoryEntry,
  directoryEntrySize,
  MAX_BITMAPS,
  MAX_DIRECTORY_SIZE,
} from "./bitmap-format.ts";
import { loadBitmaps, readBitmapDirectory, removeStoredBitmap, storeBitmaps } from "./bitmaps.ts";
import type { Qcow2Metadata } from "./qcow2-node.ts";

/** The image's qcow2 version, from its header. */
async function imageVersion(metadata: Qcow2Metadata): Promise<number> {
  const field = new Uint8Array(4);
  await metadata.file.read(4, field);
  return new DataView(field.buffer).getUint32(0);
}

/** Bytes of a directory of `entries`. */
function directoryBytes(entries: readonly BitmapDirectoryEntry[]): number {
  const encoder = new TextEncoder();
  return entries.reduce(
    (total, entry) => total + directoryEntrySize(encoder.encode(entry.name).length),
    0,
  );
}

/** A qcow2 image's persistent bitmaps, for a DirtyTrackingNode. */
class Qcow2BitmapStore implements PersistentBitmapStore {
  readonly #metadata: Qcow2Metadata;
  #version = 0;
  /** The directory as the image holds it now (refreshed after every change). */
  #stored: BitmapDirectoryEntry[] = [];

  constructor(metadata: Qcow2Metadata) {
    this.#metadata = metadata;
  }

  checkNewBitmap(name: string, granularity: number): void {
    if (this.#version === 0) throw new Error("checkNewBitmap before load");
    if (this.#version < 3) fail("Cannot store dirty bitmaps in qcow2 v2 files");
    const reason = bitmapConstraintError(name, granularity, this.#metadata);
    if (reason) fail(reason);
    if (this.#stored.length === 0) return;
    if (this.#stored.length >= MAX_BITMAPS) {
      fail("Maximum number of persistent bitmaps is already reached");
    }
    const entrySize = directoryEntrySize(new TextEncoder().encode(name).length);
    if (directoryBytes(this.#stored) + entrySize > MAX_DIRECTORY_SIZE) {
      fail("Not enough space in the bitmap directory");
    }
    if (this.#stored.some((entry) => entry.name === name)) {
      fail("Bitmap with the same name is already stored");
    }
  }

  async load(): Promise<DirtyBitmap[]> {
    this.#version = await imageVersion(this.#metadata);
    const bitmaps = await loadBitmaps(this.#metadata);
    this.#stored = await readBitmapDirectory(this.#metadata);
    return bitmaps;
  }

  async store(bitmaps: readonly DirtyBitmap[]): Promise<void> {
    await storeBitmaps(this.#metadata, bitmaps);
    this.#stored = await readBitmapDirectory(this.#metadata);
  }

  async remove(name: string): Promise<void> {
    await removeStoredBitmap(this.#metadata, name);
    this.#stored = await readBitmapDirectory(this.#metadata);
  }
}

/** Refuse a new persistent bitmap with QEMU's reason. */
function fail(reason: string): never {
  throw new DenbdError("invalid", reason);
}

/**
 * The persistent-bitmap store of a qcow2 image (pass the qcow2 node's
 * `metadata`); call `load` before anything else.
 */
export function qcow2BitmapStore(metadata: Qcow2Metadata): PersistentBitmapStore {
  return new Qcow2BitmapStore(metadata);
}
