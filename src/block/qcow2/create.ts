/**
 * Creating an empty qcow2 image as `qemu-img create -f qcow2` does by
 * default: version 3, 16-bit refcounts, header in cluster 0 followed by the
 * refcount table, the refcount block(s) and the L1 table.
 *
 * @module
 */

import { DenbdError } from "../../errors.ts";
import type { BlockNode } from "../node.ts";
import {
  encodeHeader,
  EXT_BACKING_FORMAT,
  EXT_FEATURE_NAMES,
  type HeaderExtension,
  MAX_CLUSTER_BITS,
  MAX_VIRTUAL_SIZE,
  MIN_CLUSTER_BITS,
  type Qcow2Header,
  V3_HEADER_LENGTH,
} from "./header.ts";
import { setU64 } from "./refcounts.ts";

/** What {@linkcode createQcow2} makes. */
export interface CreateQcow2Options {
  /** The virtual size in bytes. */
  readonly size: number;
  /** Bytes per cluster, a power of two from 512 to 2 MiB (default 64 KiB). */
  readonly clusterSize?: number;
  /** The backing file to name in the header. */
  readonly backing?: { readonly filename: string; readonly format: string | undefined };
}

/** The feature names QEMU writes into every image it creates: [type, bit, name]. */
const FEATURE_NAMES: readonly [number, number, string][] = [
  [0, 0, "dirty bit"],
  [0, 1, "corrupt bit"],
  [0, 2, "external data file"],
  [0, 3, "compression type"],
  [0, 4, "extended L2 entries"],
  [1, 0, "lazy refcounts"],
  [2, 0, "bitmaps"],
  [2, 1, "raw external data"],
];

function featureNameTable(): Uint8Array {
  const table = new Uint8Array(FEATURE_NAMES.length * 48);
  FEATURE_NAMES.forEach(([type, bit, name], i) => {
    table[i * 48] = type;
    table[i * 48 + 1] = bit;
    table.set(new TextEncoder().encode(name), i * 48 + 2);
  });
  return table;
}

/** The encoded header with `extensions`, or undefined when it does not fit in cluster 0. */
function headerBytes(
  fields: Omit<Qcow2Header, "extensions">,
  extensions: HeaderExtension[],
): Uint8Array | undefined {
  try {
    return encodeHeader({ ...fields, extensions });
  } catch (error) {
    if (error instanceof DenbdError && error.kind === "no-space") return undefined;
    throw error;
  }
}

/** Create an empty qcow2 image in `file` (qemu-img create -f qcow2 defaults). */
export async function createQcow2(file: BlockNode, options: CreateQcow2Options): Promise<void> {
  const clusterSize = options.clusterSize ?? 65536;
  const clusterBits = Math.log2(clusterSize);
  if (
    !Number.isInteger(clusterBits) || clusterBits < MIN_CLUSTER_BITS ||
    clusterBits > MAX_CLUSTER_BITS
  ) {
    throw new DenbdError(
      "invalid",
      "Cluster size must be a power of two between 512 and 2048k",
    );
  }
  if (options.size < 0 || options.size > MAX_VIRTUAL_SIZE || options.size % 512) {
    throw new DenbdError("invalid", `qcow2: invalid image size ${options.size}`);
  }
  const refcountsPerBlock = clusterSize / 2;
  const l1Size = Math.ceil(options.size / (clusterSize * (clusterSize / 8)));
  const l1Clusters = Math.max(1, Math.ceil(l1Size * 8 / clusterSize));
  let blocks = 1, tableClusters = 1;
  for (;;) {
    const clusters = 1 + tableClusters + blocks + l1Clusters;
    const neededBlocks = Math.ceil(clusters / refcountsPerBlock);
    const neededTable = Math.ceil(neededBlocks * 8 / clusterSize);
    if (neededBlocks === blocks && neededTable === tableClusters) break;
    blocks = neededBlocks;
    tableClusters = neededTable;
  }
  const tableOffset = clusterSize;
  const blocksOffset = tableOffset + tableClusters * clusterSize;
  const l1Offset = blocksOffset + blocks * clusterSize;
  const used = l1Offset / clusterSize + l1Clusters;

  const extensions: HeaderExtension[] = [];
  if (options.backing?.format) {
    extensions.push({
      type: EXT_BACKING_FORMAT,
      data: new TextEncoder().encode(options.backing.format),
    });
  }
  const fields: Omit<Qcow2Header, "extensions"> = {
    version: 3,
    clusterBits,
    clusterSize,
    size: options.size,
    cryptMethod: 0,
    l1Size,
    l1TableOffset: l1Offset,
    refcountTableOffset: tableOffset,
    refcountTableClusters: tableClusters,
    snapshotCount: 0,
    snapshotsOffset: 0,
    incompatibleFeatures: 0n,
    compatibleFeatures: 0n,
    autoclearFeatures: 0n,
    refcountOrder: 4,
    headerLength: V3_HEADER_LENGTH,
    compressionType: 0,
    unknownFields: new Uint8Array(V3_HEADER_LENGTH - 105),
    backingFile: options.backing?.filename,
  };
  // The feature name table is left out where it does not fit (small clusters), as QEMU does.
  const withNames = [...extensions, { type: EXT_FEATURE_NAMES, data: featureNameTable() }];
  const header = headerBytes(fields, withNames) ?? encodeHeader({ ...fields, extensions });

  const metadata = new Uint8Array(l1Offset + l1Clusters * clusterSize);
  metadata.set(header);
  const view = new DataView(metadata.buffer);
  for (let block = 0; block < blocks; block++) {
    setU64(view, tableOffset + block * 8, blocksOffset + block * clusterSize);
  }
  for (let cluster = 0; cluster < used; cluster++) view.setUint16(blocksOffset + cluster * 2, 1);
  await file.write(0, metadata);
  await file.flush();
}
