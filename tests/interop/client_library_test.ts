/**
 * The NBD client library (src/nbd/client) against real servers: denbd
 * serve, qemu-nbd, qemu-storage-daemon, nbdkit (memory, file, data plugins
 * and filters) and nbd-server. Reads must equal the image's bytes, writes
 * must land in the file, block status must match the image's known layout
 * (and what nbdinfo reports for the same server), the connection pool must
 * follow CAN_MULTI_CONN, requests must obey announced block sizes, and the
 * servers' errors must arrive with the right kinds.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { DenbdError } from "../../src/errors.ts";
import { NbdClient, withNegotiation } from "../../src/nbd/client/client.ts";
import { NbdCommandError } from "../../src/nbd/client/connection.ts";
import { OptionRefused } from "../../src/nbd/client/negotiation.ts";
import { kindOfNbdError } from "../../src/nbd/errors.ts";
import { NBD_ERROR, NBD_FLAG, NBD_REP } from "../../src/nbd/protocol.ts";
import {
  check,
  makeSparseImage,
  needs,
  type ServerProcess,
  startDenbd,
  startQemuNbd,
  withStarted,
  withTempDir,
} from "./harness.ts";
import { startNbdkit, startNbdServer, startQemuStorageDaemon } from "./peers.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
/** Large enough that a whole-image read is split (over 32 MiB). */
const IMAGE_SIZE = 48 * MiB;
/** Data regions of the test image; everything else is a hole. */
const REGIONS = [[0, 64 * KiB], [3 * MiB, 8 * KiB], [7 * MiB, 512 * KiB], [40 * MiB, MiB]] as const;
/** Bound on every wait of the client for a server. */
const TIMEOUT_MS = 20_000;
const HOLE = 3;
const DATA = 0;

/** One extent of a metadata context. */
interface Extent {
  readonly offset: number;
  readonly length: number;
  readonly flags: number;
}

/** Connect to `uri`, run `body`, always disconnect. */
async function connected<T>(
  uri: string,
  body: (client: NbdClient) => Promise<T>,
  options: { metaContexts?: string[]; connections?: number; structuredReplies?: boolean } = {},
): Promise<T> {
  const client = await NbdClient.connect(uri, { timeoutMs: TIMEOUT_MS, ...options });
  try {
    return await body(client);
  } finally {
    await client.disconnect();
  }
}

/** Fail with the first differing offset (deepEqual on 48 MiB is slow and unreadable). */
function assertBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    if (actual[i] !== expected[i]) {
      assert.fail(`${what}: byte ${i} is ${actual[i]}, expected ${expected[i]}`);
    }
  }
}

/** A deterministic pattern that differs from the image's. */
function pattern(length: number, seed: number): Uint8Array {
  return new Uint8Array(length).map((_, i) => (i * 7 + seed) % 253 + 1);
}

/** Join neighbouring extents with the same flags. */
function merge(extents: readonly Extent[]): Extent[] {
  const merged: Extent[] = [];
  for (const extent of extents) {
    const last = merged.at(-1);
    if (last && last.flags === extent.flags && last.offset + last.length === extent.offset) {
      merged[merged.length - 1] = { ...last, length: last.length + extent.length };
    } else merged.push({ ...extent });
  }
  return merged;
}

/** The whole export's extents for `context`, walked with the client's blockStatus. */
async function mapOf(client: NbdClient, context = "base:allocation"): Promise<Extent[]> {
  const extents: Extent[] = [];
  for (let offset = 0; offset < client.size;) {
    const descriptors = await client.blockStatus(offset, client.size - offset, { context });
    assert.ok(descriptors.length > 0);
    for (const { length, flags } of descriptors) {
      const clipped = Math.min(length, client.size - offset);
      if (clipped <= 0) break;
      extents.push({ offset, length: clipped, flags });
      offset += clipped;
    }
  }
  return merge(extents);
}

/** What `nbdinfo --map=CONTEXT` reports for the same export. */
async function nbdinfoMap(uri: string, context = "base:allocation"): Promise<Extent[]> {
  const map = JSON.parse(await check("nbdinfo", ["--json", `--map=${context}`, uri])) as {
    offset: number;
    length: number;
    type: number;
  }[];
  return merge(map.map(({ offset, length, type }) => ({ offset, length, flags: type })));
}

/** The base:allocation layout of an image made by makeSparseImage with `regions`. */
function layoutOf(size: number, regions: readonly (readonly [number, number])[]): Extent[] {
  const extents: Extent[] = [];
  let at = 0;
  for (const [offset, length] of regions) {
    if (offset > at) extents.push({ offset: at, length: offset - at, flags: HOLE });
    extents.push({ offset, length, flags: DATA });
    at = offset + length;
  }
  if (at < size) extents.push({ offset: at, length: size - at, flags: HOLE });
  return merge(extents);
}

/** `promise` rejects with a DenbdError of `kind`; returns it. */
async function rejectsWithKind(promise: Promise<unknown>, kind: string): Promise<DenbdError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof DenbdError, `not a DenbdError: ${error}`);
    assert.equal(error.kind, kind, error.message);
    return error;
  }
  assert.fail(`expected a rejection of kind ${kind}`);
}

/** Poll `condition` for up to `timeoutMs`. */
async function eventually(condition: () => boolean, what: string, timeoutMs = 5_000) {
  for (const deadline = Date.now() + timeoutMs; !condition();) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

// ---------------------------------------------------------------------------
// Every file-backed server: the same checks

interface FileServer {
  readonly name: string;
  readonly peers: readonly string[];
  readonly start: (image: string, dir: string) => Promise<ServerProcess>;
}

const FILE_SERVERS: readonly FileServer[] = [
  {
    name: "denbd serve",
    peers: ["nbdinfo"],
    start: (image) => startDenbd({ args: ["-f", "raw", "-t", "-e", "0", image] }),
  },
  {
    name: "qemu-nbd",
    peers: ["qemu-nbd", "nbdinfo"],
    // -e 2: nbdinfo connects beside the client.
    start: (image) => startQemuNbd({ args: ["-f", "raw", "-t", "-e", "2", image] }),
  },
  {
    name: "qemu-storage-daemon",
    peers: ["qemu-storage-daemon", "nbdinfo"],
    start: (image) => startQemuStorageDaemon(image),
  },
  {
    name: "nbdkit file",
    peers: ["nbdkit", "nbdinfo"],
    start: (image) => startNbdkit("file", [image]),
  },
  {
    name: "nbd-server",
    peers: ["nbd-server", "nbdinfo"],
    start: (image, dir) => startNbdServer(dir, image),
  },
];

for (const server of FILE_SERVERS) {
  Deno.test(
    `client vs ${server.name}: reads, writes, zero, trim, flush, cache and allocation`,
    needs(...server.peers),
    async () => {
      await withTempDir(async (dir) => {
        const image = join(dir, "disk.img");
        await makeSparseImage(image, IMAGE_SIZE, REGIONS);
        const model = await Deno.readFile(image);
        const trimmed: [number, number][] = [];
        await withStarted(() => server.start(image, dir), async (process) => {
          await connected(process.uri, async (client) => {
            assert.equal(client.size, IMAGE_SIZE);
            // Reads: the whole image (split past 32 MiB), and unaligned pieces.
            assertBytes(await client.read(0, IMAGE_SIZE), model, "whole image");
            for (const [offset, length] of [[1, 1000], [3 * MiB - 100, 300], [IMAGE_SIZE - 7, 7]]) {
              assertBytes(
                await client.read(offset, length),
                model.subarray(offset, offset + length),
                `read of ${length} at ${offset}`,
              );
            }
            assertBytes(
              await client.read(5, 35 * MiB),
              model.subarray(5, 5 + 35 * MiB),
              "unaligned read over 32 MiB",
            );
            // Allocation, before anything is written.
            if (client.structuredReplies) {
              assert.deepEqual(client.contexts, ["base:allocation"]);
              const map = await mapOf(client);
              assert.deepEqual(map, layoutOf(IMAGE_SIZE, REGIONS));
              assert.deepEqual(map, await nbdinfoMap(process.uri));
            } else {
              assert.deepEqual(client.contexts, []);
              await rejectsWithKind(client.blockStatus(0, 4096), "invalid");
            }
            // Writes: unaligned, one split past 32 MiB, one with FUA where offered.
            const big = pattern(34 * MiB + 3, 1);
            await client.write(4 * MiB + 3, big);
            model.set(big, 4 * MiB + 3);
            const small = pattern(5000, 2);
            await client.write(12345, small, { fua: client.can(NBD_FLAG.SEND_FUA) });
            model.set(small, 12345);
            assertBytes(
              await client.read(4 * MiB, 35 * MiB),
              model.subarray(4 * MiB, 39 * MiB),
              "read back",
            );
            // Zero, with and without NO_HOLE, and fast zero where offered.
            if (client.can(NBD_FLAG.SEND_WRITE_ZEROES)) {
              await client.zero(3 * MiB, 8 * KiB);
              model.fill(0, 3 * MiB, 3 * MiB + 8 * KiB);
              await client.zero(100, 4000, { noHole: true });
              model.fill(0, 100, 4100);
              if (client.can(NBD_FLAG.SEND_FAST_ZERO)) {
                try {
                  await client.zero(7 * MiB, 64 * KiB, { fastZero: true });
                  model.fill(0, 7 * MiB, 7 * MiB + 64 * KiB);
                } catch (error) {
                  // A server may refuse a zero it cannot do fast: only ENOTSUP is allowed.
                  assert.ok(error instanceof NbdCommandError, String(error));
                  assert.equal(error.errno, NBD_ERROR.ENOTSUP);
                  assert.equal(error.kind, "not-supported");
                }
              } else {
                await rejectsWithKind(client.zero(0, 512, { fastZero: true }), "not-supported");
              }
              assertBytes(await client.read(0, 8 * MiB), model.subarray(0, 8 * MiB), "zeroed");
            } else {
              await rejectsWithKind(client.zero(0, 512), "not-supported");
            }
            if (client.can(NBD_FLAG.SEND_TRIM)) {
              await client.trim(40 * MiB, 64 * KiB);
              trimmed.push([40 * MiB, 64 * KiB]);
            } else {
              await rejectsWithKind(client.trim(0, 512), "not-supported");
            }
            if (client.can(NBD_FLAG.SEND_CACHE)) await client.cache(0, 8 * MiB);
            else await rejectsWithKind(client.cache(0, 512), "not-supported");
            if (client.can(NBD_FLAG.SEND_FLUSH)) await client.flush();
            else await rejectsWithKind(client.flush(), "not-supported");
          }, { metaContexts: ["base:allocation"] });
        });
        // What the server wrote is in the file (trimmed bytes may read either way).
        const file = await Deno.readFile(image);
        for (const [offset, length] of trimmed) {
          model.set(file.subarray(offset, offset + length), offset);
        }
        assertBytes(file, model, "image file");
      });
    },
  );
}

Deno.test(
  "client vs nbdkit memory: writes read back, zero, fast zero and trim read as zeroes",
  needs("nbdkit", "nbdinfo"),
  async () => {
    await withStarted(() => startNbdkit("memory", [String(IMAGE_SIZE)]), async (server) => {
      await connected(server.uri, async (client) => {
        assert.equal(client.size, IMAGE_SIZE);
        assert.ok(client.can(NBD_FLAG.SEND_FAST_ZERO));
        assert.deepEqual(await mapOf(client), [{ offset: 0, length: IMAGE_SIZE, flags: HOLE }]);
        const data = pattern(33 * MiB + 1, 3);
        await client.write(MiB - 1, data);
        assertBytes(await client.read(MiB - 1, data.length), data, "read back");
        await client.zero(MiB, 4 * KiB, { fastZero: true });
        await client.zero(2 * MiB, 4 * KiB, { noHole: true });
        await client.trim(3 * MiB, 4 * KiB);
        const expected = data.slice();
        for (const at of [MiB, 2 * MiB, 3 * MiB]) {
          expected.fill(0, at - MiB + 1, at - MiB + 1 + 4096);
        }
        assertBytes(await client.read(MiB - 1, data.length), expected, "after zero and trim");
        assert.deepEqual(await mapOf(client), await nbdinfoMap(server.uri));
        await client.flush();
      }, { metaContexts: ["base:allocation"] });
    });
  },
);

Deno.test(
  "client vs nbdkit data: bytes and allocation of a data string; read-only refused client-side",
  needs("nbdkit", "nbdinfo"),
  async () => {
    const script = ["1 2 3", "@4096 (0x55)*4096", '@65536 "hello"', "@1048576 (0xaa 0xbb)*8192"];
    const size = 2 * MiB;
    const expected = new Uint8Array(size);
    expected.set([1, 2, 3]);
    expected.fill(0x55, 4096, 8192);
    expected.set(new TextEncoder().encode("hello"), 65536);
    for (let i = 0; i < 16384; i += 2) expected.set([0xaa, 0xbb], MiB + i);
    const start = () =>
      startNbdkit("data", [`data=${script.join(" ")}`, `size=${size}`], { readOnly: true });
    await withStarted(start, async (server) => {
      await connected(server.uri, async (client) => {
        assert.ok(client.can(NBD_FLAG.READ_ONLY));
        assertBytes(await client.read(0, size), expected, "data plugin");
        assertBytes(await client.read(65537, 3), expected.subarray(65537, 65540), "unaligned");
        const map = await mapOf(client);
        assert.deepEqual(map, await nbdinfoMap(server.uri));
        // Every byte the script set is in a data extent.
        for (const [offset, length] of [[0, 3], [4096, 4096], [65536, 5], [MiB, 16384]]) {
          assert.ok(
            map.some((e) =>
              e.flags === DATA && e.offset <= offset && e.offset + e.length >= offset + length
            ),
            `${length} bytes at ${offset} not reported as data: ${JSON.stringify(map)}`,
          );
        }
        await rejectsWithKind(client.write(0, new Uint8Array(1)), "read-only");
        await rejectsWithKind(client.zero(0, 512), "read-only");
        await rejectsWithKind(client.trim(0, 512), "read-only");
      }, { metaContexts: ["base:allocation"] });
    });
  },
);

// ---------------------------------------------------------------------------
// qemu:allocation-depth

Deno.test(
  "client vs qemu-nbd -A: qemu:allocation-depth of a qcow2 chain, beside base:allocation",
  needs("qemu-nbd", "qemu-img", "qemu-io", "nbdinfo"),
  async () => {
    await withTempDir(async (dir) => {
      const base = join(dir, "base.qcow2");
      const top = join(dir, "top.qcow2");
      await check("qemu-img", ["create", "-q", "-f", "qcow2", base, "8M"]);
      await check("qemu-io", ["-f", "qcow2", "-c", "write -P 1 0 1M", base]);
      await check("qemu-img", ["create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top]);
      await check("qemu-io", ["-f", "qcow2", "-c", "write -P 2 4M 1M", top]);
      const contexts = ["base:allocation", "qemu:allocation-depth"];
      await withStarted(
        () => startQemuNbd({ args: ["-f", "qcow2", "-t", "-e", "2", "-A", top] }),
        async (server) => {
          await connected(server.uri, async (client) => {
            assert.deepEqual([...client.contexts].sort(), contexts);
            const depth = await mapOf(client, "qemu:allocation-depth");
            assert.deepEqual(depth, [
              { offset: 0, length: MiB, flags: 2 },
              { offset: MiB, length: 3 * MiB, flags: 0 },
              { offset: 4 * MiB, length: MiB, flags: 1 },
              { offset: 5 * MiB, length: 3 * MiB, flags: 0 },
            ]);
            assert.deepEqual(depth, await nbdinfoMap(server.uri, "qemu:allocation-depth"));
            assert.deepEqual(await mapOf(client), await nbdinfoMap(server.uri));
            const expected = new Uint8Array(8 * MiB);
            expected.fill(1, 0, MiB);
            expected.fill(2, 4 * MiB, 5 * MiB);
            assertBytes(await client.read(0, 8 * MiB), expected, "qcow2 chain");
          }, { metaContexts: contexts });
        },
      );
    });
  },
);

Deno.test(
  "client vs qemu-storage-daemon allocation-depth=on: a raw image is all local",
  needs("qemu-storage-daemon", "nbdinfo"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, 8 * MiB, REGIONS.slice(0, 3));
      const start = () => startQemuStorageDaemon(image, { allocationDepth: true });
      await withStarted(start, async (server) => {
        await connected(server.uri, async (client) => {
          const depth = await mapOf(client, "qemu:allocation-depth");
          assert.deepEqual(depth, [{ offset: 0, length: 8 * MiB, flags: 1 }]);
          assert.deepEqual(depth, await nbdinfoMap(server.uri, "qemu:allocation-depth"));
          assert.deepEqual(await mapOf(client), layoutOf(8 * MiB, REGIONS.slice(0, 3)));
        }, { metaContexts: ["base:allocation", "qemu:allocation-depth"] });
      });
    });
  },
);

// ---------------------------------------------------------------------------
// The connection pool

/** Count the lines of `text` matching `pattern`. */
function count(text: string, pattern: RegExp): number {
  return text.split("\n").filter((line) => pattern.test(line)).length;
}

Deno.test(
  "pool: nbdkit memory (CAN_MULTI_CONN) gets 4 connections and requests spread over them",
  needs("nbdkit"),
  async () => {
    await withTempDir(async (dir) => {
      const log = join(dir, "nbdkit.log");
      const start = () => startNbdkit("--filter=log", ["memory", "size=64M", `logfile=${log}`]);
      await withStarted(start, async (server) => {
        await connected(server.uri, async (client) => {
          assert.ok(client.can(NBD_FLAG.CAN_MULTI_CONN));
          assert.equal(client.connectionCount, 4);
          await Promise.all(
            Array.from({ length: 16 }, (_, i) => client.write(i * MiB, pattern(MiB, i))),
          );
          await client.flush();
          const back = await client.read(0, 16 * MiB);
          for (let i = 0; i < 16; i++) {
            assertBytes(back.subarray(i * MiB, (i + 1) * MiB), pattern(MiB, i), `MiB ${i}`);
          }
        }, { connections: 4 });
        const text = await Deno.readTextFile(log);
        // The readiness probe closes before negotiating; the client's 4 connections log Connect.
        assert.equal(count(text, / Connect /), 4, text);
        const writers = new Set(
          text.split("\n").filter((l) => / Write /.test(l)).map((l) =>
            /connection=(\d+)/.exec(l)?.[1]
          ),
        );
        assert.ok(writers.size > 1, `writes used ${writers.size} connection(s)`);
      });
    });
  },
);

for (
  const [name, peers, args, wanted, expected] of [
    ["denbd serve -e 0", [], ["-e", "0", "-v"], 3, 3],
    ["qemu-nbd -e 2", ["qemu-nbd"], ["-e", "2"], 2, 2],
    // qemu-nbd admits at most -e clients at once: the third connection is never answered,
    // and the pool goes on with two after a short wait instead of failing.
    ["qemu-nbd -e 2", ["qemu-nbd"], ["-e", "2"], 3, 2],
    ["qemu-nbd -e 1", ["qemu-nbd"], ["-e", "1"], 3, 1],
  ] as const
) {
  Deno.test(
    `pool: ${wanted} connections wanted from ${name}, ${expected} opened`,
    needs(...peers),
    async () => {
      await withTempDir(async (dir) => {
        const image = join(dir, "disk.img");
        await makeSparseImage(image, 4 * MiB, [[0, MiB]]);
        const starter = name.startsWith("denbd") ? startDenbd : startQemuNbd;
        const start = () => starter({ args: ["-f", "raw", "-t", ...args, image] });
        await withStarted(start, async (server) => {
          // Only connections that entered transmission log the export they use.
          const negotiated = () => count(server.stderr(), /: using export /);
          await connected(server.uri, async (client) => {
            assert.equal(client.can(NBD_FLAG.CAN_MULTI_CONN), expected > 1);
            assert.equal(client.connectionCount, expected);
            const reads = await Promise.all(
              Array.from({ length: 8 }, (_, i) => client.read(i * 512 * KiB, 512 * KiB)),
            );
            const file = await Deno.readFile(image);
            reads.forEach((data, i) =>
              assertBytes(data, file.subarray(i * 512 * KiB, (i + 1) * 512 * KiB), `piece ${i}`)
            );
            if (name.startsWith("denbd")) {
              await eventually(() => negotiated() === expected, "the server's log");
            }
          }, { connections: wanted });
        });
      });
    },
  );
}

Deno.test(
  "pool: nbd-server (CAN_MULTI_CONN, simple replies) gets 3 connections",
  needs("nbd-server"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, 4 * MiB, [[0, MiB]]);
      await withStarted(() => startNbdServer(dir, image), async (server) => {
        await connected(server.uri, async (client) => {
          assert.equal(client.structuredReplies, false);
          assert.equal(client.connectionCount, client.can(NBD_FLAG.CAN_MULTI_CONN) ? 3 : 1);
          const data = pattern(2 * MiB, 9);
          await Promise.all([
            client.write(0, data.subarray(0, MiB)),
            client.write(MiB, data.subarray(MiB)),
          ]);
          assertBytes(await client.read(0, 2 * MiB), data, "read back");
        }, { connections: 3 });
        assertBytes((await Deno.readFile(image)).subarray(0, 2 * MiB), pattern(2 * MiB, 9), "file");
      });
    });
  },
);

// ---------------------------------------------------------------------------
// Block size constraints

Deno.test(
  "block sizes: requests are split to nbdkit's announced maximum, aligned to its minimum",
  needs("nbdkit"),
  async () => {
    await withTempDir(async (dir) => {
      const log = join(dir, "nbdkit.log");
      const start = () =>
        startNbdkit("--filter=log", [
          "--filter=blocksize-policy",
          "memory",
          "size=64M",
          "blocksize-minimum=512",
          "blocksize-preferred=4096",
          "blocksize-maximum=65536",
          "blocksize-error-policy=error",
          `logfile=${log}`,
        ]);
      await withStarted(start, async (server) => {
        await connected(server.uri, async (client) => {
          assert.deepEqual(client.details.blockSizes, {
            minimum: 512,
            preferred: 4096,
            maximum: 65536,
          });
          assert.equal(client.maxPayload, 65536);
          assert.equal(client.minimumBlock, 512);
          const data = pattern(MiB + 512, 4);
          await client.write(512, data);
          assertBytes(await client.read(512, data.length), data, "read back");
          // Effects are not payloads: a zero of 4 MiB goes in one request.
          await client.zero(8 * MiB, 4 * MiB);
          // Unaligned requests never reach the server.
          for (
            const attempt of [
              () => client.read(100, 512),
              () => client.read(0, 100),
              () => client.write(512, new Uint8Array(513)),
              () => client.zero(1, 512),
              () => client.trim(0, 1000),
              () => client.blockStatus(256, 512),
            ]
          ) {
            const error = await rejectsWithKind(attempt(), "invalid");
            assert.match(error.message, /not aligned to the server's 512-byte blocks/);
          }
        }, { metaContexts: ["base:allocation"] });
        const text = await Deno.readTextFile(log);
        const sizes = text.split("\n").flatMap((line) => {
          const match = / (Read|Write) id=\d+ offset=(0x[0-9a-f]+) count=(0x[0-9a-f]+)/.exec(line);
          return match ? [[match[1], Number(match[2]), Number(match[3])] as const] : [];
        });
        assert.equal(sizes.filter(([type]) => type === "Write").length, 17, text);
        assert.equal(sizes.filter(([type]) => type === "Read").length, 17, text);
        for (const [type, offset, length] of sizes) {
          assert.ok(length <= 65536, `${type} of ${length} bytes`);
          assert.equal(offset % 512, 0, `${type} at ${offset}`);
          assert.equal(length % 512, 0, `${type} of ${length}`);
        }
        assert.match(text, /Zero id=\d+ offset=0x800000 count=0x400000/);
        assert.doesNotMatch(text, /error=|return=-1|EINVAL/i);
      });
    });
  },
);

// ---------------------------------------------------------------------------
// Option mode: exports and contexts, compared with nbdinfo --list

interface NbdinfoList {
  exports: { "export-name": string; description?: string; contexts?: string[] }[];
}

/** Exports and their contexts as the client library lists them. */
function listWithClient(uri: string) {
  return withNegotiation(uri, async (session) => {
    const exports = await session.list();
    const structured = await session.requestStructuredReplies();
    const result = [];
    for (const { name, description } of exports) {
      const contexts = structured ? await session.listMetaContexts(name) : null;
      result.push({ name, description, contexts: contexts?.sort() ?? null });
    }
    return result.sort((a, b) => a.name.localeCompare(b.name));
  }, { timeoutMs: TIMEOUT_MS });
}

async function listWithNbdinfo(uri: string) {
  const list = JSON.parse(await check("nbdinfo", ["--list", "--json", uri])) as NbdinfoList;
  return list.exports.map((entry) => ({
    name: entry["export-name"],
    description: entry.description ?? "",
    contexts: entry.contexts?.sort() ?? null,
  })).sort((a, b) => a.name.localeCompare(b.name));
}

const LISTED: readonly {
  name: string;
  peers: readonly string[];
  start: (image: string, dir: string) => Promise<ServerProcess>;
  exports: number;
}[] = [
  {
    name: "denbd serve -x -D",
    peers: ["nbdinfo"],
    start: (image) =>
      startDenbd({
        args: ["-f", "raw", "-t", "-x", "the disk", "-D", "a described export", image],
        exportName: "the disk",
      }),
    exports: 1,
  },
  {
    name: "qemu-nbd -x -D -A",
    peers: ["qemu-nbd", "nbdinfo"],
    start: (image) =>
      startQemuNbd({
        args: ["-f", "raw", "-t", "-A", "-x", "named", "-D", "a qemu disk", image],
        exportName: "named",
      }),
    exports: 1,
  },
  {
    name: "qemu-storage-daemon",
    peers: ["qemu-storage-daemon", "nbdinfo"],
    start: (image) => startQemuStorageDaemon(image, { allocationDepth: true }),
    exports: 1,
  },
  {
    name: "nbdkit file dir= (several exports)",
    peers: ["nbdkit", "nbdinfo"],
    start: async (image, dir) => {
      const exports = join(dir, "exports");
      await Deno.mkdir(exports);
      for (const name of ["alpha", "beta", "gamma one"]) {
        await Deno.copyFile(image, join(exports, name));
      }
      return startNbdkit("file", [`dir=${exports}`], { exportName: "alpha" });
    },
    exports: 3,
  },
  {
    name: "nbdkit memory with descriptions",
    peers: ["nbdkit", "nbdinfo"],
    start: () =>
      startNbdkit("--filter=exportname", [
        "memory",
        "1M",
        "exportname=one",
        "exportname=two",
        "exportname-list=explicit",
        "exportdesc=fixed:the same text",
      ]),
    exports: 2,
  },
  {
    name: "nbd-server",
    peers: ["nbd-server", "nbdinfo"],
    start: (image, dir) => startNbdServer(dir, image),
    exports: 1,
  },
];

for (const server of LISTED) {
  Deno.test(
    `list: exports and meta contexts of ${server.name} match nbdinfo --list --json`,
    needs(...server.peers),
    async () => {
      await withTempDir(async (dir) => {
        const image = join(dir, "disk.img");
        await makeSparseImage(image, 4 * MiB, [[0, MiB]]);
        await withStarted(() => server.start(image, dir), async (process) => {
          const ours = await listWithClient(process.uri);
          assert.equal(ours.length, server.exports, JSON.stringify(ours));
          assert.deepEqual(ours, await listWithNbdinfo(process.uri));
        });
      });
    },
  );
}

Deno.test(
  "list: info() describes an export without entering it; filtered context queries",
  needs("qemu-nbd"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, 4 * MiB, [[0, MiB]]);
      const start = () =>
        startQemuNbd({
          args: ["-f", "raw", "-t", "-A", "-x", "named", "-D", "described", image],
          exportName: "named",
        });
      await withStarted(start, async (server) => {
        await withNegotiation(server.uri, async (session, uri) => {
          assert.equal(uri.exportName, "named");
          assert.equal(await session.requestStructuredReplies(), true);
          const details = await session.info("named");
          assert.equal(details?.size, 4 * MiB);
          assert.equal(details?.description, "described");
          assert.deepEqual(await session.listMetaContexts("named", ["qemu:"]), [
            "qemu:allocation-depth",
          ]);
          const chosen = await session.setMetaContexts("named", ["base:allocation", "x-no:such"]);
          assert.deepEqual([...chosen.values()], ["base:allocation"]);
          const refused = await rejectsWithKind(session.info("missing"), "not-found");
          assert.ok(refused instanceof OptionRefused);
          assert.equal(refused.replyType, NBD_REP.ERR_UNKNOWN);
        }, { timeoutMs: TIMEOUT_MS });
      });
    });
  },
);

// ---------------------------------------------------------------------------
// Errors from real servers

Deno.test(
  "errors: nbdkit's injected errors arrive as NbdCommandError with the right kinds",
  needs("nbdkit"),
  async () => {
    const start = () =>
      startNbdkit("--filter=error", [
        "memory",
        "1M",
        "error-pwrite=EPERM",
        "error-pwrite-rate=100%",
        "error-pread=EIO",
        "error-pread-rate=100%",
        "error-zero=ENOSPC",
        "error-zero-rate=100%",
        "error-trim=EINVAL",
        "error-trim-rate=100%",
        "error-extents=ENOMEM",
        "error-extents-rate=100%",
      ]);
    await withStarted(start, async (server) => {
      await connected(server.uri, async (client) => {
        const expectations: [() => Promise<unknown>, number, string][] = [
          [() => client.write(0, new Uint8Array(512)), NBD_ERROR.EPERM, "read-only"],
          [() => client.read(0, 512), NBD_ERROR.EIO, "io"],
          [() => client.zero(0, 512), NBD_ERROR.ENOSPC, "no-space"],
          [() => client.trim(0, 512), NBD_ERROR.EINVAL, "invalid"],
          [() => client.blockStatus(0, 512), NBD_ERROR.ENOMEM, kindOfNbdError(NBD_ERROR.ENOMEM)],
        ];
        for (const [attempt, errno, kind] of expectations) {
          const error = await rejectsWithKind(attempt(), kind);
          assert.ok(error instanceof NbdCommandError, error.stack);
          assert.equal(error.errno, errno);
        }
        // Errors of requests leave the connection usable.
        await client.flush();
        await client.cache(0, 4096);
      }, { metaContexts: ["base:allocation"] });
    });
  },
);

Deno.test(
  "errors: nbdkit's ESHUTDOWN makes the client send NBD_CMD_DISC and refuse new requests",
  needs("nbdkit"),
  async () => {
    const start = () =>
      startNbdkit("-v", [
        "--filter=error",
        "memory",
        "1M",
        "error-cache=ESHUTDOWN",
        "error-cache-rate=100%",
      ]);
    await withStarted(start, async (server) => {
      await connected(server.uri, async (client) => {
        const error = await rejectsWithKind(client.cache(0, 512), "shutdown");
        assert.ok(error instanceof NbdCommandError);
        assert.equal(error.errno, NBD_ERROR.ESHUTDOWN);
        await eventually(
          () => server.stderr().includes("client sent NBD_CMD_DISC"),
          "the client's NBD_CMD_DISC",
        );
        await rejectsWithKind(client.read(0, 512), "shutdown");
      });
    });
  },
);

Deno.test(
  "errors: read-only exports refuse changes client-side; a missing export is not-found",
  needs("qemu-nbd", "nbdkit"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, 4 * MiB, [[0, MiB]]);
      const start = () =>
        startQemuNbd({ args: ["-f", "raw", "-t", "-r", "-x", "disk", image], exportName: "disk" });
      await withStarted(start, async (server) => {
        await connected(server.uri, async (client) => {
          assert.ok(client.can(NBD_FLAG.READ_ONLY));
          for (
            const attempt of [
              () => client.write(0, new Uint8Array(1)),
              () => client.zero(0, 512),
              () => client.trim(0, 512),
            ]
          ) {
            const error = await rejectsWithKind(attempt(), "read-only");
            assert.ok(!(error instanceof NbdCommandError), "the request reached the server");
          }
          await rejectsWithKind(client.read(4 * MiB - 1, 2), "invalid");
          assertBytes(
            await client.read(0, 4096),
            (await Deno.readFile(image)).subarray(0, 4096),
            "read",
          );
        });
        const missing = server.uri.replace(/\/disk$/, "/missing");
        const error = await rejectsWithKind(
          NbdClient.connect(missing, { timeoutMs: TIMEOUT_MS }),
          "not-found",
        );
        assert.ok(error instanceof OptionRefused);
      });
      await withStarted(() => startNbdkit("memory", ["1M"], { readOnly: true }), async (server) => {
        await connected(server.uri, async (client) => {
          await rejectsWithKind(client.write(0, new Uint8Array(1)), "read-only");
          assertBytes(await client.read(0, 1024), new Uint8Array(1024), "memory");
        });
      });
    });
  },
);

Deno.test(
  "simple replies: qemu-nbd without structured replies reads, writes and zeroes the same",
  needs("qemu-nbd"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, IMAGE_SIZE, REGIONS);
      const model = await Deno.readFile(image);
      await withStarted(
        () => startQemuNbd({ args: ["-f", "raw", "-t", image] }),
        async (server) => {
          await connected(server.uri, async (client) => {
            assert.equal(client.structuredReplies, false);
            assertBytes(await client.read(0, IMAGE_SIZE), model, "whole image");
            const data = pattern(3 * MiB, 5);
            await client.write(MiB + 1, data);
            model.set(data, MiB + 1);
            await client.zero(2 * MiB, 4096);
            model.fill(0, 2 * MiB, 2 * MiB + 4096);
            await client.flush();
            assertBytes(await client.read(0, 8 * MiB), model.subarray(0, 8 * MiB), "read back");
          }, { structuredReplies: false, metaContexts: ["base:allocation"] });
        },
      );
      assertBytes(await Deno.readFile(image), model, "image file");
    });
  },
);

Deno.test("option mode that ends in GO does not send ABORT during transmission", async () => {
  await withTempDir(async (dir) => {
    const image = join(dir, "disk.img");
    await makeSparseImage(image, MiB);
    await withStarted(() => startDenbd({ args: ["-f", "raw", "-t", image] }), async (server) => {
      const started = performance.now();
      const details = await withNegotiation(server.uri, (session) => session.go(""), {
        timeoutMs: 3000,
      });
      assert.equal(details.size, MiB);
      const elapsed = performance.now() - started;
      assert.ok(elapsed < 1000, `took ${elapsed}ms`);
      assert.doesNotMatch(server.stderr(), /bad magic/);
    });
  });
});

Deno.test(
  "block status of a whole export over 4 GiB stays aligned to the minimum block",
  needs("nbdkit"),
  async () => {
    const plugin = ["memory", "8G", "blocksize-minimum=512", "blocksize-error-policy=error"];
    await withStarted(() => startNbdkit("--filter=blocksize-policy", plugin), async (server) => {
      await connected(server.uri, async (client) => {
        assert.equal(client.maxStatusLength, 2 ** 32 - 512);
        const extents = await client.blockStatus(0, client.size);
        assert.equal(extents.length, 1);
        assert.ok(extents[0].length >= 2 ** 32 - 512);
      }, { metaContexts: ["base:allocation"] });
    });
  },
);
