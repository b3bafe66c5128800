import assert from "node:assert/strict";
import { NbdServer } from "../../src/nbd/server/server.ts";
import { ExportTable, NbdExport } from "../../src/nbd/server/export.ts";
import { MemoryNode } from "../../src/block/memory.ts";
import { Logger } from "../../src/log.ts";
import { NbdClient } from "../../src/nbd/client/client.ts";
import { ALLOCATION_DEPTH_CONTEXT, qemuNamespace } from "../../src/nbd/server/qemu-namespace.ts";
import { BASE_ALLOCATION, NBD_STATE } from "../../src/nbd/protocol.ts";
import { LayeredNode } from "./layered_node.ts";

/** A server with exports "a" and "b" on a loopback port; always closed afterwards. */
async function withServer(
  body: (
    server: NbdServer,
    table: ExportTable,
    a: NbdExport,
    uri: (name: string) => string,
  ) => Promise<void>,
): Promise<void> {
  const table = new ExportTable();
  const a = new NbdExport({ name: "a", node: new MemoryNode(1 << 20) });
  table.add(a);
  table.add(new NbdExport({ name: "b", node: new MemoryNode(1 << 20) }));
  const server = new NbdServer({ catalog: table, log: new Logger({ prefix: "test" }) });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  server.listen(listener);
  const { port } = listener.addr as Deno.NetAddr;
  try {
    await body(server, table, a, (name) => `nbd://127.0.0.1:${port}/${name}`);
  } finally {
    await server.close();
  }
}

Deno.test("the server counts the clients of an export and drops exactly those", async () => {
  await withServer(async (server, table, a, uri) => {
    const first = await NbdClient.connect(uri("a"), { timeoutMs: 5000 });
    const second = await NbdClient.connect(uri("a"), { timeoutMs: 5000 });
    const other = await NbdClient.connect(uri("b"), { timeoutMs: 5000 });
    try {
      assert.equal(server.clientsOf(a), 2);
      table.remove("a");
      await server.dropClients(a);
      assert.equal(server.clientsOf(a), 0);
      // Dropped clients fail at once (not after the client's silence timeout).
      const started = performance.now();
      await assert.rejects(first.read(0, 512), /server closed the connection/);
      await assert.rejects(second.read(0, 512), /server closed the connection/);
      assert.ok(performance.now() - started < 1000);
      assert.equal((await other.read(0, 512)).length, 512, "clients of other exports stay");
      await assert.rejects(NbdClient.connect(uri("a")), { kind: "not-found" });
    } finally {
      await Promise.all([first, second, other].map((client) => client.disconnect()));
    }
  });
});

Deno.test("an export of a layered node reports and reads through its backing chain", async () => {
  const C = 64 * 1024;
  const backing = new MemoryNode(C);
  await backing.write(0, new Uint8Array(C).fill(7));
  const reads: [number, number][] = [];
  const top = new class extends LayeredNode {
    override read(offset: number, into: Uint8Array): Promise<void> {
      reads.push([offset, into.length]);
      return super.read(offset, into);
    }
  }(3 * C, backing);
  await top.write(C, new Uint8Array(C).fill(1));
  const table = new ExportTable();
  table.add(
    new NbdExport({
      name: "",
      node: top,
      extraNamespaces: [qemuNamespace({ allocationDepth: top })],
    }),
  );
  const server = new NbdServer({ catalog: table, log: new Logger({ prefix: "test" }) });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  server.listen(listener);
  const { port } = listener.addr as Deno.NetAddr;
  try {
    const client = await NbdClient.connect(`nbd://127.0.0.1:${port}/`, {
      metaContexts: [BASE_ALLOCATION, ALLOCATION_DEPTH_CONTEXT],
    });
    try {
      assert.deepEqual(await client.blockStatus(0, 3 * C, { context: BASE_ALLOCATION }), [
        { length: 2 * C, flags: 0 },
        { length: C, flags: NBD_STATE.HOLE | NBD_STATE.ZERO },
      ]);
      assert.deepEqual(
        await client.blockStatus(0, 3 * C, { context: ALLOCATION_DEPTH_CONTEXT }),
        // Zeroes past the end of the shorter backing node are its own, as QEMU reports them.
        [{ length: C, flags: 2 }, { length: C, flags: 1 }, { length: C, flags: 2 }],
      );
      const expected = new Uint8Array(3 * C);
      expected.fill(7, 0, C).fill(1, C, 2 * C);
      assert.deepEqual(await client.read(0, 3 * C), expected);
      // The last chunk, past the end of the backing node, went out as a hole without being read.
      assert.deepEqual(reads, [[0, C], [C, C]]);
    } finally {
      await client.disconnect();
    }
  } finally {
    await server.close();
  }
});
