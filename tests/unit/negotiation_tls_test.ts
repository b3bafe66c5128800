/**
 * The client's STARTTLS step against an in-process fake server: "require"
 * never falls back to plain text (a refusal ends the session with
 * NBD_OPT_ABORT and nothing else is sent), "allow" goes on in plain text,
 * "disable" sends no STARTTLS; after the acknowledgement the handshake runs,
 * the session continues over its stream and forgets what was negotiated;
 * plain-text bytes the server sends after its acknowledgement are refused;
 * the handshake is bounded by the session's timeout. The TLS handshake itself
 * is a stand-in here (a pass-through stream), except in the last test, where
 * GnuTLS's waits for a server that stays silent after its acknowledgement
 * (the connection is closed, which Deno's resource sanitizer checks); the
 * real handshake is exercised against real servers in
 * tests/interop/tls_client_test.ts.
 */

import assert from "node:assert/strict";
import { DenbdError } from "../../src/errors.ts";
import { BufferedReader } from "../../src/io/buffered-reader.ts";
import { type ByteStream, writeAll } from "../../src/io/byte-stream.ts";
import { WriteQueue } from "../../src/io/write-queue.ts";
import { NbdClient } from "../../src/nbd/client/client.ts";
import { NegotiationSession } from "../../src/nbd/client/negotiation.ts";
import { negotiateTls, type TlsMode } from "../../src/nbd/client/tls.ts";
import { nameOf, NBD_HANDSHAKE_FLAG, NBD_OPT, NBD_REP } from "../../src/nbd/protocol.ts";
import {
  decodeOptionHeader,
  encodeGreeting,
  encodeOptionReply,
  encodeRepServer,
  ProtocolError,
} from "../../src/nbd/wire.ts";

/** The client's bound on each wait in these tests. */
const TIMEOUT_MS = 500;

/** How the fake server answers NBD_OPT_STARTTLS. */
type StartTlsAnswer = "ack" | "ack+silent" | "ack+injected" | "server-reply" | number;

/** A fake server: greets, answers STARTTLS as told, ACKs every other option; records options. */
async function fakeServer(
  listener: Deno.Listener,
  answer: StartTlsAnswer,
  handshakeFlags: number,
  options: number[],
): Promise<void> {
  const conn = await listener.accept();
  const reader = new BufferedReader(conn);
  try {
    await writeAll(conn, encodeGreeting(handshakeFlags));
    await reader.readExact(4);
    while (true) {
      const header = await reader.readExactOrEof(16);
      if (header === null) return;
      const { option, length } = decodeOptionHeader(header.slice());
      await reader.skip(length);
      options.push(option);
      if (option === NBD_OPT.ABORT) {
        await writeAll(conn, encodeOptionReply(option, NBD_REP.ACK));
        return;
      }
      if (option !== NBD_OPT.STARTTLS) {
        await writeAll(conn, encodeOptionReply(option, NBD_REP.ACK));
      } else if (answer === "ack") {
        await writeAll(conn, encodeOptionReply(option, NBD_REP.ACK));
      } else if (answer === "ack+silent") {
        // Acknowledge, then read whatever comes (the TLS ClientHello) and never answer.
        await writeAll(conn, encodeOptionReply(option, NBD_REP.ACK));
        while (await conn.read(new Uint8Array(4096)) !== null) {
          // Silent.
        }
        return;
      } else if (answer === "ack+injected") {
        // The acknowledgement and plain-text bytes in one segment (nbdkit's CVE-2021-3716 case).
        const ack = encodeOptionReply(option, NBD_REP.ACK);
        const injected = encodeOptionReply(NBD_OPT.STRUCTURED_REPLY, NBD_REP.ACK);
        const both = new Uint8Array(ack.length + injected.length);
        both.set(ack);
        both.set(injected, ack.length);
        await writeAll(conn, both);
      } else if (answer === "server-reply") {
        await writeAll(conn, encodeOptionReply(option, NBD_REP.SERVER, encodeRepServer("x")));
        await writeAll(conn, encodeOptionReply(option, NBD_REP.ACK));
      } else await writeAll(conn, encodeOptionReply(option, answer));
    }
  } catch {
    // The client hung up.
  } finally {
    conn.close();
  }
}

/** A stand-in for a TLS session: passes bytes through, counting what it carried. */
class PassThrough implements ByteStream {
  written = 0;
  constructor(readonly transport: Deno.Conn) {}
  read(buffer: Uint8Array): Promise<number | null> {
    return this.transport.read(buffer);
  }
  async write(data: Uint8Array): Promise<number> {
    const count = await this.transport.write(data);
    this.written += count;
    return count;
  }
  close(): void {
    this.transport.close();
  }
}

/** What one session against the fake saw. */
interface Outcome {
  /** Options the server received, in order. */
  readonly options: number[];
  /** The handshake stand-in, if it was called. */
  readonly handshake: PassThrough | null;
  /** What `body` resolved to, or the error it threw. */
  readonly result: { value: unknown } | { error: unknown };
}

/**
 * Start a session with a fake server answering STARTTLS with `answer`, run
 * `body` with it and a handshake stand-in, then close.
 */
async function session(
  answer: StartTlsAnswer,
  body: (
    session: NegotiationSession,
    handshake: () => Promise<ByteStream>,
  ) => Promise<unknown>,
  options: { handshakeFlags?: number; handshakeDelayMs?: number } = {},
): Promise<Outcome> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const seen: number[] = [];
  const server = fakeServer(
    listener,
    answer,
    options.handshakeFlags ?? NBD_HANDSHAKE_FLAG.FIXED_NEWSTYLE | NBD_HANDSHAKE_FLAG.NO_ZEROES,
    seen,
  );
  const conn = await Deno.connect({
    hostname: "127.0.0.1",
    port: (listener.addr as Deno.NetAddr).port,
  });
  const reader = new BufferedReader(conn);
  const writer = new WriteQueue(conn);
  let handshake: PassThrough | null = null;
  let result: Outcome["result"];
  try {
    const started = await NegotiationSession.start({ reader, writer, timeoutMs: TIMEOUT_MS });
    result = {
      value: await body(started, async () => {
        handshake = new PassThrough(conn);
        if (options.handshakeDelayMs) {
          await new Promise((resolve) => setTimeout(resolve, options.handshakeDelayMs));
        }
        return handshake;
      }),
    };
  } catch (error) {
    result = { error };
  }
  conn.close();
  await server;
  listener.close();
  return { options: seen, handshake, result };
}

/** `outcome` failed with a DenbdError of `kind` whose message matches `message`. */
function failed(outcome: Outcome, kind: string, message: RegExp): DenbdError {
  assert.ok("error" in outcome.result, `expected a failure, got ${JSON.stringify(outcome.result)}`);
  const { error } = outcome.result;
  assert.ok(error instanceof DenbdError, `not a DenbdError: ${error}`);
  assert.equal(error.kind, kind);
  assert.match(error.message, message);
  return error;
}

for (const refusal of [NBD_REP.ERR_UNSUP, NBD_REP.ERR_POLICY, NBD_REP.ERR_INVALID]) {
  Deno.test(`require: a refusal (${nameOf(NBD_REP, refusal)}) ends the session, never plain text`, async () => {
    const outcome = await session(refusal, async (started, handshake) => {
      await negotiateTls(started, "require", handshake);
      // Never reached: had it been, this would be an option sent in plain text.
      await started.requestStructuredReplies();
    });
    failed(outcome, "not-supported", /refused STARTTLS.*TLS is required/);
    assert.deepEqual(outcome.options, [NBD_OPT.STARTTLS, NBD_OPT.ABORT]);
    assert.equal(outcome.handshake, null);
  });

  Deno.test(`allow: a refusal (${nameOf(NBD_REP, refusal)}) goes on in plain text`, async () => {
    const outcome = await session(refusal, async (started, handshake) => {
      const secured = await negotiateTls(started, "allow", handshake);
      const structured = await started.requestStructuredReplies();
      return { secured, structured, tls: started.tls };
    });
    assert.deepEqual(outcome.result, { value: { secured: null, structured: true, tls: false } });
    assert.deepEqual(outcome.options, [NBD_OPT.STARTTLS, NBD_OPT.STRUCTURED_REPLY]);
  });
}

Deno.test("disable: no STARTTLS is sent", async () => {
  const outcome = await session("ack", async (started, handshake) => {
    const secured = await negotiateTls(started, "disable", handshake);
    await started.requestStructuredReplies();
    return secured;
  });
  assert.deepEqual(outcome.result, { value: null });
  assert.deepEqual(outcome.options, [NBD_OPT.STRUCTURED_REPLY]);
  assert.equal(outcome.handshake, null);
});

for (const mode of ["require", "allow"] as const satisfies readonly TlsMode[]) {
  Deno.test(`${mode}: the acknowledgement starts the handshake, the session forgets and goes on over TLS`, async () => {
    const outcome = await session("ack", async (started, handshake) => {
      // Negotiated before TLS, so forgotten after it (the server must forget it too).
      assert.equal(await started.requestStructuredReplies(), true);
      const secured = await negotiateTls(started, mode, handshake);
      const forgotten = { structured: started.structured, contexts: started.contexts.size };
      const structured = await started.requestStructuredReplies();
      return { secured: secured !== null, tls: started.tls, forgotten, structured };
    });
    assert.deepEqual(outcome.result, {
      value: {
        secured: true,
        tls: true,
        forgotten: { structured: false, contexts: 0 },
        structured: true,
      },
    });
    assert.deepEqual(outcome.options, [
      NBD_OPT.STRUCTURED_REPLY,
      NBD_OPT.STARTTLS,
      NBD_OPT.STRUCTURED_REPLY,
    ]);
    // The option after STARTTLS went through the session's stream (16 bytes: one empty option).
    assert.equal(outcome.handshake?.written, 16);
  });
}

Deno.test("STARTTLS twice is refused by the client itself", async () => {
  const outcome = await session("ack", async (started, handshake) => {
    await negotiateTls(started, "require", handshake);
    await started.startTls(handshake);
  });
  failed(outcome, "invalid", /already runs over TLS/);
  assert.deepEqual(outcome.options, [NBD_OPT.STARTTLS]);
});

Deno.test("plain-text bytes after the acknowledgement are refused, not taken as TLS or options", async () => {
  for (const mode of ["require", "allow"] as const) {
    const outcome = await session(
      "ack+injected",
      (started, handshake) => negotiateTls(started, mode, handshake),
    );
    assert.ok("error" in outcome.result);
    assert.ok(outcome.result.error instanceof ProtocolError, `${outcome.result.error}`);
    assert.match(
      (outcome.result.error as Error).message,
      /server sent 20 bytes in plain text after acknowledging NBD_OPT_STARTTLS/,
    );
    assert.equal(outcome.handshake, null, "the handshake never started");
  }
});

Deno.test("a reply other than ACK or an error to STARTTLS is a protocol error", async () => {
  const outcome = await session(
    "server-reply",
    (started, handshake) => negotiateTls(started, "allow", handshake),
  );
  assert.ok("error" in outcome.result);
  assert.ok(outcome.result.error instanceof ProtocolError);
  assert.match(`${outcome.result.error}`, /unexpected SERVER reply to STARTTLS/);
  assert.equal(outcome.handshake, null);
});

Deno.test("a server without fixed newstyle: require fails before sending anything, allow goes on", async () => {
  const handshakeFlags = NBD_HANDSHAKE_FLAG.NO_ZEROES;
  const required = await session(
    "ack",
    (started, handshake) => negotiateTls(started, "require", handshake),
    { handshakeFlags },
  );
  failed(required, "not-supported", /does not support fixed newstyle.*TLS is required/);
  assert.deepEqual(required.options, []);
  const allowed = await session(
    "ack",
    (started, handshake) => negotiateTls(started, "allow", handshake),
    { handshakeFlags },
  );
  assert.deepEqual(allowed.result, { value: null });
  assert.deepEqual(allowed.options, []);
});

Deno.test("the TLS handshake is bounded by the session's timeout", async () => {
  const started = performance.now();
  const outcome = await session(
    "ack",
    (session, handshake) => negotiateTls(session, "require", handshake),
    { handshakeDelayMs: TIMEOUT_MS * 4 },
  );
  failed(outcome, "io", /did not answer within 0.5s \(waiting for the TLS handshake\)/);
  const elapsed = performance.now() - started;
  assert.ok(elapsed < TIMEOUT_MS * 3, `took ${elapsed}ms`);
});

Deno.test("the real handshake with a server silent after its ACK times out, and nothing leaks", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const options: number[] = [];
  // The fake acknowledges STARTTLS, then never answers the TLS ClientHello.
  const server = fakeServer(listener, "ack+silent", NBD_HANDSHAKE_FLAG.FIXED_NEWSTYLE, options);
  const { port } = listener.addr as Deno.NetAddr;
  const started = performance.now();
  await assert.rejects(
    NbdClient.connect(`nbds://127.0.0.1:${port}/`, { timeoutMs: TIMEOUT_MS }),
    (error: unknown) => {
      assert.ok(error instanceof DenbdError, `${error}`);
      assert.match(error.message, /waiting for the TLS handshake/);
      return true;
    },
  );
  const elapsed = performance.now() - started;
  assert.ok(elapsed < TIMEOUT_MS * 3, `took ${elapsed}ms`);
  await server;
  listener.close();
  assert.deepEqual(options, [NBD_OPT.STARTTLS]);
});
