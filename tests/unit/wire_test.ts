import assert from "node:assert/strict";
import {
  decodeBlockStatus,
  decodeChunkHeader,
  decodeClientFlags,
  decodeErrorChunk,
  decodeExportNameReply,
  decodeGreeting,
  decodeInfoReply,
  decodeInfoRequest,
  decodeMetaContextRequest,
  decodeOffset,
  decodeOffsetHole,
  decodeOptionHeader,
  decodeOptionReplyHeader,
  decodeRepMetaContext,
  decodeRepServer,
  decodeRequestHeader,
  decodeSimpleReplyHeader,
  decodeString,
  encodeBlockStatus,
  encodeChunkHeader,
  encodeClientFlags,
  encodeErrorChunk,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoReply,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOffset,
  encodeOffsetHole,
  encodeOption,
  encodeOptionReply,
  encodeRepMetaContext,
  encodeRepServer,
  encodeRequestHeader,
  encodeSimpleReplyHeader,
  markChunkDone,
  peekReplyMagic,
  ProtocolError,
} from "../../src/nbd/wire.ts";
import { NBD_INFO, NBD_MAGIC, NBD_OPT, NBD_REP, NBD_REPLY_TYPE } from "../../src/nbd/protocol.ts";

const hex = (bytes: Uint8Array) =>
  Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

Deno.test("greeting is NBDMAGIC, IHAVEOPT and the flags, and decodes back", () => {
  const bytes = encodeGreeting(3);
  assert.equal(hex(bytes), "4e42444d41474943" + "49484156454f5054" + "0003");
  assert.equal(decodeGreeting(bytes), 3);
});

Deno.test("greeting decoder rejects oldstyle servers", () => {
  const bytes = encodeGreeting(0);
  new DataView(bytes.buffer).setBigUint64(8, 0x00420281861253n);
  assert.throws(() => decodeGreeting(bytes), /oldstyle/);
});

Deno.test("client flags round trip", () => {
  assert.equal(hex(encodeClientFlags(1)), "00000001");
  assert.equal(decodeClientFlags(encodeClientFlags(3)), 3);
  assert.throws(() => decodeClientFlags(new Uint8Array(3)), ProtocolError);
});

Deno.test("option header and payload", () => {
  const bytes = encodeOption(NBD_OPT.GO, new Uint8Array([9, 9]));
  assert.equal(bytes.length, 18);
  assert.deepEqual(decodeOptionHeader(bytes.subarray(0, 16)), { option: NBD_OPT.GO, length: 2 });
  const bad = bytes.slice(0, 16);
  bad[0] ^= 1;
  assert.throws(() => decodeOptionHeader(bad), /IHAVEOPT/);
});

Deno.test("option reply header and payload", () => {
  const bytes = encodeOptionReply(NBD_OPT.LIST, NBD_REP.SERVER, new Uint8Array([1, 2, 3]));
  assert.equal(hex(bytes.subarray(0, 8)), "0003e889045565a9");
  assert.deepEqual(decodeOptionReplyHeader(bytes.subarray(0, 20)), {
    option: NBD_OPT.LIST,
    type: NBD_REP.SERVER,
    length: 3,
  });
});

Deno.test("INFO/GO request round trip and malformed lengths", () => {
  const request = { name: "disk", infos: [NBD_INFO.NAME, NBD_INFO.BLOCK_SIZE] };
  const bytes = encodeInfoRequest(request);
  assert.equal(bytes.length, 4 + 4 + 2 + 4);
  assert.deepEqual(decodeInfoRequest(bytes), request);
  assert.throws(() => decodeInfoRequest(bytes.subarray(0, 5)), /shorter than 6/);
  assert.throws(() => decodeInfoRequest(bytes.subarray(0, bytes.length - 1)), /count/);
  const lying = bytes.slice();
  new DataView(lying.buffer).setUint32(0, 1000);
  assert.throws(() => decodeInfoRequest(lying), /overruns/);
});

Deno.test("meta context request round trip, lies about counts refused without allocating", () => {
  const request = { exportName: "x", queries: ["base:allocation", "qemu:"] };
  const bytes = encodeMetaContextRequest(request);
  assert.deepEqual(decodeMetaContextRequest(bytes), request);
  const empty = { exportName: "", queries: [] };
  assert.deepEqual(decodeMetaContextRequest(encodeMetaContextRequest(empty)), empty);
  const lying = encodeMetaContextRequest(empty);
  new DataView(lying.buffer).setUint32(4, 0xffff_ffff);
  assert.throws(() => decodeMetaContextRequest(lying), /query count/);
  assert.throws(() => decodeMetaContextRequest(new Uint8Array([0, 0, 0, 9])), /overruns/);
  assert.throws(() => decodeMetaContextRequest(new Uint8Array([...bytes, 7])), /trailing/);
});

Deno.test("strings: invalid UTF-8 and over-long strings are protocol errors", () => {
  assert.throws(() => decodeString(new Uint8Array([0xff, 0xfe]), "name"), /UTF-8/);
  assert.throws(() => decodeString(new Uint8Array(4097), "name"), /over 4096/);
  assert.equal(decodeString(new TextEncoder().encode("é"), "name"), "é");
});

Deno.test("NBD_REP_SERVER with and without description", () => {
  assert.deepEqual(decodeRepServer(encodeRepServer("a", "desc")), {
    name: "a",
    description: "desc",
  });
  assert.deepEqual(decodeRepServer(encodeRepServer("")), { name: "", description: "" });
  assert.throws(() => decodeRepServer(new Uint8Array([0, 0, 0, 5, 1])), /overruns/);
});

Deno.test("NBD_REP_INFO items round trip; unknown ones are kept", () => {
  const items = [
    { type: NBD_INFO.EXPORT, size: 2 ** 40 + 7, flags: 0x1ed },
    { type: NBD_INFO.NAME, name: "disk" },
    { type: NBD_INFO.DESCRIPTION, description: "a disk" },
    { type: NBD_INFO.BLOCK_SIZE, minimum: 1, preferred: 4096, maximum: 33554432 },
  ] as const;
  for (const item of items) assert.deepEqual(decodeInfoReply(encodeInfoReply(item)), item);
  assert.equal(encodeInfoReply(items[0]).length, 12);
  assert.equal(encodeInfoReply(items[3]).length, 14);
  assert.deepEqual(decodeInfoReply(new Uint8Array([0, 9, 1])), {
    type: 9,
    unknown: new Uint8Array([1]),
  });
  assert.throws(() => decodeInfoReply(new Uint8Array([0, 0, 1])), /NBD_INFO_EXPORT/);
});

Deno.test("meta context reply round trip", () => {
  assert.deepEqual(decodeRepMetaContext(encodeRepMetaContext(7, "base:allocation")), {
    id: 7,
    name: "base:allocation",
  });
});

Deno.test("EXPORT_NAME reply has 124 zero bytes unless NO_ZEROES", () => {
  assert.equal(encodeExportNameReply(1024, 1, false).length, 134);
  const short = encodeExportNameReply(1024, 0x43, true);
  assert.equal(short.length, 10);
  assert.deepEqual(decodeExportNameReply(short), { size: 1024, flags: 0x43 });
});

Deno.test("request header round trip, 64-bit offsets and bad magic", () => {
  const request = {
    flags: 1,
    type: 1,
    cookie: 0xdeadbeefcafef00dn,
    offset: 2 ** 45 + 3,
    length: 4096,
  };
  const bytes = encodeRequestHeader(request);
  assert.equal(hex(bytes.subarray(0, 4)), "25609513");
  assert.deepEqual(decodeRequestHeader(bytes), request);
  bytes[0] = 0;
  assert.throws(() => decodeRequestHeader(bytes), /bad magic/);
});

Deno.test("offsets beyond 2^53 decode as huge numbers (out of any export's range)", () => {
  const bytes = encodeRequestHeader({ flags: 0, type: 0, cookie: 0n, offset: 0, length: 1 });
  new DataView(bytes.buffer).setBigUint64(16, 0xffff_ffff_ffff_ffffn);
  assert.ok(decodeRequestHeader(bytes).offset > Number.MAX_SAFE_INTEGER);
});

Deno.test("simple reply header", () => {
  const bytes = encodeSimpleReplyHeader(22, 5n);
  assert.equal(peekReplyMagic(bytes), NBD_MAGIC.SIMPLE_REPLY);
  assert.deepEqual(decodeSimpleReplyHeader(bytes), { error: 22, cookie: 5n });
});

Deno.test("chunk header, DONE marking and data offset", () => {
  const chunk = new Uint8Array(20 + 8 + 3);
  encodeChunkHeader({ flags: 0, type: NBD_REPLY_TYPE.OFFSET_DATA, cookie: 9n, length: 11 }, chunk);
  encodeOffset(chunk, 20, 4096);
  assert.equal(peekReplyMagic(chunk), NBD_MAGIC.STRUCTURED_REPLY);
  markChunkDone(chunk);
  assert.deepEqual(decodeChunkHeader(chunk.subarray(0, 20)), {
    flags: 1,
    type: NBD_REPLY_TYPE.OFFSET_DATA,
    cookie: 9n,
    length: 11,
  });
  assert.equal(decodeOffset(chunk, 20), 4096);
  assert.throws(() => decodeOffset(new Uint8Array(7)), ProtocolError);
});

Deno.test("hole, block status and error payloads", () => {
  assert.deepEqual(decodeOffsetHole(encodeOffsetHole(512, 1024)), { offset: 512, length: 1024 });
  const descriptors = [{ length: 4096, flags: 3 }, { length: 512, flags: 0 }];
  assert.deepEqual(decodeBlockStatus(encodeBlockStatus(2, descriptors)), {
    contextId: 2,
    descriptors,
  });
  assert.throws(() => decodeBlockStatus(new Uint8Array(8)), /malformed/);
  assert.deepEqual(decodeErrorChunk(encodeErrorChunk(22, "bad"), false), {
    error: 22,
    message: "bad",
  });
  assert.deepEqual(decodeErrorChunk(encodeErrorChunk(5, "io", 77), true), {
    error: 5,
    message: "io",
    offset: 77,
  });
  assert.throws(() => decodeErrorChunk(new Uint8Array([0, 0, 0, 5, 0, 9]), false), /overruns/);
});
