/**
 * An NBD export: a block node offered under a name, with the transmission
 * flags, block sizes and metadata contexts derived from what the node can do
 * and how it is exported. Exports live in an {@linkcode ExportTable} that
 * the handshake looks names up in.
 *
 * @module
 */

import type { BlockNode } from "../../block/node.ts";
import { NBD_FLAG, NBD_LIMIT } from "../protocol.ts";
import { baseNamespace, type MetaContextNamespace, splitContextName } from "./meta-context.ts";

/** How a node is exported. */
export interface NbdExportOptions {
  /** The name clients ask for ("" is the default export). */
  readonly name: string;
  /** Free-form text shown to clients, up to 4096 bytes. */
  readonly description?: string;
  /** The node whose bytes are exported. */
  readonly node: BlockNode;
  /** Refuse writes even when the node is writable. */
  readonly readOnly?: boolean;
  /** Several clients may connect at once (CAN_MULTI_CONN needs this). */
  readonly allowMultiConn?: boolean;
  /** Flush after every write before replying. */
  readonly writethrough?: boolean;
  /** Namespaces offered besides `base:`. */
  readonly extraNamespaces?: readonly MetaContextNamespace[];
}

/** Block size constraints announced in NBD_INFO_BLOCK_SIZE. */
export interface BlockSizes {
  /** Minimum block size. */
  readonly minimum: number;
  /** Preferred block size. */
  readonly preferred: number;
  /** Maximum payload size. */
  readonly maximum: number;
}

/** An exported node and everything the protocol derives from it. */
export class NbdExport {
  /** The name clients ask for. */
  readonly name: string;
  /** The description, if one was given ("" is one: it is still sent, as QEMU does). */
  readonly description: string | undefined;
  /** The exported node. */
  readonly node: BlockNode;
  /** Writes are refused. */
  readonly readOnly: boolean;
  /** Every write is flushed before its reply. */
  readonly writethrough: boolean;
  /** Metadata namespaces, `base:` first. */
  readonly namespaces: readonly MetaContextNamespace[];
  readonly #allowMultiConn: boolean;

  /** Export `options.node` as described by `options`. */
  constructor(options: NbdExportOptions) {
    this.name = options.name;
    this.description = options.description;
    this.node = options.node;
    this.readOnly = Boolean(options.readOnly) || !options.node.capabilities.writable;
    this.writethrough = Boolean(options.writethrough);
    this.#allowMultiConn = Boolean(options.allowMultiConn);
    this.namespaces = [baseNamespace(options.node), ...(options.extraNamespaces ?? [])];
  }

  /** The namespace of a context name or query ("ns:leaf"), if this export offers it. */
  namespaceOf(query: string): MetaContextNamespace | undefined {
    const namespace = splitContextName(query)?.namespace;
    return this.namespaces.find((space) => space.namespace === namespace);
  }

  /** Export size in bytes. */
  get size(): number {
    return this.node.size;
  }

  /** Transmission flags for a client that did (or did not) negotiate structured replies. */
  transmissionFlags(structured: boolean): number {
    const can = this.node.capabilities;
    let flags = NBD_FLAG.HAS_FLAGS | NBD_FLAG.SEND_FLUSH | NBD_FLAG.SEND_FUA;
    if (this.readOnly) flags |= NBD_FLAG.READ_ONLY;
    else {
      flags |= NBD_FLAG.SEND_TRIM | NBD_FLAG.SEND_WRITE_ZEROES;
      if (can.fastZero) flags |= NBD_FLAG.SEND_FAST_ZERO;
    }
    if (can.cache) flags |= NBD_FLAG.SEND_CACHE;
    if (structured) flags |= NBD_FLAG.SEND_DF;
    if (can.multiConn && this.#allowMultiConn) flags |= NBD_FLAG.CAN_MULTI_CONN;
    return flags;
  }

  /**
   * Block sizes as announced to a client. The node's alignment is announced
   * as the minimum only to clients that promised to honour it (they asked for
   * NBD_INFO_BLOCK_SIZE) or are only asking (NBD_OPT_INFO); others get 1 and
   * unaligned requests are handled by the node.
   */
  blockSizes(honoursMinimum: boolean): BlockSizes {
    const minimum = honoursMinimum ? this.node.requestAlignment : 1;
    return {
      minimum,
      preferred: Math.max(NBD_LIMIT.PREFERRED_BLOCK, minimum),
      maximum: NBD_LIMIT.MAX_PAYLOAD,
    };
  }
}

/** What the handshake needs to find exports. */
export interface ExportCatalog {
  /** The export named exactly `name`. */
  find(name: string): NbdExport | undefined;
  /** Every export, in the order they were added. */
  list(): NbdExport[];
}

/** A mutable set of exports keyed by name. */
export class ExportTable implements ExportCatalog {
  readonly #byName = new Map<string, NbdExport>();

  /** Add an export; its name must not be in use. */
  add(entry: NbdExport): void {
    if (this.#byName.has(entry.name)) throw new Error(`export '${entry.name}' already exists`);
    this.#byName.set(entry.name, entry);
  }

  /** Remove the export named `name` (new clients can no longer choose it). */
  remove(name: string): void {
    this.#byName.delete(name);
  }

  /** The export named exactly `name`. */
  find(name: string): NbdExport | undefined {
    return this.#byName.get(name);
  }

  /** Every export, in insertion order. */
  list(): NbdExport[] {
    return [...this.#byName.values()];
  }
}
