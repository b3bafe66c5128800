/**
 * The byte stream a protocol connection runs over. A TCP or Unix `Deno.Conn`
 * is one; a TLS session (added after STARTTLS) will be another, swapped in
 * under the same reader and writer in the middle of a connection.
 *
 * @module
 */

/** A bidirectional stream of bytes. `Deno.Conn` satisfies it. */
export interface ByteStream {
  /** Read into `buffer`; resolves to the count read, or null at end of stream. */
  read(buffer: Uint8Array): Promise<number | null>;
  /** Write some of `data`; resolves to the count written. */
  write(data: Uint8Array): Promise<number>;
  /** Close both directions. */
  close(): void;
}

/** Write all of `data` to `stream`, looping over short writes. */
export async function writeAll(stream: ByteStream, data: Uint8Array): Promise<void> {
  let done = 0;
  while (done < data.length) done += await stream.write(data.subarray(done));
}
