/**
 * Connecting to a TCP host by name as a client should: every address the
 * name resolves to (through the system resolver, so /etc/hosts counts), in
 * the resolver's order, until one answers. `Deno.connect` with a name tries
 * one address only, so `localhost` fails when the server listens on the
 * other of `::1` and `127.0.0.1`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dialTcp } from "./dial.ts";
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const { port } = listener.addr;
 * // A name that resolves to an address nobody listens on first, then the listener's.
 * const resolve = () => Promise.resolve(["::1", "127.0.0.1"]);
 * const conn = await dialTcp("both", port, { resolve });
 * assert.equal((conn.remoteAddr as Deno.NetAddr).hostname, "127.0.0.1");
 * conn.close();
 * listener.close();
 * ```
 * @module
 */

import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import { DenbdError, osErrorText } from "../errors.ts";

/** How {@linkcode dialTcp} finds the addresses of a name. */
export interface DialOptions {
  /** The addresses of `hostname` in the order to try them; the system resolver by default. */
  readonly resolve?: (hostname: string) => Promise<string[]>;
}

/** The addresses of `hostname` from the system resolver (getaddrinfo), in its order. */
async function systemResolve(hostname: string): Promise<string[]> {
  const found = await lookup(hostname, { all: true, verbatim: true });
  return [...new Set(found.map((entry) => entry.address))];
}

/**
 * Connect to `port` on `hostname` (an address, or a name tried at each of
 * its addresses in turn). Fails with every address's failure when none
 * answers ("not-found" when the name does not resolve).
 */
export async function dialTcp(
  hostname: string,
  port: number,
  options: DialOptions = {},
): Promise<Deno.TcpConn> {
  let addresses: string[];
  if (isIP(hostname)) {
    addresses = [hostname];
  } else {
    try {
      addresses = await (options.resolve ?? systemResolve)(hostname);
    } catch (error) {
      throw new DenbdError("not-found", `cannot resolve '${hostname}': ${osErrorText(error)}`);
    }
  }
  const failures: string[] = [];
  for (const address of addresses) {
    try {
      return await Deno.connect({ hostname: address, port });
    } catch (error) {
      failures.push(
        addresses.length > 1 ? `${address}: ${osErrorText(error)}` : osErrorText(error),
      );
    }
  }
  if (failures.length === 0) failures.push("no addresses");
  throw new DenbdError("io", failures.join("; "));
}
