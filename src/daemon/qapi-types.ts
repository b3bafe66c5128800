/**
 * The QAPI types of the daemon's interface: the subset of QEMU 7.2's block,
 * socket, block-export, dirty-bitmap, object and event schemas that denbd
 * implements, with QEMU's member names, optionality and type names. QMP
 * arguments and the command line (--blockdev, --nbd-server, --export,
 * --object) are both validated against these, so both report QEMU's errors,
 * and the TypeScript type of every validated value is derived from them
 * (`QapiValue<typeof BlockdevOptions>`), never written by hand.
 *
 * Enums list every value QEMU 7.2 has, so that a value denbd lacks is named
 * as not supported yet rather than as an unknown one: a union branch denbd
 * does not model takes any members unchecked, and the daemon refuses the
 * value itself (a driver, export type or object type). Supporting one more
 * is its branch here plus its implementation.
 *
 * @module
 */

import {
  alternate,
  array,
  BUILTIN,
  enumeration,
  event,
  extend,
  member,
  optional,
  type QapiAlternate,
  type QapiForward,
  type QapiValue,
  struct,
  union,
} from "../qmp/schema.ts";
import { AUTHZ_POLICIES, AUTHZ_RULE_FORMAT_NAMES } from "../authz/list.ts";

const { str, bool, int, uint16, uint32, size } = BUILTIN;

// ---------------------------------------------------------------------------
// Sockets (qapi/sockets.json)

/** InetSocketAddress. */
export const InetSocketAddress = struct("InetSocketAddress", [
  member("host", str),
  member("port", str),
  optional("numeric", bool),
  optional("to", uint16),
  optional("ipv4", bool),
  optional("ipv6", bool),
  optional("keep-alive", bool),
  optional("mptcp", bool),
]);

/** UnixSocketAddress. */
export const UnixSocketAddress = struct("UnixSocketAddress", [
  member("path", str),
  optional("abstract", bool),
  optional("tight", bool),
]);

/** VsockSocketAddress. */
export const VsockSocketAddress = struct("VsockSocketAddress", [
  member("cid", str),
  member("port", str),
]);

/** String (a passed file descriptor's name). */
export const StringWrapperValue = struct("String", [member("str", str)]);

/** SocketAddressType. */
export const SocketAddressType = enumeration("SocketAddressType", ["inet", "unix", "vsock", "fd"]);

/** SocketAddress: the flat form, used by --nbd-server and vhost-user-blk. */
export const SocketAddress = union("SocketAddress", [member("type", SocketAddressType)], "type", {
  inet: InetSocketAddress,
  unix: UnixSocketAddress,
  vsock: VsockSocketAddress,
  fd: StringWrapperValue,
});

/** A flat SocketAddress value. */
export type SocketAddressValue = QapiValue<typeof SocketAddress>;

/** SocketAddressLegacy: each branch wraps its address in "data" (nbd-server-start). */
export const SocketAddressLegacy = union(
  "SocketAddressLegacy",
  [member("type", SocketAddressType)],
  "type",
  {
    inet: struct("InetSocketAddressWrapper", [member("data", InetSocketAddress)]),
    unix: struct("UnixSocketAddressWrapper", [member("data", UnixSocketAddress)]),
    vsock: struct("VsockSocketAddressWrapper", [member("data", VsockSocketAddress)]),
    fd: struct("StringWrapper", [member("data", StringWrapperValue)]),
  },
);

/** A SocketAddressLegacy value: the address wrapped in "data". */
export type SocketAddressLegacyValue = QapiValue<typeof SocketAddressLegacy>;

// ---------------------------------------------------------------------------
// Block nodes (qapi/block-core.json)

/**
 * BlockdevDriver: every driver of QEMU 7.2's schema (in its order), so that
 * one denbd lacks is named as such rather than as an unknown value.
 */
export const BlockdevDriver = enumeration("BlockdevDriver", [
  "blkdebug",
  "blklogwrites",
  "blkreplay",
  "blkverify",
  "bochs",
  "cloop",
  "compress",
  "copy-before-write",
  "copy-on-read",
  "dmg",
  "file",
  "snapshot-access",
  "ftp",
  "ftps",
  "gluster",
  "host_cdrom",
  "host_device",
  "http",
  "https",
  "iscsi",
  "luks",
  "nbd",
  "nfs",
  "null-aio",
  "null-co",
  "nvme",
  "parallels",
  "preallocate",
  "qcow",
  "qcow2",
  "qed",
  "quorum",
  "raw",
  "rbd",
  "replication",
  "ssh",
  "throttle",
  "vdi",
  "vhdx",
  "vmdk",
  "vpc",
  "vvfat",
]);

/** BlockdevDiscardOptions. */
export const BlockdevDiscardOptions = enumeration("BlockdevDiscardOptions", ["ignore", "unmap"]);

/** BlockdevDetectZeroesOptions. */
export const BlockdevDetectZeroesOptions = enumeration("BlockdevDetectZeroesOptions", [
  "off",
  "on",
  "unmap",
]);

/** OnOffAuto. */
export const OnOffAuto = enumeration("OnOffAuto", ["auto", "on", "off"]);

/** BlockdevAioOptions. */
export const BlockdevAioOptions = enumeration("BlockdevAioOptions", [
  "threads",
  "native",
  "io_uring",
]);

/** BlockdevCacheOptions. */
export const BlockdevCacheOptions = struct("BlockdevCacheOptions", [
  optional("direct", bool),
  optional("no-flush", bool),
]);

/** BlockdevOptionsFile. */
export const BlockdevOptionsFile = struct("BlockdevOptionsFile", [
  member("filename", str),
  optional("pr-manager", str),
  optional("locking", OnOffAuto),
  optional("aio", BlockdevAioOptions),
  optional("aio-max-batch", int),
  optional("drop-cache", bool),
  optional("x-check-cache-dropped", bool),
]);

/** The members every blockdev has (BlockdevOptions' base). */
const blockdevBase = [
  member("driver", BlockdevDriver),
  optional("node-name", str),
  optional("discard", BlockdevDiscardOptions),
  optional("cache", BlockdevCacheOptions),
  optional("read-only", bool),
  optional("auto-read-only", bool),
  optional("force-share", bool),
  optional("detect-zeroes", BlockdevDetectZeroesOptions),
] as const;

/** The schema types that refer back to themselves, named for {@linkcode QapiForward}. */
interface RecursiveTypes {
  /** BlockdevOptions, which BlockdevRef (a raw node's file) refers back to. */
  readonly BlockdevOptions: typeof BlockdevOptions;
  /** ImageInfo, whose backing-image is an ImageInfo. */
  readonly ImageInfo: typeof ImageInfo;
}

/** BlockdevRef: a node defined inline, or a node name. */
export const BlockdevRef: QapiAlternate<
  readonly [QapiForward<RecursiveTypes, "BlockdevOptions">, typeof str]
> = alternate("BlockdevRef", () => [BlockdevOptions, str]);

/** BlockdevOptionsRaw. */
export const BlockdevOptionsRaw = struct("BlockdevOptionsRaw", [
  member("file", BlockdevRef),
  optional("offset", int),
  optional("size", int),
]);

/** BlockdevRefOrNull: a node defined inline, a node name, or null (no node). */
export const BlockdevRefOrNull: QapiAlternate<
  readonly [QapiForward<RecursiveTypes, "BlockdevOptions">, typeof str, typeof BUILTIN.null]
> = alternate("BlockdevRefOrNull", () => [BlockdevOptions, str, BUILTIN.null]);

/** Qcow2OverlapCheckMode. */
export const Qcow2OverlapCheckMode = enumeration("Qcow2OverlapCheckMode", [
  "none",
  "constant",
  "cached",
  "all",
]);

/** Qcow2OverlapCheckFlags. */
export const Qcow2OverlapCheckFlags = struct("Qcow2OverlapCheckFlags", [
  optional("template", Qcow2OverlapCheckMode),
  optional("main-header", bool),
  optional("active-l1", bool),
  optional("active-l2", bool),
  optional("refcount-table", bool),
  optional("refcount-block", bool),
  optional("snapshot-table", bool),
  optional("inactive-l1", bool),
  optional("inactive-l2", bool),
  optional("bitmap-directory", bool),
]);

/** Qcow2OverlapChecks: a mode for every structure, or one flag per structure. */
export const Qcow2OverlapChecks = alternate("Qcow2OverlapChecks", [
  Qcow2OverlapCheckFlags,
  Qcow2OverlapCheckMode,
]);

/**
 * BlockdevOptionsQcow2 (QEMU 7.2): the image's `file`, its `backing` (a
 * node, an inline definition, null for none; absent: the one the header
 * names), and the driver's tuning options. `encrypt` and `data-file` are
 * checked no further than by type: denbd refuses them.
 */
export const BlockdevOptionsQcow2 = struct("BlockdevOptionsQcow2", [
  member("file", BlockdevRef),
  optional("backing", BlockdevRefOrNull),
  optional("lazy-refcounts", bool),
  optional("pass-discard-request", bool),
  optional("pass-discard-snapshot", bool),
  optional("pass-discard-other", bool),
  optional("overlap-check", Qcow2OverlapChecks),
  optional("cache-size", int),
  optional("l2-cache-size", int),
  optional("l2-cache-entry-size", int),
  optional("refcount-cache-size", int),
  optional("cache-clean-interval", int),
  optional("encrypt", BUILTIN.any),
  optional("data-file", BlockdevRef),
]);

/** Branches of BlockdevOptions: the drivers denbd implements. */
const blockdevBranches = {
  file: BlockdevOptionsFile,
  qcow2: BlockdevOptionsQcow2,
  raw: BlockdevOptionsRaw,
};

/** The block drivers denbd implements, from the branches (the others are refused by name). */
export const IMPLEMENTED_DRIVERS: readonly string[] = Object.keys(blockdevBranches);

/** BlockdevOptions: a node to open (blockdev-add, --blockdev). */
export const BlockdevOptions = union(
  "BlockdevOptions",
  blockdevBase,
  "driver",
  blockdevBranches,
  BlockdevDriver.values.filter((driver) => !IMPLEMENTED_DRIVERS.includes(driver)),
);

/** A BlockdevOptions value. */
export type BlockdevOptionsValue = QapiValue<typeof BlockdevOptions>;

/** A BlockdevOptions value of a driver denbd implements. */
export type ImplementedBlockdevOptions = Extract<
  BlockdevOptionsValue,
  { readonly driver: keyof typeof blockdevBranches }
>;

/** Whether denbd implements the driver `options` name. */
export function isImplementedDriver(
  options: BlockdevOptionsValue,
): options is ImplementedBlockdevOptions {
  return IMPLEMENTED_DRIVERS.includes(options.driver);
}

/** blockdev-del arguments. */
export const BlockdevDelArguments = struct("blockdev-del-arg", [member("node-name", str)]);

/** query-named-block-nodes arguments. */
export const QueryNamedBlockNodesArguments = struct("query-named-block-nodes-arg", [
  optional("flat", bool),
]);

/** BlockdevCacheInfo. */
export const BlockdevCacheInfo = struct("BlockdevCacheInfo", [
  member("writeback", bool),
  member("direct", bool),
  member("no-flush", bool),
]);

/** BlockDirtyInfo: a bitmap as query-named-block-nodes shows it. */
export const BlockDirtyInfo = struct("BlockDirtyInfo", [
  optional("name", str),
  member("count", int),
  member("granularity", uint32),
  member("recording", bool),
  member("busy", bool),
  member("persistent", bool),
  optional("inconsistent", bool),
]);

/** SnapshotInfo: an internal snapshot of an image. */
export const SnapshotInfo = struct("SnapshotInfo", [
  member("id", str),
  member("name", str),
  member("vm-state-size", int),
  member("date-sec", int),
  member("date-nsec", int),
  member("vm-clock-sec", int),
  member("vm-clock-nsec", int),
  optional("icount", int),
]);

/** Qcow2BitmapInfo: a persistent bitmap as stored in a qcow2 image. */
export const Qcow2BitmapInfo = struct("Qcow2BitmapInfo", [
  member("name", str),
  member("granularity", uint32),
  member("flags", array(enumeration("Qcow2BitmapInfoFlags", ["in-use", "auto"]))),
]);

/** ImageInfoSpecificQCow2: what qcow2 adds to an image's description. */
export const ImageInfoSpecificQCow2 = struct("ImageInfoSpecificQCow2", [
  member("compat", str),
  optional("data-file", str),
  optional("data-file-raw", bool),
  optional("extended-l2", bool),
  optional("lazy-refcounts", bool),
  optional("corrupt", bool),
  member("refcount-bits", int),
  optional("bitmaps", array(Qcow2BitmapInfo)),
  optional("compression-type", enumeration("Qcow2CompressionType", ["zlib", "zstd"])),
]);

/** ImageInfoSpecific: format-specific information, by format (qcow2's modelled). */
export const ImageInfoSpecific = union(
  "ImageInfoSpecific",
  [member("type", enumeration("ImageInfoSpecificKind", ["qcow2", "vmdk", "luks", "rbd", "file"]))],
  "type",
  { qcow2: struct("ImageInfoSpecificQCow2Wrapper", [member("data", ImageInfoSpecificQCow2)]) },
  ["vmdk", "luks", "rbd", "file"],
);

/** ImageInfo: an image and, nested, its backing chain. */
export const ImageInfo = struct("ImageInfo", [
  member("filename", str),
  member("format", str),
  optional("dirty-flag", bool),
  optional("actual-size", int),
  member("virtual-size", int),
  optional("cluster-size", int),
  optional("encrypted", bool),
  optional("compressed", bool),
  optional("backing-filename", str),
  optional("full-backing-filename", str),
  optional("backing-filename-format", str),
  optional("snapshots", array(SnapshotInfo)),
  optional("backing-image", forwardImageInfo()),
  optional("format-specific", ImageInfoSpecific),
]);

/** An ImageInfo value. */
export type ImageInfoValue = QapiValue<typeof ImageInfo>;

/** ImageInfo as its own backing-image's type: a struct whose members are ImageInfo's, looked up on use. */
function forwardImageInfo(): QapiForward<RecursiveTypes, "ImageInfo"> {
  return {
    kind: "struct",
    name: "ImageInfo",
    get members() {
      return ImageInfo.members;
    },
  };
}

/** BlockDeviceInfo: a node as query-named-block-nodes describes it. */
export const BlockDeviceInfo = struct("BlockDeviceInfo", [
  member("file", str),
  optional("node-name", str),
  member("ro", bool),
  member("drv", str),
  optional("backing_file", str),
  member("backing_file_depth", int),
  member("encrypted", bool),
  member("detect_zeroes", BlockdevDetectZeroesOptions),
  member("bps", int),
  member("bps_rd", int),
  member("bps_wr", int),
  member("iops", int),
  member("iops_rd", int),
  member("iops_wr", int),
  member("image", ImageInfo),
  member("cache", BlockdevCacheInfo),
  member("write_threshold", int),
  optional("dirty-bitmaps", array(BlockDirtyInfo)),
]);

/** A BlockDeviceInfo value. */
export type BlockDeviceInfoValue = QapiValue<typeof BlockDeviceInfo>;

/** BlockInfo: a block backend with a name or a device (query-block; qsd has none). */
export const BlockInfo = struct("BlockInfo", [
  member("device", str),
  optional("qdev", str),
  member("type", str),
  member("removable", bool),
  member("locked", bool),
  optional("inserted", BlockDeviceInfo),
  optional("tray_open", bool),
]);

/** A BlockInfo value. */
export type BlockInfoValue = QapiValue<typeof BlockInfo>;

// ---------------------------------------------------------------------------
// Dirty bitmaps

/** BlockDirtyBitmap: a bitmap named on a node. */
export const BlockDirtyBitmap = struct("BlockDirtyBitmap", [
  member("node", str),
  member("name", str),
]);

/** BlockDirtyBitmapOrStr: a bitmap of the same node by name, or on any node. */
export const BlockDirtyBitmapOrStr = alternate("BlockDirtyBitmapOrStr", [str, BlockDirtyBitmap]);

/** block-dirty-bitmap-add arguments. */
export const BlockDirtyBitmapAdd = extend("BlockDirtyBitmapAdd", BlockDirtyBitmap, [
  optional("granularity", uint32),
  optional("persistent", bool),
  optional("disabled", bool),
]);

/** block-dirty-bitmap-merge arguments. */
export const BlockDirtyBitmapMerge = struct("BlockDirtyBitmapMerge", [
  member("node", str),
  member("target", str),
  member("bitmaps", array(BlockDirtyBitmapOrStr)),
]);

/** BlockDirtyBitmapSha256: what x-debug-block-dirty-bitmap-sha256 returns. */
export const BlockDirtyBitmapSha256 = struct("BlockDirtyBitmapSha256", [member("sha256", str)]);

// ---------------------------------------------------------------------------
// NBD server and block exports (qapi/block-export.json)

/**
 * The members nbd-server-start and --nbd-server share. handshake-max-seconds
 * is QEMU 10.0's (seconds a client has to finish its handshake, 0 for no
 * limit; default 10); the others are 7.2's. max-connections defaults to 100,
 * as in QEMU since the fix for CVE-2024-7409.
 */
const nbdServerMembers = [
  optional("handshake-max-seconds", uint32),
  optional("tls-creds", str),
  optional("tls-authz", str),
  optional("max-connections", uint32),
] as const;

/** NbdServerOptions (--nbd-server). */
export const NbdServerOptions = struct("NbdServerOptions", [
  member("addr", SocketAddress),
  ...nbdServerMembers,
]);

/** An NbdServerOptions value (nbd-server-start's, once its address is flat). */
export type NbdServerOptionsValue = QapiValue<typeof NbdServerOptions>;

/** nbd-server-start arguments (the legacy address form). */
export const NbdServerStartArguments = struct("nbd-server-start-arg", [
  member("addr", SocketAddressLegacy),
  ...nbdServerMembers,
]);

/** BlockExportOptionsNbdBase. */
export const BlockExportOptionsNbdBase = struct("BlockExportOptionsNbdBase", [
  optional("name", str),
  optional("description", str),
]);

/** BlockExportOptionsNbd. */
export const BlockExportOptionsNbd = extend("BlockExportOptionsNbd", BlockExportOptionsNbdBase, [
  optional("bitmaps", array(BlockDirtyBitmapOrStr)),
  optional("allocation-depth", bool),
]);

/** NbdServerAddOptions (the deprecated nbd-server-add). */
export const NbdServerAddOptions = extend("NbdServerAddOptions", BlockExportOptionsNbdBase, [
  member("device", str),
  optional("writable", bool),
  optional("bitmap", str),
]);

/** An NbdServerAddOptions value. */
export type NbdServerAddOptionsValue = QapiValue<typeof NbdServerAddOptions>;

/** BlockExportRemoveMode. */
export const BlockExportRemoveMode = enumeration("BlockExportRemoveMode", ["safe", "hard"]);

/** A BlockExportRemoveMode value: how an export is removed. */
export type BlockExportRemoveModeValue = QapiValue<typeof BlockExportRemoveMode>;

/** nbd-server-remove arguments. */
export const NbdServerRemoveArguments = struct("nbd-server-remove-arg", [
  member("name", str),
  optional("mode", BlockExportRemoveMode),
]);

/** BlockExportType. */
export const BlockExportType = enumeration("BlockExportType", [
  "nbd",
  "vhost-user-blk",
  "fuse",
  "vduse-blk",
]);

/** BlockExportOptions: an export to add (block-export-add, --export). */
export const BlockExportOptions = union(
  "BlockExportOptions",
  [
    member("type", BlockExportType),
    member("id", str),
    optional("fixed-iothread", bool),
    optional("iothread", str),
    member("node-name", str),
    optional("writable", bool),
    optional("writethrough", bool),
  ],
  "type",
  {
    "nbd": BlockExportOptionsNbd,
    "vhost-user-blk": struct("BlockExportOptionsVhostUserBlk", [
      member("addr", SocketAddress),
      optional("logical-block-size", size),
      optional("num-queues", uint16),
    ]),
    "fuse": struct("BlockExportOptionsFuse", [
      member("mountpoint", str),
      optional("growable", bool),
      optional("allow-other", enumeration("FuseExportAllowOther", ["off", "on", "auto"])),
    ]),
    "vduse-blk": struct("BlockExportOptionsVduseBlk", [
      member("name", str),
      optional("num-queues", uint16),
      optional("queue-size", uint16),
      optional("logical-block-size", size),
      optional("serial", str),
    ]),
  },
);

/** A BlockExportOptions value. */
export type BlockExportOptionsValue = QapiValue<typeof BlockExportOptions>;

/** The export types (of BlockExportType) denbd serves; the others are refused by name. */
export const SERVED_EXPORT_TYPES = ["nbd"] as const;

/** A BlockExportOptions value of a type denbd serves. */
export type ServedBlockExportOptions = Extract<
  BlockExportOptionsValue,
  { readonly type: typeof SERVED_EXPORT_TYPES[number] }
>;

/** Whether denbd serves the export type `options` names. */
export function isServedExport(
  options: BlockExportOptionsValue,
): options is ServedBlockExportOptions {
  return (SERVED_EXPORT_TYPES as readonly string[]).includes(options.type);
}

/** block-export-del arguments. */
export const BlockExportDelArguments = struct("block-export-del-arg", [
  member("id", str),
  optional("mode", BlockExportRemoveMode),
]);

/** BlockExportInfo (query-block-exports). */
export const BlockExportInfo = struct("BlockExportInfo", [
  member("id", str),
  member("type", BlockExportType),
  member("node-name", str),
  member("shutting-down", bool),
]);

/** A BlockExportInfo value. */
export type BlockExportInfoValue = QapiValue<typeof BlockExportInfo>;

// ---------------------------------------------------------------------------
// denbd's statistics (x-denbd-query-stats; no QEMU counterpart for NBD exports)

/**
 * What a client or an export has been served. Members named as QEMU's
 * BlockDeviceStats (query-blockstats) where the meaning is the same:
 * rd_/wr_/unmap_ bytes and operations, flush_operations. denbd's own:
 * zero_* (WRITE_ZEROES, which QEMU accounts as writes), block_status_ and
 * cache_operations, and one failed_operations for every error reply (QEMU
 * splits failed_* by kind and counts refused requests as invalid_*).
 */
export const DenbdRequestStats = struct("DenbdRequestStats", [
  member("rd_bytes", int),
  member("wr_bytes", int),
  member("zero_bytes", int),
  member("unmap_bytes", int),
  member("rd_operations", int),
  member("wr_operations", int),
  member("zero_operations", int),
  member("unmap_operations", int),
  member("flush_operations", int),
  member("block_status_operations", int),
  member("cache_operations", int),
  member("failed_operations", int),
]);

/** A DenbdRequestStats value. */
export type DenbdRequestStatsValue = QapiValue<typeof DenbdRequestStats>;

/** One export's totals: its present clients and those that left, together. */
export const DenbdExportStats = struct("DenbdExportStats", [
  member("id", str),
  member("name", str),
  member("node-name", str),
  member("clients", int),
  member("departed-clients", int),
  member("stats", DenbdRequestStats),
]);

/** One connected client: who, since when, on which export, and what it was served. */
export const DenbdClientStats = struct("DenbdClientStats", [
  member("id", int),
  member("address", str),
  optional("export", str),
  member("connected-at", int),
  member("age", BUILTIN.number),
  member("stats", DenbdRequestStats),
]);

/** What x-denbd-query-stats returns. */
export const DenbdStats = struct("DenbdStats", [
  member("exports", array(DenbdExportStats)),
  member("clients", array(DenbdClientStats)),
]);

/** A DenbdStats value. */
export type DenbdStatsValue = QapiValue<typeof DenbdStats>;

// ---------------------------------------------------------------------------
// Monitors (qapi/control.json)

/** MonitorOptions (--monitor). */
export const MonitorOptions = struct("MonitorOptions", [
  optional("id", str),
  optional("mode", enumeration("MonitorMode", ["readline", "control"])),
  optional("pretty", bool),
  member("chardev", str),
]);

// ---------------------------------------------------------------------------
// Objects (qapi/qom.json)

/** QCryptoTLSCredsEndpoint. */
const TlsCredsEndpoint = enumeration("QCryptoTLSCredsEndpoint", ["client", "server"]);

/** The members every TLS credentials object has. */
const tlsCredsMembers = [
  optional("verify-peer", bool),
  optional("dir", str),
  optional("endpoint", TlsCredsEndpoint),
  optional("priority", str),
  optional("loaded", bool),
] as const;

/**
 * What becomes of an object type: "created" types are checked and recorded
 * by denbd; "unsupported" ones qemu-storage-daemon creates but denbd does
 * not yet; "absent" ones are in QEMU's schema but not built into
 * qemu-storage-daemon, which answers "invalid object type".
 */
export type ObjectTypeSupport = "created" | "unsupported" | "absent";

/**
 * Every value of QEMU 7.2's ObjectType enum (in its order) and what denbd
 * does with it, plus `authz-list-file`. QEMU 7.2's enum spells that type
 * `authz-listfile` while its QOM type is `authz-list-file`, so qsd 7.2 can
 * create it under neither name ("invalid object type: authz-listfile",
 * "Parameter 'qom-type' does not accept value 'authz-list-file'"); denbd
 * creates it under the QOM name, which `--object help` lists and QEMU's
 * documentation uses, and answers for `authz-listfile` as qsd does (see
 * docs/compatibility.md).
 */
export const OBJECT_TYPES: Readonly<Record<string, ObjectTypeSupport>> = {
  "authz-list": "created",
  "authz-list-file": "created",
  "authz-listfile": "absent",
  "authz-pam": "absent",
  "authz-simple": "created",
  "can-bus": "absent",
  "can-host-socketcan": "absent",
  "colo-compare": "absent",
  "cryptodev-backend": "absent",
  "cryptodev-backend-builtin": "absent",
  "cryptodev-backend-lkcf": "absent",
  "cryptodev-vhost-user": "absent",
  "dbus-vmstate": "absent",
  "filter-buffer": "absent",
  "filter-dump": "absent",
  "filter-mirror": "absent",
  "filter-redirector": "absent",
  "filter-replay": "absent",
  "filter-rewriter": "absent",
  "input-barrier": "absent",
  "input-linux": "absent",
  "iothread": "created",
  "main-loop": "unsupported",
  "memory-backend-epc": "absent",
  "memory-backend-file": "absent",
  "memory-backend-memfd": "absent",
  "memory-backend-ram": "absent",
  "pef-guest": "absent",
  "pr-manager-helper": "unsupported",
  "qtest": "absent",
  "rng-builtin": "absent",
  "rng-egd": "absent",
  "rng-random": "absent",
  "secret": "created",
  "secret_keyring": "unsupported",
  "sev-guest": "absent",
  "thread-context": "unsupported",
  "s390-pv-guest": "absent",
  "throttle-group": "unsupported",
  "tls-creds-anon": "created",
  "tls-creds-psk": "created",
  "tls-creds-x509": "created",
  "tls-cipher-suites": "unsupported",
  "x-remote-object": "absent",
  "x-vfio-user-server": "absent",
};

/** ObjectType: QEMU's object types, from {@linkcode OBJECT_TYPES}. */
export const ObjectType = enumeration("ObjectType", Object.keys(OBJECT_TYPES));

/** QAuthZListPolicy and its rules, from the authorization layer's tables. */
const AuthzListPolicy = enumeration("QAuthZListPolicy", AUTHZ_POLICIES);
const AuthzListRule = struct("QAuthZListRule", [
  member("match", str),
  member("policy", AuthzListPolicy),
  optional("format", enumeration("QAuthZListFormat", AUTHZ_RULE_FORMAT_NAMES)),
]);

/** ObjectOptions: an object to create (object-add, --object). */
export const ObjectOptions = union(
  "ObjectOptions",
  [member("qom-type", ObjectType), member("id", str)],
  "qom-type",
  {
    "authz-list": struct("AuthZListProperties", [
      optional("policy", AuthzListPolicy),
      optional("rules", array(AuthzListRule)),
    ]),
    "authz-list-file": struct("AuthZListFileProperties", [
      member("filename", str),
      optional("refresh", bool),
    ]),
    "authz-simple": struct("AuthZSimpleProperties", [member("identity", str)]),
    "iothread": struct("IothreadProperties", [
      optional("aio-max-batch", int),
      optional("thread-pool-min", int),
      optional("thread-pool-max", int),
      optional("poll-max-ns", int),
      optional("poll-grow", int),
      optional("poll-shrink", int),
    ]),
    "secret": struct("SecretProperties", [
      optional("loaded", bool),
      optional("format", enumeration("QCryptoSecretFormat", ["raw", "base64"])),
      optional("keyid", str),
      optional("iv", str),
      optional("data", str),
      optional("file", str),
    ]),
    "tls-creds-anon": struct("TlsCredsAnonProperties", tlsCredsMembers),
    "tls-creds-psk": struct("TlsCredsPskProperties", [
      ...tlsCredsMembers,
      optional("username", str),
    ]),
    "tls-creds-x509": struct("TlsCredsX509Properties", [
      ...tlsCredsMembers,
      optional("sanity-check", bool),
      optional("passwordid", str),
    ]),
  },
  Object.keys(OBJECT_TYPES).filter((type) => OBJECT_TYPES[type] !== "created"),
);

/** An ObjectOptions value: its type, id and type-specific properties. */
export type ObjectOptionsValue = QapiValue<typeof ObjectOptions>;

/** object-del arguments. */
export const ObjectDelArguments = struct("object-del-arg", [member("id", str)]);

// ---------------------------------------------------------------------------
// Events

/** BLOCK_EXPORT_DELETED: an export is gone (deleted, or its server stopped). */
export const BLOCK_EXPORT_DELETED = event(
  "BLOCK_EXPORT_DELETED",
  struct("q_obj_BLOCK_EXPORT_DELETED-arg", [member("id", str)]),
);

/** Every event the daemon emits. */
export const DAEMON_EVENTS = [BLOCK_EXPORT_DELETED] as const;

/** The schema of an event the daemon emits. */
export type DaemonEvent = (typeof DAEMON_EVENTS)[number];
