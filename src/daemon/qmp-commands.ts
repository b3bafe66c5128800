/**
 * The daemon's QMP command table: each QMP command of the block-export,
 * block and object APIs bound to the Daemon method that implements it, with
 * its QAPI argument type (validation and `query-commands` derive from it).
 *
 * @module
 */

import type { BitmapRef } from "../block/bitmap-commands.ts";
import { CommandTable, type QmpCommand } from "../qmp/command.ts";
import { coreCommands } from "../qmp/core-commands.ts";
import { array, EMPTY_STRUCT } from "../qmp/schema.ts";
import type { Daemon } from "./daemon.ts";
import {
  BlockdevDelArguments,
  BlockdevOptions,
  type BlockdevOptionsValue,
  BlockDirtyBitmap,
  BlockDirtyBitmapAdd,
  BlockDirtyBitmapMerge,
  BlockExportDelArguments,
  BlockExportInfo,
  BlockExportOptions,
  type BlockExportOptionsValue,
  NbdServerAddOptions,
  type NbdServerAddValue,
  NbdServerRemoveArguments,
  NbdServerStartArguments,
  ObjectDelArguments,
  ObjectOptions,
  type ObjectOptionsValue,
  QueryNamedBlockNodesArguments,
  type RemoveMode,
  type SocketAddressLegacyValue,
  type SocketAddressValue,
} from "./qapi-types.ts";

type DaemonCommand<A = never> = QmpCommand<Daemon, A>;

/** nbd-server-start's arguments as validated (the legacy address form). */
interface NbdServerStartArgs {
  readonly addr: SocketAddressLegacyValue;
  readonly "tls-creds"?: string;
  readonly "tls-authz"?: string;
  readonly "max-connections"?: number;
}

/** A bitmap named on a node. */
interface BitmapArgs {
  readonly node: string;
  readonly name: string;
}

/** The flat address of a SocketAddressLegacy value. */
export function flattenLegacyAddress(address: SocketAddressLegacyValue): SocketAddressValue {
  return { type: address.type, ...address.data } as SocketAddressValue;
}

const nbdServerStart: DaemonCommand<NbdServerStartArgs> = {
  name: "nbd-server-start",
  args: NbdServerStartArguments,
  run: ({ state }, args) => {
    state.nbdServerStart({ ...args, addr: flattenLegacyAddress(args.addr) });
  },
};

const nbdServerAdd: DaemonCommand<NbdServerAddValue> = {
  name: "nbd-server-add",
  args: NbdServerAddOptions,
  deprecated: true,
  run: ({ state }, args) => state.nbdServerAdd(args),
};

const nbdServerRemove: DaemonCommand<{ name: string; mode?: RemoveMode }> = {
  name: "nbd-server-remove",
  args: NbdServerRemoveArguments,
  deprecated: true,
  run: ({ state }, args) => state.nbdServerRemove(args.name, args.mode),
};

const nbdServerStop: DaemonCommand = {
  name: "nbd-server-stop",
  args: EMPTY_STRUCT,
  run: ({ state }) => state.nbdServerStop(),
};

const blockExportAdd: DaemonCommand<BlockExportOptionsValue> = {
  name: "block-export-add",
  args: BlockExportOptions,
  run: ({ state }, args) => state.blockExportAdd(args),
};

const blockExportDel: DaemonCommand<{ id: string; mode?: RemoveMode }> = {
  name: "block-export-del",
  args: BlockExportDelArguments,
  run: ({ state }, args) => state.blockExportDel(args.id, args.mode),
};

const queryBlockExports: DaemonCommand = {
  name: "query-block-exports",
  args: EMPTY_STRUCT,
  returns: array(BlockExportInfo),
  run: ({ state }) => state.queryBlockExports(),
};

const blockdevAdd: DaemonCommand<BlockdevOptionsValue> = {
  name: "blockdev-add",
  args: BlockdevOptions,
  run: ({ state }, args) => state.blockdevAdd(args),
};

const blockdevDel: DaemonCommand<{ "node-name": string }> = {
  name: "blockdev-del",
  args: BlockdevDelArguments,
  run: ({ state }, args) => state.blockdevDel(args["node-name"]),
};

const queryNamedBlockNodes: DaemonCommand = {
  name: "query-named-block-nodes",
  args: QueryNamedBlockNodesArguments,
  run: ({ state }) => state.queryNamedBlockNodes(),
};

const bitmapAdd: DaemonCommand<
  BitmapArgs & { granularity?: number; persistent?: boolean; disabled?: boolean }
> = {
  name: "block-dirty-bitmap-add",
  args: BlockDirtyBitmapAdd,
  run: ({ state }, args) => void state.dirtyBitmaps.add(args),
};

/** block-dirty-bitmap-remove/clear/enable/disable: one bitmap named on a node. */
function bitmapCommand(
  name: string,
  operation: "remove" | "clear" | "enable" | "disable",
): DaemonCommand<BitmapArgs> {
  return {
    name,
    args: BlockDirtyBitmap,
    run: ({ state }, args) => state.dirtyBitmaps[operation](args),
  };
}

const bitmapMerge: DaemonCommand<{ node: string; target: string; bitmaps: BitmapRef[] }> = {
  name: "block-dirty-bitmap-merge",
  args: BlockDirtyBitmapMerge,
  run: ({ state }, args) => state.dirtyBitmaps.merge(args),
};

const objectAdd: DaemonCommand<ObjectOptionsValue> = {
  name: "object-add",
  args: ObjectOptions,
  run: ({ state }, args) => state.objectAdd(args),
};

const objectDel: DaemonCommand<{ id: string }> = {
  name: "object-del",
  args: ObjectDelArguments,
  run: ({ state }, args) => state.objectDel(args.id),
};

/** quit: like QEMU, every export is deleted (an event each) before the reply; then the daemon ends. */
const quit: DaemonCommand = {
  name: "quit",
  args: EMPTY_STRUCT,
  run: async ({ state, requestQuit }) => {
    await state.stopExporting();
    requestQuit();
  },
};

/** Every QMP command of `denbd daemon`, the core ones first. */
export function daemonCommands(): CommandTable<Daemon> {
  return new CommandTable<Daemon>([
    ...coreCommands<Daemon>().filter((command) => command.name !== quit.name),
    quit,
    blockdevAdd,
    blockdevDel,
    queryNamedBlockNodes,
    nbdServerStart,
    nbdServerAdd,
    nbdServerRemove,
    nbdServerStop,
    blockExportAdd,
    blockExportDel,
    queryBlockExports,
    bitmapAdd,
    bitmapCommand("block-dirty-bitmap-remove", "remove"),
    bitmapCommand("block-dirty-bitmap-clear", "clear"),
    bitmapCommand("block-dirty-bitmap-enable", "enable"),
    bitmapCommand("block-dirty-bitmap-disable", "disable"),
    bitmapMerge,
    objectAdd,
    objectDel,
  ]);
}
