/**
 * The daemon's QMP command table: each QMP command of the block-export,
 * block and object APIs bound to the Daemon method that implements it, with
 * its QAPI argument type (validation, `query-commands` and the type of the
 * arguments each command receives derive from it).
 *
 * @module
 */

import { DenbdError } from "../errors.ts";
import { commandFor, CommandTable } from "../qmp/command.ts";
import { coreCommands } from "../qmp/core-commands.ts";
import { queryQmpSchema } from "../qmp/introspection.ts";
import { array, EMPTY_STRUCT } from "../qmp/schema.ts";
import type { Daemon } from "./daemon.ts";
import {
  BlockdevDelArguments,
  BlockDeviceInfo,
  BlockdevOptions,
  BlockDirtyBitmap,
  BlockDirtyBitmapAdd,
  BlockDirtyBitmapMerge,
  BlockDirtyBitmapSha256,
  BlockExportDelArguments,
  BlockExportInfo,
  BlockExportOptions,
  BlockInfo,
  DAEMON_EVENTS,
  DenbdStats,
  NbdServerAddOptions,
  NbdServerRemoveArguments,
  NbdServerStartArguments,
  ObjectDelArguments,
  ObjectOptions,
  QueryNamedBlockNodesArguments,
  type SocketAddressLegacyValue,
  type SocketAddressValue,
} from "./qapi-types.ts";

/** A command on the daemon, its arguments' type inferred from their schema. */
const daemonCommand = commandFor<Daemon>();

/** The flat address of a SocketAddressLegacy value. */
export function flattenLegacyAddress(address: SocketAddressLegacyValue): SocketAddressValue {
  return { type: address.type, ...address.data } as SocketAddressValue;
}

const nbdServerStart = daemonCommand({
  name: "nbd-server-start",
  args: NbdServerStartArguments,
  run: ({ state }, args) => {
    if (args.addr.type === "fd") {
      // qsd's answer: over QMP a descriptor is named (getfd), and only QEMU can pass one.
      throw new DenbdError("not-supported", "only QEMU supports file descriptor passing");
    }
    state.nbdServerStart({ ...args, addr: flattenLegacyAddress(args.addr) });
  },
});

const nbdServerAdd = daemonCommand({
  name: "nbd-server-add",
  args: NbdServerAddOptions,
  deprecated: true,
  run: ({ state }, args) => state.nbdServerAdd(args),
});

const nbdServerRemove = daemonCommand({
  name: "nbd-server-remove",
  args: NbdServerRemoveArguments,
  deprecated: true,
  run: ({ state }, args) => state.nbdServerRemove(args.name, args.mode),
});

const nbdServerStop = daemonCommand({
  name: "nbd-server-stop",
  args: EMPTY_STRUCT,
  run: ({ state }) => state.nbdServerStop(),
});

const blockExportAdd = daemonCommand({
  name: "block-export-add",
  args: BlockExportOptions,
  run: ({ state }, args) => state.blockExportAdd(args),
});

const blockExportDel = daemonCommand({
  name: "block-export-del",
  args: BlockExportDelArguments,
  run: ({ state }, args) => state.blockExportDel(args.id, args.mode),
});

const queryBlockExports = daemonCommand({
  name: "query-block-exports",
  args: EMPTY_STRUCT,
  returns: array(BlockExportInfo),
  run: ({ state }) => state.queryBlockExports(),
});

/** x-denbd-query-stats: denbd's own (hence x-), the counters behind `denbd top`. */
const queryStatsCommand = daemonCommand({
  name: "x-denbd-query-stats",
  args: EMPTY_STRUCT,
  returns: DenbdStats,
  run: ({ state }) => state.xDenbdQueryStats(),
});

const blockdevAdd = daemonCommand({
  name: "blockdev-add",
  args: BlockdevOptions,
  run: ({ state }, args) => state.blockdevAdd(args),
});

const blockdevDel = daemonCommand({
  name: "blockdev-del",
  args: BlockdevDelArguments,
  run: ({ state }, args) => state.blockdevDel(args["node-name"]),
});

const queryNamedBlockNodes = daemonCommand({
  name: "query-named-block-nodes",
  args: QueryNamedBlockNodesArguments,
  returns: array(BlockDeviceInfo),
  run: ({ state }, args) => state.queryNamedBlockNodes(args.flat),
});

const queryBlock = daemonCommand({
  name: "query-block",
  args: EMPTY_STRUCT,
  returns: array(BlockInfo),
  run: ({ state }) => state.queryBlock(),
});

const bitmapAdd = daemonCommand({
  name: "block-dirty-bitmap-add",
  args: BlockDirtyBitmapAdd,
  run: ({ state }, args) => void state.dirtyBitmaps.add(args.node, args.name, args),
});

/** block-dirty-bitmap-remove/clear/enable/disable: one bitmap named on a node. */
function bitmapCommand(name: string, operation: "remove" | "clear" | "enable" | "disable") {
  return daemonCommand({
    name,
    args: BlockDirtyBitmap,
    run: ({ state }, args) => state.dirtyBitmaps[operation](args.node, args.name),
  });
}

const bitmapMerge = daemonCommand({
  name: "block-dirty-bitmap-merge",
  args: BlockDirtyBitmapMerge,
  run: ({ state }, args) => state.dirtyBitmaps.merge(args.node, args.target, args.bitmaps),
});

const bitmapSha256 = daemonCommand({
  name: "x-debug-block-dirty-bitmap-sha256",
  args: BlockDirtyBitmap,
  returns: BlockDirtyBitmapSha256,
  run: async ({ state }, args) => ({
    sha256: await state.dirtyBitmaps.sha256(args.node, args.name),
  }),
});

const objectAdd = daemonCommand({
  name: "object-add",
  args: ObjectOptions,
  run: ({ state }, args) => state.objectAdd(args),
});

const objectDel = daemonCommand({
  name: "object-del",
  args: ObjectDelArguments,
  run: ({ state }, args) => state.objectDel(args.id),
});

/** quit: like QEMU, every export is deleted (an event each) before the reply; then the daemon ends. */
const quit = daemonCommand({
  name: "quit",
  args: EMPTY_STRUCT,
  run: async ({ state, requestQuit }) => {
    await state.stopExporting();
    requestQuit();
  },
});

/**
 * The QMP commands of `denbd serve --qmp`: the core ones but quit (signals
 * stop serve), query-qmp-schema, query-block-exports and x-denbd-query-stats.
 */
export function serveMonitorCommands(): CommandTable<Daemon> {
  return new CommandTable<Daemon>([
    ...coreCommands<Daemon>().filter((command) => command.name !== quit.name),
    queryQmpSchema<Daemon>([]),
    queryBlockExports,
    queryStatsCommand,
  ]);
}

/** Every QMP command of `denbd daemon`, the core ones first. */
export function daemonCommands(): CommandTable<Daemon> {
  return new CommandTable<Daemon>([
    ...coreCommands<Daemon>().filter((command) => command.name !== quit.name),
    quit,
    queryQmpSchema<Daemon>(DAEMON_EVENTS),
    blockdevAdd,
    blockdevDel,
    queryNamedBlockNodes,
    queryBlock,
    nbdServerStart,
    nbdServerAdd,
    nbdServerRemove,
    nbdServerStop,
    blockExportAdd,
    blockExportDel,
    queryBlockExports,
    queryStatsCommand,
    bitmapAdd,
    bitmapCommand("block-dirty-bitmap-remove", "remove"),
    bitmapCommand("block-dirty-bitmap-clear", "clear"),
    bitmapCommand("block-dirty-bitmap-enable", "enable"),
    bitmapCommand("block-dirty-bitmap-disable", "disable"),
    bitmapMerge,
    bitmapSha256,
    objectAdd,
    objectDel,
  ]);
}
