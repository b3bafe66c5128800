/**
 * An NBD export as either end of a copy, through the client library: extents
 * from `base:allocation` (everything is data when the server has no such
 * context), zeroing with WRITE_ZEROES (the server may punch holes), and
 * zeroes written as data only where the server cannot zero. Writes are
 * flushed behind the copy where the server takes flushes (see
 * {@linkcode WriteBehind}).
 *
 * @module
 */

import { DenbdError } from "../errors.ts";
import { NbdClient } from "../nbd/client/client.ts";
import { BASE_ALLOCATION, NBD_FLAG, NBD_STATE } from "../nbd/protocol.ts";
import type { Destination, Source } from "./endpoint.ts";
import type { Extent } from "./plan.ts";
import { WriteBehind } from "./write-behind.ts";

/** Largest write of zeroes as data, where the server cannot zero. */
const ZERO_WRITE_SIZE = 1024 * 1024;

/** An NBD export, read or written. */
export class NbdEndpoint implements Source, Destination {
  /** The URI the user gave. */
  readonly name: string;
  /** Never: an export can be zeroed, but nothing says it is. */
  readonly startsZeroed = false;
  /** Never: requests go out at any offset. */
  readonly sequential = false;
  readonly #client: NbdClient;
  readonly #allocation: boolean;
  readonly #writeBehind?: WriteBehind;
  #zeroes?: Uint8Array;

  private constructor(name: string, client: NbdClient) {
    this.name = name;
    this.#client = client;
    this.#allocation = client.contexts.includes(BASE_ALLOCATION);
    if (client.can(NBD_FLAG.SEND_FLUSH)) this.#writeBehind = new WriteBehind(() => client.flush());
  }

  /**
   * Connect to `uri` as the copy's `role`, over up to `connections`
   * connections (several only when the server allows multi-conn). A
   * destination must be writable.
   */
  static async open(
    uri: string,
    role: "source" | "destination",
    connections: number,
  ): Promise<NbdEndpoint> {
    const client = await NbdClient.connect(uri, {
      connections,
      metaContexts: role === "source" ? [BASE_ALLOCATION] : [],
    });
    if (role === "destination" && client.can(NBD_FLAG.READ_ONLY)) {
      await client.disconnect();
      throw new DenbdError("read-only", "the destination is read-only, it cannot be written");
    }
    return new NbdEndpoint(uri, client);
  }

  /** The export's size. */
  get size(): number {
    return this.#client.size;
  }

  /** Connections open to the server. */
  get connections(): number {
    return this.#client.connectionCount;
  }

  /** The server's largest payload. */
  get maxRequest(): number {
    return this.#client.maxPayload;
  }

  /** Extents from `base:allocation`; one data extent when the server has no such context. */
  async extents(offset: number, length: number): Promise<Extent[]> {
    if (!this.#allocation) return [{ offset, length, zero: false }];
    const descriptors = await this.#client.blockStatus(offset, length, {
      context: BASE_ALLOCATION,
    });
    const extents: Extent[] = [];
    let position = offset;
    for (const { length: size, flags } of descriptors) {
      extents.push({ offset: position, length: size, zero: (flags & NBD_STATE.ZERO) !== 0 });
      position += size;
    }
    return extents;
  }

  /** Fill `into` from `offset`; always all of it. */
  async read(offset: number, into: Uint8Array): Promise<number> {
    await this.#client.readInto(offset, into);
    return into.length;
  }

  /** Write `data` at `offset` (flushed behind the copy). */
  async write(offset: number, data: Uint8Array): Promise<void> {
    await this.#client.write(offset, data);
    this.#writeBehind?.written(data.length);
  }

  /** WRITE_ZEROES without NO_HOLE; zeroes written as data where the server has no WRITE_ZEROES. */
  async zero(offset: number, length: number): Promise<void> {
    if (this.#client.can(NBD_FLAG.SEND_WRITE_ZEROES)) {
      return await this.#client.zero(offset, length);
    }
    const zeroes = this.#zeroes ??= new Uint8Array(Math.min(ZERO_WRITE_SIZE, this.maxRequest));
    for (let done = 0; done < length; done += zeroes.length) {
      await this.#client.write(
        offset + done,
        zeroes.subarray(0, Math.min(zeroes.length, length - done)),
      );
    }
  }

  /** FLUSH, where the server takes it, after any background flush (whose failure is reported here). */
  async flush(): Promise<void> {
    if (!this.#writeBehind) return;
    await this.#writeBehind.settle();
    await this.#client.flush();
  }

  /** Disconnect cleanly (after any background flush). */
  async close(): Promise<void> {
    await this.#writeBehind?.settle().catch(() => {});
    await this.#client.disconnect();
  }
}
