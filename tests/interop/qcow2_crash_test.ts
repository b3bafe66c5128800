/**
 * Crash consistency of a writable qcow2 export (`denbd serve -f qcow2`),
 * alone and over a raw backing file: writers (libnbd's Python bindings, one
 * process and connection each) write stamped blocks, some with FUA, some
 * followed by a flush, and report each write as they issue it and as it is
 * acknowledged; the server is killed with SIGKILL at a random moment. Then
 * `qemu-img check` must find no corruption (leaked clusters are allowed),
 * every write acknowledged with FUA or followed by a completed flush must
 * read back (through `qemu-img convert`), and every other block must hold
 * what it held before or a write issued since, whole. The server is started
 * again on the same image for the next kill.
 *
 * With DENBD_SUBJECT=qemu the subject is qemu-nbd itself, which checks the test.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  check,
  delay,
  needs,
  python,
  run,
  sha256File,
  startSubject,
  withTempDir,
} from "./harness.ts";

const BLOCK = 4096;
const WRITERS = 4;
const BLOCKS_PER_WRITER = 256;
const IMAGE_SIZE = WRITERS * BLOCKS_PER_WRITER * BLOCK;
/** When each kill comes, after the server started: early, mid-stream, later (one per kill). */
const KILL_AFTER_MS = [600, 1100, 1700];
const KILLS = KILL_AFTER_MS.length;
const MAGIC = 0xdeb10c5;

/**
 * One writer; argv: URI, writer index, blocks, seed, first generation.
 * Prints "I block gen" before a write, "A block gen" when it is acknowledged,
 * "D block gen" when a FUA write is, and "F" when a flush completes; stops at
 * the first error (the server died).
 */
const WRITER = `
import nbd, random, struct, sys
uri, writer, blocks, seed, generation = sys.argv[1], *map(int, sys.argv[2:])
rng = random.Random(seed)
h = nbd.NBD()
try:
    h.connect_uri(uri)
    while True:
        block = rng.randrange(blocks)
        generation += 1
        fua = rng.random() < 0.3
        data = struct.pack(">IIII", ${MAGIC}, writer, block, generation) * (${BLOCK} // 16)
        print("I", block, generation, flush=True)
        h.pwrite(data, (writer * blocks + block) * ${BLOCK}, nbd.CMD_FLAG_FUA if fua else 0)
        print("D" if fua else "A", block, generation, flush=True)
        if rng.random() < 0.15:
            h.flush()
            print("F", flush=True)
except nbd.Error:
    pass
`;

/** The bytes of generation `generation` of `block`, written by `writer`. */
function stamp(writer: number, block: number, generation: number): Uint8Array {
  const bytes = new Uint8Array(BLOCK);
  const view = new DataView(bytes.buffer);
  for (let at = 0; at < BLOCK; at += 16) {
    view.setUint32(at, MAGIC);
    view.setUint32(at + 4, writer);
    view.setUint32(at + 8, block);
    view.setUint32(at + 12, generation);
  }
  return bytes;
}

/** The generation a block's bytes carry; -1 if not one whole stamp (nor `initial`). */
function generationOf(bytes: Uint8Array, writer: number, block: number, initial: Uint8Array) {
  if (bytes.every((byte, i) => byte === initial[i])) return 0;
  const generation = new DataView(bytes.buffer, bytes.byteOffset).getUint32(12);
  const expected = stamp(writer, block, generation);
  return generation > 0 && bytes.every((byte, i) => byte === expected[i]) ? generation : -1;
}

/** What is known of one block: its last durable generation and every one issued since. */
interface BlockRecord {
  durable: number;
  issued: number[];
}

function markDurable(record: BlockRecord, generation: number): void {
  if (generation <= record.durable) return;
  record.durable = generation;
  record.issued = record.issued.filter((issued) => issued > generation);
}

/** Replay one writer's report into the ledger; returns how many writes became durable. */
function replay(report: string, records: BlockRecord[]): number {
  let durable = 0;
  let unflushed: [number, number][] = [];
  for (const line of report.split("\n")) {
    const [event, block, generation] = line.split(" ");
    if (event === "I") records[Number(block)].issued.push(Number(generation));
    if (event === "D") markDurable(records[Number(block)], Number(generation)), durable++;
    if (event === "A") unflushed.push([Number(block), Number(generation)]);
    if (event === "F") {
      for (const [flushed, flushedGeneration] of unflushed) {
        markDurable(records[flushed], flushedGeneration);
      }
      durable += unflushed.length;
      unflushed = [];
    }
  }
  return durable;
}

/** `qemu-img check` (no corruption; leaks allowed), then every block against the ledger. */
async function verify(
  image: string,
  dir: string,
  ledger: BlockRecord[][],
  initial: (writer: number, block: number) => Uint8Array,
  context: string,
): Promise<void> {
  const checked = await run("qemu-img", ["check", "-f", "qcow2", image]);
  assert.ok(
    checked.code === 0 || checked.code === 3,
    `${context}: qemu-img check exited ${checked.code}: ${checked.stdout}${checked.stderr}`,
  );
  assert.doesNotMatch(checked.stdout, /ERROR|corrupted/, `${context}: ${checked.stdout}`);
  const raw = join(dir, "content.raw");
  await check("qemu-img", ["convert", "-f", "qcow2", "-O", "raw", image, raw]);
  const data = await Deno.readFile(raw);
  await Deno.remove(raw);
  for (let writer = 0; writer < WRITERS; writer++) {
    for (let block = 0; block < BLOCKS_PER_WRITER; block++) {
      const at = (writer * BLOCKS_PER_WRITER + block) * BLOCK;
      const bytes = data.subarray(at, at + BLOCK);
      const found = generationOf(bytes, writer, block, initial(writer, block));
      const record = ledger[writer][block];
      assert.ok(
        found === record.durable || record.issued.includes(found),
        `${context}: writer ${writer} block ${block} holds generation ${found}; ` +
          `durable was ${record.durable}, issued since: ${record.issued.join(",")}`,
      );
      ledger[writer][block] = { durable: found, issued: [] };
    }
  }
}

/** The two images: a fresh qcow2, and a qcow2 over a raw file holding generation 0 everywhere. */
const CASES = [
  {
    name: "a qcow2 image",
    async make(dir: string): Promise<string[]> {
      const image = join(dir, "disk.qcow2");
      await check("qemu-img", ["create", "-q", "-f", "qcow2", image, String(IMAGE_SIZE)]);
      return [image];
    },
    initial: () => new Uint8Array(BLOCK),
  },
  {
    name: "a qcow2 image over a raw backing file",
    async make(dir: string): Promise<string[]> {
      const base = join(dir, "base.raw");
      const blocks = [];
      for (let writer = 0; writer < WRITERS; writer++) {
        for (let block = 0; block < BLOCKS_PER_WRITER; block++) {
          blocks.push(stamp(writer, block, 0));
        }
      }
      const content = new Uint8Array(IMAGE_SIZE);
      blocks.forEach((bytes, index) => content.set(bytes, index * BLOCK));
      await Deno.writeFile(base, content);
      const image = join(dir, "top.qcow2");
      await check("qemu-img", [
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.raw",
        "-F",
        "raw",
        image,
      ]);
      return [image, base];
    },
    initial: (writer: number, block: number) => stamp(writer, block, 0),
  },
];

for (const crashCase of CASES) {
  Deno.test(
    `kill -9 while writing ${crashCase.name}: no corruption, every FUA or flushed write survives`,
    needs("qemu-img", "python3"),
    async () => {
      await withTempDir(async (dir) => {
        const [image, ...backing] = await crashCase.make(dir);
        const backingBefore = await Promise.all(backing.map(sha256File));
        const ledger = Array.from(
          { length: WRITERS },
          () => Array.from({ length: BLOCKS_PER_WRITER }, () => ({ durable: 0, issued: [] })),
        ) as BlockRecord[][];
        let durableWrites = 0;
        for (let kill = 0; kill < KILLS; kill++) {
          const server = await startSubject({
            args: ["-t", "-e", String(WRITERS), "-f", "qcow2", image],
            socket: join(dir, `nbd${kill}.sock`),
          });
          try {
            const writers = Array.from({ length: WRITERS }, (_, writer) =>
              python(WRITER, [
                server.uri,
                String(writer),
                String(BLOCKS_PER_WRITER),
                String(kill * WRITERS + writer + 1),
                String((kill + 1) * 1_000_000),
              ]));
            await delay(KILL_AFTER_MS[kill]);
            server.child.kill("SIGKILL");
            await server.child.status;
            for (const [writer, result] of (await Promise.all(writers)).entries()) {
              assert.equal(result.code, 0, result.stderr);
              durableWrites += replay(result.stdout, ledger[writer]);
            }
          } finally {
            await server.stop().catch(() => {});
          }
          await verify(image, dir, ledger, crashCase.initial, `kill ${kill + 1}`);
        }
        assert.ok(durableWrites > 0, "some writes were acknowledged as durable");
        assert.deepEqual(await Promise.all(backing.map(sha256File)), backingBefore);
      });
    },
  );
}
