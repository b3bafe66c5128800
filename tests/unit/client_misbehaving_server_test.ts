/**
 * The NBD client library against an in-process fake server that misbehaves
 * in exactly one way per test. Every misbehaviour must end in a clear error,
 * promptly: never a hang, never a silently wrong answer. The fakes also make
 * the rarer good paths easy to reach (servers without GO, without structured
 * replies, without fixed newstyle, with odd block sizes).
 */

import assert from "node:assert/strict";
import { DenbdError } from "../../src/errors.ts";
import { BufferedReader } from "../../src/io/buffered-reader.ts";
import { writeAll } from "../../src/io/byte-stream.ts";
import { NbdClient, withNegotiation } from "../../src/nbd/client/client.ts";
import { NbdCommandError } from "../../src/nbd/client/connection.ts";
import { OptionRefused } from "../../src/nbd/client/negotiation.ts";
import { kindOfNbdError } from "../../src/nbd/errors.ts";
import {
  NBD_CMD,
  NBD_ERROR,
  NBD_FLAG,
  NBD_HANDSHAKE_FLAG,
  NBD_INFO,
  NBD_LIMIT,
  NBD_MAGIC,
  NBD_OPT,
  NBD_REP,
  NBD_REPLY_FLAG,
  NBD_REPLY_TYPE,
  NBD_SIZE,
  NBD_STATE,
} from "../../src/nbd/protocol.ts";
import {
  decodeClientFlags,
  decodeInfoRequest,
  decodeMetaContextRequest,
  decodeOptionHeader,
  decodeRequestHeader,
  encodeBlockStatus,
  encodeChunkHeader,
  encodeErrorChunk,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoReply,
  encodeOffset,
  encodeOffsetHole,
  encodeOptionReply,
  encodeRepMetaContext,
  encodeRepServer,
  encodeSimpleReplyHeader,
  encodeString,
  ProtocolError,
  type RequestHeader,
  type StatusDescriptor,
} from "../../src/nbd/wire.ts";
import { concatBytes } from "../../src/io/bytes.ts";

/** The client's bound on every wait in these tests. */
const TIMEOUT_MS = 300;
/** A test body that takes longer than this has hung. */
const HANG_MS = 5_000;
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const EXPORT_SIZE = 1 * MiB;
const WRITABLE = NBD_FLAG.HAS_FLAGS | NBD_FLAG.SEND_FLUSH | NBD_FLAG.SEND_FUA |
  NBD_FLAG.SEND_TRIM | NBD_FLAG.SEND_WRITE_ZEROES;
const EMPTY = new Uint8Array();

// ---------------------------------------------------------------------------
// The fake server

/** The server end of one connection, driven by a test's script. */
class FakePeer {
  readonly conn: Deno.Conn;
  readonly reader: BufferedReader;
  /** Requests seen in transmission, in order. */
  readonly requests: RequestHeader[] = [];

  constructor(conn: Deno.Conn) {
    this.conn = conn;
    this.reader = new BufferedReader(conn);
  }

  async send(...parts: Uint8Array[]): Promise<void> {
    for (const part of parts) await writeAll(this.conn, part);
  }

  /** The next option the client sends. */
  async option(): Promise<{ option: number; data: Uint8Array }> {
    const { option, length } = decodeOptionHeader((await this.reader.readExact(16)).slice());
    const data = new Uint8Array(length);
    await this.reader.readInto(data);
    return { option, data };
  }

  /** The next transmission request (a write's payload is read and dropped). */
  async request(): Promise<RequestHeader> {
    const header = decodeRequestHeader(
      (await this.reader.readExact(NBD_SIZE.REQUEST_HEADER)).slice(),
    );
    if (header.type === NBD_CMD.WRITE) await this.reader.skip(header.length);
    this.requests.push(header);
    return header;
  }

  /** Wait until the client closes the connection. */
  async untilClosed(): Promise<void> {
    try {
      while (await this.reader.readExactOrEof(1) !== null) {
        // Drain.
      }
    } catch {
      // Closed under us.
    }
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // Already closed.
    }
  }
}

/**
 * Run `script` for every connection to a fake server while `body` runs with
 * the server's URI; `body` is bounded so a hanging client fails the test.
 * Assertion failures inside a script fail the test; I/O errors there (the
 * client hung up) do not.
 */
async function withFake(
  script: (peer: FakePeer, index: number) => Promise<void>,
  body: (uri: string, peers: FakePeer[]) => Promise<void>,
): Promise<void> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  const peers: FakePeer[] = [];
  const scripts: Promise<unknown>[] = [];
  const accepting = (async () => {
    try {
      for (let index = 0;; index++) {
        const peer = new FakePeer(await listener.accept());
        peers.push(peer);
        scripts.push(script(peer, index).then(() => undefined, (error) => error));
      }
    } catch {
      // The listener was closed.
    }
  })();
  const result = await bounded(body(`nbd://127.0.0.1:${port}/disk`, peers), HANG_MS).then(
    () => ({ ok: true as const }),
    (error: unknown) => ({ ok: false as const, error }),
  );
  listener.close();
  await accepting;
  // Scripts end when the client hangs up; a client that never does is cut off.
  const outcomes = await bounded(Promise.all(scripts), 2_000).catch(() => []);
  for (const peer of peers) peer.close();
  if (!result.ok) throw result.error;
  for (const outcome of [...outcomes, ...await Promise.all(scripts)]) {
    if (outcome instanceof assert.AssertionError) throw outcome;
  }
}

async function bounded<T>(promise: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`the client hung (no result within ${timeoutMs}ms)`)),
      timeoutMs,
    );
  });
  try {
    return await Promise.race([promise, hang]);
  } finally {
    clearTimeout(timer);
  }
}

/** What the fake server's export looks like and which features it has. */
interface FakeExport {
  readonly size?: number;
  readonly flags?: number;
  /** Answer STRUCTURED_REPLY with ACK (default) or ERR_UNSUP. */
  readonly structured?: boolean;
  /** Context names the server knows, with the ids it gives them. */
  readonly contexts?: Readonly<Record<string, number>>;
  /** NBD_INFO_BLOCK_SIZE to send: [minimum, preferred, maximum]. */
  readonly blockSizes?: readonly [number, number, number];
  /** Answer GO with ERR_UNSUP (a server from before GO). */
  readonly noGo?: boolean;
  /** Handshake flags of the greeting (default fixed newstyle and no zeroes). */
  readonly handshakeFlags?: number;
}

/**
 * Play a well-behaved server through option haggling until the client
 * enters transmission (GO or EXPORT_NAME) or aborts; returns the option
 * numbers the client sent.
 */
async function handshake(peer: FakePeer, exp: FakeExport = {}): Promise<number[]> {
  const size = exp.size ?? EXPORT_SIZE;
  const flags = exp.flags ?? WRITABLE;
  const handshakeFlags = exp.handshakeFlags ??
    (NBD_HANDSHAKE_FLAG.FIXED_NEWSTYLE | NBD_HANDSHAKE_FLAG.NO_ZEROES);
  await peer.send(encodeGreeting(handshakeFlags));
  const clientFlags = decodeClientFlags((await peer.reader.readExact(4)).slice());
  const options: number[] = [];
  while (true) {
    const { option, data } = await peer.option();
    options.push(option);
    const reply = (type: number, payload?: Uint8Array) =>
      peer.send(encodeOptionReply(option, type, payload));
    switch (option) {
      case NBD_OPT.EXPORT_NAME:
        await peer.send(encodeExportNameReply(size, flags, (clientFlags & 2) !== 0));
        return options;
      case NBD_OPT.STRUCTURED_REPLY:
        await reply(exp.structured === false ? NBD_REP.ERR_UNSUP : NBD_REP.ACK);
        break;
      case NBD_OPT.SET_META_CONTEXT:
      case NBD_OPT.LIST_META_CONTEXT: {
        for (const query of decodeMetaContextRequest(data).queries) {
          const id = exp.contexts?.[query];
          if (id !== undefined) await reply(NBD_REP.META_CONTEXT, encodeRepMetaContext(id, query));
        }
        await reply(NBD_REP.ACK);
        break;
      }
      case NBD_OPT.INFO:
      case NBD_OPT.GO: {
        if (exp.noGo) {
          await reply(NBD_REP.ERR_UNSUP);
          break;
        }
        decodeInfoRequest(data);
        await reply(NBD_REP.INFO, encodeInfoReply({ type: NBD_INFO.EXPORT, size, flags }));
        if (exp.blockSizes) {
          const [minimum, preferred, maximum] = exp.blockSizes;
          await reply(
            NBD_REP.INFO,
            encodeInfoReply({ type: NBD_INFO.BLOCK_SIZE, minimum, preferred, maximum }),
          );
        }
        await reply(NBD_REP.ACK);
        if (option === NBD_OPT.GO) return options;
        break;
      }
      case NBD_OPT.ABORT:
        await reply(NBD_REP.ACK);
        return options;
      default:
        await reply(NBD_REP.ERR_UNSUP);
    }
  }
}

// Reply builders.

/** The export's bytes: a pattern that differs at every offset of a small window. */
function pattern(offset: number, length: number): Uint8Array {
  return new Uint8Array(length).map((_, i) => (offset + i) % 251);
}

function chunk(cookie: bigint, type: number, payload: Uint8Array, done = true): Uint8Array {
  const flags = done ? NBD_REPLY_FLAG.DONE : 0;
  return concatBytes(encodeChunkHeader({ flags, type, cookie, length: payload.length }), payload);
}

function dataChunk(cookie: bigint, offset: number, data: Uint8Array, done = true): Uint8Array {
  const head = new Uint8Array(8);
  encodeOffset(head, 0, offset);
  return chunk(cookie, NBD_REPLY_TYPE.OFFSET_DATA, concatBytes(head, data), done);
}

function holeChunk(cookie: bigint, offset: number, length: number, done = true): Uint8Array {
  return chunk(cookie, NBD_REPLY_TYPE.OFFSET_HOLE, encodeOffsetHole(offset, length), done);
}

function noneChunk(cookie: bigint): Uint8Array {
  return chunk(cookie, NBD_REPLY_TYPE.NONE, EMPTY, true);
}

function statusChunk(
  cookie: bigint,
  contextId: number,
  descriptors: StatusDescriptor[],
  done = true,
): Uint8Array {
  return chunk(
    cookie,
    NBD_REPLY_TYPE.BLOCK_STATUS,
    encodeBlockStatus(contextId, descriptors),
    done,
  );
}

function errorChunk(cookie: bigint, errno: number, message: string, done = true): Uint8Array {
  return chunk(cookie, NBD_REPLY_TYPE.ERROR, encodeErrorChunk(errno, message), done);
}

function errorOffsetChunk(
  cookie: bigint,
  errno: number,
  message: string,
  offset: number,
  done = true,
): Uint8Array {
  return chunk(cookie, NBD_REPLY_TYPE.ERROR_OFFSET, encodeErrorChunk(errno, message, offset), done);
}

function simpleReply(cookie: bigint, error = 0, data: Uint8Array = EMPTY): Uint8Array {
  return concatBytes(encodeSimpleReplyHeader(error, cookie), data);
}

/** A header claiming a payload of `length` bytes, with no payload behind it. */
function chunkHeader(cookie: bigint, type: number, length: number, done = true): Uint8Array {
  return encodeChunkHeader({ flags: done ? NBD_REPLY_FLAG.DONE : 0, type, cookie, length });
}

/** Answer one read request correctly with one data chunk. */
async function serveRead(peer: FakePeer, request?: RequestHeader): Promise<void> {
  const { cookie, offset, length } = request ?? await peer.request();
  await peer.send(dataChunk(cookie, offset, pattern(offset, length)));
}

// ---------------------------------------------------------------------------
// Assertion helpers

/** The error `promise` rejects with (fails if it resolves). */
async function failure(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof Error, `rejected with a non-Error: ${error}`);
    return error;
  }
  assert.fail("expected a rejection, got a result");
}

/**
 * `promise` rejects with a ProtocolError whose message matches `message`:
 * the misbehaviour itself was detected (a client that waited instead would
 * fail with its timeout, a DenbdError, or hang).
 */
async function protocolError(promise: Promise<unknown>, message: RegExp): Promise<Error> {
  const error = await failure(promise);
  assert.ok(error instanceof ProtocolError, `expected a ProtocolError, got ${error.stack}`);
  assert.match(error.message, message);
  return error;
}

/** `promise` rejects with a DenbdError of `kind` whose message matches `message`. */
async function denbdError(
  promise: Promise<unknown>,
  kind: string,
  message: RegExp,
): Promise<DenbdError> {
  const error = await failure(promise);
  assert.ok(error instanceof DenbdError, `expected a DenbdError, got ${error.stack}`);
  assert.equal(error.kind, kind, error.message);
  assert.match(error.message, message);
  return error;
}

/** Connect with the tests' short timeout and run `body`, always disconnecting. */
async function usingClient(
  uri: string,
  body: (client: NbdClient) => Promise<void>,
  options: { metaContexts?: string[]; structuredReplies?: boolean } = {},
): Promise<void> {
  const client = await NbdClient.connect(uri, { timeoutMs: TIMEOUT_MS, ...options });
  try {
    await body(client);
  } finally {
    await client.disconnect();
  }
}

/** A fake that negotiates `exp`, then runs `transmission` on the same connection. */
function serving(
  exp: FakeExport,
  transmission: (peer: FakePeer) => Promise<void>,
): (peer: FakePeer) => Promise<void> {
  return async (peer) => {
    await handshake(peer, exp);
    await transmission(peer);
  };
}

// ---------------------------------------------------------------------------
// Handshake misbehaviour

Deno.test("greeting without NBDMAGIC is a protocol error", async () => {
  await withFake(async (peer) => {
    await peer.send(encodeString("HTTP/1.1 200 OK\r\n\r\n"));
    await peer.untilClosed();
  }, async (uri) => {
    await protocolError(NbdClient.connect(uri, { timeoutMs: TIMEOUT_MS }), /NBDMAGIC/);
  });
});

Deno.test("an oldstyle server is refused as such", async () => {
  await withFake(async (peer) => {
    const greeting = new Uint8Array(152);
    const data = new DataView(greeting.buffer);
    data.setBigUint64(0, NBD_MAGIC.INIT_PASSWD);
    data.setBigUint64(8, 0x00420281861253n);
    data.setBigUint64(16, BigInt(EXPORT_SIZE));
    data.setUint32(24, NBD_FLAG.HAS_FLAGS);
    await peer.send(greeting);
    await peer.untilClosed();
  }, async (uri) => {
    await protocolError(NbdClient.connect(uri, { timeoutMs: TIMEOUT_MS }), /oldstyle/);
  });
});

Deno.test("an option reply with a bad magic is a protocol error", async () => {
  await withFake(async (peer) => {
    await peer.send(encodeGreeting(NBD_HANDSHAKE_FLAG.FIXED_NEWSTYLE));
    await peer.reader.readExact(4);
    const { option } = await peer.option();
    const reply = encodeOptionReply(option, NBD_REP.ACK);
    reply[0] ^= 0xff;
    await peer.send(reply);
    await peer.untilClosed();
  }, async (uri) => {
    await protocolError(NbdClient.connect(uri, { timeoutMs: TIMEOUT_MS }), /bad magic/);
  });
});

Deno.test("a reply to another option than the one asked is a protocol error", async () => {
  await withFake(async (peer) => {
    await peer.send(encodeGreeting(NBD_HANDSHAKE_FLAG.FIXED_NEWSTYLE));
    await peer.reader.readExact(4);
    const { option } = await peer.option();
    assert.equal(option, NBD_OPT.STRUCTURED_REPLY);
    await peer.send(encodeOptionReply(NBD_OPT.LIST, NBD_REP.ACK));
    await peer.untilClosed();
  }, async (uri) => {
    await protocolError(
      NbdClient.connect(uri, { timeoutMs: TIMEOUT_MS }),
      /answered LIST to STRUCTURED_REPLY/,
    );
  });
});

Deno.test("an option reply claiming 4 GiB fails at once, without allocating it", async () => {
  await withFake(async (peer) => {
    await peer.send(encodeGreeting(NBD_HANDSHAKE_FLAG.FIXED_NEWSTYLE));
    await peer.reader.readExact(4);
    const { option } = await peer.option();
    const header = encodeOptionReply(option, NBD_REP.INFO);
    new DataView(header.buffer).setUint32(16, 0xffff_ffff);
    await peer.send(header);
    await peer.untilClosed();
  }, async (uri) => {
    const before = Deno.memoryUsage().rss;
    await protocolError(NbdClient.connect(uri, { timeoutMs: TIMEOUT_MS }), /too large/);
    assert.ok(Deno.memoryUsage().rss - before < 256 * MiB, "the client allocated the claim");
  });
});

Deno.test("INFO or GO accepted without NBD_INFO_EXPORT is a protocol error", async () => {
  const script = async (peer: FakePeer) => {
    await peer.send(encodeGreeting(NBD_HANDSHAKE_FLAG.FIXED_NEWSTYLE));
    await peer.reader.readExact(4);
    while (true) {
      const { option } = await peer.option();
      if (option === NBD_OPT.INFO || option === NBD_OPT.GO) {
        const name = encodeInfoReply({ type: NBD_INFO.NAME, name: "disk" });
        await peer.send(
          encodeOptionReply(option, NBD_REP.INFO, name),
          encodeOptionReply(option, NBD_REP.ACK),
        );
      } else if (option === NBD_OPT.ABORT) {
        await peer.send(encodeOptionReply(option, NBD_REP.ACK));
        return;
      } else {
        await peer.send(encodeOptionReply(option, NBD_REP.ACK));
      }
    }
  };
  await withFake(script, async (uri) => {
    await protocolError(
      withNegotiation(uri, (session) => session.info("disk"), { timeoutMs: TIMEOUT_MS }),
      /accepted INFO without NBD_INFO_EXPORT/,
    );
    await protocolError(
      NbdClient.connect(uri, { timeoutMs: TIMEOUT_MS }),
      /accepted GO without NBD_INFO_EXPORT/,
    );
  });
});

Deno.test("a server that never greets times out, naming the greeting", async () => {
  await withFake((peer) => peer.untilClosed(), async (uri) => {
    const started = performance.now();
    await denbdError(
      NbdClient.connect(uri, { timeoutMs: TIMEOUT_MS }),
      "io",
      /within 0\.3s.*greeting/,
    );
    assert.ok(performance.now() - started >= TIMEOUT_MS - 20);
  });
});

Deno.test("a server silent after an option times out, naming the option", async () => {
  await withFake(async (peer) => {
    await peer.send(encodeGreeting(NBD_HANDSHAKE_FLAG.FIXED_NEWSTYLE));
    await peer.reader.readExact(4);
    await peer.option();
    await peer.untilClosed();
  }, async (uri) => {
    await denbdError(
      NbdClient.connect(uri, { timeoutMs: TIMEOUT_MS }),
      "io",
      /within 0\.3s.*STRUCTURED_REPLY/,
    );
  });
});

Deno.test("a server that hangs up in the middle of an option reply is a clear error", async () => {
  await withFake(async (peer) => {
    await peer.send(encodeGreeting(NBD_HANDSHAKE_FLAG.FIXED_NEWSTYLE));
    await peer.reader.readExact(4);
    await peer.option();
    await peer.send(encodeOptionReply(NBD_OPT.STRUCTURED_REPLY, NBD_REP.ACK).subarray(0, 12));
    peer.close();
  }, async (uri) => {
    await denbdError(
      NbdClient.connect(uri, { timeoutMs: TIMEOUT_MS }),
      "io",
      /closed the connection.*STRUCTURED_REPLY/,
    );
  });
});

Deno.test("NBD_REP_ERR_UNKNOWN is kind not-found, with the server's message", async () => {
  await withFake(async (peer) => {
    await peer.send(encodeGreeting(NBD_HANDSHAKE_FLAG.FIXED_NEWSTYLE));
    await peer.reader.readExact(4);
    while (true) {
      const { option } = await peer.option();
      if (option === NBD_OPT.GO) {
        const message = encodeString("no such export: disk");
        await peer.send(encodeOptionReply(option, NBD_REP.ERR_UNKNOWN, message));
        return peer.untilClosed();
      }
      await peer.send(encodeOptionReply(option, NBD_REP.ACK));
    }
  }, async (uri) => {
    const error = await denbdError(
      NbdClient.connect(uri, { timeoutMs: TIMEOUT_MS }),
      "not-found",
      /refused GO: ERR_UNKNOWN: no such export: disk/,
    );
    assert.ok(error instanceof OptionRefused);
    assert.equal(error.replyType, NBD_REP.ERR_UNKNOWN);
    assert.equal(error.option, NBD_OPT.GO);
  });
});

Deno.test("option-mode replies of the wrong type or with reused ids are protocol errors", async () => {
  const script = async (peer: FakePeer) => {
    await peer.send(encodeGreeting(NBD_HANDSHAKE_FLAG.FIXED_NEWSTYLE));
    await peer.reader.readExact(4);
    while (true) {
      const { option } = await peer.option();
      const reply = (type: number, payload?: Uint8Array) =>
        peer.send(encodeOptionReply(option, type, payload));
      if (option === NBD_OPT.LIST) {
        await reply(NBD_REP.META_CONTEXT, encodeRepMetaContext(1, "base:allocation"));
        await reply(NBD_REP.ACK);
      } else if (option === NBD_OPT.SET_META_CONTEXT) {
        await reply(NBD_REP.META_CONTEXT, encodeRepMetaContext(7, "base:allocation"));
        await reply(NBD_REP.META_CONTEXT, encodeRepMetaContext(7, "qemu:allocation-depth"));
        await reply(NBD_REP.ACK);
      } else if (option === NBD_OPT.LIST_META_CONTEXT) {
        await reply(NBD_REP.SERVER, encodeRepServer("disk"));
        await reply(NBD_REP.ACK);
      } else await reply(NBD_REP.ACK);
    }
  };
  await withFake(script, async (uri) => {
    await protocolError(
      withNegotiation(uri, (session) => session.list(), { timeoutMs: TIMEOUT_MS }),
      /unexpected META_CONTEXT reply to LIST/,
    );
    await protocolError(
      withNegotiation(uri, async (session) => {
        await session.requestStructuredReplies();
        return session.setMetaContexts("disk", ["base:allocation", "qemu:allocation-depth"]);
      }, { timeoutMs: TIMEOUT_MS }),
      /reused context id 7/,
    );
    await protocolError(
      withNegotiation(uri, async (session) => {
        await session.requestStructuredReplies();
        return session.listMetaContexts("disk");
      }, { timeoutMs: TIMEOUT_MS }),
      /unexpected SERVER reply to LIST_META_CONTEXT/,
    );
  });
});

// ---------------------------------------------------------------------------
// Handshake good paths the real servers rarely take

for (const ending of ["acknowledges", "hangs up", "stays silent"] as const) {
  Deno.test(`withNegotiation ends with NBD_OPT_ABORT when the server ${ending}`, async () => {
    const options: number[] = [];
    await withFake(async (peer) => {
      await peer.send(encodeGreeting(NBD_HANDSHAKE_FLAG.FIXED_NEWSTYLE));
      await peer.reader.readExact(4);
      while (true) {
        const { option } = await peer.option();
        options.push(option);
        if (option === NBD_OPT.LIST) {
          await peer.send(
            encodeOptionReply(option, NBD_REP.SERVER, encodeRepServer("disk", "the disk")),
            encodeOptionReply(option, NBD_REP.SERVER, encodeRepServer("other")),
            encodeOptionReply(option, NBD_REP.ACK),
          );
        } else if (option === NBD_OPT.ABORT) {
          if (ending === "acknowledges") await peer.send(encodeOptionReply(option, NBD_REP.ACK));
          if (ending === "hangs up") peer.close();
          return peer.untilClosed();
        } else await peer.send(encodeOptionReply(option, NBD_REP.ERR_UNSUP));
      }
    }, async (uri) => {
      const started = performance.now();
      const timeoutMs = 1_500;
      const listed = await withNegotiation(uri, async (session) => {
        assert.equal(await session.requestStructuredReplies(), false);
        assert.equal(await session.listMetaContexts("disk"), null);
        return session.list();
      }, { timeoutMs });
      assert.deepEqual(listed, [
        { name: "disk", description: "the disk" },
        { name: "other", description: "" },
      ]);
      const elapsed = performance.now() - started;
      // A silent server gets one second to acknowledge ABORT, not the whole timeout.
      if (ending === "stays silent") {
        assert.ok(elapsed >= 980 && elapsed < timeoutMs, `${elapsed}ms`);
      } else assert.ok(elapsed < 900, `waited ${elapsed}ms for an answered ABORT`);
    });
    assert.deepEqual(options, [NBD_OPT.STRUCTURED_REPLY, NBD_OPT.LIST, NBD_OPT.ABORT]);
  });
}

Deno.test("a server without NBD_OPT_GO is entered with EXPORT_NAME", async () => {
  let options: number[] = [];
  await withFake(async (peer) => {
    options = await handshake(peer, { noGo: true, size: 64 * KiB });
    await serveRead(peer);
    await peer.untilClosed();
  }, async (uri) => {
    await usingClient(uri, async (client) => {
      assert.equal(client.size, 64 * KiB);
      assert.deepEqual(await client.read(4096, 1000), pattern(4096, 1000));
    });
  });
  assert.deepEqual(options, [NBD_OPT.STRUCTURED_REPLY, NBD_OPT.GO, NBD_OPT.EXPORT_NAME]);
});

Deno.test("without structured replies the client reads, writes and fails with simple replies", async () => {
  await withFake(
    serving({ structured: false }, async (peer) => {
      const read = await peer.request();
      await peer.send(simpleReply(read.cookie, 0, pattern(read.offset, read.length)));
      const write = await peer.request();
      assert.equal(write.type, NBD_CMD.WRITE);
      await peer.send(simpleReply(write.cookie));
      const failed = await peer.request();
      await peer.send(simpleReply(failed.cookie, NBD_ERROR.EPERM));
      await serveReadSimple(peer);
      await peer.untilClosed();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        assert.equal(client.structuredReplies, false);
        assert.deepEqual(await client.read(512, 4096), pattern(512, 4096));
        await client.write(0, new Uint8Array(512));
        const error = await denbdError(client.read(0, 512), "read-only", /not permitted/);
        assert.ok(error instanceof NbdCommandError);
        assert.equal(error.errno, NBD_ERROR.EPERM);
        assert.deepEqual(await client.read(0, 16), pattern(0, 16));
        await denbdError(
          client.blockStatus(0, 512),
          "invalid",
          /metadata context 'base:allocation' was not negotiated/,
        );
      }, { metaContexts: ["base:allocation"] });
    },
  );
});

async function serveReadSimple(peer: FakePeer): Promise<void> {
  const { cookie, offset, length } = await peer.request();
  await peer.send(simpleReply(cookie, 0, pattern(offset, length)));
}

for (const noZeroes of [false, true]) {
  Deno.test(`a newstyle server without fixed newstyle gets EXPORT_NAME only (no zeroes ${noZeroes})`, async () => {
    let options: number[] = [];
    await withFake(async (peer) => {
      options = await handshake(peer, {
        handshakeFlags: noZeroes ? NBD_HANDSHAKE_FLAG.NO_ZEROES : 0,
        size: 8 * KiB,
        flags: NBD_FLAG.HAS_FLAGS | NBD_FLAG.READ_ONLY,
      });
      await serveReadSimple(peer);
      await peer.untilClosed();
    }, async (uri) => {
      await usingClient(uri, async (client) => {
        assert.equal(client.size, 8 * KiB);
        assert.equal(client.structuredReplies, false);
        assert.deepEqual(await client.read(100, 200), pattern(100, 200));
        await denbdError(client.write(0, new Uint8Array(1)), "read-only", /read-only/);
      });
    });
    assert.deepEqual(options, [NBD_OPT.EXPORT_NAME]);
  });
}

Deno.test("option mode on a server without fixed newstyle refuses LIST as not-supported", async () => {
  await withFake(async (peer) => {
    await peer.send(encodeGreeting(0));
    await peer.untilClosed();
  }, async (uri) => {
    await denbdError(
      withNegotiation(uri, (session) => session.list(), { timeoutMs: TIMEOUT_MS }),
      "not-supported",
      /fixed newstyle/,
    );
  });
});

Deno.test("EXPORT_NAME for a missing export (the server hangs up) is kind not-found", async () => {
  await withFake(async (peer) => {
    await peer.send(encodeGreeting(NBD_HANDSHAKE_FLAG.NO_ZEROES));
    await peer.reader.readExact(4);
    await peer.option();
    peer.close();
  }, async (uri) => {
    await denbdError(NbdClient.connect(uri, { timeoutMs: TIMEOUT_MS }), "not-found", /'disk'/);
  });
});

for (
  const [what, sizes] of [
    ["a minimum that is not a power of two", [3, 4096, 65536]],
    ["a preferred size below the minimum", [4096, 512, 65536]],
    ["a maximum below the preferred size", [512, 4096, 1024]],
    ["a minimum over 64 KiB", [128 * KiB, 128 * KiB, MiB]],
    ["a preferred size below 512", [1, 256, 65536]],
    ["a maximum that is not a multiple of the minimum", [512, 4096, 5000]],
  ] as const
) {
  Deno.test(`invalid block sizes are ignored: ${what}`, async () => {
    await withFake(
      serving({ blockSizes: sizes }, async (peer) => {
        await serveRead(peer);
        await peer.untilClosed();
      }),
      async (uri) => {
        await usingClient(uri, async (client) => {
          assert.equal(client.details.blockSizes, undefined);
          assert.equal(client.minimumBlock, 1);
          assert.equal(client.maxPayload, NBD_LIMIT.MAX_PAYLOAD);
          assert.deepEqual(await client.read(1, 3), pattern(1, 3));
        });
      },
    );
  });
}

Deno.test("valid block sizes are obeyed: reads split to the maximum, unaligned refused", async () => {
  let peer!: FakePeer;
  await withFake(
    serving({ blockSizes: [512, 4096, 8192] }, async (server) => {
      peer = server;
      // The client sends all pieces before any reply: answer them in reverse order.
      const requests = [await server.request(), await server.request(), await server.request()];
      for (const request of requests.reverse()) await serveRead(server, request);
      await server.untilClosed();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        assert.deepEqual(client.details.blockSizes, {
          minimum: 512,
          preferred: 4096,
          maximum: 8192,
        });
        assert.equal(client.maxPayload, 8192);
        assert.deepEqual(await client.read(1024, 20 * KiB), pattern(1024, 20 * KiB));
        await denbdError(client.read(100, 512), "invalid", /not aligned to the server's 512-byte/);
        await denbdError(client.write(0, new Uint8Array(100)), "invalid", /not aligned/);
        await denbdError(client.zero(512, 1), "invalid", /not aligned/);
      });
    },
  );
  assert.deepEqual(
    peer.requests.map(({ offset, length }) => [offset, length]),
    [[1024, 8192], [1024 + 8192, 8192], [1024 + 16384, 4096]],
  );
});

Deno.test("zero-length requests are answered without asking the server", async () => {
  let peer!: FakePeer;
  await withFake(
    serving({
      flags: WRITABLE | NBD_FLAG.SEND_CACHE,
      contexts: { "base:allocation": 1 },
    }, async (server) => {
      peer = server;
      const flush = await server.request();
      await server.send(simpleReply(flush.cookie));
      await server.untilClosed();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        assert.deepEqual(await client.read(4096, 0), new Uint8Array());
        await client.write(4096, new Uint8Array());
        await client.zero(4096, 0);
        await client.trim(4096, 0);
        await client.cache(4096, 0);
        assert.deepEqual(await client.blockStatus(4096, 0), []);
        await client.flush();
      }, { metaContexts: ["base:allocation"] });
    },
  );
  assert.deepEqual(peer.requests.map((request) => request.type), [NBD_CMD.FLUSH]);
});

Deno.test("out-of-order chunks and holes are reassembled", async () => {
  await withFake(
    serving({}, async (peer) => {
      const { cookie, offset } = await peer.request();
      await peer.send(
        dataChunk(cookie, offset + 3000, pattern(offset + 3000, 1096), false),
        holeChunk(cookie, offset + 1000, 2000, false),
        dataChunk(cookie, offset, pattern(offset, 1000), false),
        noneChunk(cookie),
      );
      await peer.untilClosed();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        const expected = pattern(8192, 4096);
        expected.fill(0, 1000, 3000);
        assert.deepEqual(await client.read(8192, 4096), expected);
      });
    },
  );
});

// ---------------------------------------------------------------------------
// Transmission misbehaviour

Deno.test("a reply with a bad magic is a protocol error", async () => {
  await withFake(
    serving({}, async (peer) => {
      const { cookie } = await peer.request();
      const reply = simpleReply(cookie);
      new DataView(reply.buffer).setUint32(0, 0x12345678);
      await peer.send(reply);
      await peer.untilClosed();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        await protocolError(client.flush(), /bad magic 0x12345678/);
      });
    },
  );
});

for (const kind of ["simple", "structured"] as const) {
  Deno.test(`a ${kind} reply to an unknown cookie is a protocol error`, async () => {
    await withFake(
      serving({}, async (peer) => {
        const { cookie } = await peer.request();
        await peer.send(kind === "simple" ? simpleReply(cookie + 99n) : noneChunk(cookie + 99n));
        await peer.untilClosed();
      }),
      async (uri) => {
        await usingClient(uri, async (client) => {
          await protocolError(client.flush(), /unknown cookie/);
        });
      },
    );
  });
}

Deno.test("a simple reply to a read after structured replies is a protocol error", async () => {
  await withFake(
    serving({}, async (peer) => {
      const { cookie, offset, length } = await peer.request();
      await peer.send(simpleReply(cookie, 0, pattern(offset, length)));
      await peer.untilClosed();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        await protocolError(client.read(0, 512), /simple reply to a read/);
      });
    },
  );
});

Deno.test("a simple reply to block status is a protocol error", async () => {
  await withFake(
    serving({ contexts: { "base:allocation": 1 } }, async (peer) => {
      const { cookie } = await peer.request();
      await peer.send(simpleReply(cookie));
      await peer.untilClosed();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        await protocolError(client.blockStatus(0, 4096), /simple reply to a block status/);
      }, { metaContexts: ["base:allocation"] });
    },
  );
});

Deno.test("a structured chunk that was not negotiated is a protocol error", async () => {
  await withFake(
    serving({ structured: false }, async (peer) => {
      const { cookie } = await peer.request();
      await peer.send(noneChunk(cookie));
      await peer.untilClosed();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        await protocolError(client.flush(), /structured reply that was not negotiated/);
      });
    },
  );
});

Deno.test("a read reply that ends before all the data arrived is a protocol error", async () => {
  await withFake(
    serving({}, async (peer) => {
      const { cookie, offset } = await peer.request();
      await peer.send(dataChunk(cookie, offset, pattern(offset, 1024), false), noneChunk(cookie));
      await peer.untilClosed();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        await protocolError(client.read(0, 4096), /without all the data/);
      });
    },
  );
});

Deno.test("a read reply that is only a NONE chunk is a protocol error", async () => {
  await withFake(
    serving({}, async (peer) => {
      const { cookie } = await peer.request();
      await peer.send(noneChunk(cookie));
      await peer.untilClosed();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        await protocolError(client.read(0, 4096), /without all the data/);
      });
    },
  );
});

for (
  const [where, at, size] of [
    ["before the request", 4096 - 512, 1024],
    ["past the end of the request", 4096 + 3584, 1024],
    ["entirely elsewhere", 64 * KiB, 512],
  ] as const
) {
  Deno.test(`a data chunk ${where} is a protocol error`, async () => {
    await withFake(
      serving({}, async (peer) => {
        const { cookie } = await peer.request();
        await peer.send(dataChunk(cookie, at, pattern(at, size)));
        await peer.untilClosed();
      }),
      async (uri) => {
        await usingClient(uri, async (client) => {
          await protocolError(client.read(4096, 4096), /outside the read of 4096 at 4096/);
        });
      },
    );
  });
}

Deno.test("a hole chunk outside the request is a protocol error", async () => {
  await withFake(
    serving({}, async (peer) => {
      const { cookie } = await peer.request();
      await peer.send(holeChunk(cookie, 0, 8192));
      await peer.untilClosed();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        await protocolError(client.read(0, 4096), /outside the read/);
      });
    },
  );
});

Deno.test("overlapping chunks in one read reply are a protocol error", async () => {
  await withFake(
    serving({}, async (peer) => {
      const { cookie, offset } = await peer.request();
      await peer.send(
        dataChunk(cookie, offset, pattern(offset, 3000), false),
        holeChunk(cookie, offset + 2048, 2048, true),
      );
      await peer.untilClosed();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        await protocolError(client.read(0, 4096), /overlapping chunks/);
      });
    },
  );
});

for (
  const [type, name, message] of [
    [NBD_REPLY_TYPE.OFFSET_DATA, "OFFSET_DATA", /outside the read/],
    [NBD_REPLY_TYPE.OFFSET_HOLE, "OFFSET_HOLE", /OFFSET_HOLE chunk of 4294967295 bytes/],
    [NBD_REPLY_TYPE.NONE, "NONE", /malformed NONE chunk/],
    [NBD_REPLY_TYPE.ERROR, "ERROR", /error chunk of 4294967295 bytes/],
    [NBD_REPLY_TYPE.BLOCK_STATUS, "BLOCK_STATUS", /block status .*4294967295 bytes/],
    [77, "an unknown type", /unknown chunk type 77/],
  ] as const
) {
  Deno.test(`a ${name} chunk claiming 4 GiB fails at once, without allocating it`, async () => {
    const status = type === NBD_REPLY_TYPE.BLOCK_STATUS;
    await withFake(
      serving({ contexts: { "base:allocation": 1 } }, async (peer) => {
        const { cookie } = await peer.request();
        const offset = new Uint8Array(8);
        await peer.send(chunkHeader(cookie, type, 4 * GiB - 1), offset);
        await peer.untilClosed();
      }),
      async (uri) => {
        await usingClient(uri, async (client) => {
          const before = Deno.memoryUsage().rss;
          await protocolError(status ? client.blockStatus(0, 4096) : client.read(0, 4096), message);
          assert.ok(Deno.memoryUsage().rss - before < 256 * MiB, "the client allocated the claim");
        }, { metaContexts: ["base:allocation"] });
      },
    );
  });
}

Deno.test("block status for a context id that was not negotiated is a protocol error", async () => {
  await withFake(
    serving({ contexts: { "base:allocation": 1 } }, async (peer) => {
      const { cookie, length } = await peer.request();
      await peer.send(statusChunk(cookie, 2, [{ length, flags: 0 }]));
      await peer.untilClosed();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        await protocolError(client.blockStatus(0, 4096), /unknown context id 2/);
      }, { metaContexts: ["base:allocation"] });
    },
  );
});

Deno.test("block status missing a negotiated context is a protocol error", async () => {
  const contexts = { "base:allocation": 1, "qemu:allocation-depth": 2 };
  await withFake(
    serving({ contexts }, async (peer) => {
      const { cookie, length } = await peer.request();
      await peer.send(statusChunk(cookie, 1, [{ length, flags: 0 }]));
      await peer.untilClosed();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        assert.deepEqual(client.contexts, ["base:allocation", "qemu:allocation-depth"]);
        await protocolError(client.blockStatus(0, 4096), /no status for qemu:allocation-depth/);
      }, { metaContexts: Object.keys(contexts) });
    },
  );
});

Deno.test("two status chunks for one context are a protocol error", async () => {
  await withFake(
    serving({ contexts: { "base:allocation": 1 } }, async (peer) => {
      const { cookie, length } = await peer.request();
      await peer.send(
        statusChunk(cookie, 1, [{ length, flags: 0 }], false),
        statusChunk(cookie, 1, [{ length, flags: 0 }], true),
      );
      await peer.untilClosed();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        await protocolError(client.blockStatus(0, 4096), /two chunks for base:allocation/);
      }, { metaContexts: ["base:allocation"] });
    },
  );
});

for (
  const [what, descriptors] of [
    ["two extents", [{ length: 1024, flags: 0 }, { length: 1024, flags: NBD_STATE.HOLE }]],
    ["an extent longer than the request", [{ length: 8192, flags: 0 }]],
  ] as const
) {
  Deno.test(`REQ_ONE answered with ${what} is a protocol error`, async () => {
    await withFake(
      serving({ contexts: { "base:allocation": 1 } }, async (peer) => {
        const { cookie } = await peer.request();
        await peer.send(statusChunk(cookie, 1, [...descriptors]));
        await peer.untilClosed();
      }),
      async (uri) => {
        await usingClient(uri, async (client) => {
          await protocolError(
            client.blockStatus(0, 4096, { reqOne: true }),
            /ignored REQ_ONE for base:allocation/,
          );
        }, { metaContexts: ["base:allocation"] });
      },
    );
  });
}

Deno.test("a zero-length extent is a protocol error", async () => {
  await withFake(
    serving({ contexts: { "base:allocation": 1 } }, async (peer) => {
      const { cookie } = await peer.request();
      await peer.send(statusChunk(cookie, 1, [{ length: 512, flags: 0 }, { length: 0, flags: 0 }]));
      await peer.untilClosed();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        await protocolError(client.blockStatus(0, 4096), /zero-length extent/);
      }, { metaContexts: ["base:allocation"] });
    },
  );
});

Deno.test("extents that continue after covering the request are a protocol error", async () => {
  await withFake(
    serving({ contexts: { "base:allocation": 1 } }, async (peer) => {
      const { cookie } = await peer.request();
      const descriptors = [{ length: 4096, flags: 0 }, { length: 4096, flags: 3 }];
      await peer.send(statusChunk(cookie, 1, descriptors));
      await peer.untilClosed();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        await protocolError(client.blockStatus(0, 4096), /past the requested range/);
      }, { metaContexts: ["base:allocation"] });
    },
  );
});

Deno.test("block status: the last extent may reach past the request; REQ_ONE's one extent", async () => {
  await withFake(
    serving({ contexts: { "base:allocation": 1, "qemu:allocation-depth": 2 } }, async (peer) => {
      const whole = await peer.request();
      await peer.send(
        statusChunk(whole.cookie, 2, [{ length: 64 * KiB, flags: 1 }], false),
        statusChunk(whole.cookie, 1, [{ length: 512, flags: 0 }, {
          length: 64 * KiB,
          flags: NBD_STATE.HOLE | NBD_STATE.ZERO,
        }]),
      );
      const one = await peer.request();
      assert.equal(one.flags & 8, 8, "REQ_ONE was not sent");
      await peer.send(
        statusChunk(one.cookie, 1, [{ length: 512, flags: 0 }], false),
        statusChunk(one.cookie, 2, [{ length: 1024, flags: 1 }]),
      );
      await peer.untilClosed();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        assert.deepEqual(await client.blockStatus(0, 4096), [
          { length: 512, flags: 0 },
          { length: 64 * KiB, flags: NBD_STATE.HOLE | NBD_STATE.ZERO },
        ]);
        assert.deepEqual(
          await client.blockStatus(0, 4096, { reqOne: true, context: "qemu:allocation-depth" }),
          [{ length: 1024, flags: 1 }],
        );
      }, { metaContexts: ["base:allocation", "qemu:allocation-depth"] });
    },
  );
});

Deno.test("content and status chunks in reply to the wrong command are protocol errors", async () => {
  await withFake(
    serving({ contexts: { "base:allocation": 1 } }, async (peer) => {
      const write = await peer.request();
      await peer.send(dataChunk(write.cookie, 0, new Uint8Array(512)));
      await peer.untilClosed();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        await protocolError(client.write(0, new Uint8Array(512)), /read data in reply to WRITE/);
      }, { metaContexts: ["base:allocation"] });
    },
  );
  await withFake(
    serving({ contexts: { "base:allocation": 1 } }, async (peer) => {
      const read = await peer.request();
      await peer.send(statusChunk(read.cookie, 1, [{ length: 512, flags: 0 }]));
      await peer.untilClosed();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        await protocolError(client.read(0, 512), /block status in reply to READ/);
      }, { metaContexts: ["base:allocation"] });
    },
  );
});

Deno.test("a silent server times out, naming the request waited for", async () => {
  await withFake(
    serving({}, async (peer) => {
      await peer.request();
      await peer.untilClosed();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        const started = performance.now();
        const error = await denbdError(
          client.read(8192, 4096),
          "io",
          /within 0\.3s.*READ of 4096 bytes at 8192/,
        );
        assert.ok(performance.now() - started >= TIMEOUT_MS - 20);
        assert.equal(await failure(client.flush()), error);
      });
    },
  );
});

Deno.test("a server that stalls part-way through a reply times out", async () => {
  await withFake(
    serving({}, async (peer) => {
      const { cookie, offset } = await peer.request();
      await peer.send(dataChunk(cookie, offset, pattern(offset, 4096)).subarray(0, 100));
      await peer.untilClosed();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        await denbdError(client.read(0, 4096), "io", /within 0\.3s/);
      });
    },
  );
});

for (
  const [where, cut] of [
    ["in a chunk header", 10],
    ["in a chunk's data", 100],
    ["between chunks", 20 + 8 + 1024],
  ] as const
) {
  Deno.test(`a server that hangs up ${where} fails the read with a clear error`, async () => {
    await withFake(
      serving({}, async (peer) => {
        const { cookie, offset } = await peer.request();
        const reply = concatBytes(
          dataChunk(cookie, offset, pattern(offset, 1024), false),
          dataChunk(cookie, offset + 1024, pattern(offset + 1024, 3072)),
        );
        await peer.send(reply.subarray(0, cut));
        peer.close();
      }),
      async (uri) => {
        await usingClient(uri, async (client) => {
          await denbdError(client.read(0, 4096), "io", /closed the connection/);
        });
      },
    );
  });
}

Deno.test("a server that hangs up in the middle of a simple read reply fails the read", async () => {
  await withFake(
    serving({ structured: false }, async (peer) => {
      const { cookie, offset } = await peer.request();
      await peer.send(simpleReply(cookie, 0, pattern(offset, 1000)));
      peer.close();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        await denbdError(client.read(0, 4096), "io", /closed the connection/);
      });
    },
  );
});

Deno.test("a server that hangs up with requests unanswered fails them all", async () => {
  await withFake(
    serving({}, async (peer) => {
      await peer.request();
      await peer.request();
      peer.close();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        const [first, second] = await Promise.all([
          failure(client.read(0, 512)),
          failure(client.read(512, 512)),
        ]);
        assert.equal(first, second);
        assert.match(first.message, /closed the connection with 2 request\(s\) unanswered/);
      });
    },
  );
});

const ERRNO_KINDS: [number, string][] = [
  [NBD_ERROR.EPERM, "read-only"],
  [NBD_ERROR.EIO, "io"],
  [NBD_ERROR.EINVAL, "invalid"],
  [NBD_ERROR.ENOSPC, "no-space"],
  [NBD_ERROR.EOVERFLOW, "too-large"],
  [NBD_ERROR.ENOTSUP, "not-supported"],
  [NBD_ERROR.ENOMEM, kindOfNbdError(NBD_ERROR.ENOMEM)],
  [42, "invalid"],
];

Deno.test("error chunks become NbdCommandError with errno, kind and message; the connection lives on", async () => {
  await withFake(
    serving({}, async (peer) => {
      for (const [errno] of ERRNO_KINDS) {
        const { cookie, offset } = await peer.request();
        // Partial data, then the error: the read must fail, not return the bytes.
        await peer.send(
          dataChunk(cookie, offset, pattern(offset, 512), false),
          errorOffsetChunk(cookie, errno, `injected ${errno}`, offset + 100, false),
          holeChunk(cookie, offset + 512, 512),
        );
      }
      const write = await peer.request();
      await peer.send(errorChunk(write.cookie, NBD_ERROR.ENOSPC, ""));
      await serveRead(peer);
      await peer.untilClosed();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        for (const [errno, kind] of ERRNO_KINDS) {
          const error = await failure(client.read(0, 1024));
          assert.ok(error instanceof NbdCommandError, error.stack);
          assert.equal(error.errno, errno);
          assert.equal(error.kind, kind);
          assert.equal(error.kind, kindOfNbdError(errno));
          assert.match(error.message, new RegExp(`^read: .*\\(server: injected ${errno}\\)$`));
        }
        const error = await denbdError(client.write(0, new Uint8Array(512)), "no-space", /./);
        assert.equal(error.message, "write: No space left on device");
        assert.deepEqual(await client.read(2048, 512), pattern(2048, 512));
      });
    },
  );
});

Deno.test("an unknown error chunk type is an error of the request, not of the connection", async () => {
  await withFake(
    serving({}, async (peer) => {
      const { cookie } = await peer.request();
      const payload = concatBytes(encodeErrorChunk(NBD_ERROR.EIO, "odd"), new Uint8Array(4));
      await peer.send(chunk(cookie, 0x8000 + 99, payload, true));
      await serveRead(peer);
      await peer.untilClosed();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        const error = await failure(client.read(0, 512));
        assert.ok(error instanceof NbdCommandError);
        assert.equal(error.errno, NBD_ERROR.EIO);
        assert.match(error.message, /server: odd/);
        assert.deepEqual(await client.read(0, 512), pattern(0, 512));
      });
    },
  );
});

Deno.test("an error chunk whose message overruns it, or with error 0, is a protocol error", async () => {
  await withFake(
    serving({}, async (peer) => {
      const { cookie } = await peer.request();
      const payload = encodeErrorChunk(NBD_ERROR.EIO, "message");
      new DataView(payload.buffer).setUint16(4, 200);
      await peer.send(chunk(cookie, NBD_REPLY_TYPE.ERROR, payload));
      await peer.untilClosed();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        await protocolError(client.read(0, 512), /overruns/);
      });
    },
  );
  await withFake(
    serving({}, async (peer) => {
      const { cookie } = await peer.request();
      await peer.send(errorChunk(cookie, 0, "fine?"));
      await peer.untilClosed();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        await protocolError(client.read(0, 512), /error 0/);
      });
    },
  );
});

Deno.test("an error offset outside the request is a protocol error", async () => {
  await withFake(
    serving({}, async (peer) => {
      const { cookie, offset, length } = await peer.request();
      await peer.send(errorOffsetChunk(cookie, NBD_ERROR.EIO, "bad sector", offset + length));
      await peer.untilClosed();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        await protocolError(
          client.read(4096, 4096),
          /error at 8192, outside the request of 4096 at 4096/,
        );
      });
    },
  );
});

Deno.test("after a fatal protocol error every request rejects with that same error", async () => {
  await withFake(
    serving({}, async (peer) => {
      const first = await peer.request();
      const second = await peer.request();
      await peer.send(holeChunk(first.cookie, 1 * MiB, 512));
      await serveRead(peer, second);
      await peer.untilClosed();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        const [first, second] = await Promise.all([
          protocolError(client.read(0, 512), /outside the read/),
          failure(client.read(512, 512)),
        ]);
        assert.equal(second, first);
        assert.equal(await failure(client.read(0, 512)), first);
        assert.equal(await failure(client.flush()), first);
      });
    },
  );
});

Deno.test("pipelined requests are answered out of order to the right callers", async () => {
  await withFake(
    serving({}, async (peer) => {
      const requests = [];
      for (let i = 0; i < 8; i++) requests.push(await peer.request());
      for (const request of requests.reverse()) {
        if (request.type === NBD_CMD.READ) await serveRead(peer, request);
        else await peer.send(noneChunk(request.cookie));
      }
      await peer.untilClosed();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        const reads = [0, 1, 2, 3, 4, 5].map((i) => client.read(i * 1000, 100 + i));
        const others = [client.write(0, new Uint8Array(10)), client.zero(100, 100)];
        const results = await Promise.all(reads);
        await Promise.all(others);
        results.forEach((data, i) => assert.deepEqual(data, pattern(i * 1000, 100 + i)));
      });
    },
  );
});

Deno.test("disconnect waits for requests in flight, then sends NBD_CMD_DISC", async () => {
  let peer!: FakePeer;
  await withFake(
    serving({}, async (server) => {
      peer = server;
      const read = await server.request();
      await new Promise((resolve) => setTimeout(resolve, 50));
      await serveRead(server, read);
      await server.request();
      await server.untilClosed();
    }),
    async (uri) => {
      const client = await NbdClient.connect(uri, { timeoutMs: TIMEOUT_MS });
      const read = client.read(0, 512);
      await client.disconnect();
      assert.deepEqual(await read, pattern(0, 512));
      await denbdError(client.read(0, 512), "shutdown", /closed by the client/);
    },
  );
  assert.deepEqual(peer.requests.map((request) => request.type), [NBD_CMD.READ, NBD_CMD.DISC]);
});

Deno.test("NBD_ESHUTDOWN makes the client disconnect softly and refuse new requests", async () => {
  let peer!: FakePeer;
  await withFake(
    serving({}, async (server) => {
      peer = server;
      const first = await server.request();
      const second = await server.request();
      await server.send(errorChunk(first.cookie, NBD_ERROR.ESHUTDOWN, "going down"));
      await serveRead(server, second);
      await server.request();
      await server.untilClosed();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        const [first, second] = await Promise.allSettled([
          client.read(0, 512),
          client.read(512, 512),
        ]);
        assert.equal(first.status, "rejected");
        assert.equal((first as PromiseRejectedResult).reason.kind, "shutdown");
        assert.deepEqual((second as PromiseFulfilledResult<Uint8Array>).value, pattern(512, 512));
        await denbdError(client.read(0, 512), "shutdown", /shut/);
      });
    },
  );
  assert.deepEqual(
    peer.requests.map((request) => request.type),
    [NBD_CMD.READ, NBD_CMD.READ, NBD_CMD.DISC],
  );
});

Deno.test("a request kept alive by endless error chunks fails", async () => {
  await withFake(
    serving({}, async (peer) => {
      const { cookie } = await peer.request();
      for (let i = 0; i < 1100; i++) await peer.send(errorChunk(cookie, NBD_ERROR.EIO, "", false));
      await peer.untilClosed();
    }),
    async (uri) => {
      await usingClient(uri, async (client) => {
        await protocolError(client.read(0, 512), /too many error chunks/);
      });
    },
  );
});

Deno.test("endless replies to one option fail instead of growing without bound", async () => {
  await withFake(
    async (peer) => {
      await peer.send(encodeGreeting(NBD_HANDSHAKE_FLAG.FIXED_NEWSTYLE));
      await peer.reader.readExact(4);
      const option = await peer.option();
      const server = encodeOptionReply(
        option.option,
        NBD_REP.SERVER,
        encodeRepServer("x".repeat(60000)),
      );
      for (let i = 0; i < 300; i++) await peer.send(server);
      await peer.untilClosed();
    },
    async (uri) => {
      await denbdError(
        withNegotiation(uri, (session) => session.list(), { timeoutMs: TIMEOUT_MS }),
        "io",
        /too much in reply to NBD_OPT_LIST/,
      );
    },
  );
});
