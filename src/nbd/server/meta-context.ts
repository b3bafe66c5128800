/**
 * Metadata contexts an export offers for NBD_CMD_BLOCK_STATUS, grouped by
 * namespace. The handshake resolves LIST and SET queries through the
 * namespaces of an export; later namespaces (`qemu:` with dirty bitmaps and
 * allocation depth) plug in by implementing {@linkcode MetaContextNamespace}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { baseNamespace } from "./meta-context.ts";
 * import { MemoryNode } from "../../block/memory.ts";
 * const node = new MemoryNode(1 << 20);
 * await node.write(0, new Uint8Array(4096).fill(1));
 * const base = baseNamespace(node);
 * assert.deepEqual(base.list(""), ["base:allocation"]);
 * const allocation = base.select("base:allocation")!;
 * const [first] = await allocation.statusOf(0, 1 << 20, 16);
 * assert.equal(first.flags, 0); // data, neither hole nor zero
 * ```
 * @module
 */

import { chainStatus } from "../../block/chain.ts";
import type { BlockNode } from "../../block/node.ts";
import { BASE_ALLOCATION, NBD_STATE } from "../protocol.ts";
import type { StatusDescriptor } from "../wire.ts";

/** One selectable metadata context. */
export interface MetaContext {
  /** Full name, e.g. "base:allocation". */
  readonly name: string;
  /**
   * Status from `offset`: at least one descriptor and at most
   * `maxDescriptors`; all but the last lie within `length` bytes.
   */
  statusOf(offset: number, length: number, maxDescriptors: number): Promise<StatusDescriptor[]>;
}

/** The contexts of one namespace, and how its queries are understood. */
export interface MetaContextNamespace {
  /** The namespace, without the colon, e.g. "base". */
  readonly namespace: string;
  /** Names that a LIST_META_CONTEXT query with this `leaf` matches ("" lists all). */
  list(leaf: string): string[];
  /** The context selected by SET_META_CONTEXT with exactly `name`, if any. */
  select(name: string): MetaContext | undefined;
}

/** Split "ns:leaf" into its parts; undefined when there is no colon or no namespace. */
export function splitContextName(query: string): { namespace: string; leaf: string } | undefined {
  const colon = query.indexOf(":");
  if (colon <= 0) return undefined;
  return { namespace: query.slice(0, colon), leaf: query.slice(colon + 1) };
}

/**
 * Append a descriptor, merging it into the previous one when the flags are
 * equal. Returns false once `maxDescriptors` distinct descriptors exist and
 * this one could not be merged (the caller stops there).
 */
export function pushDescriptor(
  descriptors: StatusDescriptor[],
  length: number,
  flags: number,
  maxDescriptors: number,
): boolean {
  const last = descriptors.at(-1);
  if (last && last.flags === flags && last.length + length <= 0xffff_ffff) {
    descriptors[descriptors.length - 1] = { length: last.length + length, flags };
    return true;
  }
  if (descriptors.length >= maxDescriptors) return false;
  descriptors.push({ length, flags });
  return true;
}

/** Where a context's extents come from: the flags of up to `length` bytes at `offset`. */
export type ExtentSource = (
  offset: number,
  length: number,
) => Promise<readonly { readonly length: number; readonly flags: number }[]>;

/**
 * Descriptors for up to `length` bytes at `offset`, asking `source` piece
 * by piece and merging equal neighbours, stopping at `maxDescriptors`
 * distinct ones (or early if the source has nothing more to say).
 */
export async function collectDescriptors(
  source: ExtentSource,
  offset: number,
  length: number,
  maxDescriptors: number,
): Promise<StatusDescriptor[]> {
  const descriptors: StatusDescriptor[] = [];
  let done = 0;
  while (done < length) {
    const extents = await source(offset + done, length - done);
    if (extents.length === 0) break;
    for (const extent of extents) {
      if (!pushDescriptor(descriptors, extent.length, extent.flags, maxDescriptors)) {
        return descriptors;
      }
      done += extent.length;
    }
  }
  return descriptors;
}

/**
 * `base:allocation` flags of the extents of `node`'s whole backing chain:
 * holes (and bytes no layer holds) set NBD_STATE_HOLE, zeroes NBD_STATE_ZERO.
 */
function allocationSource(node: BlockNode): ExtentSource {
  return async (offset, length) =>
    (await chainStatus(node, offset, length)).map((extent) => ({
      length: extent.length,
      flags: (extent.data ? 0 : NBD_STATE.HOLE) | (extent.zero ? NBD_STATE.ZERO : 0),
    }));
}

/** The `base:` namespace: exactly one context, `base:allocation`, over `node`. */
export function baseNamespace(node: BlockNode): MetaContextNamespace {
  const allocation: MetaContext = {
    name: BASE_ALLOCATION,
    statusOf: (offset, length, maxDescriptors) =>
      collectDescriptors(allocationSource(node), offset, length, maxDescriptors),
  };
  return {
    namespace: "base",
    list: (leaf) => leaf === "" || leaf === "allocation" ? [BASE_ALLOCATION] : [],
    select: (name) => name === BASE_ALLOCATION ? allocation : undefined,
  };
}
