/**
 * The daemon's side of the qcow2 driver: opening a `driver=qcow2` node over
 * its file with the backing QEMU would give it, where a header's relative
 * backing name points, and how query-named-block-nodes describes a qcow2
 * image (cluster size, format-specific data, backing names, snapshots) as
 * qemu-storage-daemon 7.2 prints it. Everything that knows the qcow2
 * driver's API is here; src/daemon/nodes.ts builds the graph around it.
 *
 * @module
 */

import { type BackingReference, Qcow2Node } from "../block/qcow2/qcow2-node.ts";
import { qcow2BitmapStore } from "../block/qcow2/bitmap-store.ts";
import { DirtyTrackingNode } from "../block/dirty-tracking.ts";
import type { BlockNode } from "../block/node.ts";
import { findSnapshot, type Qcow2Snapshot } from "../block/qcow2/snapshots.ts";
import { DenbdError, messageOf } from "../errors.ts";
import type { ImageInfoValue } from "./qapi-types.ts";

export { type BackingReference, Qcow2Node };

/** How a qcow2 node is opened. */
export interface Qcow2NodeOptions {
  /** Refuse changes. */
  readonly readOnly: boolean;
  /** QEMU's discard mode for the image. */
  readonly discard: "ignore" | "unmap";
  /** The backing node, null for none, undefined for the one the header names (via `openBacking`). */
  readonly backing: BlockNode | null | undefined;
  /** Open the backing file the header names. */
  readonly openBacking: (reference: BackingReference) => Promise<BlockNode>;
  /**
   * qemu-nbd -l: open read-only at this internal snapshot, found as
   * "snapshot.id=ID", "snapshot.name=NAME" or an id or name.
   */
  readonly loadSnapshot?: string;
}

/** The options of BlockdevOptionsQcow2 denbd refuses, with why. */
const REFUSED_OPTIONS = {
  "data-file": "external data files are not supported by denbd yet",
  "encrypt": "encrypted qcow2 images are not supported by denbd",
} as const;

/** Refuse the qcow2 options denbd does not implement. */
export function checkQcow2Options(options: Readonly<Record<string, unknown>>): void {
  for (const [name, why] of Object.entries(REFUSED_OPTIONS)) {
    if (options[name] !== undefined) throw new DenbdError("not-supported", `${name}: ${why}`);
  }
}

/** Open a qcow2 image stored in `file` (at an internal snapshot when `loadSnapshot` names one). */
export async function openQcow2(file: BlockNode, options: Qcow2NodeOptions): Promise<Qcow2Node> {
  const snapshot = options.loadSnapshot === undefined
    ? undefined
    : await snapshotNamed(file, options.loadSnapshot);
  return await Qcow2Node.open(file, {
    readOnly: options.readOnly || snapshot !== undefined,
    discard: options.discard,
    ...(options.backing !== undefined && { backing: options.backing }),
    openBacking: options.openBacking,
    ...(snapshot && {
      snapshot: {
        l1TableOffset: snapshot.l1TableOffset,
        l1Size: snapshot.l1Size,
        size: snapshot.size,
      },
    }),
  });
}

/**
 * The internal snapshot `spec` names, from the snapshot table of the image
 * in `file`, read with the image opened read-only and without its backing
 * chain (which only the final open opens).
 */
async function snapshotNamed(file: BlockNode, spec: string): Promise<Qcow2Snapshot> {
  const image = await Qcow2Node.open(file, { readOnly: true, backing: null });
  try {
    return findSnapshot(image.snapshots, spec);
  } catch (error) {
    throw new DenbdError("not-found", `Failed to load snapshot: ${messageOf(error)}`);
  } finally {
    await image.close();
  }
}

/**
 * Wrap `inner` (the qcow2 node `image`, or a filter over it) for dirty
 * tracking with the image as its persistent-bitmap store, and load the
 * bitmaps the image holds, as QEMU does when it opens a qcow2 node (they
 * are stored again when the node is closed: see NodeGraph).
 */
export async function trackWithPersistentBitmaps(
  image: Qcow2Node,
  inner: BlockNode,
): Promise<DirtyTrackingNode> {
  const store = qcow2BitmapStore(image.metadata);
  const tracking = new DirtyTrackingNode(inner, { persistentStore: store });
  for (const bitmap of await store.load()) tracking.bitmaps.adopt(bitmap);
  return tracking;
}

/**
 * Where a backing name points, as QEMU combines it with the name of the
 * image that holds it: an absolute name as it is, a relative one in the
 * image's directory, joined as text ("sub/" + "../base.qcow2"), not normalised.
 */
export function backingPath(imageFilename: string, backingName: string): string {
  if (backingName.startsWith("/")) return backingName;
  const slash = imageFilename.lastIndexOf("/");
  return slash < 0 ? backingName : imageFilename.slice(0, slash + 1) + backingName;
}

/**
 * What a qcow2 image adds to its ImageInfo: the cluster size, the backing
 * file its header names (and where that points from `imageFilename`), its
 * internal snapshots, and qcow2's format-specific data.
 */
export function qcow2ImageInfo(
  node: Qcow2Node,
  imageFilename: string,
): Partial<ImageInfoValue> {
  const info = node.info;
  const reference = node.backingReference;
  return {
    "cluster-size": info.clusterSize,
    ...(reference && {
      "backing-filename": reference.filename,
      "full-backing-filename": backingPath(imageFilename, reference.filename),
      ...(reference.format !== undefined && { "backing-filename-format": reference.format }),
    }),
    ...(node.snapshots.length > 0 && {
      snapshots: node.snapshots.map((snapshot) => ({
        "id": snapshot.id,
        "name": snapshot.name,
        "vm-state-size": snapshot.vmStateSize,
        "date-sec": snapshot.dateSeconds,
        "date-nsec": snapshot.dateNanoseconds,
        "vm-clock-sec": Math.floor(snapshot.vmClockNanoseconds / 1e9),
        "vm-clock-nsec": snapshot.vmClockNanoseconds % 1e9,
        "icount": 0,
      })),
    }),
    "format-specific": {
      type: "qcow2",
      data: info.version === 2
        ? {
          "compat": "0.10",
          "compression-type": info.compressionType,
          "refcount-bits": info.refcountBits,
        }
        : {
          "compat": "1.1",
          "compression-type": info.compressionType,
          "lazy-refcounts": info.lazyRefcounts,
          "refcount-bits": info.refcountBits,
          "corrupt": info.corrupt,
          "extended-l2": info.extendedL2,
          ...(info.dataFile !== undefined && { "data-file": info.dataFile }),
        },
    },
  };
}
