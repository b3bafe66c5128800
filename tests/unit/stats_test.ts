import assert from "node:assert/strict";
import { join } from "node:path";
import { ExportTotals, RequestCounters } from "../../src/nbd/server/stats.ts";
import { NBD_CMD } from "../../src/nbd/protocol.ts";
import { NbdServer } from "../../src/nbd/server/server.ts";
import { ExportTable, NbdExport } from "../../src/nbd/server/export.ts";
import { MemoryNode } from "../../src/block/memory.ts";
import { DenbdError } from "../../src/errors.ts";
import { NbdClient } from "../../src/nbd/client/client.ts";
import { Logger } from "../../src/log.ts";
import { Daemon } from "../../src/daemon/daemon.ts";
import { daemonCommands, serveMonitorCommands } from "../../src/daemon/qmp-commands.ts";
import { DenbdStats } from "../../src/daemon/qapi-types.ts";
import { type CommandTable, runCommand } from "../../src/qmp/command.ts";
import { validateInput } from "../../src/qmp/input.ts";
import { JsonStreamParser } from "../../src/qmp/json-stream.ts";
import { formatJson } from "../../src/qmp/json-value.ts";

const KiB = 1024;

/** A memory node whose flush fails, for error replies. */
class FailingFlushNode extends MemoryNode {
  override flush(): Promise<void> {
    return Promise.reject(new DenbdError("io", "flush failed on purpose"));
  }
}

/** Resolves once `condition` holds; fails after `limitMs`. */
async function until(condition: () => boolean, limitMs = 5_000): Promise<void> {
  const end = Date.now() + limitMs;
  while (!condition()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

Deno.test("counters: each command counts under its kind, with its bytes; add sums them all", () => {
  const counters = new RequestCounters();
  counters.countDone(NBD_CMD.READ, 4096);
  counters.countDone(NBD_CMD.READ, 512);
  counters.countDone(NBD_CMD.WRITE, 65536);
  counters.countDone(NBD_CMD.WRITE_ZEROES, 1 << 20);
  counters.countDone(NBD_CMD.TRIM, 8192);
  counters.countDone(NBD_CMD.FLUSH, 0);
  counters.countDone(NBD_CMD.BLOCK_STATUS, 1 << 30);
  counters.countDone(NBD_CMD.CACHE, 4096);
  counters.countDone(NBD_CMD.DISC, 0);
  const expected = {
    readOperations: 2,
    readBytes: 4608,
    writeOperations: 1,
    writeBytes: 65536,
    zeroOperations: 1,
    zeroBytes: 1 << 20,
    trimOperations: 1,
    trimBytes: 8192,
    flushOperations: 1,
    blockStatusOperations: 1,
    cacheOperations: 1,
    failedOperations: 0,
  };
  assert.deepEqual({ ...counters }, expected);
  const sum = new RequestCounters();
  sum.add(counters);
  sum.add(counters);
  assert.deepEqual(
    { ...sum },
    Object.fromEntries(Object.entries(expected).map(([name, value]) => [name, 2 * value])),
  );
});

Deno.test("export totals: departed clients are folded in, per export, and present ones added", () => {
  const totals = new ExportTotals();
  const disk = {};
  const other = {};
  const left = new RequestCounters();
  left.countDone(NBD_CMD.WRITE, 100);
  totals.fold(disk, left);
  totals.fold(disk, left);
  const present = new RequestCounters();
  present.countDone(NBD_CMD.READ, 7);
  const total = totals.of(disk, [present]);
  assert.equal(total.departedClients, 2);
  assert.equal(total.counters.writeBytes, 200);
  assert.equal(total.counters.readBytes, 7);
  assert.equal(totals.of(other, []).departedClients, 0);
  assert.equal(totals.of(other, []).counters.writeOperations, 0);
});

Deno.test("the server counts each client's requests, errors too, and keeps them when it leaves", async () => {
  const catalog = new ExportTable();
  const exported = new NbdExport({ name: "disk", node: new FailingFlushNode(4 << 20) });
  catalog.add(exported);
  const server = new NbdServer({ catalog, log: new Logger({ prefix: "test" }) });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  server.listen(listener);
  try {
    const client = await NbdClient.connect(`nbd://127.0.0.1:${listener.addr.port}/disk`, {
      metaContexts: ["base:allocation"],
    });
    for (let i = 0; i < 16; i++) await client.write(i * 64 * KiB, new Uint8Array(64 * KiB).fill(i));
    for (let i = 0; i < 8; i++) await client.read(i * 64 * KiB, 64 * KiB);
    await client.zero(1 << 20, 1 << 20);
    await client.trim(2 << 20, 64 * KiB);
    await client.blockStatus(0, 4 << 20);
    await assert.rejects(client.flush(), /flush failed on purpose/);
    const [connection] = server.clients();
    assert.equal(connection.export, exported);
    assert.deepEqual({ ...connection.counters }, {
      readOperations: 8,
      readBytes: 8 * 64 * KiB,
      writeOperations: 16,
      writeBytes: 16 * 64 * KiB,
      zeroOperations: 1,
      zeroBytes: 1 << 20,
      trimOperations: 1,
      trimBytes: 64 * KiB,
      flushOperations: 0,
      blockStatusOperations: 1,
      cacheOperations: 0,
      failedOperations: 1,
    });
    const live = { ...server.totalsOf(exported).counters };
    assert.deepEqual(live, { ...connection.counters });
    await client.disconnect();
    await until(() => server.clients().length === 0);
    const after = server.totalsOf(exported);
    assert.equal(after.departedClients, 1);
    assert.deepEqual({ ...after.counters }, live);
  } finally {
    await server.close();
  }
});

/** `value` sent as JSON and read back, as a QMP client receives it. */
function overTheWire(value: unknown) {
  const [item] = new JsonStreamParser().feed(new TextEncoder().encode(formatJson(value) + "\n"));
  assert.ok(item && "value" in item);
  return item.value;
}

Deno.test("x-denbd-query-stats: exports with totals, clients with address, export, age and counters", async () => {
  const dir = await Deno.makeTempDir({ prefix: "denbd-stats-" });
  const daemon = new Daemon(new Logger({ prefix: "test" }));
  try {
    const commands = daemonCommands();
    const command = commands.get("x-denbd-query-stats")!;
    const context = {
      state: daemon,
      commands,
      session: { negotiated: true, completeNegotiation: () => {} },
      requestQuit: () => {},
    };
    const query = async () =>
      validateInput(DenbdStats, overTheWire(await runCommand(command, context, {})));
    assert.deepEqual(await query(), { exports: [], clients: [] });

    const image = join(dir, "d.img");
    await Deno.writeFile(image, new Uint8Array(1 << 20));
    await daemon.blockdevAdd({ driver: "file", "node-name": "f0", filename: image });
    const bound = daemon.nbdServerStart({
      addr: { type: "inet", host: "127.0.0.1", port: "0" },
    });
    daemon.blockExportAdd({
      type: "nbd",
      id: "e0",
      "node-name": "f0",
      name: "disk",
      writable: true,
    });
    assert.equal(bound.type, "inet");
    const client = await NbdClient.connect(
      `nbd://127.0.0.1:${bound.type === "inet" ? bound.port : 0}/disk`,
    );
    await client.write(0, new Uint8Array(4 * KiB).fill(1));
    await client.read(0, 4 * KiB);
    const stats = await query();
    assert.equal(stats.exports.length, 1);
    const [entry] = stats.exports;
    assert.deepEqual(
      { ...entry, stats: undefined },
      {
        id: "e0",
        name: "disk",
        "node-name": "f0",
        clients: 1,
        "departed-clients": 0,
        stats: undefined,
      },
    );
    assert.equal(entry.stats.wr_bytes, 4 * KiB);
    assert.equal(entry.stats.wr_operations, 1);
    assert.equal(entry.stats.rd_bytes, 4 * KiB);
    assert.equal(entry.stats.rd_operations, 1);
    assert.equal(stats.clients.length, 1);
    const [who] = stats.clients;
    assert.equal(who.id, 1);
    assert.match(who.address, /^127\.0\.0\.1:\d+$/);
    assert.equal(who.export, "e0");
    assert.ok(who.age >= 0 && who.age < 60, `age ${who.age}`);
    assert.ok(Math.abs(who["connected-at"] - Date.now() / 1000) < 60);
    assert.deepEqual(who.stats, entry.stats);
    await client.disconnect();
    await until(() => daemon.xDenbdQueryStats().clients.length === 0);
    const after = await query();
    assert.equal(after.exports[0]["departed-clients"], 1);
    assert.deepEqual(after.exports[0].stats, entry.stats);
  } finally {
    await daemon.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("serve's monitor has the core commands but quit, the schema, query-block-exports and the stats", () => {
  const names = (table: CommandTable<Daemon>) => [...table].map((command) => command.name);
  assert.deepEqual(names(serveMonitorCommands()), [
    "qmp_capabilities",
    "query-version",
    "query-commands",
    "query-qmp-schema",
    "query-block-exports",
    "x-denbd-query-stats",
  ]);
  assert.ok(names(daemonCommands()).includes("x-denbd-query-stats"));
});
