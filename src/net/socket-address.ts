/**
 * Where a server listens: a TCP host and port, or a Unix socket path. The
 * same shape as QEMU's SocketAddress (type inet / unix), so QMP arguments and
 * command-line flags map onto it directly.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatAddress, listenOn } from "./socket-address.ts";
 * assert.equal(formatAddress({ type: "inet", host: "::1", port: 10809 }), "[::1]:10809");
 * const { listener, bound } = listenOn({ type: "inet", host: "127.0.0.1", port: 0 });
 * assert.ok(bound.type === "inet" && bound.port > 0); // the port the system chose
 * listener.close();
 * ```
 * @module
 */

/** A TCP or Unix socket address. */
export type SocketAddress =
  | { readonly type: "inet"; readonly host: string; readonly port: number }
  | { readonly type: "unix"; readonly path: string };

/** Where a server listens: a socket address, or a socket it inherited as a descriptor. */
export type ListeningAddress = SocketAddress | { readonly type: "fd"; readonly fd: number };

/**
 * Render an address for messages: "127.0.0.1:10809", "[::1]:10809", a path,
 * or "inherited socket (fd 3)".
 */
export function formatAddress(address: ListeningAddress): string {
  if (address.type === "fd") return `inherited socket (fd ${address.fd})`;
  if (address.type === "unix") return address.path;
  return address.host.includes(":")
    ? `[${address.host}]:${address.port}`
    : `${address.host}:${address.port}`;
}

/** Render the peer of an accepted connection; a Unix client has no name of its own: "unix". */
export function formatPeer(addr: Deno.Addr): string {
  if (addr.transport === "tcp" || addr.transport === "udp") {
    return formatAddress({ type: "inet", host: addr.hostname, port: addr.port });
  }
  return "unix";
}

/**
 * Listen on `address`. A stale Unix socket file at the path is replaced, as
 * QEMU does. The returned address carries the actual port when 0 was asked for.
 */
export function listenOn(
  address: SocketAddress,
): { listener: Deno.Listener; bound: SocketAddress } {
  if (address.type === "unix") {
    removeStaleSocket(address.path);
    return { listener: Deno.listen({ transport: "unix", path: address.path }), bound: address };
  }
  const listener = Deno.listen({ transport: "tcp", hostname: address.host, port: address.port });
  const local = listener.addr as Deno.NetAddr;
  return { listener, bound: { type: "inet", host: address.host, port: local.port } };
}

/** Remove a leftover socket file at `path`; anything else there is left alone. */
export function removeStaleSocket(path: string): void {
  try {
    if (Deno.lstatSync(path).isSocket) Deno.removeSync(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}
