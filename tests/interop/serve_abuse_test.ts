/**
 * Clients abusing the transmission phase of `denbd serve` (a read-only
 * export is enough): pipelining requests and never reading the replies,
 * leaving with thousands of requests unanswered, asking block status of a
 * fragmented image over and over. Each costs the server one log line and
 * bounded memory, and another client is answered meanwhile.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  delay,
  makeSparseImage,
  type ServerProcess,
  startDenbd,
  withServer,
  withTempDir,
} from "./harness.ts";
import { NbdClient } from "../../src/nbd/client/client.ts";
import { NegotiationSession } from "../../src/nbd/client/negotiation.ts";
import { BufferedReader } from "../../src/io/buffered-reader.ts";
import { WriteQueue } from "../../src/io/write-queue.ts";
import { writeAll } from "../../src/io/byte-stream.ts";
import { encodeRequestHeader } from "../../src/nbd/wire.ts";
import { NBD_CMD } from "../../src/nbd/protocol.ts";

const MiB = 1024 * 1024;
const BLOCK = 4096;
/** How long another client may wait for an answer while one abuses the server (qemu-nbd: 0.1-0.6 s). */
const ANSWER_BOUND_MS = 2000;
/** Resident memory the server may gain while a client never reads its replies (the budget is 64 MiB). */
const RSS_GROWTH_BOUND_MB = 100;

/** A client past the handshake, speaking raw requests; `peer` is how the server's log names it. */
async function transmissionClient(server: ServerProcess, contexts: readonly string[] = []) {
  const { hostname, port } = new URL(server.uri);
  const conn = await Deno.connect({ hostname, port: Number(port) });
  const channel = {
    reader: new BufferedReader(conn),
    writer: new WriteQueue(conn),
    timeoutMs: 10_000,
  };
  const session = await NegotiationSession.start(channel);
  await session.requestStructuredReplies();
  if (contexts.length) await session.setMetaContexts("", contexts);
  await session.go("");
  return { conn, peer: `${hostname}:${(conn.localAddr as Deno.NetAddr).port}` };
}

/** `count` requests of `type` back to back, the i-th at `offsetOf(i)`. */
function pipeline(count: number, type: number, length: number, offsetOf: (i: number) => number) {
  const bytes = new Uint8Array(count * 28);
  for (let i = 0; i < count; i++) {
    const header = encodeRequestHeader({
      flags: 0,
      type,
      cookie: BigInt(i),
      offset: offsetOf(i),
      length,
    });
    bytes.set(header, i * 28);
  }
  return bytes;
}

/** Start sending `bytes` on `conn` without ever reading; resolves when sent or refused. */
function sendUnread(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  return writeAll(conn, bytes).catch(() => {});
}

/** Resolves after `ms`, or at once when `done` settles first. */
async function waitAtMost(ms: number, done: Promise<unknown>): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([done, new Promise((resolve) => timer = setTimeout(resolve, ms))]);
  clearTimeout(timer);
}

/** Milliseconds `action` took. */
async function timed(action: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await action();
  return performance.now() - started;
}

/** The server's log lines about `peer`. */
function linesAbout(server: ServerProcess, peer: string): string[] {
  return server.stderr().split("\n").filter((line) => line.includes(` (${peer}): `));
}

/** Wait (bounded) until the server has logged that it closed `peer`'s connection. */
async function connectionClosed(server: ServerProcess, peer: string): Promise<void> {
  for (const deadline = Date.now() + 20_000; Date.now() < deadline;) {
    if (linesAbout(server, peer).some((line) => line.includes("closing connection"))) return;
    await delay(50);
  }
}

/**
 * Wait (bounded) until the server has closed `peer`'s connection, and
 * require that to be the one line it logged about `peer`; returns that line.
 */
async function onlyLineAbout(server: ServerProcess, peer: string): Promise<string> {
  await connectionClosed(server, peer);
  const lines = linesAbout(server, peer);
  assert.equal(
    lines.length,
    1,
    `one line for the connection, got:\n${lines.slice(0, 5).join("\n")}`,
  );
  return lines[0];
}

/** The resident set size of process `pid`, in MB. */
function rssMb(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)![1]) / 1024;
}

/**
 * Run `body` with a scratch directory in memory (tmpfs) where there is one:
 * a disk file system may take seconds to free the thousands of extents of a
 * fragmented image.
 */
async function withMemoryDir<T>(body: (dir: string) => Promise<T>): Promise<T> {
  const tmpfs = "/dev/shm";
  const inMemory = await Deno.stat(tmpfs).then((info) => info.isDirectory, () => false);
  const dir = await Deno.makeTempDir({ dir: inMemory ? tmpfs : undefined, prefix: "denbd-test-" });
  try {
    return await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A sparse image of `size` bytes with every other 4 KiB block written: size / 4 KiB extents. */
function fragmentedImage(path: string, size: number): void {
  const file = Deno.openSync(path, { write: true, create: true, truncate: true });
  try {
    file.truncateSync(size);
    const data = new Uint8Array(BLOCK).fill(1);
    for (let offset = 0; offset < size; offset += 2 * BLOCK) {
      file.seekSync(offset, Deno.SeekMode.Start);
      for (let done = 0; done < BLOCK;) done += file.writeSync(data.subarray(done));
    }
  } finally {
    file.close();
  }
}

Deno.test(
  "a client that pipelines reads and leaves without reading costs one log line and delays no one",
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, 16 * MiB, [[0, 16 * MiB]]);
      await withServer(
        startDenbd,
        { args: ["-r", "-f", "raw", "-t", "-e", "0", image] },
        async (server) => {
          const bystander = await NbdClient.connect(server.uri);
          try {
            const abuser = await transmissionClient(server);
            const requests = pipeline(20_000, NBD_CMD.READ, BLOCK, (i) => (i % 4096) * BLOCK);
            const sending = sendUnread(abuser.conn, requests);
            await waitAtMost(2000, sending);
            abuser.conn.close();
            await sending;
            const waited = await timed(() => bystander.read(0, BLOCK));
            assert.ok(waited < ANSWER_BOUND_MS, `another client waited ${waited.toFixed(0)} ms`);
            const line = await onlyLineAbout(server, abuser.peer);
            assert.match(line, /closing connection: (reply failed|connection reset)/);
          } finally {
            await bystander.disconnect();
          }
        },
      );
    });
  },
);

Deno.test(
  "block status of a fragmented image: a client that never reads holds bounded memory and delays no one",
  async () => {
    await withMemoryDir(async (dir) => {
      const image = join(dir, "fragmented.img");
      const size = 64 * MiB;
      fragmentedImage(image, size);
      await withServer(
        startDenbd,
        { args: ["-r", "-f", "raw", "-t", "-e", "0", image] },
        async (server) => {
          const pid = server.child.pid;
          const bystander = await NbdClient.connect(server.uri, {
            metaContexts: ["base:allocation"],
          });
          try {
            await bystander.blockStatus(0, size);
            const baseline = rssMb(pid);
            let peak = baseline;
            const sampler = setInterval(() => peak = Math.max(peak, rssMb(pid)), 20);
            try {
              const abuser = await transmissionClient(server, ["base:allocation"]);
              const requests = pipeline(2000, NBD_CMD.BLOCK_STATUS, size, () => 0);
              const sending = sendUnread(abuser.conn, requests);
              await waitAtMost(1000, sending);
              const waited = await timed(() => bystander.read(0, BLOCK));
              assert.ok(waited < ANSWER_BOUND_MS, `another client waited ${waited.toFixed(0)} ms`);
              await waitAtMost(2000, sending);
              abuser.conn.close();
              await sending;
              const waitedAfter = await timed(() => bystander.blockStatus(0, size));
              assert.ok(
                waitedAfter < ANSWER_BOUND_MS,
                `another client waited ${waitedAfter.toFixed(0)} ms`,
              );
              await onlyLineAbout(server, abuser.peer);
            } finally {
              clearInterval(sampler);
            }
            assert.ok(
              peak - baseline < RSS_GROWTH_BOUND_MB,
              `RSS grew from ${baseline.toFixed(0)} MB to ${peak.toFixed(0)} MB`,
            );
          } finally {
            await bystander.disconnect();
          }
        },
      );
    });
  },
);

Deno.test(
  "a client that pipelines the largest reads and never reads holds the in-flight budget at most",
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, 64 * MiB, [[0, 64 * MiB]]);
      await withServer(
        startDenbd,
        { args: ["-r", "-f", "raw", "-t", "-e", "0", image] },
        async (server) => {
          const pid = server.child.pid;
          const bystander = await NbdClient.connect(server.uri);
          try {
            const baseline = rssMb(pid);
            let peak = baseline;
            const sampler = setInterval(() => peak = Math.max(peak, rssMb(pid)), 20);
            try {
              const abuser = await transmissionClient(server);
              const requests = pipeline(200, NBD_CMD.READ, 32 * MiB, (i) => (i % 2) * 32 * MiB);
              const sending = sendUnread(abuser.conn, requests);
              await waitAtMost(2000, sending);
              const waited = await timed(() => bystander.read(0, BLOCK));
              assert.ok(waited < ANSWER_BOUND_MS, `another client waited ${waited.toFixed(0)} ms`);
              await delay(1000);
              abuser.conn.close();
              await sending;
              await connectionClosed(server, abuser.peer);
            } finally {
              clearInterval(sampler);
            }
            assert.ok(
              peak - baseline < RSS_GROWTH_BOUND_MB,
              `RSS grew from ${baseline.toFixed(0)} MB to ${peak.toFixed(0)} MB`,
            );
          } finally {
            await bystander.disconnect();
          }
        },
      );
    });
  },
);
