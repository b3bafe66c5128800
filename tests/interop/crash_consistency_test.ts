/**
 * Crash consistency of `denbd serve`: writers on their own connections
 * record every write acknowledged with FUA and every write whose
 * acknowledgement came before a FLUSH that completed; the server is killed
 * with SIGKILL at a random moment, started again on the same image, and
 * every such write must be there. For --cache=writeback, writethrough and
 * none, a few kills each.
 *
 * Each block written carries a stamp (writer, block, generation) over all
 * its bytes, so what is on disk after the kill names the write it came
 * from: a block must hold its last durable write or a write issued after
 * it, whole.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { NbdClient } from "../../src/nbd/client/client.ts";
import { startDenbd, withTempDir } from "./harness.ts";

const BLOCK = 4096;
const WRITERS = 4;
const BLOCKS_PER_WRITER = 128;
const IMAGE_SIZE = WRITERS * BLOCKS_PER_WRITER * BLOCK;
const KILLS_PER_MODE = 3;
const CACHE_MODES = ["writeback", "writethrough", "none"] as const;

/** A deterministic random source (a 32-bit LCG) for the test's choices. */
function random(seed: number): () => number {
  let state = seed;
  return () => (state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32;
}

/** The bytes of generation `generation` of `block`, written by `writer`. */
function stamp(writer: number, block: number, generation: number): Uint8Array {
  const bytes = new Uint8Array(BLOCK);
  const view = new DataView(bytes.buffer);
  for (let at = 0; at < BLOCK; at += 16) {
    view.setUint32(at, 0xdeb10c5);
    view.setUint32(at + 4, writer);
    view.setUint32(at + 8, block);
    view.setUint32(at + 12, generation);
  }
  return bytes;
}

/** The generation a block's bytes carry: 0 if never written, -1 if not one whole stamp. */
function generationOf(bytes: Uint8Array, writer: number, block: number): number {
  if (bytes.every((byte) => byte === 0)) return 0;
  const generation = new DataView(bytes.buffer, bytes.byteOffset).getUint32(12);
  const expected = stamp(writer, block, generation);
  return bytes.every((byte, i) => byte === expected[i]) ? generation : -1;
}

/** What is known of one block: its last durable generation and every one issued since. */
interface BlockRecord {
  durable: number;
  /** Generations issued after `durable` (acknowledged or not). */
  issued: number[];
}

/** Every block of the image, by writer and block index. */
type Ledger = BlockRecord[][];

/** Mark `generation` of `record` durable (if newer than what was). */
function markDurable(record: BlockRecord, generation: number): void {
  if (generation <= record.durable) return;
  record.durable = generation;
  record.issued = record.issued.filter((issued) => issued > generation);
}

/** One writer on its own connection until the server dies; counts the durable writes. */
async function writer(
  uri: string,
  index: number,
  ledger: Ledger,
  next: () => number,
  nextGeneration: () => number,
): Promise<number> {
  let durable = 0;
  let client: NbdClient;
  try {
    client = await NbdClient.connect(uri, { timeoutMs: 10_000 });
  } catch {
    return 0; // The kill came before this writer connected.
  }
  const unflushed: [BlockRecord, number][] = [];
  try {
    for (;;) {
      const block = Math.floor(next() * BLOCKS_PER_WRITER);
      const record = ledger[index][block];
      const generation = nextGeneration();
      const fua = next() < 0.3;
      record.issued.push(generation);
      await client.write(
        (index * BLOCKS_PER_WRITER + block) * BLOCK,
        stamp(index, block, generation),
        { fua },
      );
      if (fua) {
        markDurable(record, generation);
        durable++;
      } else {
        unflushed.push([record, generation]);
      }
      if (next() < 0.15) {
        const covered = unflushed.splice(0);
        await client.flush();
        for (const [flushed, flushedGeneration] of covered) markDurable(flushed, flushedGeneration);
        durable += covered.length;
      }
    }
  } catch {
    // The server was killed: writes in flight may or may not be on disk.
  } finally {
    await client.disconnect().catch(() => {});
  }
  return durable;
}

/** Read the whole image and check every block against the ledger; rebase the ledger on it. */
async function verify(image: string, ledger: Ledger, context: string): Promise<void> {
  const data = await Deno.readFile(image);
  for (let index = 0; index < WRITERS; index++) {
    for (let block = 0; block < BLOCKS_PER_WRITER; block++) {
      const at = (index * BLOCKS_PER_WRITER + block) * BLOCK;
      const found = generationOf(data.subarray(at, at + BLOCK), index, block);
      const record = ledger[index][block];
      const allowed = found === record.durable || record.issued.includes(found);
      assert.ok(
        allowed,
        `${context}: writer ${index} block ${block} holds generation ${found}; ` +
          `durable was ${record.durable}, issued since: ${record.issued.join(",")}`,
      );
      ledger[index][block] = { durable: found, issued: [] };
    }
  }
}

for (const cache of CACHE_MODES) {
  Deno.test(
    `--cache=${cache}: every FUA or flushed write survives kill -9 of the server`,
    async () => {
      await withTempDir(async (dir) => {
        const image = join(dir, "disk.img");
        await Deno.writeFile(image, new Uint8Array(0));
        await Deno.truncate(image, IMAGE_SIZE);
        const ledger: Ledger = Array.from(
          { length: WRITERS },
          () => Array.from({ length: BLOCKS_PER_WRITER }, () => ({ durable: 0, issued: [] })),
        );
        const next = random(CACHE_MODES.indexOf(cache) + 7);
        let generation = 0;
        let durableWrites = 0;
        for (let kill = 0; kill < KILLS_PER_MODE; kill++) {
          const server = await startDenbd({
            args: ["-t", "-e", String(WRITERS), "-f", "raw", `--cache=${cache}`, image],
          });
          try {
            const writers = Array.from(
              { length: WRITERS },
              (_, index) => writer(server.uri, index, ledger, next, () => ++generation),
            );
            await new Promise((resolve) => setTimeout(resolve, 400 + next() * 1200));
            server.child.kill("SIGKILL");
            await server.child.status;
            for (const count of await Promise.all(writers)) durableWrites += count;
          } finally {
            await server.stop().catch(() => {});
          }
          await verify(image, ledger, `--cache=${cache}, kill ${kill + 1}`);
        }
        assert.ok(durableWrites > 0, "some writes were acknowledged as durable");
      });
    },
  );
}
