/**
 * The dirty-bitmap operations of QEMU's QMP interface (block-dirty-bitmap-add,
 * -remove, -clear, -enable, -disable, -merge, x-debug-block-dirty-bitmap-sha256)
 * and the bitmap checks of block-export-add, over nodes found by name. Every
 * check happens in the order qemu-storage-daemon 7.2 makes it and fails with
 * its message (all of them are GenericError in QMP).
 *
 * @example
 * ```ts
 * import { DirtyBitmapCommands } from "./bitmap-commands.ts";
 * import { DirtyTrackingNode } from "./dirty-tracking.ts";
 * import { MemoryNode } from "./memory.ts";
 * const nodes = new Map([["disk", new DirtyTrackingNode(new MemoryNode(1 << 20))]]);
 * const commands = new DirtyBitmapCommands((name) => nodes.get(name));
 * commands.add("disk", "b0", { granularity: 4096 });
 * commands.disable("disk", "b0");
 * ```
 * @module
 */

import { DenbdError } from "../errors.ts";
import {
  BITMAP_MAX_NAME_BYTES,
  type DirtyBitmap,
  type DirtyBitmapInfo,
  type DirtyBitmapOptions,
  isValidGranularity,
} from "./dirty-bitmap.ts";
import type { DirtyTrackingNode } from "./dirty-tracking.ts";

/** Finds a node (with its bitmaps) by node name. */
export type BitmapNodeLookup = (nodeName: string) => DirtyTrackingNode | undefined;

/**
 * A bitmap named in a merge or an export: a bare name (on the target's node,
 * or on the exported node), or a node and a name. QAPI's
 * BlockDirtyBitmapOrStr values are of this shape and are passed as they are.
 */
export type BitmapRef = string | { readonly node: string; readonly name: string };

/** Bitmaps claimed (made busy) by an export, and how to give them back. */
export interface ExportBitmaps {
  /** The bitmaps, in the order given, without repeats. */
  readonly bitmaps: readonly DirtyBitmap[];
  /** Release every claim (idempotent); call when the export goes away. */
  release(): void;
}

/** Which of QEMU's bitmap states an operation tolerates (busy never is). */
interface Tolerated {
  readonly readOnly?: boolean;
  readonly inconsistent?: boolean;
}

/** Refuse a busy bitmap, a read-only or inconsistent one unless tolerated. */
function checkUsable(bitmap: DirtyBitmap, tolerated: Tolerated): void {
  if (bitmap.busy) {
    throw new DenbdError(
      "busy",
      `Bitmap '${bitmap.name}' is currently in use by another operation and cannot be used`,
    );
  }
  if (bitmap.readOnly && !tolerated.readOnly) {
    throw new DenbdError(
      "read-only",
      `Bitmap '${bitmap.name}' is readonly and cannot be modified`,
    );
  }
  if (bitmap.inconsistent && !tolerated.inconsistent) {
    throw new DenbdError(
      "invalid",
      `Bitmap '${bitmap.name}' is inconsistent and cannot be used`,
    );
  }
}

/** Changes to the bitmap itself: busy, read-only and inconsistent bitmaps are refused. */
const MODIFY: Tolerated = {};
/** Recording state changes (enable, disable) and exports: read-only bitmaps are fine. */
const ALLOW_READ_ONLY: Tolerated = { readOnly: true };
/** Removal: inconsistent bitmaps may (and should) be removed. */
const ALLOW_INCONSISTENT: Tolerated = { inconsistent: true };

/** QMP's dirty-bitmap commands over the nodes `lookup` finds. */
export class DirtyBitmapCommands {
  readonly #lookup: BitmapNodeLookup;

  /** Operate on the nodes `lookup` finds by node name. */
  constructor(lookup: BitmapNodeLookup) {
    this.#lookup = lookup;
  }

  /**
   * block-dirty-bitmap-add: a new, clean bitmap `name` on node `nodeName`
   * (default granularity: the node's).
   */
  add(nodeName: string, name: string, options: DirtyBitmapOptions = {}): DirtyBitmap {
    if (name === "") throw new DenbdError("invalid", "Bitmap name cannot be empty");
    const node = this.#lookup(nodeName);
    if (!node) {
      throw new DenbdError(
        "not-found",
        `Cannot find device='${nodeName}' nor node-name='${nodeName}'`,
      );
    }
    const granularity = options.granularity ?? node.bitmaps.defaultGranularity;
    if (!isValidGranularity(granularity)) {
      throw new DenbdError("invalid", "Granularity must be power of 2 and at least 512");
    }
    // qemu-storage-daemon 7.2: a node that cannot store bitmaps is refused
    // first, then a name in use, then what the image cannot hold.
    const store = options.persistent ? node.persistentStore : undefined;
    if (options.persistent && !store) {
      throw new DenbdError(
        "not-supported",
        `Can't store persistent bitmaps to ${nodeName}: Operation not supported`,
      );
    }
    if (node.bitmaps.find(name)) {
      throw new DenbdError("busy", `Bitmap already exists: ${name}`);
    }
    try {
      store?.checkNewBitmap(name, granularity);
    } catch (error) {
      if (!(error instanceof DenbdError)) throw error;
      throw new DenbdError(
        error.kind,
        `Can't make bitmap '${name}' persistent in '${nodeName}': ${error.message}`,
      );
    }
    if (new TextEncoder().encode(name).length > BITMAP_MAX_NAME_BYTES) {
      throw new DenbdError("invalid", `Bitmap name too long: ${name}`);
    }
    return node.bitmaps.create(name, {
      granularity,
      persistent: options.persistent,
      disabled: options.disabled,
    });
  }

  /**
   * block-dirty-bitmap-remove: bitmap `name` of node `nodeName`. A
   * persistent bitmap is removed from the image first, at once, as QEMU
   * does; if that fails the bitmap stays. The checks throw at once, and a
   * bitmap that is not in an image is gone when this returns.
   */
  remove(nodeName: string, name: string): Promise<void> {
    const { node, bitmap } = this.#find(nodeName, name);
    checkUsable(bitmap, ALLOW_INCONSISTENT);
    const store = node.persistentStore;
    if (!bitmap.persistent || !store) {
      node.bitmaps.delete(bitmap);
      return Promise.resolve();
    }
    return store.remove(name).then(() => void node.bitmaps.delete(bitmap));
  }

  /** block-dirty-bitmap-clear: every granule clean again. */
  clear(nodeName: string, name: string): void {
    const { bitmap } = this.#find(nodeName, name);
    checkUsable(bitmap, MODIFY);
    bitmap.clear();
  }

  /** block-dirty-bitmap-enable: start recording writes (a no-op when enabled). */
  enable(nodeName: string, name: string): void {
    const { bitmap } = this.#find(nodeName, name);
    checkUsable(bitmap, ALLOW_READ_ONLY);
    bitmap.enabled = true;
  }

  /** block-dirty-bitmap-disable: stop recording writes (a no-op when disabled). */
  disable(nodeName: string, name: string): void {
    const { bitmap } = this.#find(nodeName, name);
    checkUsable(bitmap, ALLOW_READ_ONLY);
    bitmap.enabled = false;
  }

  /**
   * block-dirty-bitmap-merge: OR the `sources` into bitmap `target` of node
   * `nodeName`, all or nothing (a source by bare name is on that node). The
   * target is checked first, then each source in order (found, usable, same
   * size). Sources may be on other nodes and of any granularity; the target
   * may be disabled. An empty source list changes nothing
   * (qemu-storage-daemon 7.2 crashes on it).
   */
  merge(nodeName: string, target: string, sources: readonly BitmapRef[]): void {
    const { node, bitmap: into } = this.#find(nodeName, target);
    checkUsable(into, MODIFY);
    const found: DirtyBitmap[] = [];
    for (const ref of sources) {
      const source = typeof ref === "string"
        ? this.#bitmapOn(node, ref)
        : this.#find(ref.node, ref.name).bitmap;
      checkUsable(source, ALLOW_READ_ONLY);
      if (source.size !== into.size) {
        throw new DenbdError(
          "invalid",
          `Bitmaps are of different sizes (destination size is ${into.size}, ` +
            `source size is ${source.size}) and can't be merged`,
        );
      }
      found.push(source);
    }
    for (const source of found) into.mergeFrom(source);
  }

  /**
   * x-debug-block-dirty-bitmap-sha256: the hash of the bits of bitmap `name`
   * of node `nodeName`, as QEMU computes it.
   */
  sha256(nodeName: string, name: string): Promise<string> {
    return Promise.try(() => this.#find(nodeName, name).bitmap.sha256());
  }

  /** The bitmaps of node `nodeName`, newest first, as query-named-block-nodes lists them. */
  query(nodeName: string): DirtyBitmapInfo[] {
    return this.#lookup(nodeName)?.bitmaps.list().map((bitmap) => bitmap.info()) ?? [];
  }

  /**
   * The bitmap checks of block-export-add (type nbd, `bitmaps`): find each
   * one (a bare name on the exported node, or node and name), refuse busy or
   * inconsistent ones and, for a read-only export of a writable node,
   * enabled ones given by bare name; then mark them all busy.
   */
  claimForExport(
    exportNode: DirtyTrackingNode,
    refs: readonly BitmapRef[],
    readOnly: boolean,
  ): ExportBitmaps {
    const bitmaps: DirtyBitmap[] = [];
    for (const ref of refs) {
      let bitmap: DirtyBitmap;
      if (typeof ref === "string") {
        const found = exportNode.bitmaps.find(ref);
        if (!found) throw new DenbdError("not-found", `Bitmap '${ref}' is not found`);
        bitmap = found;
        checkUsable(bitmap, ALLOW_READ_ONLY);
        if (readOnly && exportNode.capabilities.writable && bitmap.enabled) {
          throw new DenbdError(
            "invalid",
            `Enabled bitmap '${ref}' incompatible with readonly export`,
          );
        }
      } else {
        bitmap = this.#find(ref.node, ref.name).bitmap;
        checkUsable(bitmap, ALLOW_READ_ONLY);
      }
      if (!bitmaps.includes(bitmap)) bitmaps.push(bitmap);
    }
    const releases = bitmaps.map((bitmap) => bitmap.claim());
    return {
      bitmaps,
      release: () => releases.forEach((release) => release()),
    };
  }

  /** A node and one of its bitmaps, with QEMU's messages when either is missing. */
  #find(nodeName: string, name: string): { node: DirtyTrackingNode; bitmap: DirtyBitmap } {
    const node = this.#lookup(nodeName);
    if (!node) throw new DenbdError("not-found", `Node '${nodeName}' not found`);
    return { node, bitmap: this.#bitmapOn(node, name) };
  }

  #bitmapOn(node: DirtyTrackingNode, name: string): DirtyBitmap {
    const bitmap = node.bitmaps.find(name);
    if (!bitmap) throw new DenbdError("not-found", `Dirty bitmap '${name}' not found`);
    return bitmap;
  }
}
