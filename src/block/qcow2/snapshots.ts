/**
 * qcow2's internal snapshot table (QEMU's docs/interop/qcow2.txt,
 * "Snapshots"): reading it with QEMU's limits and messages, and choosing a
 * snapshot the way `qemu-nbd -l` does.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { findSnapshot, type Qcow2Snapshot } from "./snapshots.ts";
 * const base = {
 *   l1TableOffset: 196608, l1Size: 1, size: 1 << 20, dateSeconds: 0, dateNanoseconds: 0,
 *   vmClockNanoseconds: 0, vmStateSize: 0,
 * };
 * const snapshots: Qcow2Snapshot[] = [
 *   { ...base, id: "1", name: "before" },
 *   { ...base, id: "2", name: "1" },
 * ];
 * assert.equal(findSnapshot(snapshots, "1").name, "before"); // an id matches first
 * assert.equal(findSnapshot(snapshots, "snapshot.name=1").id, "2");
 * assert.throws(() => findSnapshot(snapshots, "after"), /Can't find snapshot/);
 * ```
 * @module
 */

import { DenbdError } from "../../errors.ts";
import { MAX_L1_BYTES } from "./header.ts";
import type { BlockNode } from "../node.ts";

/** One internal snapshot. */
export interface Qcow2Snapshot {
  /** Its unique id (QEMU numbers them "1", "2", ...). */
  readonly id: string;
  /** Its name (tag). */
  readonly name: string;
  /** Where its L1 table starts. */
  readonly l1TableOffset: number;
  /** Entries of its L1 table. */
  readonly l1Size: number;
  /** The virtual size when it was taken. */
  readonly size: number;
  /** When it was taken: seconds since the epoch. */
  readonly dateSeconds: number;
  /** When it was taken: nanoseconds within the second. */
  readonly dateNanoseconds: number;
  /** The guest's clock when it was taken. */
  readonly vmClockNanoseconds: number;
  /** Bytes of saved VM state. */
  readonly vmStateSize: number;
}

/** Where the header says the table is, and what entries are checked against. */
export interface SnapshotTableHeader {
  /** The header's snapshots_offset. */
  readonly snapshotsOffset: number;
  /** The header's nb_snapshots. */
  readonly snapshotCount: number;
  /** The image's cluster size. */
  readonly clusterSize: number;
  /** The image's version. */
  readonly version: 2 | 3;
  /** The virtual size: the size of a snapshot whose entry does not record one. */
  readonly virtualSize?: number;
}

/** Most snapshots (QEMU's QCOW_MAX_SNAPSHOTS). */
export const MAX_SNAPSHOTS = 65536;
/** Largest snapshot table (QEMU's QCOW_MAX_SNAPSHOTS_SIZE). */
export const MAX_SNAPSHOT_TABLE_BYTES = 1024 * MAX_SNAPSHOTS;
/** Most extra data in one entry (QEMU's QCOW_MAX_SNAPSHOT_EXTRA_DATA). */
export const MAX_SNAPSHOT_EXTRA_DATA = 1024;

/** Bytes of an entry before its extra data. */
const ENTRY_HEADER_SIZE = 40;

/** A failure with QEMU's message. */
function invalid(message: string): DenbdError {
  return new DenbdError("invalid", message);
}

/** An unsigned 64-bit big-endian field as a number, or NaN past 2^53. */
function readU64(view: DataView, at: number): number {
  const high = view.getUint32(at);
  return high >= 0x200000 ? NaN : high * 2 ** 32 + view.getUint32(at + 4);
}

/**
 * Read and check the snapshot table: at most 65536 entries, the table
 * cluster aligned, inside the file and at most 64 MiB, each entry's extra
 * data at most 1 KiB (QEMU's limits and messages). Entries are read one at
 * a time, so memory stays within the entries themselves.
 */
export async function readSnapshotTable(
  file: BlockNode,
  header: SnapshotTableHeader,
): Promise<Qcow2Snapshot[]> {
  const { snapshotsOffset, snapshotCount, clusterSize } = header;
  if (snapshotCount === 0) return [];
  if (snapshotCount > MAX_SNAPSHOTS) throw invalid("Snapshot table too large");
  if (!Number.isSafeInteger(snapshotsOffset) || snapshotsOffset % clusterSize !== 0) {
    throw invalid("Snapshot table offset invalid");
  }
  const decoder = new TextDecoder();
  const entryHeader = new Uint8Array(ENTRY_HEADER_SIZE);
  const view = new DataView(entryHeader.buffer);
  const snapshots: Qcow2Snapshot[] = [];
  let offset = snapshotsOffset;
  const readInside = async (into: Uint8Array) => {
    if (offset + into.length > file.size) {
      throw invalid("Failed to read snapshot table: the table lies past the end of the file");
    }
    await file.read(offset, into);
    offset += into.length;
  };
  for (let index = 0; index < snapshotCount; index++) {
    offset = Math.ceil(offset / 8) * 8;
    await readInside(entryHeader);
    const extraDataSize = view.getUint32(36);
    if (extraDataSize > MAX_SNAPSHOT_EXTRA_DATA) {
      throw invalid(`Too much extra metadata in snapshot table entry ${index}`);
    }
    const idBytes = view.getUint16(12);
    const nameBytes = view.getUint16(14);
    if (offset + extraDataSize + idBytes + nameBytes - snapshotsOffset > MAX_SNAPSHOT_TABLE_BYTES) {
      throw invalid("Snapshot table is too big");
    }
    const rest = new Uint8Array(extraDataSize + idBytes + nameBytes);
    await readInside(rest);
    const extra = new DataView(rest.buffer, 0, extraDataSize);
    const vmStateSize = extraDataSize >= 8 ? readU64(extra, 0) : view.getUint32(32);
    const size = extraDataSize >= 16 ? readU64(extra, 8) : header.virtualSize ?? 0;
    const l1TableOffset = readU64(view, 0);
    if (![vmStateSize, size, l1TableOffset].every(Number.isFinite)) {
      throw invalid(`Snapshot table entry ${index} is corrupt`);
    }
    snapshots.push({
      id: decoder.decode(rest.subarray(extraDataSize, extraDataSize + idBytes)),
      name: decoder.decode(rest.subarray(extraDataSize + idBytes)),
      l1TableOffset,
      l1Size: view.getUint32(8),
      size,
      dateSeconds: view.getUint32(16),
      dateNanoseconds: view.getUint32(20),
      vmClockNanoseconds: readU64(view, 24),
      vmStateSize,
    });
  }
  return snapshots;
}

/**
 * Check a snapshot's L1 table before it is opened, as QEMU does when it
 * loads one: at most 32 MiB, cluster aligned and (stricter than QEMU, which
 * reads zeroes there) inside the file of `fileSize` bytes.
 */
export function checkSnapshotL1(
  snapshot: Pick<Qcow2Snapshot, "l1TableOffset" | "l1Size">,
  clusterSize: number,
  fileSize: number,
): void {
  if (snapshot.l1Size > MAX_L1_BYTES / 8) throw invalid("Snapshot L1 table too large");
  const end = snapshot.l1TableOffset + snapshot.l1Size * 8;
  if (snapshot.l1TableOffset % clusterSize !== 0 || end > fileSize) {
    throw invalid("Snapshot L1 table offset invalid");
  }
}

/** The id and name a `snapshot.id=X,snapshot.name=Y` spec gives (QemuOpts syntax, `,,` for a comma). */
function parseSnapshotOptions(spec: string): { id?: string; name?: string } {
  const parts: string[] = [];
  let current = "";
  for (let index = 0; index < spec.length; index++) {
    if (spec[index] !== ",") {
      current += spec[index];
    } else if (spec[index + 1] === ",") {
      current += ",";
      index++;
    } else {
      parts.push(current);
      current = "";
    }
  }
  parts.push(current);
  const found: { id?: string; name?: string } = {};
  for (const part of parts) {
    if (part === "") continue;
    const equals = part.indexOf("=");
    const key = equals < 0 ? part : part.slice(0, equals);
    const value = equals < 0 ? "on" : part.slice(equals + 1);
    if (key === "snapshot.id") found.id = value;
    else if (key === "snapshot.name") found.name = value;
    else throw invalid(`Invalid parameter '${key}'`);
  }
  return found;
}

/**
 * The snapshot `qemu-nbd -l SPEC` opens: with `snapshot.id=X` and/or
 * `snapshot.name=Y` the one matching all that is given; otherwise the one
 * whose id is SPEC, else the one named SPEC. Fails with QEMU's
 * "Can't find snapshot".
 */
export function findSnapshot(snapshots: readonly Qcow2Snapshot[], spec: string): Qcow2Snapshot {
  let found: Qcow2Snapshot | undefined;
  if (spec.startsWith("snapshot.")) {
    const { id, name } = parseSnapshotOptions(spec);
    if (id === undefined && name === undefined) throw invalid("Can't find snapshot");
    found = snapshots.find((snapshot) =>
      (id === undefined || snapshot.id === id) && (name === undefined || snapshot.name === name)
    );
  } else {
    found = snapshots.find((snapshot) => snapshot.id === spec) ??
      snapshots.find((snapshot) => snapshot.name === spec);
  }
  if (!found) throw invalid("Can't find snapshot");
  return found;
}
