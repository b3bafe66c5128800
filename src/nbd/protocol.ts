/**
 * The NBD protocol's vocabulary: every magic number, flag, option, reply type,
 * command and error code, as one table per kind of value. Everything else (log
 * names, validation, the wire codecs) is derived from these tables.
 *
 * Values follow the NBD specification (doc/proto.md in NetworkBlockDevice/nbd).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { NBD_CMD, nameOf } from "./protocol.ts";
 * assert.equal(nameOf(NBD_CMD, 0), "READ");
 * ```
 * @module
 */

/** Magic numbers that frame every message. 64-bit ones are bigints. */
export const NBD_MAGIC = {
  /** "NBDMAGIC": first 8 bytes the server sends. */
  INIT_PASSWD: 0x4e42444d41474943n,
  /** "IHAVEOPT": newstyle greeting and the start of every client option. */
  IHAVEOPT: 0x49484156454f5054n,
  /** Start of every fixed-newstyle option reply. */
  OPTION_REPLY: 0x3e889045565a9n,
  /** Start of every transmission request. */
  REQUEST: 0x25609513,
  /** Start of a simple reply. */
  SIMPLE_REPLY: 0x67446698,
  /** Start of a structured reply chunk. */
  STRUCTURED_REPLY: 0x668e33ef,
} as const;

/** Handshake flags the server sends after the greeting (16 bits). */
export const NBD_HANDSHAKE_FLAG = {
  FIXED_NEWSTYLE: 1 << 0,
  NO_ZEROES: 1 << 1,
} as const;

/** Client flags sent in reply to the greeting (32 bits). */
export const NBD_CLIENT_FLAG = {
  FIXED_NEWSTYLE: 1 << 0,
  NO_ZEROES: 1 << 1,
} as const;

/** Transmission flags describing an export (16 bits). */
export const NBD_FLAG = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_RESIZE: 1 << 9,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
} as const;

/** Options a client sends during option haggling. */
export const NBD_OPT = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  PEEK_EXPORT: 4,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
} as const;

/** Bit 31 marks an option reply type as an error. */
export const NBD_REP_ERR_BIT = 0x80000000;

/** Option reply types; the ERR_ ones have bit 31 set. */
export const NBD_REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: NBD_REP_ERR_BIT + 1,
  ERR_POLICY: NBD_REP_ERR_BIT + 2,
  ERR_INVALID: NBD_REP_ERR_BIT + 3,
  ERR_PLATFORM: NBD_REP_ERR_BIT + 4,
  ERR_TLS_REQD: NBD_REP_ERR_BIT + 5,
  ERR_UNKNOWN: NBD_REP_ERR_BIT + 6,
  ERR_SHUTDOWN: NBD_REP_ERR_BIT + 7,
  ERR_BLOCK_SIZE_REQD: NBD_REP_ERR_BIT + 8,
  ERR_TOO_BIG: NBD_REP_ERR_BIT + 9,
} as const;

/** Information types inside NBD_REP_INFO replies and INFO/GO requests. */
export const NBD_INFO = {
  EXPORT: 0,
  NAME: 1,
  DESCRIPTION: 2,
  BLOCK_SIZE: 3,
} as const;

/** Transmission request types. */
export const NBD_CMD = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
} as const;

/** Command flags carried in a request (16 bits). */
export const NBD_CMD_FLAG = {
  FUA: 1 << 0,
  NO_HOLE: 1 << 1,
  DF: 1 << 2,
  REQ_ONE: 1 << 3,
  FAST_ZERO: 1 << 4,
} as const;

/** Structured reply chunk flags. */
export const NBD_REPLY_FLAG = {
  DONE: 1 << 0,
} as const;

/** Bit 15 marks a structured reply chunk type as an error chunk. */
export const NBD_REPLY_TYPE_ERR_BIT = 0x8000;

/** Structured reply chunk types. */
export const NBD_REPLY_TYPE = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  ERROR: NBD_REPLY_TYPE_ERR_BIT + 1,
  ERROR_OFFSET: NBD_REPLY_TYPE_ERR_BIT + 2,
} as const;

/** Error values carried in replies (the protocol's own numbering). */
export const NBD_ERROR = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;

/** Flags of the `base:allocation` metadata context. */
export const NBD_STATE = {
  HOLE: 1 << 0,
  ZERO: 1 << 1,
} as const;

/** Sizes fixed by the protocol and the limits this implementation enforces. */
export const NBD_LIMIT = {
  /** Longest string (export name, description, context name, message). */
  MAX_STRING: 4096,
  /** Longest option payload accepted before the connection is dropped. */
  MAX_OPTION_LENGTH: 64 * 1024,
  /** Default and advertised maximum payload of one request. */
  MAX_PAYLOAD: 32 * 1024 * 1024,
  /** Preferred block size advertised in NBD_INFO_BLOCK_SIZE. */
  PREFERRED_BLOCK: 4096,
  /** Most extents sent in one block status chunk. */
  MAX_EXTENTS: 1 << 20,
  /** Size of the zero padding after an NBD_OPT_EXPORT_NAME reply. */
  EXPORT_NAME_PADDING: 124,
} as const;

/** Fixed sizes of the messages on the wire, in bytes. */
export const NBD_SIZE = {
  GREETING: 18,
  CLIENT_FLAGS: 4,
  OPTION_HEADER: 16,
  OPTION_REPLY_HEADER: 20,
  REQUEST_HEADER: 28,
  SIMPLE_REPLY_HEADER: 16,
  STRUCTURED_REPLY_HEADER: 20,
} as const;

/** The reserved namespace of base metadata contexts. */
export const BASE_ALLOCATION = "base:allocation";

/**
 * The key in `table` whose value is `value`, or a hex rendering when the
 * value is not in the table (for log lines about unknown values).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { NBD_OPT, nameOf } from "./protocol.ts";
 * assert.equal(nameOf(NBD_OPT, 7), "GO");
 * assert.equal(nameOf(NBD_OPT, 99), "0x63");
 * ```
 */
export function nameOf(table: Readonly<Record<string, number>>, value: number): string {
  for (const [key, v] of Object.entries(table)) if (v === value) return key;
  return `0x${value.toString(16)}`;
}

/**
 * The names of the bits set in `value`, joined with "|", e.g. for logging
 * transmission flags. Unknown bits are rendered in hex.
 */
export function flagNames(table: Readonly<Record<string, number>>, value: number): string {
  const names: string[] = [];
  let rest = value;
  for (const [key, bit] of Object.entries(table)) {
    if (value & bit) {
      names.push(key);
      rest &= ~bit;
    }
  }
  if (rest) names.push(`0x${rest.toString(16)}`);
  return names.join("|") || "0";
}
