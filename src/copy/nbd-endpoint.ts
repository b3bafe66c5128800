/**
 * An NBD export as either end of a copy, through the client library: extents
 * from `base:allocation` (everything is data when the server has no such
 * context), zeroing with WRITE_ZEROES (the server may punch holes, unless
 * NO_HOLE asks for allocated zeroes), and zeroes written as data only where
 * the server cannot zero. When the copy is to be flushed, writes are flushed
 * behind it where the server takes flushes (see {@linkcode WriteBehind}).
 * The server may be a subprocess of the copy (nbdcopy's `[ CMD ARGS ]`),
 * stopped when the end is closed.
 *
 * @module
 */

import { DenbdError } from "../errors.ts";
import { NbdClient } from "../nbd/client/client.ts";
import { type ActivatedServer, startActivatedServer } from "../nbd/client/subprocess.ts";
import { BASE_ALLOCATION, NBD_FLAG, NBD_STATE } from "../nbd/protocol.ts";
import type { Destination, Source } from "./endpoint.ts";
import type { Extent } from "./plan.ts";
import { WriteBehind } from "./write-behind.ts";

/** Largest write of zeroes as data, where the server cannot zero. */
const ZERO_WRITE_SIZE = 1024 * 1024;

/** How an NBD end is opened. */
export interface NbdOpenOptions {
  /** Connections to open when the server allows several. */
  readonly connections: number;
  /** Flush writes behind the copy (it ends with a flush). */
  readonly writeBehind: boolean;
}

/** An NBD export, read or written. */
export class NbdEndpoint implements Source, Destination {
  /** The URI the user gave. */
  readonly name: string;
  /** An NBD export. */
  readonly kind = "nbd";
  /** Never: an export can be zeroed, but nothing says it is. */
  readonly startsZeroed = false;
  /** Never: requests go out at any offset. */
  readonly sequential = false;
  readonly #client: NbdClient;
  readonly #allocation: boolean;
  readonly #writeBehind?: WriteBehind;
  readonly #server?: ActivatedServer;
  #zeroes?: Uint8Array;

  private constructor(
    name: string,
    client: NbdClient,
    writeBehind: boolean,
    server?: ActivatedServer,
  ) {
    this.name = name;
    this.#client = client;
    this.#server = server;
    this.#allocation = client.contexts.includes(BASE_ALLOCATION);
    if (writeBehind && client.can(NBD_FLAG.SEND_FLUSH)) {
      this.#writeBehind = new WriteBehind(() => client.flush());
    }
  }

  /**
   * Connect to `uri` as the copy's `role`, over up to `options.connections`
   * connections (several only when the server allows multi-conn). A
   * destination must be writable.
   */
  static async open(
    uri: string,
    role: "source" | "destination",
    options: NbdOpenOptions,
  ): Promise<NbdEndpoint> {
    return new NbdEndpoint(uri, await connect(uri, role, options.connections), options.writeBehind);
  }

  /**
   * Run `command` (a program and its arguments) as an NBD server through
   * socket activation and connect to it with `options.connections` (the copy
   * asks for one when an end is a subprocess, as nbdcopy); the end is named
   * after the program, and closing it stops the server, as does a failure
   * to connect.
   */
  static async openSubprocess(
    command: readonly string[],
    role: "source" | "destination",
    options: NbdOpenOptions,
  ): Promise<NbdEndpoint> {
    const server = await startActivatedServer(command);
    try {
      const client = await connect(server.uri, role, options.connections);
      return new NbdEndpoint(server.name, client, options.writeBehind, server);
    } catch (error) {
      await server.stop();
      throw error;
    }
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

  /**
   * WRITE_ZEROES, with NO_HOLE when `allocate`; zeroes written as data where
   * the server has no WRITE_ZEROES.
   */
  async zero(offset: number, length: number, allocate: boolean): Promise<void> {
    if (this.#client.can(NBD_FLAG.SEND_WRITE_ZEROES)) {
      return await this.#client.zero(offset, length, { noHole: allocate });
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

  /** Disconnect cleanly (after any background flush); stop the server if it is a subprocess. */
  async close(): Promise<void> {
    try {
      await this.#writeBehind?.settle().catch(() => {});
      await this.#client.disconnect();
    } finally {
      await this.#server?.stop();
    }
  }
}

/** Connect to `uri` for `role`: a source asks for base:allocation, a destination must be writable. */
async function connect(
  uri: string,
  role: "source" | "destination",
  connections: number,
): Promise<NbdClient> {
  const client = await NbdClient.connect(uri, {
    connections,
    metaContexts: role === "source" ? [BASE_ALLOCATION] : [],
  });
  if (role === "destination" && client.can(NBD_FLAG.READ_ONLY)) {
    await client.disconnect();
    throw new DenbdError("read-only", "the destination is read-only, it cannot be written");
  }
  return client;
}
