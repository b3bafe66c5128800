import assert from "node:assert/strict";
import {
  HandshakeState,
  type HandshakeStep,
  MAX_SKIPPED_OPTION_LENGTH,
  negotiate,
} from "../../src/nbd/server/handshake.ts";
import { ExportTable, NbdExport } from "../../src/nbd/server/export.ts";
import { MemoryNode } from "../../src/block/memory.ts";
import { BufferedReader } from "../../src/io/buffered-reader.ts";
import { WriteQueue } from "../../src/io/write-queue.ts";
import type { ByteStream } from "../../src/io/byte-stream.ts";
import {
  NBD_CLIENT_FLAG,
  NBD_FLAG,
  NBD_INFO,
  NBD_LIMIT,
  NBD_OPT,
  NBD_REP,
  NBD_SIZE,
} from "../../src/nbd/protocol.ts";
import {
  decodeExportNameReply,
  decodeInfoReply,
  decodeOptionReplyHeader,
  decodeRepMetaContext,
  decodeRepServer,
  encodeClientFlags,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOption,
  encodeString,
  type InfoReply,
  ProtocolError,
} from "../../src/nbd/wire.ts";

const FIXED = NBD_CLIENT_FLAG.FIXED_NEWSTYLE | NBD_CLIENT_FLAG.NO_ZEROES;

function setup(options: { readOnly?: boolean; description?: string } = {}) {
  const table = new ExportTable();
  table.add(
    new NbdExport({
      name: "disk",
      description: options.description,
      node: new MemoryNode(1 << 20),
      readOnly: options.readOnly,
    }),
  );
  table.add(new NbdExport({ name: "other", node: new MemoryNode(4096) }));
  const state = new HandshakeState(table);
  state.acceptClientFlags(FIXED);
  return state;
}

/** Split a step's replies into header + payload pairs. */
function replies(step: HandshakeStep) {
  return step.replies.map((bytes) => ({
    ...decodeOptionReplyHeader(bytes.subarray(0, NBD_SIZE.OPTION_REPLY_HEADER)),
    payload: bytes.subarray(NBD_SIZE.OPTION_REPLY_HEADER),
  }));
}

function infos(step: HandshakeStep): InfoReply[] {
  return replies(step).filter((r) => r.type === NBD_REP.INFO).map((r) =>
    decodeInfoReply(r.payload)
  );
}

function go(name: string, requested: number[] = []) {
  return encodeInfoRequest({ name, infos: requested });
}

Deno.test("unknown client flags close the connection", () => {
  const state = new HandshakeState(new ExportTable());
  assert.throws(() => state.acceptClientFlags(0x4), ProtocolError);
});

Deno.test("LIST returns every export with its description, then ACK", () => {
  const step = setup({ description: "first disk" }).handleOption(NBD_OPT.LIST, new Uint8Array());
  const all = replies(step);
  assert.equal(step.next, "continue");
  assert.deepEqual(all.map((r) => r.type), [NBD_REP.SERVER, NBD_REP.SERVER, NBD_REP.ACK]);
  assert.deepEqual(decodeRepServer(all[0].payload), { name: "disk", description: "first disk" });
  assert.deepEqual(
    replies(setup().handleOption(NBD_OPT.LIST, new Uint8Array([1]))).map((r) => r.type),
    [NBD_REP.ERR_INVALID],
  );
});

Deno.test("INFO describes the export and stays in negotiation; GO enters transmission", () => {
  const state = setup({ description: "d" });
  const info = state.handleOption(NBD_OPT.INFO, go("disk", [NBD_INFO.NAME]));
  assert.equal(info.next, "continue");
  const items = infos(info);
  // QEMU's order, the export last.
  assert.deepEqual(items.map((i) => i.type), [
    NBD_INFO.NAME,
    NBD_INFO.DESCRIPTION,
    NBD_INFO.BLOCK_SIZE,
    NBD_INFO.EXPORT,
  ]);
  assert.deepEqual(items[2], {
    type: NBD_INFO.BLOCK_SIZE,
    minimum: 1,
    preferred: 4096,
    maximum: 33554432,
  });
  const step = state.handleOption(NBD_OPT.GO, go("disk"));
  assert.equal(step.next, "transmission");
  assert.equal(replies(step).at(-1)!.type, NBD_REP.ACK);
  assert.equal(infos(step).some((i) => i.type === NBD_INFO.NAME), false, "NAME only when asked");
});

Deno.test("an empty description is still sent; none at all is not", () => {
  const types = (description?: string) =>
    infos(setup({ description }).handleOption(NBD_OPT.INFO, go("disk"))).map((i) => i.type);
  assert.ok(types("").includes(NBD_INFO.DESCRIPTION));
  assert.ok(!types(undefined).includes(NBD_INFO.DESCRIPTION));
});

Deno.test("INFO/GO of an unknown export is ERR_UNKNOWN; malformed data ERR_INVALID", () => {
  const state = setup();
  assert.deepEqual(replies(state.handleOption(NBD_OPT.GO, go("nope"))).map((r) => r.type), [
    NBD_REP.ERR_UNKNOWN,
  ]);
  assert.deepEqual(replies(state.handleOption(NBD_OPT.GO, new Uint8Array(3))).map((r) => r.type), [
    NBD_REP.ERR_INVALID,
  ]);
});

Deno.test("a step refusing an export names it, the option and why, for the log", () => {
  const state = setup();
  state.handleOption(NBD_OPT.STRUCTURED_REPLY, new Uint8Array());
  const meta = encodeMetaContextRequest({ exportName: "gone", queries: ["base:allocation"] });
  const asked: [number, Uint8Array][] = [
    [NBD_OPT.GO, go("nope\n")],
    [NBD_OPT.INFO, go("nope")],
    [NBD_OPT.SET_META_CONTEXT, meta],
    [NBD_OPT.LIST_META_CONTEXT, meta],
  ];
  assert.deepEqual(asked.map(([option, data]) => state.handleOption(option, data).refused), [
    { name: "nope\n", option: NBD_OPT.GO, why: "not present" },
    { name: "nope", option: NBD_OPT.INFO, why: "not present" },
    { name: "gone", option: NBD_OPT.SET_META_CONTEXT, why: "not present" },
    { name: "gone", option: NBD_OPT.LIST_META_CONTEXT, why: "not present" },
  ]);
  const closing = setup().handleOption(NBD_OPT.EXPORT_NAME, encodeString("a'b"));
  assert.equal(closing.next, "close");
  assert.deepEqual(closing.refused, {
    name: "a'b",
    option: NBD_OPT.EXPORT_NAME,
    why: "not present",
  });
  if (closing.next === "close") assert.match(closing.reason ?? "", /unknown export 'a\\'b'/);
  assert.equal(state.handleOption(NBD_OPT.GO, go("disk")).refused, undefined);
  assert.equal(setup().handleOption(NBD_OPT.LIST, new Uint8Array()).refused, undefined);

  const table = new ExportTable();
  table.add(new NbdExport({ name: "disk", node: new MemoryNode(4096) }));
  const beforeTls = new HandshakeState(table, true);
  beforeTls.acceptClientFlags(FIXED);
  const tlsRequired = { option: NBD_OPT.GO, why: "TLS required" };
  assert.deepEqual(beforeTls.handleOption(NBD_OPT.GO, go("disk")).refused, {
    name: "disk",
    ...tlsRequired,
  });
  assert.equal(beforeTls.handleOption(NBD_OPT.GO, new Uint8Array(2)).refused, undefined);
  assert.equal(beforeTls.handleOption(NBD_OPT.LIST, new Uint8Array()).refused, undefined);
});

Deno.test("transmission flags follow the export and structured replies", () => {
  const writable = setup();
  const plain = writable.handleOption(NBD_OPT.GO, go("disk"));
  assert.equal(plain.next, "transmission");
  if (plain.next !== "transmission") return;
  const flags = plain.session.flags;
  assert.ok(
    flags & NBD_FLAG.SEND_WRITE_ZEROES && flags & NBD_FLAG.SEND_TRIM &&
      flags & NBD_FLAG.SEND_FAST_ZERO,
  );
  assert.equal(flags & NBD_FLAG.SEND_DF, 0, "DF needs structured replies");
  assert.equal(flags & NBD_FLAG.READ_ONLY, 0);

  const readOnly = setup({ readOnly: true });
  readOnly.handleOption(NBD_OPT.STRUCTURED_REPLY, new Uint8Array());
  const step = readOnly.handleOption(NBD_OPT.GO, go("disk"));
  if (step.next !== "transmission") throw new Error("expected transmission");
  assert.ok(step.session.flags & NBD_FLAG.READ_ONLY);
  assert.ok(step.session.flags & NBD_FLAG.SEND_DF);
  assert.equal(step.session.flags & (NBD_FLAG.SEND_TRIM | NBD_FLAG.SEND_WRITE_ZEROES), 0);
  assert.equal(step.session.structured, true);
});

Deno.test("EXPORT_NAME: known export enters transmission, unknown closes", () => {
  const state = setup();
  const step = state.handleOption(NBD_OPT.EXPORT_NAME, encodeString("other"));
  assert.equal(step.next, "transmission");
  assert.equal(step.replies[0].length, 10, "NO_ZEROES was negotiated");
  assert.equal(decodeExportNameReply(step.replies[0]).size, 4096);
  const unknown = setup().handleOption(NBD_OPT.EXPORT_NAME, encodeString("nope"));
  assert.equal(unknown.next, "close");
});

Deno.test("EXPORT_NAME without NO_ZEROES sends the padding", () => {
  const table = new ExportTable();
  table.add(new NbdExport({ name: "", node: new MemoryNode(512) }));
  const state = new HandshakeState(table);
  state.acceptClientFlags(NBD_CLIENT_FLAG.FIXED_NEWSTYLE);
  assert.equal(state.handleOption(NBD_OPT.EXPORT_NAME, new Uint8Array()).replies[0].length, 134);
});

Deno.test("a client without fixed newstyle may only use EXPORT_NAME", () => {
  const table = new ExportTable();
  table.add(new NbdExport({ name: "", node: new MemoryNode(512) }));
  const state = new HandshakeState(table);
  state.acceptClientFlags(0);
  assert.equal(state.handleOption(NBD_OPT.LIST, new Uint8Array()).next, "close");
  assert.equal(state.handleOption(NBD_OPT.EXPORT_NAME, new Uint8Array()).next, "transmission");
});

Deno.test("ABORT is acknowledged, then the connection closes", () => {
  const step = setup().handleOption(NBD_OPT.ABORT, new Uint8Array());
  assert.equal(step.next, "close");
  assert.deepEqual(replies(step).map((r) => r.type), [NBD_REP.ACK]);
});

Deno.test("unknown options and STARTTLS without TLS are refused but negotiation goes on", () => {
  const state = setup();
  assert.deepEqual(replies(state.handleOption(99, new Uint8Array(5))).map((r) => r.type), [
    NBD_REP.ERR_UNSUP,
  ]);
  assert.deepEqual(
    replies(state.handleOption(NBD_OPT.STARTTLS, new Uint8Array())).map((r) => r.type),
    [NBD_REP.ERR_POLICY],
  );
  assert.equal(state.handleOption(NBD_OPT.GO, go("disk")).next, "transmission");
});

Deno.test("STRUCTURED_REPLY: data or a repeat is invalid", () => {
  const state = setup();
  assert.deepEqual(
    replies(state.handleOption(NBD_OPT.STRUCTURED_REPLY, new Uint8Array(1))).map((r) => r.type),
    [NBD_REP.ERR_INVALID],
  );
  assert.deepEqual(
    replies(state.handleOption(NBD_OPT.STRUCTURED_REPLY, new Uint8Array())).map((r) => r.type),
    [NBD_REP.ACK],
  );
  assert.deepEqual(
    replies(state.handleOption(NBD_OPT.STRUCTURED_REPLY, new Uint8Array())).map((r) => r.type),
    [NBD_REP.ERR_INVALID],
  );
});

function metaContexts(step: HandshakeStep) {
  return replies(step).filter((r) => r.type === NBD_REP.META_CONTEXT).map((r) =>
    decodeRepMetaContext(r.payload)
  );
}

Deno.test("meta contexts need structured replies first", () => {
  const state = setup();
  const request = encodeMetaContextRequest({ exportName: "disk", queries: ["base:allocation"] });
  assert.deepEqual(
    replies(state.handleOption(NBD_OPT.SET_META_CONTEXT, request)).map((r) => r.type),
    [NBD_REP.ERR_INVALID],
  );
});

Deno.test("LIST_META_CONTEXT: all, by namespace, exact, unknown namespaces ignored", () => {
  const state = setup();
  state.handleOption(NBD_OPT.STRUCTURED_REPLY, new Uint8Array());
  const list = (queries: string[]) =>
    metaContexts(
      state.handleOption(
        NBD_OPT.LIST_META_CONTEXT,
        encodeMetaContextRequest({ exportName: "disk", queries }),
      ),
    ).map((c) => c.name);
  assert.deepEqual(list([]), ["base:allocation"]);
  assert.deepEqual(list(["base:"]), ["base:allocation"]);
  assert.deepEqual(list(["base:allocation"]), ["base:allocation"]);
  assert.deepEqual(list(["qemu:", "x-foo:bar"]), []);
  assert.deepEqual(list(["base:nonexistent"]), []);
  const noNamespace = state.handleOption(
    NBD_OPT.LIST_META_CONTEXT,
    encodeMetaContextRequest({ exportName: "disk", queries: ["nocolon"] }),
  );
  assert.deepEqual(replies(noNamespace).map((r) => r.type), [NBD_REP.ACK], "ignored, as QEMU does");
  const unknown = state.handleOption(
    NBD_OPT.LIST_META_CONTEXT,
    encodeMetaContextRequest({ exportName: "zzz", queries: [] }),
  );
  assert.deepEqual(replies(unknown).map((r) => r.type), [NBD_REP.ERR_UNKNOWN]);
});

Deno.test("SET_META_CONTEXT selects exact names with ids, only for the same export", () => {
  const state = setup();
  state.handleOption(NBD_OPT.STRUCTURED_REPLY, new Uint8Array());
  const set = state.handleOption(
    NBD_OPT.SET_META_CONTEXT,
    encodeMetaContextRequest({
      exportName: "disk",
      queries: ["base:", "base:allocation", "base:allocation", "qemu:x"],
    }),
  );
  const selected = metaContexts(set);
  assert.equal(selected.length, 1);
  assert.equal(selected[0].name, "base:allocation");
  assert.notEqual(selected[0].id, 0);

  const other = state.handleOption(NBD_OPT.GO, go("other"));
  if (other.next !== "transmission") throw new Error("expected transmission");
  assert.deepEqual(other.session.contexts, [], "contexts were set for another export");
});

Deno.test("SET_META_CONTEXT then GO on the same export carries the contexts; a failed SET clears them", () => {
  const state = setup();
  state.handleOption(NBD_OPT.STRUCTURED_REPLY, new Uint8Array());
  state.handleOption(
    NBD_OPT.SET_META_CONTEXT,
    encodeMetaContextRequest({ exportName: "disk", queries: ["base:allocation"] }),
  );
  state.handleOption(NBD_OPT.SET_META_CONTEXT, new Uint8Array(2));
  const cleared = state.handleOption(NBD_OPT.GO, go("disk"));
  if (cleared.next !== "transmission") throw new Error("expected transmission");
  assert.equal(cleared.session.contexts.length, 0);

  const again = setup();
  again.handleOption(NBD_OPT.STRUCTURED_REPLY, new Uint8Array());
  again.handleOption(
    NBD_OPT.SET_META_CONTEXT,
    encodeMetaContextRequest({ exportName: "disk", queries: ["base:allocation"] }),
  );
  const step = again.handleOption(NBD_OPT.GO, go("disk"));
  if (step.next !== "transmission") throw new Error("expected transmission");
  assert.equal(step.session.contexts[0].context.name, "base:allocation");
});

Deno.test("an option with too much data is refused as malformed data is", () => {
  const length = NBD_LIMIT.MAX_OPTION_LENGTH + 1;
  const state = setup();
  for (const option of [NBD_OPT.LIST, NBD_OPT.GO, NBD_OPT.INFO, NBD_OPT.STRUCTURED_REPLY]) {
    const step = state.handleOversizedOption(option, length);
    assert.equal(step.next, "continue");
    assert.deepEqual(replies(step).map((r) => r.type), [NBD_REP.ERR_INVALID]);
  }
  assert.deepEqual(replies(state.handleOversizedOption(99, length)).map((r) => r.type), [
    NBD_REP.ERR_UNSUP,
  ]);
  const exportName = state.handleOversizedOption(NBD_OPT.EXPORT_NAME, length);
  assert.equal(exportName.next, "close");
  assert.match(exportName.next === "close" && exportName.reason || "", /over the limit/);

  const oldstyle = new HandshakeState(new ExportTable());
  oldstyle.acceptClientFlags(0);
  assert.equal(oldstyle.handleOversizedOption(NBD_OPT.LIST, length).next, "close");
});

Deno.test("an oversized SET_META_CONTEXT clears the contexts selected before", () => {
  const state = setup();
  state.handleOption(NBD_OPT.STRUCTURED_REPLY, new Uint8Array());
  state.handleOption(
    NBD_OPT.SET_META_CONTEXT,
    encodeMetaContextRequest({ exportName: "disk", queries: ["base:allocation"] }),
  );
  state.handleOversizedOption(NBD_OPT.SET_META_CONTEXT, NBD_LIMIT.MAX_OPTION_LENGTH + 1);
  const step = state.handleOption(NBD_OPT.GO, go("disk"));
  if (step.next !== "transmission") throw new Error("expected transmission");
  assert.deepEqual(step.session.contexts, []);
});

/**
 * A client's side of a handshake as a stream: it sends `messages` (one read
 * at most each) and records every byte the server writes.
 */
function scriptedClient(messages: Uint8Array[]) {
  const queue = [...messages];
  const written: number[] = [];
  let delivered = 0;
  const stream: ByteStream = {
    read(buffer) {
      const next = queue.shift();
      if (!next) return Promise.resolve(null);
      const count = Math.min(next.length, buffer.length);
      buffer.set(next.subarray(0, count));
      if (count < next.length) queue.unshift(next.subarray(count));
      delivered += count;
      return Promise.resolve(count);
    },
    write(data) {
      written.push(...data);
      return Promise.resolve(data.length);
    },
    close() {},
  };
  return { stream, written, delivered: () => delivered };
}

/** The option reply headers in `bytes`, in order. */
function replyHeaders(bytes: number[]) {
  const all = new Uint8Array(bytes).subarray(18); // after the greeting
  const headers = [];
  for (let offset = 0; offset < all.length;) {
    const header = decodeOptionReplyHeader(all.subarray(offset, offset + 20));
    headers.push(header);
    offset += 20 + header.length;
  }
  return headers;
}

Deno.test("negotiate discards option data over the limit and goes on; far over it, drops the client", async () => {
  const table = new ExportTable();
  table.add(new NbdExport({ name: "", node: new MemoryNode(4096) }));
  const huge = new Uint8Array(4 * 1024 * 1024);
  const client = scriptedClient([
    encodeClientFlags(FIXED),
    encodeOption(NBD_OPT.LIST, huge),
    encodeOption(77, huge.subarray(0, NBD_LIMIT.MAX_OPTION_LENGTH + 1)),
    encodeOption(NBD_OPT.GO, go("")),
  ]);
  const reader = new BufferedReader(client.stream);
  const session = await negotiate({ reader, writer: new WriteQueue(client.stream) }, table);
  assert.equal(session?.export.name, "");
  const types = replyHeaders(client.written).map((header) => [header.option, header.type]);
  assert.deepEqual(types.slice(0, 2), [[NBD_OPT.LIST, NBD_REP.ERR_INVALID], [
    77,
    NBD_REP.ERR_UNSUP,
  ]]);
  assert.deepEqual(types.at(-1), [NBD_OPT.GO, NBD_REP.ACK]);
  assert.ok(reader.capacity <= 256 * 1024, `reader grew to ${reader.capacity} bytes`);

  const header = encodeOption(NBD_OPT.LIST);
  new DataView(header.buffer).setUint32(12, MAX_SKIPPED_OPTION_LENGTH + 1);
  const liar = scriptedClient([encodeClientFlags(FIXED), header, new Uint8Array(1000)]);
  await assert.rejects(
    negotiate(
      { reader: new BufferedReader(liar.stream), writer: new WriteQueue(liar.stream) },
      table,
    ),
    (error: Error) =>
      error instanceof ProtocolError && /over the limit of 33554432/.test(error.message),
  );
  assert.equal(liar.delivered(), 4 + 16, "the announced data was not read");

  const longName = scriptedClient([
    encodeClientFlags(FIXED),
    encodeOption(NBD_OPT.EXPORT_NAME, new Uint8Array(NBD_LIMIT.MAX_OPTION_LENGTH + 1)),
  ]);
  await assert.rejects(
    negotiate({
      reader: new BufferedReader(longName.stream),
      writer: new WriteQueue(longName.stream),
    }, table),
    /EXPORT_NAME has 65537 bytes of data, over the limit/,
  );
  assert.ok(longName.delivered() < 8192, "a client dropped anyway is not read further");
});

Deno.test("option data arriving in small pieces is reassembled in order", async () => {
  const table = new ExportTable();
  table.add(new NbdExport({ name: "x".repeat(4000), node: new MemoryNode(4096) }));
  const request = encodeOption(
    NBD_OPT.GO,
    encodeInfoRequest({ name: "x".repeat(4000), infos: Array(3000).fill(NBD_INFO.NAME) }),
  );
  const pieces = [];
  for (let offset = 0; offset < request.length; offset += 1000) {
    pieces.push(request.subarray(offset, offset + 1000));
  }
  const client = scriptedClient([encodeClientFlags(FIXED), ...pieces]);
  const session = await negotiate(
    { reader: new BufferedReader(client.stream), writer: new WriteQueue(client.stream) },
    table,
  );
  assert.equal(session?.export.name, "x".repeat(4000));
});
