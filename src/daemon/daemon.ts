/**
 * The Daemon: the one state object that wires the block layer to the NBD
 * server. It holds the block nodes, the NBD server and its exports. Its
 * methods are named after the QMP commands they implement (blockdev-add,
 * nbd-server-start, block-export-add, ...), so `denbd serve`, the daemon's
 * command line and its QMP monitor all drive the same code.
 *
 * @module
 */

import type { BlockNode } from "../block/node.ts";
import { FileNode } from "../block/file.ts";
import { RawNode } from "../block/raw.ts";
import { DirtyTrackingNode } from "../block/dirty-tracking.ts";
import { type BitmapRef, DirtyBitmapCommands } from "../block/bitmap-commands.ts";
import { DenbdError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { NBD_LIMIT } from "../nbd/protocol.ts";
import { encodeString } from "../nbd/wire.ts";
import { ExportTable, NbdExport } from "../nbd/server/export.ts";
import { qemuNamespace } from "../nbd/server/qemu-namespace.ts";
import { NbdServer } from "../nbd/server/server.ts";
import { listenOn, removeStaleSocket, type SocketAddress } from "../net/socket-address.ts";

/** blockdev-add options of the `file` driver (a subset of QEMU's BlockdevOptionsFile). */
export interface FileBlockdevOptions {
  /** The block driver. */
  readonly driver: "file";
  /** Name of the new node. */
  readonly nodeName: string;
  /** Path of the image. */
  readonly filename: string;
  /** Open read-only. */
  readonly readOnly?: boolean;
  /** Bypass the host page cache (O_DIRECT). */
  readonly cacheDirect?: boolean;
  /** Ignore flush requests (unsafe). */
  readonly cacheNoFlush?: boolean;
  /** Whether discards punch holes ("unmap") or are ignored. */
  readonly discard?: "ignore" | "unmap";
  /** Take QEMU-compatible image locks (default true). */
  readonly locking?: boolean;
}

/** blockdev-add options of the `raw` format driver over a node given by name. */
export interface RawBlockdevOptions {
  /** The block driver. */
  readonly driver: "raw";
  /** Name of the new node. */
  readonly nodeName: string;
  /** Node name of the child (the protocol node). */
  readonly file: string;
  /** Where the raw window starts in the child. */
  readonly offset?: number;
  /** Size of the window (a multiple of 512; default: the rest of the child). */
  readonly size?: number;
  /** Open read-only. */
  readonly readOnly?: boolean;
  /** Whether discards are passed down ("unmap") or dropped ("ignore", the default). */
  readonly discard?: "ignore" | "unmap";
}

/** blockdev-add options of the drivers the Daemon knows. */
export type BlockdevOptions = FileBlockdevOptions | RawBlockdevOptions;

/** nbd-server-start options. */
export interface NbdServerStartOptions {
  /** Where to listen. */
  readonly addr: SocketAddress;
  /** Clients served at once; 0 means no limit. */
  readonly maxConnections?: number;
  /** Called whenever a client disconnects, with the number still connected. */
  readonly onDisconnect?: (remaining: number) => void;
}

/** block-export-add options of an NBD export. */
export interface NbdExportAddOptions {
  /** Unique export id. */
  readonly id: string;
  /** The node to export. */
  readonly nodeName: string;
  /** Name clients ask for (default: the node name). */
  readonly name?: string;
  /** Description shown to clients. */
  readonly description?: string;
  /** Allow clients to write. */
  readonly writable?: boolean;
  /** Flush after every write before replying. */
  readonly writethrough?: boolean;
  /** Offer the `qemu:allocation-depth` metadata context. */
  readonly allocationDepth?: boolean;
  /**
   * Offer `qemu:dirty-bitmap:NAME` for each of these bitmaps (a bare name is
   * looked up on the exported node); they are busy while exported.
   */
  readonly bitmaps?: readonly BitmapRef[];
}

interface RunningNbdServer {
  readonly server: NbdServer;
  readonly address: SocketAddress;
  readonly maxConnections: number;
}

/** The daemon's state: nodes, the NBD server, exports. */
export class Daemon {
  /** Diagnostics. */
  readonly log: Logger;
  readonly #nodes = new Map<string, DirtyTrackingNode>();
  readonly #exports = new ExportTable();
  readonly #exportNameById = new Map<string, string>();
  /** Releases the bitmaps each export (by id) holds busy; for block-export-del. */
  readonly #exportBitmapRelease = new Map<string, () => void>();
  /** The block-dirty-bitmap-* commands over this daemon's nodes. */
  readonly dirtyBitmaps = new DirtyBitmapCommands((name) => this.#nodes.get(name));
  #nbd: RunningNbdServer | null = null;

  /** An empty daemon that logs to `log`. */
  constructor(log: Logger) {
    this.log = log;
  }

  /**
   * Open a block node (QMP blockdev-add). Every node gets dirty-bitmap
   * tracking of its own, so changes through any path mark its bitmaps.
   */
  async blockdevAdd(options: BlockdevOptions): Promise<BlockNode> {
    if (this.#nodes.has(options.nodeName)) {
      throw new DenbdError("busy", `Duplicate nodes with node-name='${options.nodeName}'`);
    }
    const node = new DirtyTrackingNode(await this.#openNode(options));
    this.#nodes.set(options.nodeName, node);
    return node;
  }

  async #openNode(options: BlockdevOptions): Promise<BlockNode> {
    if (options.driver === "raw") {
      const file = this.#nodes.get(options.file);
      if (!file) {
        throw new DenbdError(
          "not-found",
          `Cannot find device='${options.file}' nor node-name='${options.file}'`,
        );
      }
      return RawNode.open(file, options);
    }
    return await FileNode.open(options.filename, {
      readOnly: options.readOnly,
      direct: options.cacheDirect,
      noFlush: options.cacheNoFlush,
      discard: options.discard,
      lock: options.locking,
    });
  }

  /** Start listening for NBD clients (QMP nbd-server-start); returns the bound address. */
  nbdServerStart(options: NbdServerStartOptions): SocketAddress {
    if (this.#nbd) throw new DenbdError("busy", "NBD server already running");
    const maxConnections = options.maxConnections ?? 0;
    const { listener, bound } = listenOn(options.addr);
    const server = new NbdServer({
      catalog: this.#exports,
      log: this.log,
      maxConnections,
      onDisconnect: options.onDisconnect,
    });
    server.listen(listener);
    this.#nbd = { server, address: bound, maxConnections };
    return bound;
  }

  /** Export a node over the running NBD server (QMP block-export-add, type nbd). */
  blockExportAdd(options: NbdExportAddOptions): NbdExport {
    const nbd = this.#nbd;
    if (!nbd) throw new DenbdError("invalid", "NBD server not running");
    if (this.#exportNameById.has(options.id)) {
      throw new DenbdError("busy", `Block export id '${options.id}' is already in use`);
    }
    const node = this.#nodes.get(options.nodeName);
    if (!node) {
      throw new DenbdError(
        "not-found",
        `Cannot find device=${options.nodeName} nor node_name=${options.nodeName}`,
      );
    }
    const name = options.name ?? options.nodeName;
    checkLength(name, "export name");
    checkLength(options.description ?? "", "export description");
    if (this.#exports.find(name)) {
      throw new DenbdError("busy", `NBD server already has export named '${name}'`);
    }
    if (options.writable && !node.capabilities.writable) {
      throw new DenbdError(
        "read-only",
        `Cannot export read-only node '${options.nodeName}' as writable`,
      );
    }
    const claimed = this.dirtyBitmaps.claimForExport(
      node,
      options.bitmaps ?? [],
      !options.writable,
    );
    const qemu = options.allocationDepth || claimed.bitmaps.length
      ? [qemuNamespace({
        allocationDepth: options.allocationDepth ? node : undefined,
        bitmaps: claimed.bitmaps,
      })]
      : [];
    const entry = new NbdExport({
      name,
      description: options.description,
      node,
      readOnly: !options.writable,
      writethrough: options.writethrough,
      allowMultiConn: nbd.maxConnections !== 1,
      extraNamespaces: qemu,
    });
    this.#exports.add(entry);
    this.#exportNameById.set(options.id, name);
    this.#exportBitmapRelease.set(options.id, claimed.release);
    return entry;
  }

  /**
   * Stop everything in order: the NBD server ends its connections gracefully,
   * then every node is flushed and closed.
   */
  async shutdown(): Promise<void> {
    const nbd = this.#nbd;
    this.#nbd = null;
    if (nbd) {
      await nbd.server.close();
      if (nbd.address.type === "unix") removeStaleSocket(nbd.address.path);
    }
    for (const release of this.#exportBitmapRelease.values()) release();
    this.#exportBitmapRelease.clear();
    // Newest first: a format node goes before the node it was opened on.
    for (const [name, node] of [...this.#nodes].reverse()) {
      try {
        await node.flush();
      } catch (error) {
        this.log.warn(`flushing node '${name}' failed: ${(error as Error).message}`);
      }
      await node.close();
    }
    this.#nodes.clear();
  }
}

/** Refuse strings longer than the protocol allows. */
function checkLength(text: string, what: string): void {
  if (encodeString(text).length > NBD_LIMIT.MAX_STRING) {
    throw new DenbdError("invalid", `${what} '${text}' too long`);
  }
}
