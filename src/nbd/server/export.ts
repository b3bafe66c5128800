/**
 * An NBD export: a block node offered under a name, with the transmission
 * flags, block sizes and metadata contexts derived from what the node can do
 * and how it is exported. Exports live in an {@linkcode ExportTable} that
 * the handshake looks names up in.
 *
 * @module
 */

import type { BlockNode, NodeCapabilities } from "../../block/node.ts";
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

/** Everything an export's transmission flags depend on. */
export interface ExportFlagInputs {
  /** The exported node's capabilities. */
  readonly can: NodeCapabilities;
  /** The export refuses writes (it was asked to, or the node is not writable). */
  readonly readOnly: boolean;
  /** Several clients may connect at once. */
  readonly allowMultiConn: boolean;
  /** The client negotiated structured replies. */
  readonly structured: boolean;
}

/** Whether one transmission flag is advertised. */
type FlagRule = (inputs: ExportFlagInputs) => boolean;

/**
 * When each transmission flag is advertised: one rule for every flag of
 * {@linkcode NBD_FLAG}. The rules follow the node's capabilities except
 * where a QEMU compatibility choice is written next to the rule; those
 * requests are then accepted and served as well as the node can (the spec
 * lets a server flush, discard or prefetch with no effect).
 */
const FLAG_POLICY: Readonly<Record<keyof typeof NBD_FLAG, FlagRule>> = {
  HAS_FLAGS: () => true,
  READ_ONLY: ({ readOnly }) => readOnly,
  // QEMU: always, read-only exports included, even where a flush does
  // nothing (cache=unsafe, memory nodes).
  SEND_FLUSH: () => true,
  SEND_FUA: () => true,
  // Nodes do not know; qemu-nbd 7.2 does not send it for files either.
  ROTATIONAL: () => false,
  // QEMU: on every writable export, even where discards are ignored
  // (discard=ignore: `can.trim` is false).
  SEND_TRIM: ({ readOnly }) => !readOnly,
  // Every node zeroes, writing zeroes where it has no better way.
  SEND_WRITE_ZEROES: ({ readOnly }) => !readOnly,
  SEND_DF: ({ structured }) => structured,
  CAN_MULTI_CONN: ({ can, allowMultiConn }) => can.multiConn && allowMultiConn,
  // Exports never change size.
  SEND_RESIZE: () => false,
  // qemu-nbd sends it always; denbd only where a prefetch has an effect.
  SEND_CACHE: ({ can }) => can.cache,
  // qemu-nbd sends it on every writable export; denbd only where a fast
  // zero can succeed.
  SEND_FAST_ZERO: ({ can, readOnly }) => !readOnly && can.fastZero,
};

/** The transmission flags of an export, by {@linkcode FLAG_POLICY}. */
export function transmissionFlagsOf(inputs: ExportFlagInputs): number {
  let flags = 0;
  for (const [name, advertised] of Object.entries(FLAG_POLICY)) {
    if (advertised(inputs)) flags |= NBD_FLAG[name as keyof typeof NBD_FLAG];
  }
  return flags;
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
  /** Structured reads may send holes as OFFSET_HOLE chunks: the node's block status knows them. */
  readonly sparseReads: boolean;
  readonly #simpleFlags: number;
  readonly #structuredFlags: number;

  /**
   * Export `options.node` as described by `options`. The node's capabilities
   * are read once, here: the export's flags do not follow later changes.
   */
  constructor(options: NbdExportOptions) {
    const can = options.node.capabilities;
    this.name = options.name;
    this.description = options.description;
    this.node = options.node;
    this.readOnly = Boolean(options.readOnly) || !can.writable;
    this.writethrough = Boolean(options.writethrough);
    this.namespaces = [baseNamespace(options.node), ...(options.extraNamespaces ?? [])];
    this.sparseReads = can.blockStatus;
    const inputs = {
      can,
      readOnly: this.readOnly,
      allowMultiConn: Boolean(options.allowMultiConn),
    };
    this.#simpleFlags = transmissionFlagsOf({ ...inputs, structured: false });
    this.#structuredFlags = transmissionFlagsOf({ ...inputs, structured: true });
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
    return structured ? this.#structuredFlags : this.#simpleFlags;
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
