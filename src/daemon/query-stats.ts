/**
 * x-denbd-query-stats: the NBD server's counters (`src/nbd/server/stats.ts`)
 * in the QAPI shape of `DenbdStats`, each export with its totals and each
 * connected client with its own.
 *
 * @module
 */

import type { NbdExport } from "../nbd/server/export.ts";
import type { NbdServer } from "../nbd/server/server.ts";
import type { RequestCounters } from "../nbd/server/stats.ts";
import type { DenbdRequestStatsValue, DenbdStatsValue } from "./qapi-types.ts";

/** An export as the statistics name it. */
export interface ExportIdentity {
  /** Its block export id. */
  readonly id: string;
  /** The node it exports. */
  readonly nodeName: string;
  /** The NBD export itself (its name is what clients ask for). */
  readonly nbd: NbdExport;
}

/** `counters` under the member names of DenbdRequestStats. */
export function requestStats(counters: RequestCounters): DenbdRequestStatsValue {
  return {
    rd_bytes: counters.readBytes,
    wr_bytes: counters.writeBytes,
    zero_bytes: counters.zeroBytes,
    unmap_bytes: counters.trimBytes,
    rd_operations: counters.readOperations,
    wr_operations: counters.writeOperations,
    zero_operations: counters.zeroOperations,
    unmap_operations: counters.trimOperations,
    flush_operations: counters.flushOperations,
    block_status_operations: counters.blockStatusOperations,
    cache_operations: counters.cacheOperations,
    failed_operations: counters.failedOperations,
  };
}

/**
 * The statistics of `server` (none when it is not running) for `exports`,
 * in their order, and of its clients, in the order they came; ages are
 * counted up to `now` (milliseconds since the epoch).
 */
export function queryStats(
  server: NbdServer | null,
  exports: readonly ExportIdentity[],
  now: number = Date.now(),
): DenbdStatsValue {
  if (!server) return { exports: [], clients: [] };
  const idOf = new Map(exports.map((entry) => [entry.nbd, entry.id]));
  return {
    exports: exports.map((entry) => {
      const total = server.totalsOf(entry.nbd);
      return {
        id: entry.id,
        name: entry.nbd.name,
        "node-name": entry.nodeName,
        clients: server.clientsOf(entry.nbd),
        "departed-clients": total.departedClients,
        stats: requestStats(total.counters),
      };
    }),
    clients: server.clients().map((client) => ({
      id: client.id,
      address: client.peer,
      export: client.export ? idOf.get(client.export) : undefined,
      "connected-at": Math.floor(client.connectedAt / 1000),
      age: Math.max(0, now - client.connectedAt) / 1000,
      stats: requestStats(client.counters),
    })),
  };
}
