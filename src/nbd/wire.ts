/**
 * Encoders and decoders for every NBD message, for both the server and the
 * client side. Pure functions over bytes: no I/O, no state. Decoders check
 * magics and lengths and throw {@linkcode ProtocolError} on malformed input;
 * they never allocate more than the bytes they were given.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeRequestHeader, encodeRequestHeader } from "./wire.ts";
 * import { NBD_CMD } from "./protocol.ts";
 * const request = { flags: 0, type: NBD_CMD.READ, cookie: 1n, offset: 4096, length: 512 };
 * const bytes = encodeRequestHeader(request);
 * assert.equal(bytes.length, 28);
 * assert.deepEqual(decodeRequestHeader(bytes), request);
 * ```
 * @module
 */

import { NBD_INFO, NBD_LIMIT, NBD_MAGIC, NBD_REPLY_FLAG, NBD_SIZE } from "./protocol.ts";
import { DenbdError } from "../errors.ts";

/** Malformed protocol data from the peer (kind "io": the peer cannot be trusted further). */
export class ProtocolError extends DenbdError {
  /** Describe what was wrong with the peer's data. */
  constructor(message: string) {
    super("io", message);
    this.name = "ProtocolError";
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });
const EMPTY = new Uint8Array(0);

/** UTF-8 bytes of `text`. */
export function encodeString(text: string): Uint8Array {
  return encoder.encode(text);
}

/** Decode UTF-8, rejecting invalid sequences and strings over the protocol limit. */
export function decodeString(bytes: Uint8Array, what: string): string {
  if (bytes.length > NBD_LIMIT.MAX_STRING) {
    throw new ProtocolError(`${what} is ${bytes.length} bytes, over ${NBD_LIMIT.MAX_STRING}`);
  }
  try {
    return decoder.decode(bytes);
  } catch {
    throw new ProtocolError(`${what} is not valid UTF-8`);
  }
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Read a 64-bit unsigned integer as a number (exact up to 2^53). */
function getUint64(data: DataView, at: number): number {
  return data.getUint32(at) * 0x1_0000_0000 + data.getUint32(at + 4);
}

/** Write a non-negative integer number as 64 bits. */
function setUint64(data: DataView, at: number, value: number): void {
  data.setUint32(at, Math.floor(value / 0x1_0000_0000));
  data.setUint32(at + 4, value % 0x1_0000_0000);
}

function requireLength(bytes: Uint8Array, length: number, what: string): void {
  if (bytes.length !== length) {
    throw new ProtocolError(`${what} must be ${length} bytes, got ${bytes.length}`);
  }
}

// ---------------------------------------------------------------------------
// Handshake

/** The server's first message: NBDMAGIC, IHAVEOPT, handshake flags. */
export function encodeGreeting(handshakeFlags: number): Uint8Array {
  const bytes = new Uint8Array(NBD_SIZE.GREETING);
  const data = view(bytes);
  data.setBigUint64(0, NBD_MAGIC.INIT_PASSWD);
  data.setBigUint64(8, NBD_MAGIC.IHAVEOPT);
  data.setUint16(16, handshakeFlags);
  return bytes;
}

/** Decode the server greeting; returns its handshake flags. */
export function decodeGreeting(bytes: Uint8Array): number {
  requireLength(bytes, NBD_SIZE.GREETING, "greeting");
  const data = view(bytes);
  if (data.getBigUint64(0) !== NBD_MAGIC.INIT_PASSWD) {
    throw new ProtocolError("server did not send NBDMAGIC");
  }
  if (data.getBigUint64(8) !== NBD_MAGIC.IHAVEOPT) {
    throw new ProtocolError("server does not speak newstyle negotiation (oldstyle or unknown)");
  }
  return data.getUint16(16);
}

/** The client's 32-bit flags. */
export function encodeClientFlags(flags: number): Uint8Array {
  const bytes = new Uint8Array(NBD_SIZE.CLIENT_FLAGS);
  view(bytes).setUint32(0, flags);
  return bytes;
}

/** Decode the client's 32-bit flags. */
export function decodeClientFlags(bytes: Uint8Array): number {
  requireLength(bytes, NBD_SIZE.CLIENT_FLAGS, "client flags");
  return view(bytes).getUint32(0);
}

/** An option header: which option and how many data bytes follow. */
export interface OptionHeader {
  /** The option number (NBD_OPT). */
  readonly option: number;
  /** Length of the option data that follows. */
  readonly length: number;
}

/** A complete client option: header and data in one buffer. */
export function encodeOption(option: number, payload: Uint8Array = EMPTY): Uint8Array {
  const bytes = new Uint8Array(NBD_SIZE.OPTION_HEADER + payload.length);
  const data = view(bytes);
  data.setBigUint64(0, NBD_MAGIC.IHAVEOPT);
  data.setUint32(8, option);
  data.setUint32(12, payload.length);
  bytes.set(payload, NBD_SIZE.OPTION_HEADER);
  return bytes;
}

/** Decode the 16-byte header of a client option. */
export function decodeOptionHeader(bytes: Uint8Array): OptionHeader {
  requireLength(bytes, NBD_SIZE.OPTION_HEADER, "option header");
  const data = view(bytes);
  if (data.getBigUint64(0) !== NBD_MAGIC.IHAVEOPT) {
    throw new ProtocolError("option does not start with IHAVEOPT");
  }
  return { option: data.getUint32(8), length: data.getUint32(12) };
}

/** A server reply to an option: header and payload in one buffer. */
export function encodeOptionReply(
  option: number,
  replyType: number,
  payload: Uint8Array = EMPTY,
): Uint8Array {
  const bytes = new Uint8Array(NBD_SIZE.OPTION_REPLY_HEADER + payload.length);
  const data = view(bytes);
  data.setBigUint64(0, NBD_MAGIC.OPTION_REPLY);
  data.setUint32(8, option);
  data.setUint32(12, replyType);
  data.setUint32(16, payload.length);
  bytes.set(payload, NBD_SIZE.OPTION_REPLY_HEADER);
  return bytes;
}

/** The header of an option reply. */
export interface OptionReplyHeader {
  /** The option being answered. */
  readonly option: number;
  /** The reply type (NBD_REP). */
  readonly type: number;
  /** Length of the payload that follows. */
  readonly length: number;
}

/** Decode the 20-byte header of an option reply. */
export function decodeOptionReplyHeader(bytes: Uint8Array): OptionReplyHeader {
  requireLength(bytes, NBD_SIZE.OPTION_REPLY_HEADER, "option reply header");
  const data = view(bytes);
  if (data.getBigUint64(0) !== NBD_MAGIC.OPTION_REPLY) {
    throw new ProtocolError("option reply has a bad magic");
  }
  return { option: data.getUint32(8), type: data.getUint32(12), length: data.getUint32(16) };
}

/** The data of NBD_OPT_INFO and NBD_OPT_GO. */
export interface InfoRequest {
  /** Export name ("" for the default export). */
  readonly name: string;
  /** Information types requested (NBD_INFO). */
  readonly infos: readonly number[];
}

/** Encode the data of NBD_OPT_INFO / NBD_OPT_GO. */
export function encodeInfoRequest(request: InfoRequest): Uint8Array {
  const name = encodeString(request.name);
  const bytes = new Uint8Array(4 + name.length + 2 + 2 * request.infos.length);
  const data = view(bytes);
  data.setUint32(0, name.length);
  bytes.set(name, 4);
  data.setUint16(4 + name.length, request.infos.length);
  request.infos.forEach((info, i) => data.setUint16(6 + name.length + 2 * i, info));
  return bytes;
}

/** Decode the data of NBD_OPT_INFO / NBD_OPT_GO. */
export function decodeInfoRequest(bytes: Uint8Array): InfoRequest {
  if (bytes.length < 6) throw new ProtocolError("INFO/GO data shorter than 6 bytes");
  const data = view(bytes);
  const nameLength = data.getUint32(0);
  if (nameLength > bytes.length - 6) throw new ProtocolError("INFO/GO name overruns the option");
  const name = decodeString(bytes.subarray(4, 4 + nameLength), "export name");
  const count = data.getUint16(4 + nameLength);
  if (bytes.length !== 6 + nameLength + 2 * count) {
    throw new ProtocolError("INFO/GO information request count does not match its length");
  }
  const infos = Array.from({ length: count }, (_, i) => data.getUint16(6 + nameLength + 2 * i));
  return { name, infos };
}

/** The data of NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT. */
export interface MetaContextRequest {
  /** The export the contexts are for. */
  readonly exportName: string;
  /** Context names or queries. */
  readonly queries: readonly string[];
}

/** Encode the data of a LIST/SET_META_CONTEXT option. */
export function encodeMetaContextRequest(request: MetaContextRequest): Uint8Array {
  const parts = [encodeString(request.exportName), ...request.queries.map(encodeString)];
  const bytes = new Uint8Array(4 + parts.reduce((sum, part) => sum + 4 + part.length, 0));
  const data = view(bytes);
  let at = 0;
  data.setUint32(at, parts[0].length);
  bytes.set(parts[0], at + 4);
  at += 4 + parts[0].length;
  data.setUint32(at, request.queries.length);
  at += 4;
  for (const query of parts.slice(1)) {
    data.setUint32(at, query.length);
    bytes.set(query, at + 4);
    at += 4 + query.length;
  }
  return bytes;
}

/** Decode the data of a LIST/SET_META_CONTEXT option. */
export function decodeMetaContextRequest(bytes: Uint8Array): MetaContextRequest {
  const data = view(bytes);
  let at = 0;
  const take = (what: string): string => {
    if (at + 4 > bytes.length) throw new ProtocolError(`${what} length overruns the option`);
    const length = data.getUint32(at);
    if (length > bytes.length - at - 4) throw new ProtocolError(`${what} overruns the option`);
    const text = decodeString(bytes.subarray(at + 4, at + 4 + length), what);
    at += 4 + length;
    return text;
  };
  const exportName = take("export name");
  if (at + 4 > bytes.length) throw new ProtocolError("query count overruns the option");
  const count = data.getUint32(at);
  at += 4;
  // Each query needs at least 4 bytes: a count beyond that is a lie; refuse before looping.
  if (count > (bytes.length - at) / 4) throw new ProtocolError("query count overruns the option");
  const queries = Array.from({ length: count }, () => take("query"));
  if (at !== bytes.length) throw new ProtocolError("trailing bytes after the last query");
  return { exportName, queries };
}

/** Payload of NBD_REP_SERVER: an export name and an optional description. */
export function encodeRepServer(name: string, description = ""): Uint8Array {
  const nameBytes = encodeString(name);
  const descriptionBytes = encodeString(description);
  const bytes = new Uint8Array(4 + nameBytes.length + descriptionBytes.length);
  view(bytes).setUint32(0, nameBytes.length);
  bytes.set(nameBytes, 4);
  bytes.set(descriptionBytes, 4 + nameBytes.length);
  return bytes;
}

/** Decode the payload of NBD_REP_SERVER. */
export function decodeRepServer(bytes: Uint8Array): { name: string; description: string } {
  if (bytes.length < 4) throw new ProtocolError("NBD_REP_SERVER shorter than 4 bytes");
  const nameLength = view(bytes).getUint32(0);
  if (nameLength > bytes.length - 4) throw new ProtocolError("NBD_REP_SERVER name overruns");
  return {
    name: decodeString(bytes.subarray(4, 4 + nameLength), "export name"),
    description: decodeString(bytes.subarray(4 + nameLength), "export description"),
  };
}

/** One information item of an NBD_REP_INFO reply. */
export type InfoReply =
  | { readonly type: typeof NBD_INFO.EXPORT; readonly size: number; readonly flags: number }
  | { readonly type: typeof NBD_INFO.NAME; readonly name: string }
  | { readonly type: typeof NBD_INFO.DESCRIPTION; readonly description: string }
  | {
    readonly type: typeof NBD_INFO.BLOCK_SIZE;
    readonly minimum: number;
    readonly preferred: number;
    readonly maximum: number;
  }
  | { readonly type: number; readonly unknown: Uint8Array };

/** Encode the payload of an NBD_REP_INFO reply. */
export function encodeInfoReply(info: InfoReply): Uint8Array {
  if ("size" in info) {
    const bytes = new Uint8Array(12);
    const data = view(bytes);
    data.setUint16(0, NBD_INFO.EXPORT);
    setUint64(data, 2, info.size);
    data.setUint16(10, info.flags);
    return bytes;
  }
  if ("minimum" in info) {
    const bytes = new Uint8Array(14);
    const data = view(bytes);
    data.setUint16(0, NBD_INFO.BLOCK_SIZE);
    data.setUint32(2, info.minimum);
    data.setUint32(6, info.preferred);
    data.setUint32(10, info.maximum);
    return bytes;
  }
  const text = "name" in info ? info.name : "description" in info ? info.description : "";
  const body = "unknown" in info ? info.unknown : encodeString(text);
  const bytes = new Uint8Array(2 + body.length);
  view(bytes).setUint16(0, info.type);
  bytes.set(body, 2);
  return bytes;
}

/** Decode the payload of an NBD_REP_INFO reply; unknown types are kept raw. */
export function decodeInfoReply(bytes: Uint8Array): InfoReply {
  if (bytes.length < 2) throw new ProtocolError("NBD_REP_INFO shorter than 2 bytes");
  const data = view(bytes);
  const type = data.getUint16(0);
  const body = bytes.subarray(2);
  switch (type) {
    case NBD_INFO.EXPORT:
      requireLength(bytes, 12, "NBD_INFO_EXPORT");
      return { type, size: getUint64(data, 2), flags: data.getUint16(10) };
    case NBD_INFO.NAME:
      return { type, name: decodeString(body, "export name") };
    case NBD_INFO.DESCRIPTION:
      return { type, description: decodeString(body, "export description") };
    case NBD_INFO.BLOCK_SIZE:
      requireLength(bytes, 14, "NBD_INFO_BLOCK_SIZE");
      return {
        type,
        minimum: data.getUint32(2),
        preferred: data.getUint32(6),
        maximum: data.getUint32(10),
      };
    default:
      return { type, unknown: body.slice() };
  }
}

/** Payload of NBD_REP_META_CONTEXT: a context id and its name. */
export function encodeRepMetaContext(id: number, name: string): Uint8Array {
  const nameBytes = encodeString(name);
  const bytes = new Uint8Array(4 + nameBytes.length);
  view(bytes).setUint32(0, id);
  bytes.set(nameBytes, 4);
  return bytes;
}

/** Decode the payload of NBD_REP_META_CONTEXT. */
export function decodeRepMetaContext(bytes: Uint8Array): { id: number; name: string } {
  if (bytes.length < 4) throw new ProtocolError("NBD_REP_META_CONTEXT shorter than 4 bytes");
  return {
    id: view(bytes).getUint32(0),
    name: decodeString(bytes.subarray(4), "context name"),
  };
}

/** The server's answer to NBD_OPT_EXPORT_NAME: size, flags and optional padding. */
export function encodeExportNameReply(size: number, flags: number, noZeroes: boolean): Uint8Array {
  const bytes = new Uint8Array(10 + (noZeroes ? 0 : NBD_LIMIT.EXPORT_NAME_PADDING));
  const data = view(bytes);
  setUint64(data, 0, size);
  data.setUint16(8, flags);
  return bytes;
}

/** Decode the first 10 bytes of the answer to NBD_OPT_EXPORT_NAME. */
export function decodeExportNameReply(bytes: Uint8Array): { size: number; flags: number } {
  requireLength(bytes, 10, "export name reply");
  const data = view(bytes);
  return { size: getUint64(data, 0), flags: data.getUint16(8) };
}

// ---------------------------------------------------------------------------
// Transmission

/** A transmission request header. */
export interface RequestHeader {
  /** Command flags (NBD_CMD_FLAG). */
  readonly flags: number;
  /** Command type (NBD_CMD). */
  readonly type: number;
  /** The client's opaque cookie, echoed in the reply. */
  readonly cookie: bigint;
  /** Offset; values beyond 2^53 lose precision but are out of range anyway. */
  readonly offset: number;
  /** Length in bytes. */
  readonly length: number;
}

/** Encode a 28-byte request header. */
export function encodeRequestHeader(request: RequestHeader): Uint8Array {
  const bytes = new Uint8Array(NBD_SIZE.REQUEST_HEADER);
  const data = view(bytes);
  data.setUint32(0, NBD_MAGIC.REQUEST);
  data.setUint16(4, request.flags);
  data.setUint16(6, request.type);
  data.setBigUint64(8, request.cookie);
  setUint64(data, 16, request.offset);
  data.setUint32(24, request.length);
  return bytes;
}

/** Decode a 28-byte request header. */
export function decodeRequestHeader(bytes: Uint8Array): RequestHeader {
  requireLength(bytes, NBD_SIZE.REQUEST_HEADER, "request header");
  const data = view(bytes);
  const magic = data.getUint32(0);
  if (magic !== NBD_MAGIC.REQUEST) {
    throw new ProtocolError(`request has bad magic 0x${magic.toString(16)}`);
  }
  return {
    flags: data.getUint16(4),
    type: data.getUint16(6),
    cookie: data.getBigUint64(8),
    offset: getUint64(data, 16),
    length: data.getUint32(24),
  };
}

/** Encode a 16-byte simple reply header into `bytes` at `at` (a new buffer by default). */
export function encodeSimpleReplyHeader(
  error: number,
  cookie: bigint,
  bytes: Uint8Array = new Uint8Array(NBD_SIZE.SIMPLE_REPLY_HEADER),
): Uint8Array {
  const data = view(bytes);
  data.setUint32(0, NBD_MAGIC.SIMPLE_REPLY);
  data.setUint32(4, error);
  data.setBigUint64(8, cookie);
  return bytes;
}

/** A decoded simple reply header. */
export interface SimpleReply {
  /** Error number, 0 for success. */
  readonly error: number;
  /** The request's cookie. */
  readonly cookie: bigint;
}

/** Decode a 16-byte simple reply header. */
export function decodeSimpleReplyHeader(bytes: Uint8Array): SimpleReply {
  requireLength(bytes, NBD_SIZE.SIMPLE_REPLY_HEADER, "simple reply");
  const data = view(bytes);
  if (data.getUint32(0) !== NBD_MAGIC.SIMPLE_REPLY) {
    throw new ProtocolError("simple reply has a bad magic");
  }
  return { error: data.getUint32(4), cookie: data.getBigUint64(8) };
}

/** A structured reply chunk header. */
export interface ChunkHeader {
  /** Reply flags (NBD_REPLY_FLAG). */
  readonly flags: number;
  /** Chunk type (NBD_REPLY_TYPE). */
  readonly type: number;
  /** The request's cookie. */
  readonly cookie: bigint;
  /** Length of the payload that follows. */
  readonly length: number;
}

/**
 * Encode a 20-byte structured reply chunk header at the start of `bytes`
 * (a new buffer by default), so a payload can be placed right behind it.
 */
export function encodeChunkHeader(
  header: ChunkHeader,
  bytes: Uint8Array = new Uint8Array(NBD_SIZE.STRUCTURED_REPLY_HEADER),
): Uint8Array {
  const data = view(bytes);
  data.setUint32(0, NBD_MAGIC.STRUCTURED_REPLY);
  data.setUint16(4, header.flags);
  data.setUint16(6, header.type);
  data.setBigUint64(8, header.cookie);
  data.setUint32(16, header.length);
  return bytes;
}

/** Decode a 20-byte structured reply chunk header. */
export function decodeChunkHeader(bytes: Uint8Array): ChunkHeader {
  requireLength(bytes, NBD_SIZE.STRUCTURED_REPLY_HEADER, "structured reply header");
  const data = view(bytes);
  if (data.getUint32(0) !== NBD_MAGIC.STRUCTURED_REPLY) {
    throw new ProtocolError("structured reply has a bad magic");
  }
  return {
    flags: data.getUint16(4),
    type: data.getUint16(6),
    cookie: data.getBigUint64(8),
    length: data.getUint32(16),
  };
}

/** Set NBD_REPLY_FLAG_DONE in an encoded chunk header (the start of `chunk`). */
export function markChunkDone(chunk: Uint8Array): void {
  const data = view(chunk);
  data.setUint16(4, data.getUint16(4) | NBD_REPLY_FLAG.DONE);
}

/** The magic at the start of a reply, to tell simple from structured ones. */
export function peekReplyMagic(bytes: Uint8Array): number {
  return view(bytes).getUint32(0);
}

/** Write the 8-byte offset that starts an OFFSET_DATA payload into `bytes` at `at`. */
export function encodeOffset(bytes: Uint8Array, at: number, offset: number): void {
  setUint64(view(bytes), at, offset);
}

/** Payload of an OFFSET_HOLE chunk. */
export function encodeOffsetHole(offset: number, length: number): Uint8Array {
  const bytes = new Uint8Array(12);
  const data = view(bytes);
  setUint64(data, 0, offset);
  data.setUint32(8, length);
  return bytes;
}

/** Decode the payload of an OFFSET_HOLE chunk. */
export function decodeOffsetHole(bytes: Uint8Array): { offset: number; length: number } {
  requireLength(bytes, 12, "OFFSET_HOLE payload");
  const data = view(bytes);
  return { offset: getUint64(data, 0), length: data.getUint32(8) };
}

/** Read the 8-byte offset that starts an OFFSET_DATA payload from `bytes` at `at`. */
export function decodeOffset(bytes: Uint8Array, at = 0): number {
  if (bytes.length < at + 8) throw new ProtocolError("offset field is truncated");
  return getUint64(view(bytes), at);
}

/** One block status descriptor: a length and the context's flags for it. */
export interface StatusDescriptor {
  /** Bytes covered (non-zero). */
  readonly length: number;
  /** Flags defined by the metadata context. */
  readonly flags: number;
}

/** Payload of a BLOCK_STATUS chunk for one metadata context. */
export function encodeBlockStatus(
  contextId: number,
  descriptors: readonly StatusDescriptor[],
): Uint8Array {
  const bytes = new Uint8Array(4 + 8 * descriptors.length);
  const data = view(bytes);
  data.setUint32(0, contextId);
  descriptors.forEach((descriptor, i) => {
    data.setUint32(4 + 8 * i, descriptor.length);
    data.setUint32(8 + 8 * i, descriptor.flags);
  });
  return bytes;
}

/** Decode the payload of a BLOCK_STATUS chunk. */
export function decodeBlockStatus(
  bytes: Uint8Array,
): { contextId: number; descriptors: StatusDescriptor[] } {
  if (bytes.length < 12 || (bytes.length - 4) % 8 !== 0) {
    throw new ProtocolError(`BLOCK_STATUS payload of ${bytes.length} bytes is malformed`);
  }
  const data = view(bytes);
  const descriptors = Array.from({ length: (bytes.length - 4) / 8 }, (_, i) => ({
    length: data.getUint32(4 + 8 * i),
    flags: data.getUint32(8 + 8 * i),
  }));
  return { contextId: data.getUint32(0), descriptors };
}

/** Payload of an ERROR chunk (and, with `offset`, an ERROR_OFFSET chunk). */
export function encodeErrorChunk(error: number, message: string, offset?: number): Uint8Array {
  const text = encodeString(message).subarray(0, NBD_LIMIT.MAX_STRING);
  const bytes = new Uint8Array(6 + text.length + (offset === undefined ? 0 : 8));
  const data = view(bytes);
  data.setUint32(0, error);
  data.setUint16(4, text.length);
  bytes.set(text, 6);
  if (offset !== undefined) setUint64(data, 6 + text.length, offset);
  return bytes;
}

/** Decode the payload of an error chunk; `offset` is present for ERROR_OFFSET. */
export function decodeErrorChunk(
  bytes: Uint8Array,
  withOffset: boolean,
): { error: number; message: string; offset?: number } {
  if (bytes.length < 6) throw new ProtocolError("error chunk shorter than 6 bytes");
  const data = view(bytes);
  const messageLength = data.getUint16(4);
  const fixed = withOffset ? 14 : 6;
  if (messageLength > bytes.length - fixed) {
    throw new ProtocolError("error chunk message overruns the chunk");
  }
  const message = decodeString(bytes.subarray(6, 6 + messageLength), "error message");
  if (!withOffset) return { error: data.getUint32(0), message };
  return { error: data.getUint32(0), message, offset: getUint64(data, 6 + messageLength) };
}
