/**
 * Walk the block status of one metadata context over the start of an
 * export, request after request, as libnbd's tools ask: each request as long
 * as the client allows (NbdClient.maxStatusLength), from where the previous
 * answer ended.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { walkExtents } from "./extent-walk.ts";
 * import { NbdClient } from "../nbd/client/client.ts";
 * // A server to walk: denbd's own, exporting 1 MiB of memory with data at the start.
 * import { MemoryNode } from "../block/memory.ts";
 * import { ExportTable, NbdExport } from "../nbd/server/export.ts";
 * import { NbdServer } from "../nbd/server/server.ts";
 * import { Logger } from "../log.ts";
 * const node = new MemoryNode(1 << 20);
 * await node.write(0, new Uint8Array(65536).fill(1));
 * const catalog = new ExportTable();
 * catalog.add(new NbdExport({ name: "", node }));
 * const server = new NbdServer({ catalog, log: new Logger() });
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * server.listen(listener);
 * const client = await NbdClient.connect(`nbd://127.0.0.1:${listener.addr.port}/`, {
 *   metaContexts: ["base:allocation"],
 * });
 * try {
 *   const extents = [];
 *   for await (const extent of walkExtents(client, "base:allocation", client.size)) {
 *     extents.push(extent);
 *   }
 *   assert.deepEqual(extents[0], { offset: 0, length: 65536, flags: 0 }); // data, not zero
 * } finally {
 *   await client.disconnect();
 *   await server.close();
 * }
 * ```
 * @module
 */

import { DenbdError } from "../errors.ts";
import type { NbdClient } from "../nbd/client/client.ts";

/** One extent: where it starts, how long it is, the context's flags for it. */
export interface Extent {
  /** Where it starts. */
  readonly offset: number;
  /** Bytes covered; the last extent of the walk may reach past its end. */
  readonly length: number;
  /** The context's flags. */
  readonly flags: number;
}

/**
 * The extents of `context` covering bytes `from` up to `end` of the export,
 * in order; requests start at `from` rounded down to the server's minimum
 * block, and the first extent is cut to start at `from`.
 */
export async function* walkExtents(
  client: NbdClient,
  context: string,
  end: number,
  from = 0,
): AsyncGenerator<Extent> {
  const block = client.minimumBlock;
  for (let offset = from - from % block; offset < end;) {
    const wanted = Math.min(Math.ceil((end - offset) / block) * block, client.size - offset);
    const extents = await client.blockStatus(offset, wanted, { context });
    const start = offset;
    for (const { length, flags } of extents) {
      const skipped = Math.max(0, Math.min(from - offset, length));
      if (skipped < length) yield { offset: offset + skipped, length: length - skipped, flags };
      offset += length;
    }
    if (offset === start) throw new DenbdError("io", `server sent no extent at ${offset}`);
  }
}
