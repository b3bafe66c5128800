/**
 * A listening socket the process inherited as a file descriptor (systemd
 * socket activation, QEMU's `fd` socket addresses), as a `Deno.Listener`.
 *
 * Deno has no API to adopt a descriptor as a listener, but its `node:net`
 * can listen on one (`server.listen({ fd })`); each accepted `net.Socket`
 * is wrapped as a `Deno.Conn`, so the NBD server serves it like any other
 * connection. Reading is flow-controlled: at most {@linkcode READ_AHEAD}
 * bytes are taken from the kernel before the connection reads them, and at
 * most {@linkcode MAX_WAITING} accepted clients wait for the server to take
 * them (more are closed at once).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isInheritedSocket } from "./inherited-listener.ts";
 * assert.equal(isInheritedSocket(987654), false); // no such descriptor
 * ```
 * @module
 */

import net from "node:net";
import { DenbdError } from "../errors.ts";

/** Bytes read from a client ahead of the connection's own reads. */
export const READ_AHEAD = 64 * 1024;

/** Accepted clients held until the server accepts them; further ones are closed. */
export const MAX_WAITING = 128;

/** Whether descriptor `fd` of this process is an open socket. */
export function isInheritedSocket(fd: number): boolean {
  try {
    return Deno.readLinkSync(`/proc/self/fd/${fd}`).startsWith("socket:");
  } catch {
    return false;
  }
}

/**
 * Listen on the inherited socket `fd`. Throws kind "invalid" with QEMU's
 * message when `fd` is not a socket. Should listening on it still fail (a
 * connected socket, say), the first accept rejects with kind "io" and
 * later ones as on a closed listener.
 */
export function adoptListener(fd: number): Deno.Listener {
  if (!isInheritedSocket(fd)) {
    throw new DenbdError("invalid", `File descriptor '${fd}' is not a socket`);
  }
  const server = net.createServer({ pauseOnConnect: true });
  const listener = new InheritedListener(server, fd);
  server.listen({ fd });
  return listener;
}

/** A `Deno.Listener` over a `node:net` server listening on an inherited descriptor. */
class InheritedListener implements Deno.Listener {
  /** The descriptor, named as a path ("fd 3"): the socket may be TCP or Unix. */
  readonly addr: Deno.Addr;
  readonly #server: net.Server;
  readonly #waiting: net.Socket[] = [];
  readonly #accepting: PromiseWithResolvers<Deno.Conn>[] = [];
  /** Why listening failed, until an accept has reported it. */
  #failure: DenbdError | null = null;
  #closed = false;

  constructor(server: net.Server, fd: number) {
    this.#server = server;
    this.addr = { transport: "unix", path: `fd ${fd}` };
    server.on("connection", (socket) => this.#arrived(socket));
    server.on("error", (error) => {
      if (server.listening) return; // a failed accept (EMFILE, say): the next one may succeed
      const failure = new DenbdError("io", `cannot listen on file descriptor ${fd}: ${error}`);
      const pending = this.#accepting.splice(0);
      if (pending.length === 0) this.#failure = failure;
      for (const accepting of pending) accepting.reject(failure);
      this.close();
    });
  }

  accept(): Promise<Deno.Conn> {
    const failure = this.#failure;
    this.#failure = null;
    if (failure) return Promise.reject(failure);
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("listener closed"));
    const socket = this.#waiting.shift();
    if (socket) return Promise.resolve(new SocketConn(socket));
    const accepting = Promise.withResolvers<Deno.Conn>();
    this.#accepting.push(accepting);
    return accepting.promise;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#server.listening) this.#server.close();
    for (const socket of this.#waiting.splice(0)) socket.destroy();
    for (const accepting of this.#accepting.splice(0)) {
      accepting.reject(new Deno.errors.BadResource("listener closed"));
    }
  }

  async *[Symbol.asyncIterator](): AsyncIterableIterator<Deno.Conn> {
    while (!this.#closed) yield await this.accept();
  }

  ref(): void {
    this.#server.ref();
  }

  unref(): void {
    this.#server.unref();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #arrived(socket: net.Socket): void {
    // Until a connection reads it, an error (a reset) only means the client is gone.
    socket.on("error", () => socket.destroy());
    const accepting = this.#accepting.shift();
    if (accepting) accepting.resolve(new SocketConn(socket));
    else if (this.#waiting.length < MAX_WAITING) this.#waiting.push(socket);
    else socket.destroy();
  }
}

/** The address of one end of `socket` as Deno describes addresses. */
function addressOf(socket: net.Socket, end: "local" | "remote"): Deno.Addr {
  const hostname = end === "local" ? socket.localAddress : socket.remoteAddress;
  const port = end === "local" ? socket.localPort : socket.remotePort;
  return hostname !== undefined && port !== undefined
    ? { transport: "tcp", hostname, port }
    : { transport: "unix", path: "" };
}

/** Deno's error class for a `node:net` error, by its code. */
function denoError(error: Error): Error {
  const code = (error as { code?: string }).code;
  if (code === "ECONNRESET") return new Deno.errors.ConnectionReset(error.message);
  if (code === "EPIPE") return new Deno.errors.BrokenPipe(error.message);
  return error;
}

/** A `Deno.Conn` over an accepted `net.Socket`. */
class SocketConn implements Deno.Conn {
  readonly localAddr: Deno.Addr;
  readonly remoteAddr: Deno.Addr;
  readonly #socket: net.Socket;
  readonly #chunks: Uint8Array[] = [];
  #buffered = 0;
  #ended = false;
  #failure: Error | null = null;
  #closed = false;
  #wake: (() => void) | null = null;
  #readable?: ReadableStream<Uint8Array<ArrayBuffer>>;
  #writable?: WritableStream<Uint8Array>;

  constructor(socket: net.Socket) {
    this.#socket = socket;
    this.localAddr = addressOf(socket, "local");
    this.remoteAddr = addressOf(socket, "remote");
    socket.setNoDelay(true);
    socket.on("data", (chunk: Uint8Array) => {
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
      if (this.#buffered >= READ_AHEAD) socket.pause();
      this.#notify();
    });
    socket.on("end", () => {
      this.#ended = true;
      this.#notify();
    });
    socket.on("error", (error) => {
      this.#failure ??= denoError(error);
      this.#notify();
    });
    socket.on("close", () => {
      this.#ended = true;
      this.#notify();
    });
    socket.pause();
  }

  async read(into: Uint8Array): Promise<number | null> {
    while (this.#chunks.length === 0) {
      if (this.#closed) throw new Deno.errors.BadResource("connection closed");
      if (this.#failure) throw this.#failure;
      if (this.#ended) return null;
      this.#socket.resume();
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
    const chunk = this.#chunks[0];
    const count = Math.min(chunk.length, into.length);
    into.set(chunk.subarray(0, count));
    if (count === chunk.length) this.#chunks.shift();
    else this.#chunks[0] = chunk.subarray(count);
    this.#buffered -= count;
    if (this.#buffered < READ_AHEAD && !this.#ended) this.#socket.resume();
    return count;
  }

  write(data: Uint8Array): Promise<number> {
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("connection closed"));
    return new Promise((resolve, reject) => {
      this.#socket.write(data, (error) => error ? reject(denoError(error)) : resolve(data.length));
    });
  }

  close(): void {
    if (this.#closed) throw new Deno.errors.BadResource("connection closed");
    this.#closed = true;
    this.#socket.destroy();
    this.#notify();
  }

  closeWrite(): Promise<void> {
    return new Promise((resolve) => this.#socket.end(resolve));
  }

  ref(): void {
    this.#socket.ref();
  }

  unref(): void {
    this.#socket.unref();
  }

  get readable(): ReadableStream<Uint8Array<ArrayBuffer>> {
    return this.#readable ??= new ReadableStream({
      pull: async (controller) => {
        const buffer = new Uint8Array(READ_AHEAD);
        const count = await this.read(buffer);
        if (count === null) controller.close();
        else controller.enqueue(buffer.subarray(0, count));
      },
      cancel: () => this.close(),
    });
  }

  get writable(): WritableStream<Uint8Array> {
    return this.#writable ??= new WritableStream({
      write: async (chunk) => {
        for (let done = 0; done < chunk.length;) done += await this.write(chunk.subarray(done));
      },
      close: () => this.closeWrite(),
    });
  }

  [Symbol.dispose](): void {
    if (!this.#closed) this.close();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }
}
