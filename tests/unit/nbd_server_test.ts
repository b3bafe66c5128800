import assert from "node:assert/strict";
import { NbdServer } from "../../src/nbd/server/server.ts";
import { ExportTable, NbdExport } from "../../src/nbd/server/export.ts";
import { MemoryNode } from "../../src/block/memory.ts";
import { Logger } from "../../src/log.ts";
import { NbdClient } from "../../src/nbd/client/client.ts";

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
