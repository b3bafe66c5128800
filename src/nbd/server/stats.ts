/**
 * What the server has served, counted: requests by kind with their bytes,
 * and error replies, per connection ({@linkcode RequestCounters}, held by the
 * connection and bumped by its transmission) and per export
 * ({@linkcode ExportTotals}: its clients' counters, those of clients that
 * left included). Counting costs a few integer additions on an object the
 * connection already holds: no lookup, allocation or clock per request.
 *
 * A request counts once its reply is being sent: a successful one under its
 * kind (and its length under its bytes), a failed or refused one under
 * `failedOperations`, as QEMU's block accounting counts done and failed
 * requests apart.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ExportTotals, RequestCounters } from "./stats.ts";
 * import { NBD_CMD } from "../protocol.ts";
 * const client = new RequestCounters();
 * client.countDone(NBD_CMD.WRITE, 65536);
 * const totals = new ExportTotals();
 * const disk = {};
 * totals.fold(disk, client);
 * assert.equal(totals.of(disk, []).counters.writeBytes, 65536);
 * assert.equal(totals.of(disk, []).departedClients, 1);
 * ```
 * @module
 */

import { NBD_CMD } from "../protocol.ts";

/** Requests served and their bytes, by kind, and error replies. */
export class RequestCounters {
  /** Successful READs. */
  readOperations = 0;
  /** Bytes of successful READs. */
  readBytes = 0;
  /** Successful WRITEs. */
  writeOperations = 0;
  /** Bytes of successful WRITEs. */
  writeBytes = 0;
  /** Successful WRITE_ZEROES. */
  zeroOperations = 0;
  /** Bytes of successful WRITE_ZEROES. */
  zeroBytes = 0;
  /** Successful TRIMs. */
  trimOperations = 0;
  /** Bytes of successful TRIMs. */
  trimBytes = 0;
  /** Successful FLUSHes. */
  flushOperations = 0;
  /** Successful BLOCK_STATUS requests. */
  blockStatusOperations = 0;
  /** Successful CACHE requests. */
  cacheOperations = 0;
  /** Replies with an error, whatever the command (refused requests included). */
  failedOperations = 0;

  /** Count a request of command `type` over `length` bytes that succeeded. */
  countDone(type: number, length: number): void {
    switch (type) {
      case NBD_CMD.READ:
        this.readOperations++;
        this.readBytes += length;
        return;
      case NBD_CMD.WRITE:
        this.writeOperations++;
        this.writeBytes += length;
        return;
      case NBD_CMD.WRITE_ZEROES:
        this.zeroOperations++;
        this.zeroBytes += length;
        return;
      case NBD_CMD.TRIM:
        this.trimOperations++;
        this.trimBytes += length;
        return;
      case NBD_CMD.FLUSH:
        this.flushOperations++;
        return;
      case NBD_CMD.BLOCK_STATUS:
        this.blockStatusOperations++;
        return;
      case NBD_CMD.CACHE:
        this.cacheOperations++;
        return;
    }
  }

  /** Add every counter of `other` to this one's. */
  add(other: RequestCounters): void {
    for (const name of Object.keys(other) as CounterName[]) this[name] += other[name];
  }
}

/** The names of the counters of {@linkcode RequestCounters}. */
type CounterName = {
  [K in keyof RequestCounters]: RequestCounters[K] extends number ? K : never;
}[keyof RequestCounters];

/** What an export has served, its present and past clients together. */
export interface ExportTotal {
  /** The sum of the counters of every client it has had. */
  readonly counters: RequestCounters;
  /** Clients that used it and have left. */
  readonly departedClients: number;
}

/** What the clients that left had counted, by export. */
interface Departed {
  readonly counters: RequestCounters;
  clients: number;
}

/**
 * Per-export totals: the counters of clients that left are folded in here
 * when they leave, so an export's figures never drop. Keyed by the export
 * object (weakly: a removed export's totals go with it).
 */
export class ExportTotals {
  readonly #departed = new WeakMap<object, Departed>();

  /** A client of `exported` with `counters` has left: keep its counts in the export's total. */
  fold(exported: object, counters: RequestCounters): void {
    let departed = this.#departed.get(exported);
    if (!departed) {
      departed = { counters: new RequestCounters(), clients: 0 };
      this.#departed.set(exported, departed);
    }
    departed.counters.add(counters);
    departed.clients++;
  }

  /** The totals of `exported`: what its departed clients counted plus `present` clients' counters. */
  of(exported: object, present: Iterable<RequestCounters>): ExportTotal {
    const counters = new RequestCounters();
    const departed = this.#departed.get(exported);
    if (departed) counters.add(departed.counters);
    for (const client of present) counters.add(client);
    return { counters, departedClients: departed?.clients ?? 0 };
  }
}
