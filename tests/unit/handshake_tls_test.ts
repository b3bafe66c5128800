/**
 * The TLS-required handshake: the state machine's rules before and after
 * STARTTLS, and the driver's switch of streams (with the plaintext a client
 * sent behind STARTTLS discarded), with a stand-in for the TLS session.
 */

import assert from "node:assert/strict";
import { HandshakeState, type HandshakeStep, negotiate } from "../../src/nbd/server/handshake.ts";
import { ExportTable, NbdExport } from "../../src/nbd/server/export.ts";
import { MemoryNode } from "../../src/block/memory.ts";
import { BufferedReader } from "../../src/io/buffered-reader.ts";
import { WriteQueue } from "../../src/io/write-queue.ts";
import type { ByteStream } from "../../src/io/byte-stream.ts";
import { Logger } from "../../src/log.ts";
import { NBD_CLIENT_FLAG, NBD_LIMIT, NBD_OPT, NBD_REP, NBD_SIZE } from "../../src/nbd/protocol.ts";
import {
  decodeOptionReplyHeader,
  decodeString,
  encodeClientFlags,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOption,
  ProtocolError,
} from "../../src/nbd/wire.ts";
import { concatBytes } from "../../src/io/bytes.ts";

const FIXED = NBD_CLIENT_FLAG.FIXED_NEWSTYLE | NBD_CLIENT_FLAG.NO_ZEROES;
const NONE = new Uint8Array();

function catalog(): ExportTable {
  const table = new ExportTable();
  table.add(new NbdExport({ name: "disk", node: new MemoryNode(1 << 20) }));
  return table;
}

/** A state with TLS required (or not), after the client's flags. */
function setup(tlsRequired = true, flags = FIXED): HandshakeState {
  const state = new HandshakeState(catalog(), tlsRequired);
  state.acceptClientFlags(flags);
  return state;
}

/** Each reply of a step as its type and its payload read as text. */
function replies(step: HandshakeStep): { type: number; text: string }[] {
  return step.replies.map((bytes) => ({
    type: decodeOptionReplyHeader(bytes.subarray(0, NBD_SIZE.OPTION_REPLY_HEADER)).type,
    text: decodeString(bytes.subarray(NBD_SIZE.OPTION_REPLY_HEADER), "reply"),
  }));
}

const go = (name: string) => encodeInfoRequest({ name, infos: [] });

Deno.test("TLS required: every option but STARTTLS, ABORT and EXPORT_NAME gets ERR_TLS_REQD", () => {
  const state = setup();
  assert.equal(state.tls, "required");
  const refused: [number, Uint8Array][] = [
    [NBD_OPT.LIST, NONE],
    [NBD_OPT.INFO, go("disk")],
    [NBD_OPT.GO, go("disk")],
    [NBD_OPT.STRUCTURED_REPLY, NONE],
    [NBD_OPT.LIST_META_CONTEXT, encodeMetaContextRequest({ exportName: "disk", queries: [] })],
    [
      NBD_OPT.SET_META_CONTEXT,
      encodeMetaContextRequest({ exportName: "disk", queries: ["base:allocation"] }),
    ],
    [99, new Uint8Array(3)],
  ];
  for (const [option, data] of refused) {
    const step = state.handleOption(option, data);
    assert.equal(step.next, "continue", `option ${option}`);
    assert.deepEqual(replies(step), [{
      type: NBD_REP.ERR_TLS_REQD,
      text: `Option 0x${option.toString(16)} not permitted before TLS`,
    }]);
  }
  assert.equal(state.tls, "required", "nothing above started TLS");
});

Deno.test("TLS required: EXPORT_NAME before TLS closes without a reply", () => {
  for (const flags of [FIXED, 0]) {
    const step = setup(true, flags).handleOption(
      NBD_OPT.EXPORT_NAME,
      new TextEncoder().encode("disk"),
    );
    assert.equal(step.next, "close");
    assert.deepEqual(step.replies, []);
    assert.match(
      step.next === "close" ? step.reason ?? "" : "",
      /Option 0x1 not permitted before TLS/,
    );
  }
});

Deno.test("TLS required: ABORT before TLS is acknowledged and closes quietly", () => {
  const step = setup().handleOption(NBD_OPT.ABORT, NONE);
  assert.equal(step.next, "close");
  assert.deepEqual(replies(step).map((r) => r.type), [NBD_REP.ACK]);
  assert.equal(step.next === "close" && step.reason, undefined);
});

Deno.test("TLS required: STARTTLS with data is refused as invalid and closes (as QEMU)", () => {
  const step = setup().handleOption(NBD_OPT.STARTTLS, new Uint8Array(2));
  assert.equal(step.next, "close");
  assert.deepEqual(replies(step), [{
    type: NBD_REP.ERR_INVALID,
    text: "option 'starttls' has unexpected length",
  }]);
});

Deno.test("TLS required: oversized options before TLS are refused as the rest, EXPORT_NAME closes", () => {
  const state = setup();
  const over = NBD_LIMIT.MAX_OPTION_LENGTH + 1;
  assert.deepEqual(replies(state.handleOversizedOption(NBD_OPT.LIST, over)).map((r) => r.type), [
    NBD_REP.ERR_TLS_REQD,
  ]);
  assert.equal(state.handleOversizedOption(NBD_OPT.EXPORT_NAME, over).next, "close");
  assert.equal(state.handleOversizedOption(NBD_OPT.STARTTLS, over).next, "close");
});

Deno.test("STARTTLS is acknowledged, then options work inside TLS from a fresh state", () => {
  const state = setup();
  const step = state.handleOption(NBD_OPT.STARTTLS, NONE);
  assert.equal(step.next, "starttls");
  assert.deepEqual(replies(step), [{ type: NBD_REP.ACK, text: "" }]);
  assert.equal(state.tls, "started");
  // Nothing negotiated carries over: meta contexts still need structured replies.
  const meta = state.handleOption(
    NBD_OPT.SET_META_CONTEXT,
    encodeMetaContextRequest({ exportName: "disk", queries: ["base:allocation"] }),
  );
  assert.deepEqual(replies(meta).map((r) => r.type), [NBD_REP.ERR_INVALID]);
  const list = state.handleOption(NBD_OPT.LIST, NONE);
  assert.deepEqual(replies(list).map((r) => r.type), [NBD_REP.SERVER, NBD_REP.ACK]);
  const chosen = state.handleOption(NBD_OPT.GO, go("disk"));
  assert.equal(chosen.next, "transmission");
  assert.equal(chosen.next === "transmission" && chosen.session.structured, false);
});

Deno.test("STARTTLS inside TLS is ERR_INVALID (spec and QEMU); with data too; negotiation goes on", () => {
  const state = setup();
  state.handleOption(NBD_OPT.STARTTLS, NONE);
  assert.deepEqual(replies(state.handleOption(NBD_OPT.STARTTLS, NONE)), [{
    type: NBD_REP.ERR_INVALID,
    text: "TLS already enabled",
  }]);
  const withData = state.handleOption(NBD_OPT.STARTTLS, new Uint8Array(1));
  assert.equal(withData.next, "continue");
  assert.deepEqual(replies(withData).map((r) => r.type), [NBD_REP.ERR_INVALID]);
  assert.equal(
    state.handleOption(NBD_OPT.EXPORT_NAME, new TextEncoder().encode("disk")).next,
    "transmission",
  );
});

Deno.test("without TLS configured STARTTLS stays ERR_POLICY and nothing needs TLS", () => {
  const state = setup(false);
  assert.equal(state.tls, "off");
  assert.deepEqual(replies(state.handleOption(NBD_OPT.STARTTLS, NONE)).map((r) => r.type), [
    NBD_REP.ERR_POLICY,
  ]);
  assert.deepEqual(replies(state.handleOption(NBD_OPT.LIST, NONE)).map((r) => r.type), [
    NBD_REP.SERVER,
    NBD_REP.ACK,
  ]);
});

/** One side of a connection: yields `messages` one read each, records what is written to it. */
function scripted(messages: Uint8Array[]) {
  const queue = [...messages];
  const written: number[] = [];
  const stream: ByteStream & { reads: number } = {
    reads: 0,
    read(buffer) {
      this.reads++;
      const next = queue.shift();
      if (!next) return Promise.resolve(null);
      buffer.set(next);
      return Promise.resolve(next.length);
    },
    write(data) {
      written.push(...data);
      return Promise.resolve(data.length);
    },
    close() {},
  };
  return { stream, written };
}

/** The option reply headers in `bytes` from `offset` on. */
function replyHeaders(bytes: number[], offset: number) {
  const all = new Uint8Array(bytes);
  const headers = [];
  while (offset < all.length) {
    const header = decodeOptionReplyHeader(all.subarray(offset, offset + 20));
    headers.push([header.option, header.type]);
    offset += 20 + header.length;
  }
  return headers;
}

Deno.test("negotiate: plaintext sent with STARTTLS is discarded, options go on over the new stream", async () => {
  const logged: string[] = [];
  const log = new class extends Logger {
    override warn(message: string): void {
      logged.push(message);
    }
  }();
  // STARTTLS and a bogus LIST in one segment: the LIST must never be answered.
  const raw = scripted([
    encodeClientFlags(FIXED),
    concatBytes(encodeOption(NBD_OPT.STARTTLS), encodeOption(NBD_OPT.LIST)),
  ]);
  const secure = scripted([encodeOption(NBD_OPT.LIST), encodeOption(NBD_OPT.GO, go("disk"))]);
  let started = 0;
  const reader = new BufferedReader(raw.stream);
  const session = await negotiate({ reader, writer: new WriteQueue(raw.stream) }, catalog(), {
    tls: {
      start() {
        started++;
        return Promise.resolve(secure.stream);
      },
    },
    log,
  });
  assert.equal(started, 1);
  assert.equal(session?.export.name, "disk");
  assert.deepEqual(replyHeaders(raw.written, 18), [[NBD_OPT.STARTTLS, NBD_REP.ACK]]);
  const inside = replyHeaders(secure.written, 0);
  assert.deepEqual(inside[0], [NBD_OPT.LIST, NBD_REP.SERVER]);
  assert.deepEqual(inside.at(-1), [NBD_OPT.GO, NBD_REP.ACK]);
  assert.equal(raw.stream.reads, 2, "nothing more was read from the raw stream after STARTTLS");
  assert.ok(
    logged.some((line) => /ignored 16 bytes sent after STARTTLS/.test(line)),
    logged.join(),
  );
});

Deno.test("negotiate: a failed TLS start drops the client; plain clients are refused", async () => {
  const raw = scripted([encodeClientFlags(FIXED), encodeOption(NBD_OPT.STARTTLS)]);
  await assert.rejects(
    negotiate(
      { reader: new BufferedReader(raw.stream), writer: new WriteQueue(raw.stream) },
      catalog(),
      {
        tls: { start: () => Promise.reject(new Error("TLS handshake failed: test")) },
      },
    ),
    /TLS handshake failed: test/,
  );
  const plain = scripted([
    encodeClientFlags(FIXED),
    encodeOption(NBD_OPT.LIST),
    encodeOption(NBD_OPT.EXPORT_NAME, new TextEncoder().encode("disk")),
  ]);
  await assert.rejects(
    negotiate(
      { reader: new BufferedReader(plain.stream), writer: new WriteQueue(plain.stream) },
      catalog(),
      {
        tls: { start: () => Promise.reject(new Error("not reached")) },
      },
    ),
    (error: Error) =>
      error instanceof ProtocolError && /not permitted before TLS/.test(error.message),
  );
  assert.deepEqual(replyHeaders(plain.written, 18), [[NBD_OPT.LIST, NBD_REP.ERR_TLS_REQD]]);
});
