/**
 * The QAPI types of the daemon's interface: the subset of QEMU 7.2's block,
 * socket, block-export, dirty-bitmap and object schemas that denbd
 * implements, with QEMU's member names, optionality and type names. QMP
 * arguments and the command line (--blockdev, --nbd-server, --export,
 * --object) are both validated against these, so both report QEMU's errors.
 *
 * Enums list only what denbd implements: a driver, export type or object
 * type denbd does not have is refused by validation itself ("Parameter
 * 'driver' does not accept value 'qcow2'"), and grows as support lands.
 *
 * @module
 */

import {
  alternate,
  array,
  BUILTIN,
  enumeration,
  extend,
  member,
  optional,
  type QapiStruct,
  struct,
  union,
} from "../qmp/schema.ts";

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

// ---------------------------------------------------------------------------
// Block nodes (qapi/block-core.json)

/** The block drivers denbd implements. */
export const IMPLEMENTED_DRIVERS: readonly string[] = ["file", "raw"];

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
];

/**
 * Branches of BlockdevOptions by driver. The raw branch refers back to
 * BlockdevOptions (its "file" may define a node inline), so it is added once
 * BlockdevRef exists.
 */
const blockdevBranches: Record<string, QapiStruct> = { file: BlockdevOptionsFile };

/** BlockdevOptions: a node to open (blockdev-add, --blockdev). */
export const BlockdevOptions = union(
  "BlockdevOptions",
  blockdevBase,
  "driver",
  blockdevBranches,
  BlockdevDriver.values.filter((driver) => !IMPLEMENTED_DRIVERS.includes(driver)),
);

/** BlockdevRef: a node name, or a node defined inline. */
export const BlockdevRef = alternate("BlockdevRef", [BlockdevOptions, str]);

/** BlockdevOptionsRaw. */
export const BlockdevOptionsRaw = struct("BlockdevOptionsRaw", [
  member("file", BlockdevRef),
  optional("offset", int),
  optional("size", int),
]);
blockdevBranches.raw = BlockdevOptionsRaw;

/** blockdev-del arguments. */
export const BlockdevDelArguments = struct("blockdev-del-arg", [member("node-name", str)]);

/** query-named-block-nodes arguments. */
export const QueryNamedBlockNodesArguments = struct("query-named-block-nodes-arg", [
  optional("flat", bool),
]);

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

// ---------------------------------------------------------------------------
// NBD server and block exports (qapi/block-export.json)

const nbdServerMembers = [
  optional("tls-creds", str),
  optional("tls-authz", str),
  optional("max-connections", uint32),
];

/** NbdServerOptions (--nbd-server). */
export const NbdServerOptions = struct("NbdServerOptions", [
  member("addr", SocketAddress),
  ...nbdServerMembers,
]);

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

/** BlockExportRemoveMode. */
export const BlockExportRemoveMode = enumeration("BlockExportRemoveMode", ["safe", "hard"]);

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
];

/**
 * What becomes of an object type: "created" types are checked and recorded
 * by denbd; "unsupported" ones qemu-storage-daemon creates but denbd does
 * not yet; "absent" ones are in QEMU's schema but not built into
 * qemu-storage-daemon, which answers "invalid object type".
 */
export type ObjectTypeSupport = "created" | "unsupported" | "absent";

/** Every value of QEMU 7.2's ObjectType enum (in its order) and what denbd does with it. */
export const OBJECT_TYPES: Readonly<Record<string, ObjectTypeSupport>> = {
  "authz-list": "created",
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

/** QAuthZListPolicy and its rules. */
const AuthzListPolicy = enumeration("QAuthZListPolicy", ["deny", "allow"]);
const AuthzListRule = struct("QAuthZListRule", [
  member("match", str),
  member("policy", AuthzListPolicy),
  optional("format", enumeration("QAuthZListFormat", ["exact", "glob"])),
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

/** object-del arguments. */
export const ObjectDelArguments = struct("object-del-arg", [member("id", str)]);

// ---------------------------------------------------------------------------
// The values the input visitor produces for these types (QEMU's member names).

/** A BlockdevCacheOptions value. */
export interface BlockdevCacheValue {
  readonly direct?: boolean;
  readonly "no-flush"?: boolean;
}

/** A BlockdevOptions value (file or raw). */
export type BlockdevOptionsValue =
  & {
    readonly "node-name"?: string;
    readonly discard?: "ignore" | "unmap";
    readonly cache?: BlockdevCacheValue;
    readonly "read-only"?: boolean;
    readonly "auto-read-only"?: boolean;
    readonly "force-share"?: boolean;
    readonly "detect-zeroes"?: "off" | "on" | "unmap";
  }
  & (
    | {
      readonly driver: "file";
      readonly filename: string;
      readonly locking?: "auto" | "on" | "off";
      readonly aio?: string;
      readonly "aio-max-batch"?: number;
      readonly "drop-cache"?: boolean;
      readonly "pr-manager"?: string;
      readonly "x-check-cache-dropped"?: boolean;
    }
    | {
      readonly driver: "raw";
      readonly file: BlockdevOptionsValue | string;
      readonly offset?: number;
      readonly size?: number;
    }
  );

/** A flat SocketAddress value. */
export type SocketAddressValue =
  | {
    readonly type: "inet";
    readonly host: string;
    readonly port: string;
    readonly numeric?: boolean;
    readonly to?: number;
    readonly ipv4?: boolean;
    readonly ipv6?: boolean;
    readonly "keep-alive"?: boolean;
    readonly mptcp?: boolean;
  }
  | {
    readonly type: "unix";
    readonly path: string;
    readonly abstract?: boolean;
    readonly tight?: boolean;
  }
  | { readonly type: "vsock"; readonly cid: string; readonly port: string }
  | { readonly type: "fd"; readonly str: string };

/** A SocketAddressLegacy value: the flat address wrapped in "data". */
export interface SocketAddressLegacyValue {
  readonly type: SocketAddressValue["type"];
  readonly data: Omit<SocketAddressValue, "type">;
}

/** NbdServerOptions / nbd-server-start arguments, with the address already flat. */
export interface NbdServerStartValue {
  readonly addr: SocketAddressValue;
  readonly "tls-creds"?: string;
  readonly "tls-authz"?: string;
  readonly "max-connections"?: number;
}

/** A BlockDirtyBitmapOrStr value. */
export type BitmapRefValue = string | { readonly node: string; readonly name: string };

/** A BlockExportOptions value. */
export interface BlockExportOptionsValue {
  readonly type: "nbd" | "vhost-user-blk" | "fuse" | "vduse-blk";
  readonly id: string;
  readonly "node-name": string;
  readonly "fixed-iothread"?: boolean;
  readonly iothread?: string;
  readonly writable?: boolean;
  readonly writethrough?: boolean;
  readonly name?: string;
  readonly description?: string;
  readonly bitmaps?: readonly BitmapRefValue[];
  readonly "allocation-depth"?: boolean;
}

/** NbdServerAddOptions value. */
export interface NbdServerAddValue {
  readonly device: string;
  readonly name?: string;
  readonly description?: string;
  readonly writable?: boolean;
  readonly bitmap?: string;
}

/** Removal mode of an export. */
export type RemoveMode = "safe" | "hard";

/** A BlockExportInfo value. */
export interface BlockExportInfoValue {
  readonly id: string;
  readonly type: BlockExportOptionsValue["type"];
  readonly "node-name": string;
  readonly "shutting-down": boolean;
}

/** An ObjectOptions value: its type, id and type-specific properties. */
export interface ObjectOptionsValue {
  readonly "qom-type": string;
  readonly id: string;
  readonly [property: string]: unknown;
}
