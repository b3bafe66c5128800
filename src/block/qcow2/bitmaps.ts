/**
 * Persistent dirty bitmaps in a qcow2 image, as QEMU 7.2 keeps them: loaded
 * at open (each clean bitmap is then marked in_use in the image, durably,
 * before the node is used; a bitmap found in_use is loaded as inconsistent),
 * stored at close (data clusters, tables, a new directory, then the header
 * extension, and only then the old clusters are freed, so a crash leaves the
 * old consistent state or leaked clusters), and removed from the image at
 * once by block-dirty-bitmap-remove. QEMU does not store bitmaps on flush.
 *
 * Everything goes through {@linkcode Qcow2Metadata}, the qcow2 driver's view
 * of the image for this module. Hostile metadata fails with QEMU's message;
 * reads are checked against the file and done a cluster (or a bounded table
 * chunk) at a time, so memory stays within the bitmap itself (at most
 * 512 MiB, QEMU's limit).
 *
 * @module
 */

import { DenbdError, messageOf } from "../../errors.ts";
import { DirtyBitmap } from "../dirty-bitmap.ts";
import {
  bitmapConstraintError,
  type BitmapDirectoryEntry,
  type BitmapTableEntry,
  bitmapTableSize,
  decodeBitmapDirectory,
  decodeBitmapsExtension,
  decodeBitmapTable,
  directoryEntrySize,
  encodeBitmapDirectory,
  encodeBitmapsExtension,
  encodeBitmapTable,
  MAX_BITMAPS,
  MAX_DIRECTORY_SIZE,
} from "./bitmap-format.ts";
import type { Qcow2Metadata } from "./qcow2-node.ts";

/** Table entries read (and decoded) at a time: bounds the memory of a table walk. */
const TABLE_CHUNK_ENTRIES = 4096;

/** A failure with QEMU's message. */
function invalid(message: string): DenbdError {
  return new DenbdError("invalid", message);
}

/** Clusters covering `bytes` bytes. */
function clustersFor(metadata: Qcow2Metadata, bytes: number): number {
  return Math.ceil(bytes / metadata.clusterSize);
}

/**
 * QEMU's warning for an image whose bitmaps are ignored because a program
 * without bitmap support changed it (the extension is there, the autoclear
 * bit is not), or undefined when that is not the case. For whoever opens the
 * image to print.
 */
export function ignoredBitmapsWarning(metadata: Qcow2Metadata): string | undefined {
  if (!metadata.bitmapsExtension || metadata.bitmapsConsistent) return undefined;
  return "a program lacking bitmap support modified this file, so all bitmaps are now " +
    "considered inconsistent. Some clusters may be leaked, run 'qemu-img check -r' on the " +
    "image file to fix.";
}

/**
 * The bitmap directory, checked: empty when the image has no bitmaps
 * extension, or has one without the autoclear bit (a program without bitmap
 * support changed the image: QEMU then ignores every bitmap, and their
 * clusters leak).
 */
export async function readBitmapDirectory(
  metadata: Qcow2Metadata,
): Promise<BitmapDirectoryEntry[]> {
  const data = metadata.bitmapsExtension;
  if (!data || !metadata.bitmapsConsistent) return [];
  const extension = decodeBitmapsExtension(data, metadata.clusterSize);
  const { directoryOffset, directorySize, count } = extension;
  if (directorySize === 0) throw invalid("Requested bitmap directory size is zero");
  if (!metadata.isValidMetadataRange(directoryOffset, directorySize)) {
    throw invalid("Failed to read bitmap directory: Invalid argument");
  }
  const bytes = new Uint8Array(directorySize);
  await metadata.file.read(directoryOffset, bytes);
  return decodeBitmapDirectory(bytes, count, metadata);
}

/**
 * Walk the table of `entry`, a bounded chunk at a time, calling `visit` with
 * each entry and its index; a table outside the file or an invalid entry
 * fails with `failure`.
 */
async function walkTable(
  metadata: Qcow2Metadata,
  entry: { readonly tableOffset: number; readonly tableSize: number },
  failure: () => DenbdError,
  visit: (tableEntry: BitmapTableEntry, index: number) => Promise<void> | void,
): Promise<void> {
  if (!metadata.isValidMetadataRange(entry.tableOffset, entry.tableSize * 8)) throw failure();
  for (let first = 0; first < entry.tableSize; first += TABLE_CHUNK_ENTRIES) {
    const count = Math.min(TABLE_CHUNK_ENTRIES, entry.tableSize - first);
    const bytes = new Uint8Array(count * 8);
    await metadata.file.read(entry.tableOffset + first * 8, bytes);
    const decoded = decodeBitmapTable(bytes, metadata.clusterSize);
    if (!decoded) throw failure();
    for (let index = 0; index < decoded.length; index++) {
      await visit(decoded[index], first + index);
    }
  }
}

/** Load the bits of the clean bitmap `entry` into `bitmap`. */
async function loadBits(
  metadata: Qcow2Metadata,
  entry: BitmapDirectoryEntry,
  bitmap: DirtyBitmap,
): Promise<void> {
  const { clusterSize } = metadata;
  await walkTable(
    metadata,
    entry,
    () =>
      invalid(
        `Could not read bitmap_table table from image for bitmap '${entry.name}': Invalid argument`,
      ),
    () => {},
  );
  const expected = bitmapTableSize(metadata.virtualSize, entry.granularityBits, clusterSize);
  const unreadable = () =>
    invalid(`Could not read bitmap '${entry.name}' from image: Invalid argument`);
  if (entry.tableSize !== expected) throw unreadable();
  const cluster = new Uint8Array(clusterSize);
  await walkTable(metadata, entry, unreadable, async (tableEntry, index) => {
    if (tableEntry.kind === "ones") bitmap.importOnes(index * clusterSize, clusterSize);
    if (tableEntry.kind !== "data") return;
    if (!metadata.isValidMetadataRange(tableEntry.offset, clusterSize)) throw unreadable();
    await metadata.file.read(tableEntry.offset, cluster);
    bitmap.importBits(index * clusterSize, cluster);
  });
}

/**
 * Rewrite the directory where it is with every entry in_use, as QEMU does
 * after loading: the autoclear bit is cleared first (durably), so a crash in
 * between leaves an image whose bitmaps are all ignored, never a directory
 * half written under a consistent header.
 */
async function markInUse(
  metadata: Qcow2Metadata,
  entries: readonly BitmapDirectoryEntry[],
): Promise<void> {
  const extensionData = metadata.bitmapsExtension!;
  const { directoryOffset } = decodeBitmapsExtension(extensionData, metadata.clusterSize);
  try {
    await metadata.writeBitmapsExtension(extensionData, false);
    const marked = entries.map((entry) => ({ ...entry, inUse: true }));
    await metadata.file.write(directoryOffset, encodeBitmapDirectory(marked));
    await metadata.file.flush();
    await metadata.writeBitmapsExtension(extensionData, true);
  } catch (error) {
    throw new DenbdError("io", `Can't update bitmap directory: ${messageOf(error)}`, {
      cause: error,
    });
  }
}

/**
 * Load every bitmap of the image as a persistent {@linkcode DirtyBitmap}
 * over the virtual size, in directory order: enabled when its auto flag is
 * set; inconsistent (and without bits) when it was found in_use; read-only
 * when the image is. When the image is writable, the loaded bitmaps are then
 * marked in_use in the image before this resolves.
 */
export async function loadBitmaps(metadata: Qcow2Metadata): Promise<DirtyBitmap[]> {
  const entries = await readBitmapDirectory(metadata);
  const bitmaps: DirtyBitmap[] = [];
  for (const entry of entries) {
    const bitmap = new DirtyBitmap(entry.name, metadata.virtualSize, {
      granularity: 2 ** entry.granularityBits,
      persistent: true,
      disabled: !entry.auto,
      inconsistent: entry.inUse,
      readOnly: !metadata.writable,
    });
    if (!entry.inUse) await loadBits(metadata, entry, bitmap);
    bitmaps.push(bitmap);
  }
  if (metadata.writable && entries.some((entry) => !entry.inUse)) {
    await markInUse(metadata, entries);
  }
  return bitmaps;
}

/**
 * Free the clusters a table points to and the table itself. The whole table
 * is checked first: a table that does not pass is left alone (its clusters
 * leak, which is safe; freeing what a corrupt entry points to is not).
 */
async function freeTable(
  metadata: Qcow2Metadata,
  entry: { readonly tableOffset: number; readonly tableSize: number },
): Promise<void> {
  const corrupt = () => invalid("Bitmap table is corrupt");
  try {
    await walkTable(metadata, entry, corrupt, (tableEntry) => {
      if (tableEntry.kind === "data" && !metadata.isValidMetadataRange(tableEntry.offset, 1)) {
        throw corrupt();
      }
    });
  } catch {
    return;
  }
  await walkTable(metadata, entry, corrupt, async (tableEntry) => {
    if (tableEntry.kind === "data") await metadata.freeClusters(tableEntry.offset, 1);
  });
  await metadata.freeClusters(entry.tableOffset, clustersFor(metadata, entry.tableSize * 8));
}

/**
 * Write the bits of `bitmap`: one data cluster per cluster of bits that has
 * a dirty granule (all-zero clusters are not allocated), then its table.
 * Every cluster allocated is recorded in `allocated` (for cleanup on failure).
 */
async function writeBitmap(
  metadata: Qcow2Metadata,
  bitmap: DirtyBitmap,
  allocated: Array<{ offset: number; count: number }>,
): Promise<{ tableOffset: number; tableSize: number }> {
  const { clusterSize } = metadata;
  const tableSize = clustersFor(metadata, bitmap.storedBytes);
  const offsets = new Array<number>(tableSize).fill(0);
  const cluster = new Uint8Array(clusterSize);
  for (let index = 0; index < tableSize; index++) {
    const firstByte = index * clusterSize;
    if (!bitmap.anyDirtyIn(firstByte, clusterSize)) continue;
    const offset = await metadata.allocateClusters(1);
    allocated.push({ offset, count: 1 });
    bitmap.exportBits(firstByte, cluster);
    await metadata.file.write(offset, cluster);
    offsets[index] = offset;
  }
  const table = encodeBitmapTable(offsets);
  const tableClusters = clustersFor(metadata, table.length);
  const tableOffset = await metadata.allocateClusters(tableClusters);
  allocated.push({ offset: tableOffset, count: tableClusters });
  const padded = new Uint8Array(tableClusters * clusterSize);
  padded.set(table);
  await metadata.file.write(tableOffset, padded);
  return { tableOffset, tableSize };
}

/**
 * Write a new directory of `entries`, point the header at it (autoclear bit
 * set) or drop the extension when there are none, then free the old
 * directory. Durable when it resolves.
 */
async function replaceDirectory(
  metadata: Qcow2Metadata,
  old: { offset: number; size: number } | undefined,
  entries: readonly BitmapDirectoryEntry[],
  allocated: Array<{ offset: number; count: number }>,
): Promise<void> {
  if (entries.length === 0) {
    await metadata.writeBitmapsExtension(undefined, false);
  } else {
    const directory = encodeBitmapDirectory(entries);
    const clusters = clustersFor(metadata, directory.length);
    const offset = await metadata.allocateClusters(clusters);
    allocated.push({ offset, count: clusters });
    const padded = new Uint8Array(clusters * metadata.clusterSize);
    padded.set(directory);
    await metadata.file.write(offset, padded);
    await metadata.file.flush();
    const extension = encodeBitmapsExtension({
      count: entries.length,
      directorySize: directory.length,
      directoryOffset: offset,
    });
    // From here the header may point at what was allocated: a failure
    // leaks it (safe) rather than free what the image may use.
    allocated.length = 0;
    await metadata.writeBitmapsExtension(extension, true);
  }
  if (old) await metadata.freeClusters(old.offset, clustersFor(metadata, old.size));
}

/** The directory's place according to the header, when it is in use. */
function currentDirectory(metadata: Qcow2Metadata): { offset: number; size: number } | undefined {
  if (!metadata.bitmapsExtension || !metadata.bitmapsConsistent) return undefined;
  const extension = decodeBitmapsExtension(metadata.bitmapsExtension, metadata.clusterSize);
  return { offset: extension.directoryOffset, size: extension.directorySize };
}

/** Free what a failed store allocated (best effort: leaking is safe, double freeing is not). */
async function release(
  metadata: Qcow2Metadata,
  allocated: readonly { offset: number; count: number }[],
): Promise<void> {
  for (const { offset, count } of allocated) {
    await metadata.freeClusters(offset, count).catch(() => {});
  }
}

/**
 * Store the persistent bitmaps among `bitmaps` (read-only and inconsistent
 * ones are skipped: their entries stay as they are), as QEMU does at close:
 * each one's data and table in new clusters, a new directory (in_use
 * cleared, auto = enabled), the header extension with the autoclear bit,
 * then the old directory and the replaced tables are freed. Durable when it
 * resolves; on failure the image is unchanged (what was allocated is freed).
 */
export async function storeBitmaps(
  metadata: Qcow2Metadata,
  bitmaps: readonly DirtyBitmap[],
): Promise<void> {
  const toStore = bitmaps.filter((bitmap) =>
    bitmap.persistent && !bitmap.readOnly && !bitmap.inconsistent
  );
  if (toStore.length === 0) return;
  if (!metadata.writable) throw new DenbdError("read-only", "No write access");
  const entries = await readBitmapDirectory(metadata);
  const old = currentDirectory(metadata);
  const replaced: BitmapDirectoryEntry[] = [];
  let directorySize = old?.size ?? 0;
  for (const bitmap of toStore) {
    const reason = bitmapConstraintError(bitmap.name, bitmap.granularity, metadata);
    if (reason) {
      throw invalid(`Bitmap '${bitmap.name}' doesn't satisfy the constraints: ${reason}`);
    }
    const existing = entries.find((entry) => entry.name === bitmap.name);
    if (!existing) {
      if (entries.length + 1 > MAX_BITMAPS) throw invalid("Too many persistent bitmaps");
      directorySize += directoryEntrySize(new TextEncoder().encode(bitmap.name).length);
      if (directorySize > MAX_DIRECTORY_SIZE) throw invalid("Bitmap directory is too large");
    } else if (!existing.inUse) {
      throw invalid(`Bitmap '${bitmap.name}' already exists in the image`);
    } else {
      replaced.push(existing);
    }
  }
  const allocated: Array<{ offset: number; count: number }> = [];
  try {
    const updated = [...entries];
    for (const bitmap of toStore) {
      const table = await writeBitmap(metadata, bitmap, allocated);
      const entry: BitmapDirectoryEntry = {
        name: bitmap.name,
        ...table,
        granularityBits: Math.log2(bitmap.granularity),
        inUse: false,
        auto: bitmap.enabled,
      };
      const at = updated.findIndex((existing) => existing.name === bitmap.name);
      if (at >= 0) updated[at] = entry;
      else updated.push(entry);
    }
    await replaceDirectory(metadata, old, updated, allocated);
  } catch (error) {
    await release(metadata, allocated);
    throw error;
  }
  for (const entry of replaced) await freeTable(metadata, entry);
}

/**
 * Remove bitmap `name` from the image at once, as QEMU's
 * block-dirty-bitmap-remove does for a persistent bitmap: a new directory
 * without it (or no extension when it was the last), then its clusters are
 * freed. A name the image does not hold is not an error (a bitmap created
 * since the last store).
 */
export async function removeStoredBitmap(metadata: Qcow2Metadata, name: string): Promise<void> {
  const entries = await readBitmapDirectory(metadata);
  const removed = entries.find((entry) => entry.name === name);
  if (!removed) return;
  const allocated: Array<{ offset: number; count: number }> = [];
  try {
    await replaceDirectory(
      metadata,
      currentDirectory(metadata),
      entries.filter((entry) => entry !== removed),
      allocated,
    );
  } catch (error) {
    await release(metadata, allocated);
    throw new DenbdError("io", `Failed to update bitmap extension: ${messageOf(error)}`, {
      cause: error,
    });
  }
  await freeTable(metadata, removed);
}
