/**
 * What the TLS unit tests share: a loopback TCP connection pair, both ends
 * handshaking at once (a side that fails closes its transport, as callers
 * do, so the other side ends too), and transports that misbehave on purpose.
 *
 * @module
 */

import type { ByteStream } from "../../src/io/byte-stream.ts";
import type { TlsCredentials } from "../../src/tls/credentials.ts";
import { type TlsHandshakeOptions, TlsSession } from "../../src/tls/session.ts";

/** Both ends of a fresh loopback TCP connection. */
export async function tcpPair(): Promise<{ server: Deno.Conn; client: Deno.Conn }> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const { port } = listener.addr as Deno.NetAddr;
    const [server, client] = await Promise.all([
      listener.accept(),
      Deno.connect({ hostname: "127.0.0.1", port }),
    ]);
    return { server, client };
  } finally {
    listener.close();
  }
}

/** How each side's handshake ended. */
export interface PairOutcome {
  readonly server: PromiseSettledResult<TlsSession>;
  readonly client: PromiseSettledResult<TlsSession>;
}

/** Handshake `server` and `client` credentials over a loopback pair; closes failed sides' transports. */
export async function handshakePair(
  serverCredentials: TlsCredentials,
  clientCredentials: TlsCredentials,
  clientOptions: TlsHandshakeOptions = {},
  wrapClient: (conn: Deno.Conn) => ByteStream = (conn) => conn,
): Promise<PairOutcome> {
  const { server, client } = await tcpPair();
  const clientTransport = wrapClient(client);
  const side = (transport: ByteStream, attempt: Promise<TlsSession>) =>
    attempt.catch((error) => {
      transport.close();
      throw error;
    });
  const [serverResult, clientResult] = await Promise.allSettled([
    side(server, TlsSession.handshake(server, serverCredentials)),
    side(clientTransport, TlsSession.handshake(clientTransport, clientCredentials, clientOptions)),
  ]);
  return { server: serverResult, client: clientResult };
}

/** Both sessions of an outcome that must have succeeded. */
export function sessions(outcome: PairOutcome): { server: TlsSession; client: TlsSession } {
  if (outcome.server.status === "rejected") throw outcome.server.reason;
  if (outcome.client.status === "rejected") throw outcome.client.reason;
  return { server: outcome.server.value, client: outcome.client.value };
}

/** Close every session that was made and wait until their transports are closed. */
export async function closeAll(outcome: PairOutcome): Promise<void> {
  const made = [outcome.server, outcome.client].flatMap((result) =>
    result.status === "fulfilled" ? [result.value] : []
  );
  for (const session of made) session.close();
  await Promise.all(made.map((session) => session.closed));
}

/** The message of a rejected side. */
export function failure(result: PromiseSettledResult<unknown>): string {
  if (result.status === "fulfilled") throw new Error("expected this side to fail");
  return result.reason instanceof Error ? result.reason.message : String(result.reason);
}

/** A transport that reads and writes one byte at a time. */
export function oneByteAtATime(stream: ByteStream): ByteStream {
  return {
    read: (buffer) => stream.read(buffer.subarray(0, Math.min(1, buffer.length))),
    write: (data) => stream.write(data.subarray(0, Math.min(1, data.length))),
    close: () => stream.close(),
  };
}

/** Read from `stream` until `length` bytes arrived; throws on a premature end. */
export async function readExactly(stream: ByteStream, length: number): Promise<Uint8Array> {
  const result = new Uint8Array(length);
  const chunk = new Uint8Array(256 * 1024);
  let done = 0;
  while (done < length) {
    const count = await stream.read(chunk.subarray(0, Math.min(chunk.length, length - done)));
    if (count === null) throw new Error(`end of stream after ${done} of ${length} bytes`);
    result.set(chunk.subarray(0, count), done);
    done += count;
  }
  return result;
}

/** `length` bytes of a pattern that differs at every offset modulo 251 and by `seed`. */
export function pattern(length: number, seed: number): Uint8Array {
  const data = new Uint8Array(length);
  for (let index = 0; index < length; index++) data[index] = (index * 7 + seed) % 251;
  return data;
}

/** Run `body`, failing it when it takes longer than `ms` (a stuck TLS exchange must not hang the run). */
export async function within<T>(ms: number, body: () => Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`took longer than ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([body(), expired]);
  } finally {
    clearTimeout(timer);
  }
}
