/**
 * Walk the block status of one metadata context over the start of an
 * export, request after request, as libnbd's tools ask: each request as long
 * as the client allows (NbdClient.maxStatusLength), from where the previous
 * answer ended.
 *
 * @example
 * ```ts
 * import { walkExtents } from "./extent-walk.ts";
 * import { NbdClient } from "../nbd/client/client.ts";
 * const client = await NbdClient.connect("nbd://localhost/", { metaContexts: ["base:allocation"] });
 * for await (const { offset, length, flags } of walkExtents(client, "base:allocation", client.size)) {
 *   console.log(offset, length, flags);
 * }
 * await client.disconnect();
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
