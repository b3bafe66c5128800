/**
 * The daemon's block graph: named nodes (file, raw and qcow2 drivers),
 * children defined inline or opened from a qcow2 header's backing file
 * (with generated names, as QEMU's `#blockNNN`), who uses whom and in which
 * role, and the description of each node that query-named-block-nodes
 * gives. Every node is wrapped for dirty-bitmap tracking, so a change
 * through any path marks its bitmaps; with detect-zeroes, a filter below the
 * tracking turns writes of zeroes into write-zeroes.
 *
 * @module
 */

import { FileNode } from "../block/file.ts";
import { RawNode } from "../block/raw.ts";
import { DirtyTrackingNode } from "../block/dirty-tracking.ts";
import { DETECT_ZEROES_UNMAP_NEEDS_DISCARD, DetectZeroesNode } from "../block/detect-zeroes.ts";
import {
  backingPermissions,
  type PermissionRequest,
  READ_ONLY_USE,
  storagePermissions,
  takePermissions,
  WRITABLE_USE,
} from "../block/permissions.ts";
import type { DirtyBitmapInfo } from "../block/dirty-bitmap.ts";
import type { BlockNode, ChildRole } from "../block/node.ts";
import { probeFormat } from "../block/probe.ts";
import { DenbdError, messageOf } from "../errors.ts";
import { isWellFormedId } from "../qmp/qemu-opts.ts";
import { formatJson } from "../qmp/json-value.ts";
import {
  backingPath,
  type BackingReference,
  checkQcow2Options,
  openQcow2,
  qcow2ImageInfo,
  Qcow2Node,
  trackWithPersistentBitmaps,
} from "./qcow2-nodes.ts";
import {
  type BlockDeviceInfoValue,
  type BlockdevOptionsValue,
  type ImageInfoValue,
  type ImplementedBlockdevOptions,
  isImplementedDriver,
} from "./qapi-types.ts";

/** A child of a node in the graph. */
export interface EntryChild {
  /** The role it plays for its parent. */
  readonly role: ChildRole;
  /** Its node name. */
  readonly name: string;
  /** It was defined inline or opened from an image header, and goes away with its parent. */
  readonly owned: boolean;
}

/** A node of the graph with what the daemon knows about it. */
export interface NodeEntry {
  /** The node's name. */
  readonly name: string;
  /** The driver that opened it. */
  readonly driver: ImplementedBlockdevOptions["driver"];
  /** The node, wrapped for dirty-bitmap tracking. */
  readonly node: DirtyTrackingNode;
  /** The options it was opened with. */
  readonly options: ImplementedBlockdevOptions;
  /** Its children by role (file, backing). */
  readonly children: readonly EntryChild[];
  /** The qcow2 driver's node, for a qcow2 image (its header's details). */
  readonly qcow2?: Qcow2Node;
}

/** Options of {@linkcode NodeGraph.add} beyond blockdev-add's. */
export interface NodeOpenExtras {
  /**
   * The format was probed (`denbd serve` without -f): a raw node keeps
   * block 0 from turning into another format.
   */
  readonly probed?: boolean;
  /** qemu-nbd -l: open a qcow2 image at this internal snapshot (see {@linkcode openQcow2}). */
  readonly loadSnapshot?: string;
}

/** Generated names of inline children start with this (QEMU uses "#block"). */
const GENERATED_PREFIX = "#block";

/**
 * The longest backing chain opened from image headers. QEMU has no limit;
 * denbd bounds the files and memory one blockdev-add can take.
 */
export const MAX_BACKING_CHAIN = 256;

/** The chain being opened from headers: the real paths of its images, top first. */
type ChainPaths = readonly string[];

/** The named nodes of one daemon. */
export class NodeGraph {
  /** Nodes by name, in the order they were named; null while a node is being opened. */
  readonly #nodes = new Map<string, NodeEntry | null>();
  #generated = 0;

  /** The node named `name`. */
  get(name: string): NodeEntry | undefined {
    return this.#nodes.get(name) ?? undefined;
  }

  /** Every node, newest first (as QEMU lists them). */
  list(): NodeEntry[] {
    return [...this.#nodes.values()].filter((entry) => entry !== null).reverse();
  }

  /**
   * Open the node `options` describes (blockdev-add). A root node needs a
   * node-name; children may be node names or inline definitions.
   */
  async add(options: BlockdevOptionsValue, extras: NodeOpenExtras = {}): Promise<NodeEntry> {
    const name = options["node-name"];
    if (name === undefined) {
      throw new DenbdError("invalid", "'node-name' must be specified for the root node");
    }
    return await this.#open(options, name, extras, [], rootUse(options));
  }

  /**
   * Close and forget the node named `name` (blockdev-del). Refused while
   * another node has it as a child, or while `usedByExport` (an export
   * serves it), with QEMU's messages.
   */
  async delete(name: string, usedByExport: boolean): Promise<void> {
    const entry = this.get(name);
    if (!entry || name.startsWith(GENERATED_PREFIX)) {
      throw new DenbdError("not-found", `Failed to find node with node-name='${name}'`);
    }
    const parent = this.#parentOf(name);
    if (parent?.child.role === "backing") {
      throw new DenbdError(
        "busy",
        `Node '${name}' is busy: node is used as backing hd of '${parent.entry.name}'`,
      );
    }
    if (parent) throw new DenbdError("busy", `Block device ${name} is in use`);
    if (usedByExport) throw new DenbdError("busy", `Node ${name} is in use`);
    await this.#close(entry);
  }

  /** Close every node, parents before their children. */
  async closeAll(): Promise<void> {
    for (const entry of this.list()) {
      if (this.get(entry.name)) await this.#close(entry);
    }
  }

  /**
   * The description of `entry` for query-named-block-nodes: with `flat`,
   * without the backing chain nested in `image` (and a depth of 0).
   */
  async describe(
    entry: NodeEntry,
    bitmaps: readonly DirtyBitmapInfo[],
    flat = false,
  ): Promise<BlockDeviceInfoValue> {
    const cache = entry.options.cache ?? {};
    const backing = this.#backingOf(entry);
    return {
      "file": this.#displayName(entry),
      "node-name": entry.name,
      "ro": entry.options["read-only"] ?? false,
      "drv": entry.driver,
      ...(backing && { "backing_file": this.#displayName(backing) }),
      "backing_file_depth": flat ? 0 : this.#chainDepth(entry),
      "encrypted": false,
      "detect_zeroes": entry.options["detect-zeroes"] ?? "off",
      "bps": 0,
      "bps_rd": 0,
      "bps_wr": 0,
      "iops": 0,
      "iops_rd": 0,
      "iops_wr": 0,
      "image": await this.#imageInfo(entry, flat),
      "cache": {
        "writeback": true,
        "direct": cache.direct ?? false,
        "no-flush": cache["no-flush"] ?? false,
      },
      "write_threshold": 0,
      ...(bitmaps.length > 0 && { "dirty-bitmaps": bitmaps }),
    };
  }

  /** The ImageInfo of `entry`, with its backing chain nested unless `flat`. */
  async #imageInfo(entry: NodeEntry, flat: boolean): Promise<ImageInfoValue> {
    const backing = this.#backingOf(entry);
    const filename = this.#displayName(entry);
    return {
      "filename": filename,
      "format": entry.driver,
      // QEMU counts a file's length in whole 512-byte sectors.
      "virtual-size": entry.driver === "file" ? roundUp(entry.node.size, 512) : entry.node.size,
      "actual-size": await allocatedBytes(this.#imagePath(entry)),
      "dirty-flag": false,
      ...(entry.qcow2 && qcow2ImageInfo(entry.qcow2, this.#imagePath(entry))),
      ...(backing && !flat && { "backing-image": await this.#imageInfo(backing, false) }),
    };
  }

  /** How many backing images are below `entry`. */
  #chainDepth(entry: NodeEntry): number {
    let depth = 0;
    for (let at = this.#backingOf(entry); at; at = this.#backingOf(at)) depth++;
    return depth;
  }

  #childOf(entry: NodeEntry, role: ChildRole): NodeEntry | undefined {
    const child = entry.children.find((candidate) => candidate.role === role);
    return child && this.get(child.name);
  }

  #backingOf(entry: NodeEntry): NodeEntry | undefined {
    return this.#childOf(entry, "backing");
  }

  /** The path of the file at the bottom of `entry`'s file children. */
  #imagePath(entry: NodeEntry): string {
    if (entry.options.driver === "file") return entry.options.filename;
    return this.#imagePath(this.#childOf(entry, "file")!);
  }

  /**
   * The filename QEMU shows for a node: the image's path while the node
   * adds nothing to it, else `json:` and the options that open it again.
   */
  #displayName(entry: NodeEntry): string {
    return this.#plainFilename(entry) ?? `json:${formatJson(this.#openOptions(entry))}`;
  }

  /**
   * The image's path, unless something on the way makes it another image:
   * a raw window (offset, size), or a qcow2 backing other than its header's.
   */
  #plainFilename(entry: NodeEntry): string | undefined {
    const options = entry.options;
    if (options.driver === "file") return options.filename;
    if (options.driver === "raw" && (options.offset !== undefined || options.size !== undefined)) {
      return undefined;
    }
    if (options.driver === "qcow2" && options.backing !== undefined) return undefined;
    return this.#plainFilename(this.#childOf(entry, "file")!);
  }

  /** The options that matter to what a node reads (QEMU's full_open_options). */
  #openOptions(entry: NodeEntry): Record<string, unknown> {
    const options = entry.options;
    if (options.driver === "file") return { driver: "file", filename: options.filename };
    const file = this.#openOptions(this.#childOf(entry, "file")!);
    if (options.driver === "raw") {
      return {
        driver: "raw",
        ...(options.offset !== undefined && { offset: options.offset }),
        ...(options.size !== undefined && { size: options.size }),
        file,
      };
    }
    const backing = this.#backingOf(entry);
    return {
      driver: "qcow2",
      ...(options.backing !== undefined && {
        backing: backing ? this.#openOptions(backing) : null,
      }),
      file,
    };
  }

  /**
   * Open a node and its children; `use` is what its user (the daemon for a
   * root node, the parent for a child) takes on it, passed down by role so
   * that each file node takes its image locks before anything reads it.
   */
  async #open(
    options: BlockdevOptionsValue,
    name: string,
    extras: NodeOpenExtras,
    chain: ChainPaths,
    use: PermissionRequest,
  ): Promise<NodeEntry> {
    if (!isWellFormedId(name) && !name.startsWith(GENERATED_PREFIX)) {
      throw new DenbdError("invalid", `Invalid node-name: '${name}'`);
    }
    if (this.#nodes.has(name)) {
      throw new DenbdError("busy", `Duplicate nodes with node-name='${name}'`);
    }
    if (!isImplementedDriver(options)) {
      throw new DenbdError(
        "not-supported",
        `driver '${options.driver}' is not supported by denbd yet`,
      );
    }
    const detectZeroes = options["detect-zeroes"] ?? "off";
    if (detectZeroes === "unmap" && options.discard !== "unmap") {
      throw new DenbdError("invalid", DETECT_ZEROES_UNMAP_NEEDS_DISCARD);
    }
    try {
      const opened = await this.#openDriver(options, name, extras, chain, use);
      const inner = detectZeroes === "off"
        ? opened.node
        : new DetectZeroesNode(opened.node, detectZeroes);
      const entry: NodeEntry = {
        name,
        driver: options.driver,
        node: opened.node instanceof Qcow2Node
          ? await trackWithPersistentBitmaps(opened.node, inner)
          : new DirtyTrackingNode(inner),
        options,
        children: opened.children,
        ...(opened.node instanceof Qcow2Node && { qcow2: opened.node }),
      };
      this.#nodes.set(name, entry);
      return entry;
    } catch (error) {
      this.#nodes.delete(name);
      throw error;
    }
  }

  /** Open the driver's node and its children; on failure, close the children it opened. */
  async #openDriver(
    options: ImplementedBlockdevOptions,
    name: string,
    extras: NodeOpenExtras,
    chain: ChainPaths,
    use: PermissionRequest,
  ): Promise<{ node: BlockNode; children: EntryChild[] }> {
    if (options.driver === "file") {
      const node = await FileNode.open(options.filename, {
        readOnly: options["read-only"],
        direct: options.cache?.direct,
        noFlush: options.cache?.["no-flush"],
        discard: options.discard,
        lock: options.locking !== "off",
        // As QEMU's protocol nodes: a format above (qcow2) may write past the
        // end; users of the node itself are bound by their own size checks.
        growable: true,
      });
      // The daemon uses every node it opens, as an export would, from the
      // start: the file's image locks are taken now, before a format reads it
      // (QEMU waits for a user; see docs/compatibility.md). Closing the node
      // releases them.
      try {
        takePermissions(node, options["read-only"] ? readOnlyUse(use) : use);
      } catch (error) {
        await node.close();
        throw error;
      }
      return { node, children: [] };
    }
    const children: EntryChild[] = [];
    try {
      const writable = !options["read-only"];
      const file = await this.#child(
        inheritReadOnly(options.file, options["read-only"]),
        "file",
        children,
        chain,
        options.driver === "qcow2" ? storagePermissions(use, writable) : use,
      );
      // Named after its file and before its backing, as QEMU lists them.
      this.#nodes.set(name, null);
      if (options.driver === "raw") {
        const node = RawNode.open(file.node, {
          offset: options.offset,
          size: options.size,
          readOnly: options["read-only"],
          discard: options.discard,
          probed: extras.probed,
        });
        return { node, children };
      }
      checkQcow2Options(options);
      const imagePath = this.#imagePath(file);
      const path = chain.length ? [] : [await Deno.realPath(imagePath).catch(() => imagePath)];
      // QEMU takes the deprecated "backing": "" (the keyval form `backing=`) as null.
      const backingRef = options.backing === "" ? null : options.backing;
      const backing = backingRef === undefined || backingRef === null
        ? backingRef
        : (await this.#backingChild(backingRef, children, backingPermissions(use))).node;
      const node = await openQcow2(file.node, {
        readOnly: Boolean(options["read-only"]),
        discard: options.discard ?? "ignore",
        backing,
        openBacking: async (reference) =>
          (await this.#headerBacking(
            reference,
            imagePath,
            [...chain, ...path],
            children,
            backingPermissions(use),
          )).node,
        loadSnapshot: extras.loadSnapshot,
      });
      return { node, children };
    } catch (error) {
      await this.#closeOwned(children);
      throw error;
    }
  }

  /** The child `ref` names or defines, recorded in `children` under `role`. */
  async #child(
    ref: string | BlockdevOptionsValue,
    role: ChildRole,
    children: EntryChild[],
    chain: ChainPaths,
    use: PermissionRequest,
  ): Promise<NodeEntry> {
    if (typeof ref === "string") {
      const found = this.get(ref);
      if (!found) {
        throw new DenbdError("not-found", `Cannot find device='${ref}' nor node-name='${ref}'`);
      }
      children.push({ role, name: ref, owned: false });
      return found;
    }
    const opened = await this.#open(ref, this.#generatedName(), {}, chain, use);
    children.push({ role, name: opened.name, owned: true });
    return opened;
  }

  /** A backing given in blockdev-add (a node name or an inline definition). */
  async #backingChild(
    ref: string | BlockdevOptionsValue,
    children: EntryChild[],
    use: PermissionRequest,
  ): Promise<NodeEntry> {
    try {
      return await this.#child(ref, "backing", children, [], use);
    } catch (error) {
      throw new DenbdError("invalid", `Could not open backing file: ${messageOf(error)}`);
    }
  }

  /**
   * Open the backing file a qcow2 header names, read-only as QEMU does:
   * the name resolved against the image's directory, the format the header
   * gives or else probed; a loop or a chain longer than
   * {@linkcode MAX_BACKING_CHAIN} is refused.
   */
  async #headerBacking(
    reference: BackingReference,
    imageFilename: string,
    chain: ChainPaths,
    children: EntryChild[],
    use: PermissionRequest,
  ): Promise<NodeEntry> {
    try {
      const filename = backingPath(imageFilename, reference.filename);
      const real = await Deno.realPath(filename).catch(() => filename);
      if (chain.includes(real)) {
        throw new DenbdError("invalid", `Backing file '${filename}' creates an infinite loop.`);
      }
      if (chain.length >= MAX_BACKING_CHAIN) {
        throw new DenbdError(
          "not-supported",
          `backing chain longer than ${MAX_BACKING_CHAIN} images is not supported by denbd`,
        );
      }
      const format = reference.format ?? await probeFormat(filename);
      const file = { driver: "file", filename, "read-only": true } as const;
      const options = { driver: format, "read-only": true, file } as BlockdevOptionsValue;
      const opened = await this.#open(
        options,
        this.#generatedName(),
        {},
        [...chain, real],
        use,
      );
      children.push({ role: "backing", name: opened.name, owned: true });
      return opened;
    } catch (error) {
      throw new DenbdError("invalid", `Could not open backing file: ${messageOf(error)}`);
    }
  }

  /** A name for an inline child, like QEMU's "#block123". */
  #generatedName(): string {
    this.#generated++;
    return `${GENERATED_PREFIX}${String(this.#generated).padStart(3, "0")}`;
  }

  #parentOf(name: string): { entry: NodeEntry; child: EntryChild } | undefined {
    for (const entry of this.list()) {
      const child = entry.children.find((candidate) => candidate.name === name);
      if (child) return { entry, child };
    }
    return undefined;
  }

  async #close(entry: NodeEntry): Promise<void> {
    this.#nodes.delete(entry.name);
    const { node } = entry;
    // QEMU stores persistent bitmaps when it closes the node.
    if (node.persistentStore && node.capabilities.writable) {
      await node.persistentStore.store(node.bitmaps.list()).catch(() => {});
    }
    await entry.node.flush().catch(() => {});
    await entry.node.close();
    await this.#closeOwned(entry.children);
  }

  /** Close the children that belong to their parent (inline or from a header). */
  async #closeOwned(children: readonly EntryChild[]): Promise<void> {
    for (const child of children) {
      const entry = child.owned ? this.get(child.name) : undefined;
      if (entry) await this.#close(entry);
    }
  }
}

/** What the daemon takes on a root node it opens: a reader's or a writer's use. */
function rootUse(options: BlockdevOptionsValue): PermissionRequest {
  return options["read-only"] ? READ_ONLY_USE : WRITABLE_USE;
}

/**
 * What a read-only file node takes for `use`: a writer's use becomes a
 * reader's (a writable node over a read-only file cannot write anyway);
 * other uses (a backing file's) stay as they are.
 */
function readOnlyUse(use: PermissionRequest): PermissionRequest {
  return use.take.includes("write") ? READ_ONLY_USE : use;
}

/** An inline child takes its parent's read-only unless it says otherwise, as in QEMU. */
function inheritReadOnly(
  ref: string | BlockdevOptionsValue,
  readOnly: boolean | undefined,
): string | BlockdevOptionsValue {
  if (typeof ref === "string" || ref["read-only"] !== undefined || readOnly === undefined) {
    return ref;
  }
  return { ...ref, "read-only": readOnly };
}

function roundUp(value: number, multiple: number): number {
  return Math.ceil(value / multiple) * multiple;
}

/** Bytes allocated to `path` on disk (0 if it cannot be read). */
async function allocatedBytes(path: string): Promise<number> {
  try {
    return ((await Deno.stat(path)).blocks ?? 0) * 512;
  } catch {
    return 0;
  }
}
