/**
 * A TLS session over any {@linkcode ByteStream}: GnuTLS does the protocol,
 * this module moves its ciphertext. GnuTLS never touches a socket: its push
 * and pull callbacks (one set for all sessions, told apart by the transport
 * pointer, which is the session's number) append to an outgoing buffer and
 * take from an incoming one, synchronously on the JavaScript thread during
 * the synchronous FFI calls gnutls_handshake, gnutls_record_recv,
 * gnutls_record_send and gnutls_bye. When GnuTLS wants ciphertext that has
 * not arrived, the pull callback fails with EAGAIN (the session is
 * non-blocking), the call returns GNUTLS_E_AGAIN, and the driver awaits the
 * transport and calls again. No pull-timeout callback is needed for that
 * (GnuTLS does not use it in non-blocking TLS mode) but one is set, as
 * GnuTLS asks of custom pull functions, answering from the buffer.
 *
 * Memory stays bounded whatever the peer sends: at most one transport read
 * of ciphertext is buffered here ({@linkcode INCOMING_SIZES}), GnuTLS holds
 * at most a record once the handshake is done, and a handshake ends after
 * {@linkcode HANDSHAKE_MAX_BYTES}; plaintext goes straight into the caller's
 * buffer. The transport ending between records reads as the end of the
 * stream (peers such as QEMU close without close_notify), inside a record as
 * an error.
 * A write encrypts up to 256 KiB of its data into the outgoing buffer
 * (records of up to 16 KiB) and hands it to the transport in one write; a
 * larger write is partial, as a socket's is, so the buffer stays bounded.
 *
 * Reads and writes may run concurrently (a reader awaiting ciphertext while a
 * writer sends), as the NBD server and client do; outgoing bytes from either
 * (a TLS 1.3 key update answered during a read) go out in order.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { TlsCredentials } from "./credentials.ts";
 * import { TlsSession } from "./session.ts";
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const [server, client] = await Promise.all([
 *   listener.accept(),
 *   Deno.connect({ hostname: "127.0.0.1", port: (listener.addr as Deno.NetAddr).port }),
 * ]);
 * listener.close();
 * const [serverSide, clientSide] = await Promise.all([
 *   TlsSession.handshake(server, await TlsCredentials.anon({ endpoint: "server" })),
 *   TlsSession.handshake(client, await TlsCredentials.anon({ endpoint: "client" })),
 * ]);
 * await clientSide.write(new TextEncoder().encode("hi"));
 * assert.equal(await serverSide.read(new Uint8Array(16)), 2);
 * clientSide.close(); // close_notify: the server reads the end
 * assert.equal(await serverSide.read(new Uint8Array(16)), null);
 * serverSide.close();
 * await Promise.all([clientSide.closed, serverSide.closed]);
 * ```
 * @module
 */

import type { ByteStream } from "../io/byte-stream.ts";
import { type BufferSizeRange, BufferSizing } from "../io/buffer-sizing.ts";
import { DenbdError, messageOf } from "../errors.ts";
import {
  peerCertificateData,
  pskUsername,
  verifyStatusReason,
  X509Certificate,
} from "./certificate.ts";
import type { TlsCredentials } from "./credentials.ts";
import {
  cString,
  errorText,
  Gnutls,
  gnutls,
  pointerSlot,
  readCString,
  slotPointer,
  TransportErrno,
} from "./gnutls.ts";

/** Who the peer proved to be. */
export interface TlsPeer {
  /** x509 with a certificate: its distinguished name as GnuTLS prints it
   *  (gnutls_x509_crt_get_dn, the string QEMU's authz matches); psk: the username; else null. */
  readonly identity: string | null;
}

/** What the handshake checks beyond the credentials. */
export interface TlsHandshakeOptions {
  /** Client only: the DNS name or IP the server certificate must match; omitted = no name check. */
  readonly hostname?: string;
}

/** A TLS record header: content type, version, 16-bit length. */
const RECORD_HEADER_BYTES = 5;
/** The largest TLS record on the wire: 16 KiB of plaintext, its expansion and the header. */
const MAX_RECORD_BYTES = 16 * 1024 + 256 + 5;
/**
 * Sizes of the incoming ciphertext buffer (what one transport read may bring
 * and the most buffered here): one record while quiet, more while busy.
 */
export const INCOMING_SIZES: BufferSizeRange = {
  initial: MAX_RECORD_BYTES,
  maximum: 64 * 1024,
};
/**
 * The most plaintext one write encrypts before sending it: larger writes are
 * partial (their callers loop), so the outgoing buffer never grows past this
 * plus the records' overhead, however large the payloads.
 */
const WRITE_SLICE_BYTES = 256 * 1024;
/** The most plaintext in one TLS record. */
const MAX_RECORD_PLAINTEXT = 16 * 1024;
/** Ciphertext bytes a record adds to its plaintext, generously (header, nonce, tag, padding). */
const RECORD_OVERHEAD_BYTES = 64;
/**
 * Sizes of the outgoing ciphertext buffer: one record while quiet, up to a
 * whole write slice while busy (more only for a moment, if GnuTLS pushes more).
 */
const OUTGOING_SIZES: BufferSizeRange = {
  initial: MAX_RECORD_BYTES,
  maximum: WRITE_SLICE_BYTES + (WRITE_SLICE_BYTES / MAX_RECORD_PLAINTEXT) * RECORD_OVERHEAD_BYTES,
};
/**
 * The most ciphertext a peer may send before its handshake completes. GnuTLS
 * 3.7 buffers a handshake message whole before refusing one over its 128 KiB
 * limit, so a peer announcing 16 MiB would be held that long; legitimate
 * handshakes (certificate chains included) take a few KiB.
 */
export const HANDSHAKE_MAX_BYTES = 512 * 1024;
/** How long {@linkcode TlsSession.close} waits for close_notify to leave before closing anyway. */
const CLOSE_NOTIFY_WAIT_MS = 1000;

/** The live sessions' ciphertext buffers, by the number GnuTLS holds as transport pointer. */
const transports = new Map<number, CiphertextBuffers>();
let nextTransportId = 1;

/** Ciphertext in both directions between GnuTLS and the transport. */
class CiphertextBuffers {
  /** How large `incoming` should be. */
  readonly incomingSizing = new BufferSizing(INCOMING_SIZES);
  /** Received ciphertext GnuTLS has not pulled yet: incoming[inStart, inEnd). */
  incoming = new Uint8Array(INCOMING_SIZES.initial);
  inStart = 0;
  inEnd = 0;
  /** The transport ended. */
  eof = false;
  /** Ciphertext received in all. */
  receivedBytes = 0;
  /** How large `outgoing` should be. */
  readonly outgoingSizing = new BufferSizing(OUTGOING_SIZES);
  /** Ciphertext GnuTLS pushed, not yet written: outgoing[outStart, outEnd). */
  outgoing = new Uint8Array(OUTGOING_SIZES.initial);
  outStart = 0;
  outEnd = 0;
  /** The GnuTLS session, told EAGAIN when nothing is buffered. */
  session: Deno.PointerValue = null;
  /** TLS record framing of everything received: header bytes seen of the next record... */
  readonly #header = new Uint8Array(RECORD_HEADER_BYTES);
  #headerSeen = 0;
  /** ...and bytes still to come of the current record's body. */
  #bodyLeft = 0;

  /** Whether everything received so far ends on a TLS record boundary. */
  get atRecordBoundary(): boolean {
    return this.#headerSeen === 0 && this.#bodyLeft === 0;
  }

  /** Note `count` bytes received into `incoming` at `inEnd` (tracking record framing). */
  received(count: number): void {
    const end = this.inEnd + count;
    this.receivedBytes += count;
    for (let at = this.inEnd; at < end;) {
      if (this.#bodyLeft > 0) {
        const skipped = Math.min(this.#bodyLeft, end - at);
        this.#bodyLeft -= skipped;
        at += skipped;
        continue;
      }
      this.#header[this.#headerSeen++] = this.incoming[at++];
      if (this.#headerSeen === RECORD_HEADER_BYTES) {
        this.#bodyLeft = (this.#header[3] << 8) | this.#header[4];
        this.#headerSeen = 0;
      }
    }
    this.inEnd = end;
  }

  /** Append `length` bytes at native `data` to the outgoing ciphertext. */
  push(data: Deno.PointerObject, length: number): void {
    this.reserve(length);
    Deno.UnsafePointerView.copyInto(
      data,
      this.outgoing.subarray(this.outEnd, this.outEnd + length),
    );
    this.outEnd += length;
  }

  /**
   * Make room for `length` more outgoing bytes in one step. A transport
   * write may be reading the current buffer, so it is replaced, never moved.
   */
  reserve(length: number): void {
    if (this.outEnd + length <= this.outgoing.length) return;
    const pending = this.outEnd - this.outStart;
    this.outgoingSizing.fit(pending + length);
    const grown = new Uint8Array(Math.max(this.outgoingSizing.size, pending + length));
    grown.set(this.outgoing.subarray(this.outStart, this.outEnd));
    this.outgoing = grown;
    this.outStart = 0;
    this.outEnd = pending;
  }

  /** Give GnuTLS up to `length` buffered bytes at native `data`; the count, 0 at EOF, -1 when empty. */
  pull(data: Deno.PointerObject, length: number): number {
    const available = this.inEnd - this.inStart;
    if (available === 0) {
      if (this.eof) return 0;
      gnutls().gnutls_transport_set_errno(this.session, TransportErrno.EAGAIN);
      return -1;
    }
    const count = Math.min(available, length);
    new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(data, count)).set(
      this.incoming.subarray(this.inStart, this.inStart + count),
    );
    this.inStart += count;
    return count;
  }
}

/** The transport number GnuTLS passes back to the callbacks. */
function transportId(pointer: Deno.PointerValue): number {
  return Number(Deno.UnsafePointer.value(pointer));
}

/** The C signatures of GnuTLS's push and pull functions (ssize_t f(ptr, void*, size_t)). */
const PUSH_PULL = { parameters: ["pointer", "pointer", "usize"], result: "isize" } as const;
/** The C signature of GnuTLS's pull-timeout function (int f(ptr, unsigned ms)). */
const PULL_TIMEOUT = { parameters: ["pointer", "u32"], result: "i32" } as const;

/** GnuTLS's push, pull and pull-timeout callbacks, shared by every session. */
interface TransportCallbacks {
  readonly push: Deno.UnsafeCallback<typeof PUSH_PULL>;
  readonly pull: Deno.UnsafeCallback<typeof PUSH_PULL>;
  readonly pullTimeout: Deno.UnsafeCallback<typeof PULL_TIMEOUT>;
}

let callbacks: TransportCallbacks | undefined;

/** The callbacks, made on first use. */
function transportCallbacks(): TransportCallbacks {
  callbacks ??= {
    push: new Deno.UnsafeCallback(PUSH_PULL, (pointer, data, length) => {
      const buffers = transports.get(transportId(pointer));
      if (!buffers || data === null) return -1n;
      buffers.push(data, Number(length));
      return length;
    }),
    pull: new Deno.UnsafeCallback(PUSH_PULL, (pointer, data, length) => {
      const buffers = transports.get(transportId(pointer));
      if (!buffers || data === null) return -1n;
      return BigInt(buffers.pull(data, Number(length)));
    }),
    // Ready when buffered or at EOF; after any wait also ready (the pull then says EAGAIN).
    pullTimeout: new Deno.UnsafeCallback(PULL_TIMEOUT, (pointer, milliseconds) => {
      const buffers = transports.get(transportId(pointer));
      if (!buffers) return -1;
      return buffers.inEnd > buffers.inStart || buffers.eof || milliseconds !== 0 ? 1 : 0;
    }),
  };
  return callbacks;
}

/** A TLS session over a byte stream; itself a byte stream of plaintext. */
export class TlsSession implements ByteStream {
  /** Who the peer proved to be. */
  readonly peer: TlsPeer;
  /** e.g. "TLS1.3, AES-256-GCM" for logs and nbdinfo-like reports. */
  readonly description: string;
  /** Resolves once {@linkcode close} has finished with the transport. */
  readonly closed: Promise<void>;
  #core: SessionCore;
  #resolveClosed!: () => void;

  private constructor(core: SessionCore, peer: TlsPeer, description: string) {
    this.#core = core;
    this.peer = peer;
    this.description = description;
    this.closed = new Promise((resolve) => this.#resolveClosed = resolve);
  }

  /** Handshake over `transport`, then check the peer as QEMU does: server with verifyPeer
   *  demands a client certificate trusted by the CA (CRL, dates); client with verifyPeer checks
   *  the server certificate (CA, CRL, dates) and `hostname`. Rejects with a DenbdError whose
   *  message says what failed. On failure the GnuTLS session is freed and `transport` is left
   *  open (the caller owns it and closes it). Bounded in memory whatever the peer sends. No time
   *  limit of its own: callers race it with their deadline and close the transport, which makes
   *  it reject. */
  static async handshake(
    transport: ByteStream,
    credentials: TlsCredentials,
    options: TlsHandshakeOptions = {},
  ): Promise<TlsSession> {
    const core = new SessionCore(transport, credentials);
    try {
      await core.handshake();
      const peer = checkPeer(core.handle, credentials, options.hostname);
      return new TlsSession(core, peer, core.describe());
    } catch (error) {
      core.free();
      throw error;
    }
  }

  /** Plaintext; null at the peer's close_notify or transport end (a truncation is an error). */
  read(buffer: Uint8Array): Promise<number | null> {
    return this.#core.read(buffer);
  }

  /** Encrypt and write up to 256 KiB of `data`; resolves to the count written. */
  write(data: Uint8Array): Promise<number> {
    return this.#core.write(data);
  }

  /** Best-effort close_notify, then close the transport and free the session; idempotent. */
  close(): void {
    this.#core.close().finally(this.#resolveClosed);
  }
}

/** The GnuTLS session and the driver moving its ciphertext. */
class SessionCore {
  readonly handle: Deno.PointerValue;
  readonly #transport: ByteStream;
  readonly #credentials: TlsCredentials;
  readonly #id: number;
  readonly #buffers = new CiphertextBuffers();
  #handshaken = false;
  #freed = false;
  /** Reading reached close_notify or the transport's end. */
  #ended = false;
  /** What GnuTLS said after a read had plaintext already, for the next read. */
  #deferred: number | undefined;
  #closing: Promise<void> | undefined;
  /** The flush in progress, which later flushes wait for. */
  #flushing: Promise<void> | undefined;

  constructor(transport: ByteStream, credentials: TlsCredentials) {
    this.#transport = transport;
    this.#credentials = credentials;
    const lib = gnutls();
    const credentialsHandle = credentials.acquire();
    const slot = pointerSlot();
    const init = lib.gnutls_init(
      slot,
      (credentials.endpoint === "server" ? Gnutls.SERVER : Gnutls.CLIENT) | Gnutls.NONBLOCK,
    );
    if (init < 0) {
      credentials.relinquish();
      throw new DenbdError("io", `Cannot initialize TLS session: ${errorText(init)}`);
    }
    this.handle = slotPointer(slot);
    this.#buffers.session = this.handle;
    this.#id = nextTransportId++;
    transports.set(this.#id, this.#buffers);
    try {
      const priority = lib.gnutls_priority_set_direct(
        this.handle,
        cString(credentials.priority),
        null,
      );
      if (priority < 0) {
        const what = credentials.kind === "x509"
          ? "Cannot set default TLS session priority"
          : "Unable to set TLS session priority";
        throw new DenbdError(
          "invalid",
          `${what} ${credentials.priority}: ${errorText(priority)}`,
        );
      }
      const set = lib.gnutls_credentials_set(
        this.handle,
        credentials.gnutlsType,
        credentialsHandle,
      );
      if (set < 0) {
        throw new DenbdError("io", `Cannot set session credentials: ${errorText(set)}`);
      }
      if (credentials.kind === "x509" && credentials.endpoint === "server") {
        // Request, not require: the peer check after the handshake enforces (as QEMU).
        lib.gnutls_certificate_server_set_request(this.handle, Gnutls.CERT_REQUEST);
      }
      const { push, pull, pullTimeout } = transportCallbacks();
      lib.gnutls_transport_set_ptr(this.handle, Deno.UnsafePointer.create(BigInt(this.#id)));
      lib.gnutls_transport_set_push_function(this.handle, push.pointer);
      lib.gnutls_transport_set_pull_function(this.handle, pull.pointer);
      lib.gnutls_transport_set_pull_timeout_function(this.handle, pullTimeout.pointer);
    } catch (error) {
      this.free();
      throw error;
    }
  }

  /** Run gnutls_handshake to completion, feeding it from the transport. */
  async handshake(): Promise<void> {
    const lib = gnutls();
    for (;;) {
      this.#checkLive();
      const result = lib.gnutls_handshake(this.handle);
      const failed = result < 0 && lib.gnutls_error_is_fatal(result) !== 0;
      // Send what GnuTLS produced, an alert included, before acting on the result.
      try {
        await this.#flush();
      } catch (error) {
        // A failed handshake is reported as GnuTLS words it, whether its alert left or not.
        if (!failed) throw handshakeError(error);
      }
      if (failed) throw new DenbdError("io", `TLS handshake failed: ${errorText(result)}`);
      if (result === 0) {
        this.#handshaken = true;
        return;
      }
      if (result === Gnutls.E_AGAIN || result === Gnutls.E_INTERRUPTED) {
        try {
          await this.#fill();
        } catch (error) {
          throw handshakeError(error);
        }
        if (this.#buffers.receivedBytes > HANDSHAKE_MAX_BYTES) {
          throw new DenbdError(
            "invalid",
            `TLS handshake failed: the peer sent more than ${HANDSHAKE_MAX_BYTES} bytes`,
          );
        }
      }
    }
  }

  /** "TLS1.3, AES-256-GCM": the negotiated protocol and cipher. */
  describe(): string {
    const lib = gnutls();
    const protocol = readCString(
      lib.gnutls_protocol_get_name(lib.gnutls_protocol_get_version(this.handle)),
    );
    const cipher = readCString(lib.gnutls_cipher_get_name(lib.gnutls_cipher_get(this.handle)));
    return `${protocol ?? "TLS"}, ${cipher ?? "unknown cipher"}`;
  }

  async read(buffer: Uint8Array): Promise<number | null> {
    if (buffer.length === 0) return 0;
    const lib = gnutls();
    for (;;) {
      if (this.#freed || this.#ended) return null;
      let count = this.#deferred ?? this.#receive(buffer);
      this.#deferred = undefined;
      if (count > 0) {
        // Decrypt what else has arrived into the rest of the buffer; an outcome other than
        // plaintext or "need more" waits for the next read.
        while (count < buffer.length && this.#moreToDecrypt()) {
          const more = this.#receive(buffer.subarray(count));
          if (more > 0) {
            count += more;
            continue;
          }
          if (more !== Gnutls.E_AGAIN && more !== Gnutls.E_INTERRUPTED) this.#deferred = more;
          break;
        }
        return count;
      }
      if (count === 0) {
        this.#ended = true;
        return null;
      }
      if (count === Gnutls.E_AGAIN || count === Gnutls.E_INTERRUPTED) {
        try {
          await this.#fill();
        } catch (error) {
          if (this.#freed) return null;
          throw new DenbdError("io", `Cannot read from TLS channel: ${messageOf(error)}`, {
            cause: error,
          });
        }
        continue;
      }
      // The transport ended without close_notify: between records that is an end, inside one a truncation.
      if (count === Gnutls.E_PREMATURE_TERMINATION && this.#buffers.atRecordBoundary) {
        this.#ended = true;
        return null;
      }
      if (lib.gnutls_error_is_fatal(count)) {
        throw new DenbdError("io", `Cannot read from TLS channel: ${errorText(count)}`);
      }
    }
  }

  /** One gnutls_record_recv into `buffer`: plaintext bytes, 0 at close_notify, or an error code. */
  #receive(buffer: Uint8Array): number {
    const result = Number(
      gnutls().gnutls_record_recv(this.handle, buffer, BigInt(buffer.length)),
    );
    // GnuTLS may answer during a read (a TLS 1.3 key update): send that in the background, as
    // waiting here could deadlock with a writer whose peer is not reading until we do.
    if (this.#buffers.outEnd > this.#buffers.outStart) this.#flush().catch(() => {});
    return result;
  }

  /** Whether GnuTLS holds decrypted plaintext or more ciphertext waits here. */
  #moreToDecrypt(): boolean {
    return this.#buffers.inEnd > this.#buffers.inStart ||
      gnutls().gnutls_record_check_pending(this.handle) > 0;
  }

  async write(data: Uint8Array): Promise<number> {
    const lib = gnutls();
    const slice = data.length > WRITE_SLICE_BYTES ? data.subarray(0, WRITE_SLICE_BYTES) : data;
    const records = Math.ceil(slice.length / MAX_RECORD_PLAINTEXT);
    this.#buffers.reserve(slice.length + records * RECORD_OVERHEAD_BYTES);
    let done = 0;
    while (done < slice.length) {
      this.#checkLive();
      const chunk = done === 0 ? slice : slice.subarray(done);
      const sent = Number(lib.gnutls_record_send(this.handle, chunk, BigInt(chunk.length)));
      if (sent < 0) {
        if (sent === Gnutls.E_INTERRUPTED) continue;
        throw new DenbdError("io", `Cannot write to TLS channel: ${errorText(sent)}`);
      }
      done += sent;
    }
    try {
      await this.#flush();
    } catch (error) {
      throw new DenbdError("io", `Cannot write to TLS channel: ${messageOf(error)}`, {
        cause: error,
      });
    }
    return slice.length;
  }

  /** Send close_notify (best effort, bounded in time), close the transport, free the session. */
  close(): Promise<void> {
    if (this.#closing) return this.#closing;
    if (!this.#freed && this.#handshaken) gnutls().gnutls_bye(this.handle, Gnutls.SHUT_WR);
    this.free();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const waited = new Promise<void>((resolve) =>
      timer = setTimeout(resolve, CLOSE_NOTIFY_WAIT_MS)
    );
    this.#closing = Promise.race([this.#flush().catch(() => {}), waited]).then(() => {
      clearTimeout(timer);
      try {
        this.#transport.close();
      } catch {
        // Already closed by its owner.
      }
    });
    return this.#closing;
  }

  /** Free the GnuTLS session and drop the credentials reference; idempotent. */
  free(): void {
    if (this.#freed) return;
    this.#freed = true;
    transports.delete(this.#id);
    if (this.handle !== null) gnutls().gnutls_deinit(this.handle);
    this.#credentials.relinquish();
  }

  #checkLive(): void {
    if (this.#freed) throw new DenbdError("io", "The TLS session is closed");
  }

  /** Wait for ciphertext from the transport (GnuTLS pulled everything buffered). */
  async #fill(): Promise<void> {
    const buffers = this.#buffers;
    if (buffers.inEnd > buffers.inStart) return;
    if (buffers.eof) return;
    buffers.inStart = buffers.inEnd = 0;
    if (buffers.incoming.length !== buffers.incomingSizing.size) {
      buffers.incoming = new Uint8Array(buffers.incomingSizing.size);
    }
    const count = await this.#transport.read(buffers.incoming);
    if (count === null) buffers.eof = true;
    else {
      buffers.received(count);
      buffers.incomingSizing.record(count, buffers.incoming.length);
    }
  }

  /** Write all outgoing ciphertext to the transport, one writer at a time. */
  async #flush(): Promise<void> {
    const buffers = this.#buffers;
    while (buffers.outEnd > buffers.outStart) {
      if (this.#flushing) {
        await this.#flushing;
        continue;
      }
      this.#flushing = this.#writeOut();
      try {
        await this.#flushing;
      } finally {
        this.#flushing = undefined;
      }
    }
  }

  async #writeOut(): Promise<void> {
    const buffers = this.#buffers;
    let written = 0;
    while (buffers.outEnd > buffers.outStart) {
      const count = await this.#transport.write(
        buffers.outgoing.subarray(buffers.outStart, buffers.outEnd),
      );
      buffers.outStart += count;
      written += count;
    }
    buffers.outStart = buffers.outEnd = 0;
    // Quiet for a while, the buffer shrinks back (it grows again in reserve when needed).
    buffers.outgoingSizing.record(written, Infinity);
    if (buffers.outgoing.length > buffers.outgoingSizing.size) {
      buffers.outgoing = new Uint8Array(buffers.outgoingSizing.size);
    }
  }
}

/** The error of a transport failure during the handshake. */
function handshakeError(error: unknown): DenbdError {
  return new DenbdError("io", `TLS handshake failed: ${messageOf(error)}`, { cause: error });
}

/**
 * Check the peer of a completed handshake as QEMU does and say who it is.
 * X.509 with verifyPeer: the chain verifies against the CA (and CRL), every
 * certificate is within its dates, and a client's server certificate names
 * `hostname` when given; the identity is the first certificate's DN. Without
 * verifyPeer nothing is checked and the identity stays null, since an
 * unchecked certificate proves nothing (QEMU has no peer name then either).
 * PSK: the server learns the client's username.
 */
function checkPeer(
  session: Deno.PointerValue,
  credentials: TlsCredentials,
  hostname: string | undefined,
): TlsPeer {
  if (credentials.kind === "psk") {
    return { identity: credentials.endpoint === "server" ? pskUsername(session) : null };
  }
  if (credentials.kind !== "x509" || !credentials.verifyPeer) return { identity: null };
  const status = new Uint32Array(1);
  const verified = gnutls().gnutls_certificate_verify_peers2(session, status);
  if (verified < 0) throw new DenbdError("invalid", `Verify failed: ${errorText(verified)}`);
  if (status[0] !== 0) throw new DenbdError("invalid", verifyStatusReason(status[0]));
  const chain = peerCertificateData(session);
  if (!chain.length) throw new DenbdError("invalid", "No certificate peers");
  const now = Date.now() / 1000;
  let identity: string | null = null;
  for (const [index, der] of chain.entries()) {
    const certificate = X509Certificate.fromDerDatum(der);
    try {
      if (certificate.expiration < now) {
        throw new DenbdError("invalid", "The certificate has expired");
      }
      if (certificate.activation > now) {
        throw new DenbdError("invalid", "The certificate is not yet activated");
      }
      if (index === 0) {
        identity = certificate.distinguishedName;
        if (
          credentials.endpoint === "client" && hostname !== undefined &&
          !certificate.matchesHostname(hostname)
        ) {
          throw new DenbdError(
            "invalid",
            `Certificate does not match the hostname ${hostname}`,
          );
        }
      }
    } finally {
      certificate.free();
    }
  }
  return { identity };
}
