/**
 * The daemon's block graph: named nodes (file and raw drivers), children
 * defined inline (with generated names, as QEMU's `#blockNNN`), who uses
 * whom, and the description of each node that query-named-block-nodes gives.
 * Every node is wrapped for dirty-bitmap tracking, so a change through any
 * path marks its bitmaps.
 *
 * @module
 */

import { FileNode } from "../block/file.ts";
import { RawNode } from "../block/raw.ts";
import { DirtyTrackingNode } from "../block/dirty-tracking.ts";
import { READ_ONLY_USE, takePermissions, WRITABLE_USE } from "../block/permissions.ts";
import type { DirtyBitmapInfo } from "../block/dirty-bitmap.ts";
import { DenbdError } from "../errors.ts";
import { isWellFormedId } from "../qmp/qemu-opts.ts";
import { formatJson } from "../qmp/json-value.ts";
import {
  type BlockdevOptionsValue,
  type ImplementedBlockdevOptions,
  isImplementedDriver,
} from "./qapi-types.ts";

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
  /** The image file underneath (for the description of the node). */
  readonly filename: string;
  /** Name of its child node, if any. */
  readonly child?: string;
  /** The child was defined inline and goes away with this node. */
  readonly ownsChild: boolean;
}

/** Generated names of inline children start with this (QEMU uses "#block"). */
const GENERATED_PREFIX = "#block";

/** The named nodes of one daemon. */
export class NodeGraph {
  readonly #nodes = new Map<string, NodeEntry>();
  #generated = 0;

  /** The node named `name`. */
  get(name: string): NodeEntry | undefined {
    return this.#nodes.get(name);
  }

  /** Every node, newest first (as QEMU lists them). */
  list(): NodeEntry[] {
    return [...this.#nodes.values()].reverse();
  }

  /**
   * Open the node `options` describes (blockdev-add). A root node needs a
   * node-name; a raw node's file may be a node name or an inline definition.
   * `probed` marks a raw node whose format was guessed (`denbd serve`
   * without -f): it keeps block 0 from turning into another format.
   */
  async add(options: BlockdevOptionsValue, probed = false): Promise<NodeEntry> {
    const name = options["node-name"];
    if (name === undefined) {
      throw new DenbdError("invalid", "'node-name' must be specified for the root node");
    }
    return await this.#open(options, name, probed);
  }

  /**
   * Close and forget the node named `name` (blockdev-del). Refused while
   * another node has it as a child, or while `usedByExport` (an export
   * serves it).
   */
  async delete(name: string, usedByExport: boolean): Promise<void> {
    const entry = this.#nodes.get(name);
    if (!entry || name.startsWith(GENERATED_PREFIX)) {
      throw new DenbdError("not-found", `Failed to find node with node-name='${name}'`);
    }
    if (this.#parentOf(name)) throw new DenbdError("busy", `Block device ${name} is in use`);
    if (usedByExport) throw new DenbdError("busy", `Node ${name} is in use`);
    await this.#close(entry);
  }

  /** Close every node, parents before their children. */
  async closeAll(): Promise<void> {
    for (const entry of this.list()) {
      if (this.#nodes.has(entry.name)) await this.#close(entry);
    }
  }

  /** The description of `entry` for query-named-block-nodes. */
  async describe(
    entry: NodeEntry,
    bitmaps: readonly DirtyBitmapInfo[],
  ): Promise<Record<string, unknown>> {
    const cache = entry.options.cache ?? {};
    const actualSize = await allocatedBytes(entry.filename);
    const filename = this.#displayName(entry);
    const info: Record<string, unknown> = {
      "file": filename,
      "node-name": entry.name,
      "ro": entry.options["read-only"] ?? false,
      "drv": entry.driver,
      "backing_file_depth": 0,
      "encrypted": false,
      "detect_zeroes": entry.options["detect-zeroes"] ?? "off",
      "bps": 0,
      "bps_rd": 0,
      "bps_wr": 0,
      "iops": 0,
      "iops_rd": 0,
      "iops_wr": 0,
      "write_threshold": 0,
      "image": {
        "filename": filename,
        "format": entry.driver,
        "virtual-size": entry.node.size,
        "actual-size": actualSize,
        "dirty-flag": false,
      },
      "cache": {
        "writeback": true,
        "direct": cache.direct ?? false,
        "no-flush": cache["no-flush"] ?? false,
      },
    };
    if (bitmaps.length) info["dirty-bitmaps"] = bitmaps;
    return info;
  }

  /**
   * The filename QEMU shows for a node: the image's path while the node
   * adds nothing to it, else `json:` and the options that open it again.
   */
  #displayName(entry: NodeEntry): string {
    const plain = this.#plainFilename(entry);
    return plain ?? `json:${formatJson(this.#openOptions(entry))}`;
  }

  /** The image's path, unless a raw window (offset, size) on the way makes it another image. */
  #plainFilename(entry: NodeEntry): string | undefined {
    if (entry.options.driver === "file") return entry.filename;
    if (entry.options.offset !== undefined || entry.options.size !== undefined) return undefined;
    return this.#plainFilename(this.#nodes.get(entry.child!)!);
  }

  /** The options that matter to what a node reads (QEMU's full_open_options). */
  #openOptions(entry: NodeEntry): Record<string, unknown> {
    const options = entry.options;
    if (options.driver === "file") return { driver: "file", filename: options.filename };
    return {
      driver: "raw",
      ...(options.offset !== undefined && { offset: options.offset }),
      ...(options.size !== undefined && { size: options.size }),
      file: this.#openOptions(this.#nodes.get(entry.child!)!),
    };
  }

  async #open(options: BlockdevOptionsValue, name: string, probed = false): Promise<NodeEntry> {
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
    if (options["detect-zeroes"] !== undefined && options["detect-zeroes"] !== "off") {
      throw new DenbdError("not-supported", "detect-zeroes is not supported by denbd yet");
    }
    const entry = options.driver === "file"
      ? await this.#openFile(options, name)
      : await this.#openRaw(options, name, probed);
    this.#nodes.set(name, entry);
    return entry;
  }

  async #openFile(
    options: Extract<BlockdevOptionsValue, { driver: "file" }>,
    name: string,
  ): Promise<NodeEntry> {
    const file = await FileNode.open(options.filename, {
      readOnly: options["read-only"],
      direct: options.cache?.direct,
      noFlush: options.cache?.["no-flush"],
      discard: options.discard,
      lock: options.locking !== "off",
    });
    // The daemon uses every file node it opens, as an export would, from the
    // start: its image locks are taken now (QEMU waits for a user; see
    // docs/compatibility.md). Closing the node releases them.
    try {
      takePermissions(file, options["read-only"] ? READ_ONLY_USE : WRITABLE_USE);
    } catch (error) {
      await file.close();
      throw error;
    }
    return {
      name,
      driver: "file",
      node: new DirtyTrackingNode(file),
      options,
      filename: options.filename,
      ownsChild: false,
    };
  }

  async #openRaw(
    options: Extract<BlockdevOptionsValue, { driver: "raw" }>,
    name: string,
    probed: boolean,
  ): Promise<NodeEntry> {
    const inline = typeof options.file !== "string";
    const child = typeof options.file === "string"
      ? this.#nodes.get(options.file)
      : await this.#open(options.file, this.#generatedName());
    if (!child) {
      const missing = options.file as string;
      throw new DenbdError(
        "not-found",
        `Cannot find device='${missing}' nor node-name='${missing}'`,
      );
    }
    try {
      const raw = RawNode.open(child.node, {
        offset: options.offset,
        size: options.size,
        readOnly: options["read-only"],
        discard: options.discard,
        probed,
      });
      return {
        name,
        driver: "raw",
        node: new DirtyTrackingNode(raw),
        options,
        filename: child.filename,
        child: child.name,
        ownsChild: inline,
      };
    } catch (error) {
      if (inline) await this.#close(child);
      throw error;
    }
  }

  /** A name for an inline child, like QEMU's "#block123". */
  #generatedName(): string {
    this.#generated++;
    return `${GENERATED_PREFIX}${String(this.#generated).padStart(3, "0")}`;
  }

  #parentOf(name: string): NodeEntry | undefined {
    return [...this.#nodes.values()].find((entry) => entry.child === name);
  }

  async #close(entry: NodeEntry): Promise<void> {
    this.#nodes.delete(entry.name);
    await entry.node.flush().catch(() => {});
    await entry.node.close();
    if (entry.ownsChild && entry.child) {
      const child = this.#nodes.get(entry.child);
      if (child) await this.#close(child);
    }
  }
}

/** Bytes allocated to `path` on disk (0 if it cannot be read). */
async function allocatedBytes(path: string): Promise<number> {
  try {
    return ((await Deno.stat(path)).blocks ?? 0) * 512;
  } catch {
    return 0;
  }
}
