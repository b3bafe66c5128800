import assert from "node:assert/strict";
import { Transmission, type TransmissionLimits } from "../../src/nbd/server/transmission.ts";
import { NbdExport, type NbdExportOptions } from "../../src/nbd/server/export.ts";
import type { NegotiatedSession } from "../../src/nbd/server/handshake.ts";
import { NbdConnection } from "../../src/nbd/server/connection.ts";
import { ExportTable } from "../../src/nbd/server/export.ts";
import { MemoryNode } from "../../src/block/memory.ts";
import { BufferedReader } from "../../src/io/buffered-reader.ts";
import { WriteQueue } from "../../src/io/write-queue.ts";
import type { ByteStream } from "../../src/io/byte-stream.ts";
import { Logger } from "../../src/log.ts";
import { NBD_CMD, NBD_CMD_FLAG, NBD_ERROR, NBD_FLAG } from "../../src/nbd/protocol.ts";
import type { NodeCapabilities } from "../../src/block/node.ts";
import { decodeSimpleReplyHeader, encodeRequestHeader } from "../../src/nbd/wire.ts";
import { baseNamespace, type MetaContext } from "../../src/nbd/server/meta-context.ts";
import { messageOf } from "../../src/errors.ts";
import { concatBytes } from "../../src/io/bytes.ts";

/** One direction of an in-memory pipe. */
class Channel {
  #chunks: Uint8Array[] = [];
  #waiting: (() => void) | null = null;
  #ended = false;
  push(bytes: Uint8Array) {
    this.#chunks.push(bytes.slice());
    this.#waiting?.();
  }
  end() {
    this.#ended = true;
    this.#waiting?.();
  }
  async read(buffer: Uint8Array): Promise<number | null> {
    while (!this.#chunks.length) {
      if (this.#ended) return null;
      await new Promise<void>((resolve) => this.#waiting = resolve);
      this.#waiting = null;
    }
    const chunk = this.#chunks.shift()!;
    const count = Math.min(chunk.length, buffer.length);
    buffer.set(chunk.subarray(0, count));
    if (count < chunk.length) this.#chunks.unshift(chunk.subarray(count));
    return count;
  }
}

/** A memory node whose writes wait until released, counting calls. */
class GatedNode extends MemoryNode {
  writes = 0;
  #gates: (() => void)[] = [];
  override async write(offset: number, data: Uint8Array): Promise<void> {
    this.writes++;
    await new Promise<void>((resolve) => this.#gates.push(resolve));
    return super.write(offset, data);
  }
  /** Every write waits for its gate: none is done at once. */
  override writeNow(): boolean {
    return false;
  }
  releaseOne() {
    this.#gates.shift()?.();
  }
  releaseLast() {
    this.#gates.pop()?.();
  }
  releaseAll() {
    for (const open of this.#gates.splice(0)) open();
  }
}

/** A memory node counting the reads it was asked for. */
class CountingNode extends MemoryNode {
  reads = 0;
  override read(offset: number, into: Uint8Array): Promise<void> {
    this.reads++;
    return super.read(offset, into);
  }
  override readNow(offset: number, into: Uint8Array): boolean {
    this.reads++;
    return super.readNow(offset, into);
  }
}

/** A logger of every level that keeps its lines instead of printing them. */
class CapturingLogger extends Logger {
  readonly lines: string[];
  constructor(lines: string[] = []) {
    super({ level: "debug", write: (line) => lines.push(line) });
    this.lines = lines;
  }
}

/** A memory node that claims other capabilities. */
class ClaimingNode extends MemoryNode {
  override readonly capabilities: NodeCapabilities;
  constructor(size: number, claims: Partial<NodeCapabilities>) {
    super(size);
    this.capabilities = { ...new MemoryNode(1).capabilities, ...claims };
  }
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 10));

/** `promise`'s value, or "timed out" when it takes longer than `ms`. */
async function within<T>(ms: number, promise: Promise<T>): Promise<T | "timed out"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timed out">((resolve) => {
    timer = setTimeout(() => resolve("timed out"), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** How a test connection is set up; everything is optional. */
interface HarnessOptions {
  /** Export options besides the name and node. */
  readonly exported?: Partial<NbdExportOptions>;
  /** Transmission flags the client was sent (default: the export's). */
  readonly flags?: number;
  /** Structured replies with these contexts selected (default: simple replies). */
  readonly contexts?: readonly MetaContext[];
  /** What becomes of the server's replies: delivered (default), failing (the client left) or unread. */
  readonly replies?: "delivered" | "failing" | "unread";
  /** Limits other than the harness's small ones. */
  readonly limits?: Partial<TransmissionLimits>;
  /** Where the transmission logs. */
  readonly log?: Logger;
}

function harness(node: MemoryNode, options: HarnessOptions = {}) {
  const limits = { maxRequests: 2, maxBytes: 1 << 20, maxDescriptors: 16, ...options.limits };
  const toServer = new Channel();
  const toClient = new Channel();
  const fate = options.replies ?? "delivered";
  const written: number[] = [];
  const serverSide: ByteStream = {
    read: (buffer) => toServer.read(buffer),
    write: (data) => {
      written.push(data.length);
      if (fate === "failing") {
        return Promise.reject(new Deno.errors.BrokenPipe("Broken pipe (os error 32)"));
      }
      if (fate === "unread") return new Promise<number>(() => {});
      toClient.push(data);
      return Promise.resolve(data.length);
    },
    close: () => toClient.end(),
  };
  const exported = new NbdExport({ ...options.exported, name: "", node });
  const contexts = options.contexts ?? [];
  const session: NegotiatedSession = {
    export: exported,
    structured: options.contexts !== undefined,
    flags: options.flags ?? exported.transmissionFlags(options.contexts !== undefined),
    contexts: contexts.map((context, index) => ({ id: index + 1, context })),
  };
  const transmission = new Transmission(
    new BufferedReader(serverSide),
    new WriteQueue(serverSide),
    session,
    options.log ?? new Logger(),
    limits,
  );
  const replies = new BufferedReader({
    read: (b) => toClient.read(b),
    write: () => Promise.resolve(0),
    close() {},
  });
  const write = (cookie: bigint, offset: number, length: number) => {
    toServer.push(encodeRequestHeader({ flags: 0, type: NBD_CMD.WRITE, cookie, offset, length }));
    toServer.push(new Uint8Array(length).fill(Number(cookie)));
  };
  const nextReply = async () => decodeSimpleReplyHeader((await replies.readExact(16)).slice());
  /** Send one request (with a payload of `length` bytes for a write) and read its reply. */
  const ask = async (type: number, flags: number, offset = 0, length = 512) => {
    toServer.push(encodeRequestHeader({ flags, type, cookie: 9n, offset, length }));
    if (type === NBD_CMD.WRITE) toServer.push(new Uint8Array(length));
    return (await nextReply()).error;
  };
  const replyPayload = async (length: number) => (await replies.readExact(length)).slice();
  return { transmission, toServer, write, nextReply, replyPayload, ask, written };
}

Deno.test("reading pauses while the request limit is in flight", async () => {
  const node = new GatedNode(1 << 20);
  const { transmission, toServer, write, nextReply } = harness(node);
  const running = transmission.run();
  for (let cookie = 1n; cookie <= 4n; cookie++) write(cookie, Number(cookie) * 4096, 4096);
  await tick();
  assert.equal(node.writes, 2, "only maxRequests writes were started");
  node.releaseOne();
  await nextReply();
  await tick();
  assert.equal(node.writes, 3, "one finished, one more started");
  node.releaseAll();
  await tick();
  node.releaseAll();
  for (let i = 0; i < 3; i++) assert.equal((await nextReply()).error, 0);
  toServer.end();
  await running;
});

Deno.test("requests pipelined together are answered together, in one write", async () => {
  const node = new CountingNode(1 << 20);
  await node.write(0, new Uint8Array(8 * 256).map((_, i) => i >> 8));
  const { transmission, toServer, nextReply, replyPayload, written } = harness(node, {
    limits: { maxRequests: 16 },
  });
  const running = transmission.run();
  const burst = [];
  for (let cookie = 0n; cookie < 8n; cookie++) {
    const offset = Number(cookie) * 256;
    burst.push(encodeRequestHeader({ flags: 0, type: NBD_CMD.READ, cookie, offset, length: 256 }));
  }
  toServer.push(concatBytes(...burst));
  for (let cookie = 0n; cookie < 8n; cookie++) {
    assert.deepEqual(await nextReply(), { error: 0, cookie });
    assert.deepEqual(await replyPayload(256), new Uint8Array(256).fill(Number(cookie)));
  }
  assert.equal(node.reads, 8);
  assert.deepEqual(written, [8 * (16 + 256)], "one write carries the eight replies");
  toServer.end();
  await running;
});

Deno.test("replies complete out of order without interleaving", async () => {
  const node = new GatedNode(1 << 20);
  const { transmission, toServer, write, nextReply } = harness(node);
  const running = transmission.run();
  write(1n, 0, 4096);
  write(2n, 4096, 4096);
  await tick();
  assert.equal(node.writes, 2, "both writes are in flight");
  node.releaseLast();
  assert.deepEqual(
    await within(1000, nextReply()),
    { error: 0, cookie: 2n },
    "the later request answers first, without waiting for the earlier one",
  );
  node.releaseAll();
  assert.deepEqual(await nextReply(), { error: 0, cookie: 1n });
  toServer.end();
  await running;
});

Deno.test("after stop() new requests get ESHUTDOWN; those in flight complete", async () => {
  const node = new GatedNode(1 << 20);
  const { transmission, toServer, write, nextReply } = harness(node);
  const running = transmission.run();
  write(1n, 0, 4096);
  await tick();
  const stopped = transmission.stop();
  write(2n, 4096, 4096);
  await tick();
  const refused = await nextReply();
  assert.deepEqual(refused, { error: NBD_ERROR.ESHUTDOWN, cookie: 2n });
  node.releaseAll();
  assert.deepEqual(await nextReply(), { error: 0, cookie: 1n });
  await stopped;
  toServer.end();
  await running;
});

Deno.test("once a reply cannot be sent, reading stops and nothing more is started", async () => {
  const node = new CountingNode(1 << 20);
  const log = new CapturingLogger();
  const { transmission, toServer } = harness(node, { replies: "failing", log });
  for (let cookie = 1n; cookie <= 50n; cookie++) {
    toServer.push(
      encodeRequestHeader({ flags: 0, type: NBD_CMD.READ, cookie, offset: 0, length: 4096 }),
    );
  }
  // The client's side stays open: the transmission must end by itself.
  const outcome = await within(
    2000,
    transmission.run().then(() => "ended without an error", messageOf),
  );
  assert.match(outcome, /^reply failed: Broken pipe; \d+ requests? not answered$/);
  assert.ok(node.reads <= 2, `${node.reads} of 50 reads were served for a client that is gone`);
  assert.deepEqual(log.lines, [], "nothing is logged per request");
});

Deno.test("a write stored but not acknowledged is a reply failure, not a failed write", async () => {
  const node = new MemoryNode(1 << 20);
  const log = new CapturingLogger();
  const { transmission, toServer, write } = harness(node, { replies: "failing", log });
  write(7n, 0, 4096);
  toServer.end();
  await assert.rejects(
    transmission.run(),
    /^DenbdError: reply failed: Broken pipe; 1 request not answered$/,
  );
  assert.deepEqual(log.lines, [], "no WRITE is reported as failed");
  const stored = new Uint8Array(4096);
  await node.read(0, stored);
  assert.deepEqual(stored, new Uint8Array(4096).fill(7));
});

Deno.test("block status holds its reply's size of the byte budget until the reply is sent", async () => {
  const node = new MemoryNode(1 << 20);
  const allocation = baseNamespace(node).select("base:allocation")!;
  let scans = 0;
  const counted: MetaContext = {
    name: allocation.name,
    statusOf: (...args) => {
      scans++;
      return allocation.statusOf(...args);
    },
  };
  // A reply of at most 16 descriptors is 20 + 4 + 16 * 8 = 152 bytes: 6 fit in 1000.
  const { transmission, toServer } = harness(node, {
    contexts: [counted],
    replies: "unread",
    limits: { maxRequests: 64, maxBytes: 1000, maxDescriptors: 16 },
  });
  void transmission.run();
  for (let cookie = 1n; cookie <= 64n; cookie++) {
    toServer.push(
      encodeRequestHeader({
        flags: 0,
        type: NBD_CMD.BLOCK_STATUS,
        cookie,
        offset: 0,
        length: 1 << 20,
      }),
    );
  }
  await tick();
  assert.equal(scans, 6, "requests beyond the byte budget wait for their turn");
});

const { EINVAL, EPERM } = NBD_ERROR;
const { READ, WRITE, FLUSH, TRIM, CACHE, WRITE_ZEROES } = NBD_CMD;
const { FUA, NO_HOLE, DF, FAST_ZERO } = NBD_CMD_FLAG;

/** [what, node claims, export options, command, command flags, expected error (0: served)] */
const ADMISSION_CASES: [
  string,
  Partial<NodeCapabilities>,
  Partial<NbdExportOptions>,
  number,
  number,
  number,
][] = [
  ["cache where prefetching has no effect", { cache: false }, {}, CACHE, 0, EINVAL],
  ["cache where it has", { cache: true }, {}, CACHE, 0, 0],
  [
    "fast zero where zeroing cannot be fast",
    { fastZero: false },
    {},
    WRITE_ZEROES,
    FAST_ZERO,
    EINVAL,
  ],
  ["fast zero where it can", { fastZero: true }, {}, WRITE_ZEROES, FAST_ZERO, 0],
  ["zero keeping the storage", {}, {}, WRITE_ZEROES, NO_HOLE | FUA, 0],
  ["trim where discards are ignored", { trim: false }, {}, TRIM, FUA, 0],
  ["unfragmented read without structured replies", {}, {}, READ, DF, EINVAL],
  ["read with FUA", {}, {}, READ, FUA, 0],
  ["write with a flag it does not take", {}, {}, WRITE, NO_HOLE, EINVAL],
  ["write to a read-only export", {}, { readOnly: true }, WRITE, FUA, EPERM],
  ["trim on a read-only export", {}, { readOnly: true }, TRIM, 0, EPERM],
  ["zero on a read-only export", {}, { readOnly: true }, WRITE_ZEROES, 0, EPERM],
  [
    "zero with NO_HOLE on a read-only export",
    {},
    { readOnly: true },
    WRITE_ZEROES,
    NO_HOLE,
    EINVAL,
  ],
  ["flush on a read-only export", {}, { readOnly: true }, FLUSH, FUA, 0],
];

Deno.test("requests are admitted by the command table and the flags sent", async () => {
  for (const [what, claims, exported, type, flags, expected] of ADMISSION_CASES) {
    const { transmission, toServer, ask } = harness(new ClaimingNode(1 << 20, claims), {
      exported,
    });
    const running = transmission.run();
    assert.equal(await ask(type, flags), expected, what);
    toServer.end();
    await running;
  }
});

Deno.test("admission follows the flags sent to the client, not a second opinion", async () => {
  const node = new MemoryNode(1 << 20);
  const sent = new NbdExport({ name: "", node }).transmissionFlags(false);
  for (
    const [type, flags, withheld] of [
      [TRIM, 0, NBD_FLAG.SEND_TRIM],
      [FLUSH, 0, NBD_FLAG.SEND_FLUSH],
      [WRITE_ZEROES, 0, NBD_FLAG.SEND_WRITE_ZEROES],
      [WRITE, FUA, NBD_FLAG.SEND_FUA],
    ]
  ) {
    for (const flagsSent of [sent, sent & ~withheld]) {
      const { transmission, toServer, ask } = harness(node, { flags: flagsSent });
      const running = transmission.run();
      assert.equal(await ask(type, flags), flagsSent === sent ? 0 : EINVAL, `${type} ${withheld}`);
      toServer.end();
      await running;
    }
  }
});

Deno.test("a client that never finishes the handshake is dropped after the timeout", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({
    hostname: "127.0.0.1",
    port: (listener.addr as Deno.NetAddr).port,
  });
  const conn = await listener.accept();
  const connection = new NbdConnection(conn, {
    catalog: new ExportTable(),
    log: new Logger({ prefix: "test" }),
    id: 1,
    handshakeLimitMs: 100,
  });
  const started = Date.now();
  await connection.run();
  assert.ok(Date.now() - started < 2000);
  const buffer = new Uint8Array(64);
  let total = 0;
  for (let count = await client.read(buffer); count !== null; count = await client.read(buffer)) {
    total += count;
  }
  assert.equal(total, 18, "only the greeting was sent before the server hung up");
  client.close();
  listener.close();
});
