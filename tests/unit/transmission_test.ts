import assert from "node:assert/strict";
import { Transmission } from "../../src/nbd/server/transmission.ts";
import { NbdExport } from "../../src/nbd/server/export.ts";
import type { NegotiatedSession } from "../../src/nbd/server/handshake.ts";
import { NbdConnection } from "../../src/nbd/server/connection.ts";
import { ExportTable } from "../../src/nbd/server/export.ts";
import { MemoryNode } from "../../src/block/memory.ts";
import { BufferedReader } from "../../src/io/buffered-reader.ts";
import { WriteQueue } from "../../src/io/write-queue.ts";
import type { ByteStream } from "../../src/io/byte-stream.ts";
import { Logger } from "../../src/log.ts";
import { NBD_CMD, NBD_ERROR } from "../../src/nbd/protocol.ts";
import { decodeSimpleReplyHeader, encodeRequestHeader } from "../../src/nbd/wire.ts";

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

function harness(
  node: MemoryNode,
  limits = { maxRequests: 2, maxBytes: 1 << 20, maxDescriptors: 16 },
) {
  const toServer = new Channel();
  const toClient = new Channel();
  const serverSide: ByteStream = {
    read: (buffer) => toServer.read(buffer),
    write: (data) => {
      toClient.push(data);
      return Promise.resolve(data.length);
    },
    close: () => toClient.end(),
  };
  const session: NegotiatedSession = {
    export: new NbdExport({ name: "", node }),
    structured: false,
    flags: 0,
    contexts: [],
  };
  const transmission = new Transmission(
    new BufferedReader(serverSide),
    new WriteQueue(serverSide),
    session,
    new Logger(),
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
  return { transmission, toServer, write, nextReply };
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

Deno.test("a client that never finishes the handshake is dropped after the timeout", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({
    hostname: "127.0.0.1",
    port: (listener.addr as Deno.NetAddr).port,
  });
  const conn = await listener.accept();
  const connection = new NbdConnection(
    conn,
    new ExportTable(),
    new Logger({ prefix: "test" }),
    100,
  );
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
